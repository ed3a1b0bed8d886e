"""``bfdl data`` commands, ``prepare_data`` caching, and the checked-in NIH manifests."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from bfdl_tff.cli import main
from bfdl_tff.config import DataConfig
from bfdl_tff.data import nih, prepare, synth
from bfdl_tff.data.manifest import hospital_names, read_manifest_dir
from bfdl_tff.errors import DataError


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "ds"
    assert main(["data", "synth", "--out", str(root), "--images", "300", "--size", "16", "--seed", "2", "--sites", "3"]) == 0
    return root


def test_synth_check_partition_summary(ds: Path, tmp_path: Path, capsys):
    capsys.readouterr()
    assert main(["data", "check", "--root", str(ds), "--decode"]) == 0
    out = capsys.readouterr().out
    assert "OK (SYNTHETIC" in out and "images: 300 (300 PNG files" in out and "images per site" in out
    m = tmp_path / "m"
    assert main(["data", "partition", "--root", str(ds), "--hospitals", "3", "--scheme", "site", "--seed", "0",
                 "--out", str(m)]) == 0
    out = capsys.readouterr().out
    assert "Hospital-C" in out and "mean JSD" in out
    assert sorted(p.name for p in m.iterdir()) == ["hospital_a.csv", "hospital_b.csv", "hospital_c.csv", "partition.json", "test.csv"]
    info = json.loads((m / "partition.json").read_text())
    assert info["scheme"] == "site" and sum(info["counts"].values()) == 300
    assert main(["data", "summary", "--manifests", str(m), "--root", str(ds), "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert set(s["manifests"]) == {"hospital_a", "hospital_b", "hospital_c", "test"}
    # same command again: byte-identical manifests
    before = {p.name: p.read_bytes() for p in m.iterdir()}
    assert main(["data", "partition", "--root", str(ds), "--hospitals", "3", "--scheme", "site", "--seed", "0", "--out", str(m)]) == 0
    assert before == {p.name: p.read_bytes() for p in m.iterdir()}


def test_check_reports_missing_and_truncated(ds: Path, tmp_path: Path, capsys):
    root = tmp_path / "copy"
    shutil.copytree(ds, root)
    names = sorted(p.name for p in (root / "images").iterdir())
    f = root / "images" / names[10]
    f.write_bytes(f.read_bytes()[:-20])
    capsys.readouterr()
    assert main(["data", "check", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bfdl: error: ") and names[10] in err and "truncated" in err
    for n in names[:7]:
        (root / "images" / n).unlink()
    assert main(["data", "check", "--root", str(root)]) == 2
    err = capsys.readouterr().err
    assert "7 of 300 image file(s) missing" in err and names[0] in err and "Data_Entry_2017.csv" in err


def test_partition_errors_leave_nothing(ds: Path, tmp_path: Path, capsys):
    out = tmp_path / "m"
    assert main(["data", "partition", "--root", str(ds), "--hospitals", "200", "--scheme", "iid", "--seed", "0", "--out", str(out)]) == 2
    assert "cannot fill 200 hospitals" in capsys.readouterr().err
    assert not out.exists()
    bad = tmp_path / "bad"
    shutil.copytree(ds, bad, ignore=shutil.ignore_patterns("images", "masks"))
    p = bad / "Data_Entry_2017.csv"
    p.write_text(p.read_text().replace("No Finding", "No Findings", 1))
    assert main(["data", "partition", "--root", str(bad), "--hospitals", "3", "--scheme", "iid", "--seed", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert str(p) in err and "unknown finding 'No Findings'" in err
    assert not out.exists()


def test_prepare_data_caches_synthetic(tmp_path: Path):
    cfg = DataConfig(root=str(tmp_path / "synthetic"), synth_images=120, image_size=16, hospitals=3, scheme="iid")
    a = prepare.prepare_data(cfg, seed=1, manifest_dir=tmp_path / "run1")
    assert a.synthetic and synth.is_complete(a.root) and a.root.parent == tmp_path / "synthetic"
    assert hospital_names(a.manifest_dir) == ["hospital_a", "hospital_b", "hospital_c"]
    stamp = (a.root / "Data_Entry_2017.csv").stat().st_mtime_ns
    b = prepare.prepare_data(cfg, seed=1, manifest_dir=tmp_path / "run2")
    assert b.root == a.root and (b.root / "Data_Entry_2017.csv").stat().st_mtime_ns == stamp
    assert (tmp_path / "run1" / "test.csv").read_bytes() == (tmp_path / "run2" / "test.csv").read_bytes()
    c = prepare.prepare_data(dataclasses.replace(cfg, synth_images=130), seed=1, manifest_dir=tmp_path / "run3")
    assert c.root != a.root
    assert not [p for p in (tmp_path / "synthetic").iterdir() if p.name.startswith(".")]  # no temp dirs left
    # given manifests are validated and reused
    d = prepare.prepare_data(dataclasses.replace(cfg, manifests=str(tmp_path / "run1")), seed=1, manifest_dir=tmp_path / "unused")
    assert d.manifest_dir == tmp_path / "run1" and not (tmp_path / "unused").exists()
    with pytest.raises(DataError, match="holds 3 hospital manifests but data.hospitals = 4"):
        prepare.prepare_data(dataclasses.replace(cfg, hospitals=4, manifests=str(tmp_path / "run1")), seed=1, manifest_dir=tmp_path / "x")


def test_nih_metadata_verified_and_manifests_regenerate_identically(capsys):
    nih.verify_metadata()
    assert main(["data", "nih-manifests", "--check", "--k", "3"]) == 0
    assert "identical" in capsys.readouterr().out


def test_checked_in_nih_k3(capsys):
    frames = read_manifest_dir(nih.NIH_DIR / "k3")  # validates + patient-disjointness
    assert list(frames) == ["hospital_a", "hospital_b", "hospital_c", "test"]
    assert sum(len(f) for f in frames.values()) == 112120
    assert len(frames["test"]) == 25596 and frames["test"]["patient_id"].nunique() == 2797
    assert frames["test"]["image"].tolist() == sorted(nih.official_test_images())
    for k in nih.KS:
        d = nih.NIH_DIR / f"k{k}"
        assert hospital_names(d) == [f"hospital_{c}" for c in "abcdefghij"[:k]]
        assert json.loads((d / "partition.json").read_text())["hospitals"] == k
    sums = (nih.NIH_DIR / "SHA256SUMS").read_text()
    assert "k10/hospital_j.csv.gz" in sums and "metadata/chexnet_split/train_list.txt.gz" in sums
    assert "view_k3/hospital_a.csv.gz" in sums and "metadata/full_metadata/Data_Entry_2017_v2020.csv.gz" in sums


def test_checked_in_view_k3():
    frames = read_manifest_dir(nih.NIH_DIR / "view_k3")
    assert sum(len(f) for f in frames.values()) == 112120
    assert frames["test"]["image"].tolist() == sorted(nih.official_test_images())
    from bfdl_tff.data import loader

    full = loader.read_data_entry(nih.NIH_DIR / "metadata" / nih.FULL_TABLE)
    view = full.set_index("image")["view"]
    ap = {n: float((view[f["image"]] == "AP").mean()) for n, f in frames.items()}
    info = json.loads((nih.NIH_DIR / "view_k3" / "partition.json").read_text())
    assert info["scheme"] == "view" and all(abs(info["ap_fraction"][n] - ap[n]) < 1e-6 for n in ap)
    assert ap["hospital_a"] > 0.7 and ap["hospital_b"] < 0.2 and ap["hospital_c"] < 0.2


def test_tampered_manifest_detected(tmp_path: Path):
    d = tmp_path / "nih"
    shutil.copytree(nih.NIH_DIR / "metadata", d / "metadata")
    shutil.copytree(nih.NIH_DIR / "k3", d / "k3")
    df = pd.read_csv(d / "k3" / "hospital_a.csv.gz")
    df.loc[0, "split"] = "val" if df.loc[0, "split"] == "train" else "train"
    from bfdl_tff.data.manifest import manifest_bytes

    (d / "k3" / "hospital_a.csv.gz").write_bytes(manifest_bytes(df, gzip_output=True))
    with pytest.raises(DataError, match=r"differ from a fresh regeneration, first: k3/hospital_a\.csv\.gz"):
        nih.regenerate(d, check=True, ks=(3,))


def test_partition_cli_view_and_stratified(ds: Path, tmp_path: Path, capsys):
    m = tmp_path / "view"
    capsys.readouterr()
    assert main(["data", "partition", "--root", str(ds), "--hospitals", "3", "--scheme", "view", "--seed", "1",
                 "--out", str(m), "--stratify-test", "--test-fraction", "0.25"]) == 0
    out = capsys.readouterr().out
    assert "AP fraction" in out and "positives per label" in out
    info = json.loads((m / "partition.json").read_text())
    assert info["scheme"] == "view" and info["stratify_test"] is True and info["ap_fraction"]["hospital_a"] > info["ap_fraction"]["hospital_b"]
    assert set(info["positives"]["test"]) == set(info["positives"]["hospital_a"]) and info["task"]["kind"] == "multilabel"


def test_cli_choice_literals_match_the_library():
    from bfdl_tff.commands import data as cmd
    from bfdl_tff.config import DataConfig
    from bfdl_tff.data import partition, tasks

    assert cmd.SCHEMES == partition.SCHEMES and cmd.TASK_CHOICES == tasks.TASK_KINDS
    field = {f.name: f for f in dataclasses.fields(DataConfig)}
    assert tuple(field["scheme"].metadata["choices"]) == partition.SCHEMES
    assert tuple(field["task"].metadata["choices"])[1:] == tasks.TASK_KINDS


def test_prepare_chestmnist(tmp_path: Path):
    import numpy as np

    rng = np.random.default_rng(1)
    data = {}
    for s, n in (("train", 30), ("val", 6), ("test", 10)):
        data[f"{s}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        data[f"{s}_labels"] = rng.integers(0, 2, (n, 14)).astype(np.uint8)
    np.savez(tmp_path / "chestmnist.npz", **data)
    cfg = DataConfig(source="chestmnist", npz=str(tmp_path / "chestmnist.npz"), root=str(tmp_path / "cm"),
                     hospitals=3, scheme="iid", image_size=28)
    p = prepare.prepare_data(cfg, seed=0, manifest_dir=tmp_path / "m")
    frames = read_manifest_dir(p.manifest_dir)
    assert len(frames["test"]) == 10 and sum(len(f) for f in frames.values()) == 46
    from bfdl_tff.data import chestmnist, loader

    t = loader.load_image_set(p.root, p.manifest_dir / "test.csv", image_size=28)
    ref = chestmnist.load_chestmnist(tmp_path / "chestmnist.npz", split="test")
    assert t.images == ref.images and np.allclose(t.x, ref.x, atol=1e-6) and (t.y == ref.y).all()
    with pytest.raises(DataError, match="data.npz: source 'chestmnist' needs"):
        prepare.prepare_data(DataConfig(source="chestmnist", root=str(tmp_path / "x")), seed=0, manifest_dir=tmp_path / "y")
