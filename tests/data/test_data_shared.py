"""Real data from the shared folder (issue 15; ``../shared`` or ``$BFDL_SHARED``; skipped with
the reason when absent): PneumoniaMNIST federated into 3 label-skewed hospitals with MedMNIST's
official val / test splits, the 621-image NIH sample end to end through prepare_data and the
loader, and the complete 112,120-row NIH Data_Entry table."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bfdl_tff.cli import main
from bfdl_tff.config import DataConfig
from bfdl_tff.data import external, federation, loader, medmnist, partition, prepare
from bfdl_tff.data.labels import FINDINGS
from bfdl_tff.data.manifest import read_manifest_dir
from bfdl_tff.data.tasks import NIH_TASK, Task

# Per-finding positives of the 621-image sample (../shared/nih_cxr14/PROVENANCE.md)
SAMPLE_POSITIVES = {"Atelectasis": 92, "Cardiomegaly": 56, "Effusion": 82, "Infiltration": 123, "Mass": 72, "Nodule": 89,
                    "Pneumonia": 32, "Pneumothorax": 44, "Consolidation": 81, "Edema": 18, "Emphysema": 41,
                    "Fibrosis": 56, "Pleural_Thickening": 68, "Hernia": 20}


# ----------------------------------------------------------------------------------- PneumoniaMNIST


def test_pneumoniamnist_arrays_and_task(pneumonia_npz: Path, capsys):
    data = medmnist.read_npz(pneumonia_npz)
    assert medmnist.npz_task(data, path=pneumonia_npz) == Task("binary", ("pneumonia",))
    counts = {s: (len(data[f"{s}_labels"]), int(data[f"{s}_labels"].sum())) for s in medmnist.SPLITS}
    assert counts == {"train": (3882, 3494), "val": (524, 389), "test": (624, 390)}  # PROVENANCE.md
    capsys.readouterr()
    assert main(["data", "check", "--npz", str(pneumonia_npz)]) == 0
    assert "test: 624 images; positives: pneumonia 390" in capsys.readouterr().out


@pytest.fixture(scope="module")
def pneumonia_fed(pneumonia_npz: Path, tmp_path_factory):
    base = tmp_path_factory.mktemp("pm")
    cfg = DataConfig(source="medmnist", npz=str(pneumonia_npz), root=str(base / "data"), hospitals=3,
                     scheme="dirichlet", alpha=0.5, image_size=28)
    return cfg, prepare.prepare_data(cfg, seed=0, manifest_dir=base / "m0"), base


def test_pneumoniamnist_three_label_skewed_hospitals(pneumonia_fed):
    cfg, p, base = pneumonia_fed
    frames = read_manifest_dir(p.manifest_dir)
    assert list(frames) == ["hospital_a", "hospital_b", "hospital_c", "test"]
    assert len(frames["test"]) == 624 and int(frames["test"]["pneumonia"].sum()) == 390  # official test, central
    hosp = pd.concat([frames[n] for n in ("hospital_a", "hospital_b", "hospital_c")])
    assert (hosp["split"] == "val").sum() == 524 and (hosp["split"] == "train").sum() == 3882  # official val kept
    for n in ("hospital_a", "hospital_b", "hospital_c"):
        f = frames[n]
        for split in ("train", "val"):
            sel = f[f.split == split]
            assert sel["pneumonia"].sum() > 0 and (sel["pneumonia"] == 0).sum() > 0, (n, split)
    normal_share = [float((frames[n].pneumonia == 0).mean()) for n in ("hospital_a", "hospital_b", "hospital_c")]
    info = json.loads((p.manifest_dir / "partition.json").read_text())
    assert info["pseudo_patients"] and info["task"] == {"kind": "binary", "labels": ["pneumonia"]}
    assert info["non_iid"]["mean_jsd"] >= 0 and len(set(np.round(normal_share, 3))) == 3
    # deterministic in the seed; another seed gives another (label-skewed) partition
    again = prepare.prepare_data(cfg, seed=0, manifest_dir=base / "m0b")
    for name in ("hospital_a.csv", "hospital_b.csv", "hospital_c.csv", "test.csv", "task.json"):
        assert (again.manifest_dir / name).read_bytes() == (p.manifest_dir / name).read_bytes()
    other = read_manifest_dir(prepare.prepare_data(cfg, seed=2, manifest_dir=base / "m2").manifest_dir)
    assert not other["hospital_a"]["image"].equals(frames["hospital_a"]["image"])
    assert other["test"]["image"].tolist() == frames["test"]["image"].tolist()


def test_pneumoniamnist_federation_loads_the_npz_pixels(pneumonia_fed, pneumonia_npz: Path):
    _, p, _ = pneumonia_fed
    fed = federation.load_federation(p.root, p.manifest_dir, image_size=28)
    assert fed.task == Task("binary", ("pneumonia",))
    assert sum(len(fed.train[n]) for n in fed.names) == 3882 and sum(len(fed.val[n]) for n in fed.names) == 524
    ref = medmnist.load_medmnist(pneumonia_npz, split="test")
    assert fed.test.images == ref.images and np.abs(fed.test.x - ref.x).max() < 1e-6 and (fed.test.y == ref.y).all()
    assert fed.pooled_train().y.shape == (3882, 1)


# ------------------------------------------------------------------------------------ NIH sample


def test_nih_sample_check(nih_sample: Path, capsys):
    from bfdl_tff.commands.data import check_dataset

    rep = check_dataset(nih_sample)
    assert rep["images"] == rep["files"] == rep["patients"] == 621 and rep["no_finding"] == 100
    assert rep["per_finding"] == SAMPLE_POSITIVES and rep["views"] == {"AP": 103, "PA": 518}
    assert rep["task"] == NIH_TASK.to_record() and not rep["synthetic"]
    capsys.readouterr()
    assert main(["data", "check", "--root", str(nih_sample)]) == 0
    assert "images: 621 (621 PNG files, all in the metadata)" in capsys.readouterr().out


def test_nih_sample_end_to_end(nih_sample: Path, tmp_path: Path):
    cfg = DataConfig(source="nih", root=str(nih_sample), hospitals=3, scheme="iid", test_fraction=0.3,
                     stratify_test=True, image_size=32)
    p = prepare.prepare_data(cfg, seed=0, manifest_dir=tmp_path / "m")
    frames = read_manifest_dir(p.manifest_dir)  # validates patient-disjointness
    assert sum(len(f) for f in frames.values()) == 621 and len(frames["test"]) == 185
    test_pos = frames["test"][list(FINDINGS)].sum()
    assert test_pos.min() >= 5, test_pos.to_dict()  # every finding keeps >= 5 test positives
    for n in ("hospital_a", "hospital_b", "hospital_c"):
        assert 130 <= len(frames[n]) <= 160 and (frames[n].split == "val").sum() >= 10
    fed = federation.load_federation(p.root, p.manifest_dir, image_size=32)
    assert fed.task == NIH_TASK and fed.test.x.shape == (185, 32, 32, 1)
    assert 0.0 <= fed.test.x.min() and fed.test.x.max() <= 1.0 and fed.test.x.std() > 0.1
    # at native size the decoded pixels are the PNG's 8-bit gray values
    full = loader.load_image_set(nih_sample, p.manifest_dir / "test.csv", image_size=256)
    png = np.asarray(Image.open(nih_sample / "images" / full.images[0]), dtype=np.float32) / 255.0
    assert np.abs(full.x[0, ..., 0] - png).max() < 1e-6


def test_nih_sample_view_scheme(nih_sample: Path):
    meta = loader.read_metadata(nih_sample)
    parts = partition.partition(meta, hospitals=3, scheme="view", seed=0, test_fraction=0.3, stratify_test=True)
    s = partition.summarize(parts, meta=meta)["manifests"]
    assert s["hospital_a"]["ap_fraction"] > 0.4 and max(s["hospital_b"]["ap_fraction"], s["hospital_c"]["ap_fraction"]) < 0.05


def test_nih_sample_as_external_data(nih_sample: Path):
    e = external.load_external(nih_sample, image_size=16)
    assert len(e.images) == 621 and e.positives() == SAMPLE_POSITIVES and e.images.x.shape == (621, 16, 16, 1)


# ------------------------------------------------------------------------------ complete metadata


def test_full_data_entry_table(nih_full_table: Path, tmp_path: Path):
    meta = loader.read_metadata(nih_full_table.parent)
    assert len(meta) == 112120 and meta["patient_id"].nunique() == 30805 and loader.metadata_task(meta) == NIH_TASK
    assert meta["view"].value_counts().to_dict() == {"PA": 67310, "AP": 44810}
    assert (meta[list(FINDINGS)].sum(axis=1) == 0).sum() == 60361  # v2020 "No Finding" rows
    # the same rows in the 2017 layout (trailing empty column), gzip-compressed, read identically
    lines = gzip.decompress(nih_full_table.read_bytes()).decode().splitlines()[:3001]
    d = tmp_path / "l2017"
    d.mkdir()
    (d / "Data_Entry_2017.csv.gz").write_bytes(gzip.compress(("\n".join(ln + "," for ln in lines) + "\n").encode()))
    head = loader.read_metadata(d)
    assert loader.detect_data_entry_layout(d / "Data_Entry_2017.csv.gz") == "2017"
    pd.testing.assert_frame_equal(head.reset_index(drop=True), meta.iloc[:3000].reset_index(drop=True), check_like=False)
    # the checked-in copy is byte-identical to the shared file
    from bfdl_tff.data import nih

    assert (nih.NIH_DIR / "metadata" / nih.FULL_TABLE).read_bytes() == nih_full_table.read_bytes()
