"""Partition schemes: patient-disjointness, determinism, measured non-IID-ness, test split."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bfdl_tff.data import loader, partition, synth
from bfdl_tff.data.manifest import manifest_bytes, read_manifest_dir
from bfdl_tff.errors import DataError


@pytest.fixture(scope="module")
def meta(tmp_path_factory) -> pd.DataFrame:
    root = tmp_path_factory.mktemp("part") / "ds"
    synth.synthesize(root, n_images=2500, size=8, seed=4, n_sites=3, write_masks=False)
    return loader.read_metadata(root)


def _check_partition(parts: dict[str, pd.DataFrame], meta: pd.DataFrame, k: int) -> None:
    names = [n for n in parts if n != "test"]
    assert names == [f"hospital_{c}" for c in "abcdefghij"[:k]]
    all_images = pd.concat(list(parts.values()))["image"]
    assert len(all_images) == len(meta) and set(all_images) == set(meta["image"])
    owners: dict[int, str] = {}
    for n, df in parts.items():
        for p in set(df["patient_id"]):
            assert owners.setdefault(p, n) == n, f"patient {p} in {owners[p]} and {n}"
        if n != "test":
            assert set(df["split"]) == {"train", "val"}
            assert not set(df.loc[df.split == "train", "patient_id"]) & set(df.loc[df.split == "val", "patient_id"])
            assert 0.03 < (df.split == "val").mean() < 0.3
        else:
            assert set(df["split"]) == {"test"}


@pytest.mark.parametrize("scheme", partition.SCHEMES)
@pytest.mark.parametrize("k", [3, 5])
def test_scheme_patient_disjoint_and_deterministic(meta: pd.DataFrame, scheme: str, k: int):
    a = partition.partition(meta, hospitals=k, scheme=scheme, seed=7, alpha=0.5)
    _check_partition(a, meta, k)
    b = partition.partition(meta, hospitals=k, scheme=scheme, seed=7, alpha=0.5)
    assert all(manifest_bytes(a[n], gzip_output=False) == manifest_bytes(b[n], gzip_output=False) for n in a)
    c = partition.partition(meta, hospitals=k, scheme=scheme, seed=8, alpha=0.5)
    assert any(not a[n]["image"].equals(c[n]["image"]) for n in a)


def test_test_split_independent_of_scheme_and_k(meta: pd.DataFrame):
    tests = [partition.partition(meta, hospitals=k, scheme=s, seed=3)["test"]["image"].tolist()
             for s, k in (("iid", 3), ("dirichlet", 4), ("quantity", 6))]
    assert tests[0] == tests[1] == tests[2]
    frac = len(tests[0]) / len(meta)
    assert 0.18 < frac < 0.25


def test_non_iid_measured(meta: pd.DataFrame):
    def stats(scheme, alpha=0.5, seed=0):
        return partition.non_iid_stats(partition.partition(meta, hospitals=4, scheme=scheme, seed=seed, alpha=alpha))

    iid = np.mean([stats("iid", seed=s)["mean_jsd"] for s in range(3)])
    skew = np.mean([stats("dirichlet", alpha=0.1, seed=s)["mean_jsd"] for s in range(3)])
    mild = np.mean([stats("dirichlet", alpha=100.0, seed=s)["mean_jsd"] for s in range(3)])
    assert skew > 4 * iid, (skew, iid)
    assert skew > 2 * mild
    q_iid = stats("iid")["size_cv"]
    q = np.mean([stats("quantity", alpha=0.3, seed=s)["size_cv"] for s in range(3)])
    assert q_iid < 0.05 and q > 0.3


def test_site_scheme_follows_acquisition_site(meta: pd.DataFrame):
    site = meta.set_index("image")["site"]
    parts = partition.partition(meta, hospitals=3, scheme="site", seed=0)
    seen = set()
    for n in ("hospital_a", "hospital_b", "hospital_c"):
        s = set(site[parts[n]["image"]])
        assert len(s) == 1
        seen |= s
    assert seen == {0, 1, 2}
    five = partition.partition(meta, hospitals=5, scheme="site", seed=0)
    assert all(len(set(site[five[f"hospital_{c}"]["image"]])) == 1 for c in "abcde")
    # without a site column (real NIH): contiguous patient-ID blocks
    nosite = meta.drop(columns=["site"])
    parts = partition.partition(nosite, hospitals=3, scheme="site", seed=0)
    a, b = parts["hospital_a"]["patient_id"], parts["hospital_b"]["patient_id"]
    assert a.max() < b.min()


def test_given_test_list(meta: pd.DataFrame):
    pats = sorted(meta["patient_id"].unique())[:40]
    test_imgs = meta.loc[meta.patient_id.isin(pats), "image"].tolist()
    parts = partition.partition(meta, hospitals=3, scheme="iid", seed=0, test_images=test_imgs)
    assert sorted(parts["test"]["image"]) == sorted(test_imgs)
    leaky = test_imgs[:-1]  # drop one image of the last patient: that patient now spans both
    multi = meta.groupby("patient_id").size()
    last = meta.set_index("image").loc[test_imgs[-1], "patient_id"]
    if multi[last] > 1:
        with pytest.raises(DataError, match="not patient-disjoint"):
            partition.partition(meta, hospitals=3, scheme="iid", seed=0, test_images=leaky, source="list.txt")
    with pytest.raises(DataError, match=r"list\.txt: 1 test image\(s\) not in the metadata"):
        partition.partition(meta, hospitals=3, scheme="iid", seed=0, test_images=["09999999_000.png"], source="list.txt")


def test_bad_parameters(meta: pd.DataFrame):
    with pytest.raises(DataError, match="unknown partition scheme 'random'"):
        partition.partition(meta, hospitals=3, scheme="random", seed=0)
    tiny = meta[meta.patient_id <= 4]
    with pytest.raises(DataError, match="cannot fill 3 hospitals"):
        partition.partition(tiny, hospitals=3, scheme="iid", seed=0, test_fraction=0.1)
    dup = pd.concat([meta.iloc[:5], meta.iloc[:1]])
    with pytest.raises(DataError, match="duplicate images"):
        partition.partition(dup, hospitals=1, scheme="iid", seed=0)


def test_write_partition_atomic_and_replaces_stale(meta: pd.DataFrame, tmp_path: Path):
    out = tmp_path / "m"
    partition.write_partition(out, partition.partition(meta, hospitals=5, scheme="iid", seed=0))
    partition.write_partition(out, partition.partition(meta, hospitals=3, scheme="iid", seed=0))
    assert sorted(p.name for p in out.iterdir()) == ["hospital_a.csv", "hospital_b.csv", "hospital_c.csv", "test.csv"]
    assert len(read_manifest_dir(out)) == 4
    # a partition with a patient in two hospitals writes nothing at all
    bad = partition.partition(meta, hospitals=3, scheme="iid", seed=1)
    bad["hospital_b"] = pd.concat([bad["hospital_b"], bad["hospital_a"].iloc[:1]]).reset_index(drop=True)
    bad["hospital_a"] = bad["hospital_a"].iloc[1:].reset_index(drop=True)
    bad["hospital_a"] = pd.concat([bad["hospital_a"], bad["hospital_b"].iloc[-1:].assign(image="00099999_000.png")])
    fresh = tmp_path / "fresh"
    with pytest.raises(DataError, match="patient"):
        partition.write_partition(fresh, bad)
    assert not fresh.exists()


def test_jensen_shannon_bounds():
    p = np.array([0.5, 0.5, 0.0])
    assert partition.jensen_shannon(p, p) == 0.0
    assert abs(partition.jensen_shannon(np.array([1.0, 0.0]), np.array([0.0, 1.0])) - 1.0) < 1e-12
    assert 0 < partition.jensen_shannon(p, np.array([0.2, 0.3, 0.5])) < 1


def test_summary_text(meta: pd.DataFrame):
    parts = partition.partition(meta, hospitals=3, scheme="dirichlet", seed=0, alpha=0.2)
    s = partition.summarize(parts, meta=meta)
    text = partition.format_summary(s)
    assert "Hospital-A" in text and "mean JSD" in text and "sites:" in text
    assert s["manifests"]["hospital_a"]["patients"] == parts["hospital_a"]["patient_id"].nunique()
    assert abs(s["manifests"]["test"]["prevalence"]["Effusion"] - parts["test"]["Effusion"].mean()) < 1e-12


def test_view_scheme_makes_an_ap_heavy_icu_hospital(meta: pd.DataFrame):
    view = meta.set_index("image")["view"]
    overall = float((meta["view"] == "AP").mean())
    for k in (2, 3, 4):
        parts = partition.partition(meta, hospitals=k, scheme="view", seed=0)
        _check_partition(parts, meta, k)
        ap = {n: float((view[df["image"]] == "AP").mean()) for n, df in parts.items() if n != "test"}
        others = [v for n, v in ap.items() if n != "hospital_a"]
        assert ap["hospital_a"] > overall + 0.15 and max(others) < overall, (k, ap, overall)
        sizes = [len(df) for n, df in parts.items() if n != "test"]
        assert max(sizes) / min(sizes) < 1.3  # equal image shares
        s = partition.summarize(parts, meta=meta)
        assert abs(s["manifests"]["hospital_a"]["ap_fraction"] - ap["hospital_a"]) < 1e-12
        assert "AP fraction" in partition.format_summary(s)
    with pytest.raises(DataError, match=r"scheme 'view' needs each image's View Position"):
        partition.partition(meta.drop(columns=["view"]), hospitals=3, scheme="view", seed=0, source="lists")
    with pytest.raises(DataError, match="at least 2 hospitals"):
        partition.partition(meta, hospitals=1, scheme="view", seed=0)


def test_stratified_test_split_keeps_rare_label_positives(meta: pd.DataFrame):
    from bfdl_tff.data.labels import FINDINGS

    pos = meta[list(FINDINGS)].sum()
    rare = pos.idxmin()  # Hernia in NIH statistics
    plain_err, strat_err = [], []
    for seed in range(6):
        _, t_plain = partition.split_test(meta, seed=seed, test_fraction=0.2)
        _, t_strat = partition.split_test(meta, seed=seed, test_fraction=0.2, stratify=True)
        plain_err.append(abs(t_plain[rare].sum() - 0.2 * pos[rare]))
        strat_err.append(abs(t_strat[rare].sum() - 0.2 * pos[rare]))
        assert 0.15 < len(t_strat) / len(meta) < 0.25
        assert not set(t_strat["patient_id"]) & set(meta.loc[~meta.image.isin(t_strat.image), "patient_id"])
    assert max(strat_err) <= 2 and np.mean(strat_err) <= np.mean(plain_err), (strat_err, plain_err)
    a = partition.partition(meta, hospitals=3, scheme="iid", seed=3, stratify_test=True)["test"]
    b = partition.partition(meta, hospitals=5, scheme="dirichlet", seed=3, stratify_test=True)["test"]
    assert a["image"].tolist() == b["image"].tolist()  # depends on the seed only


def test_given_val_images(meta: pd.DataFrame):
    pats = sorted(meta["patient_id"].unique())
    test_imgs = meta.loc[meta.patient_id.isin(pats[:50]), "image"].tolist()
    val_imgs = meta.loc[meta.patient_id.isin(pats[100:160]), "image"].tolist()
    parts = partition.partition(meta, hospitals=3, scheme="dirichlet", seed=0, test_images=test_imgs, val_images=val_imgs)
    got = sorted(i for n, df in parts.items() if n != "test" for i in df.loc[df.split == "val", "image"])
    assert got == sorted(val_imgs) and sorted(parts["test"]["image"]) == sorted(test_imgs)
    multi = meta[meta.patient_id.isin(pats[50:])].groupby("patient_id").size()
    p = int(multi[multi > 1].index[0])
    one = meta.loc[meta.patient_id == p, "image"].iloc[:1].tolist()  # the patient's other images stay train
    with pytest.raises(DataError, match=r"val list is not patient-disjoint: 1 patient"):
        partition.partition(meta, hospitals=3, scheme="iid", seed=0, test_images=test_imgs, val_images=one)
