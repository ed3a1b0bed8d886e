"""MedMNIST 2D .npz (issue 15.1): binary / multiclass / multilabel, gray and RGB, the known
datasets' names, export to the task layout, prepare_data keeping the official val and test
splits, and bad .npz files (one line naming the file and the missing array)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from bfdl_tff.cli import main
from bfdl_tff.config import ConfigError, DataConfig, from_dict
from bfdl_tff.data import federation, loader, medmnist, prepare
from bfdl_tff.data.manifest import manifest_task, read_manifest_dir
from bfdl_tff.data.tasks import NIH_TASK, Task
from bfdl_tff.errors import DataError

from data_helpers import one_error_line


def _npz(path: Path, *, labels: str, n=(40, 10, 12), size: int = 12, rgb: bool = False, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    data = {}
    for s, k in zip(("train", "val", "test"), n):
        shape = (k, size, size, 3) if rgb else (k, size, size)
        data[f"{s}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        if labels == "binary":
            y = (np.arange(k) % 4 != 0).astype(np.uint8)[:, None]  # 75 % positive, like PneumoniaMNIST
        elif labels == "multiclass":
            y = (np.arange(k) % 5).astype(np.uint8)[:, None]
        else:
            y = rng.integers(0, 2, (k, 3)).astype(np.uint8)
        data[f"{s}_labels"] = y
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **data)
    return path


def test_known_dataset_names_and_inferred_tasks(tmp_path: Path):
    pm = _npz(tmp_path / "pneumoniamnist.npz", labels="binary")
    d = medmnist.read_npz(pm)
    assert medmnist.npz_task(d, path=pm) == Task("binary", ("pneumonia",))
    assert medmnist.npz_task(d, path=pm, kind="multiclass") == Task("multiclass", ("normal", "pneumonia"))
    assert medmnist.dataset_name(tmp_path / "PneumoniaMNIST_64.npz") == "pneumoniamnist"
    other = _npz(tmp_path / "mine.npz", labels="binary")
    assert medmnist.npz_task(medmnist.read_npz(other), path=other) == Task("binary", ("label_1",))
    mc = _npz(tmp_path / "organamnist.npz", labels="multiclass")
    t = medmnist.npz_task(medmnist.read_npz(mc), path=mc)
    assert t.kind == "multiclass" and len(t.labels) == 11 and t.labels[3] == "heart"  # 5 classes seen, 11 named
    ml = _npz(tmp_path / "x.npz", labels="multilabel")
    assert medmnist.npz_task(medmnist.read_npz(ml), path=ml) == Task("multilabel", ("label_0", "label_1", "label_2"))


def test_load_split_gray_and_rgb(tmp_path: Path):
    mc = _npz(tmp_path / "bloodmnist.npz", labels="multiclass", rgb=True)
    s = medmnist.load_medmnist(mc, split="val")
    raw = np.load(mc)
    gray = (raw["val_images"].astype(np.float32) / 255.0) @ np.array([0.2989, 0.5870, 0.1140], np.float32)
    assert s.x.shape == (10, 12, 12, 1) and np.allclose(s.x[..., 0], gray, atol=1e-6)
    assert s.task.kind == "multiclass" and s.y.shape == (10, 8) and (s.y.sum(axis=1) == 1).all()
    assert (s.y.argmax(axis=1) == raw["val_labels"][:, 0]).all()
    assert s.patient_ids.tolist() == list(range(41, 51)) and s.images[0] == "00000041_000.png"
    assert medmnist.load_medmnist(mc, split="test", image_size=6).x.shape == (12, 6, 6, 1)


def test_export_then_loader_equals_direct_load(tmp_path: Path):
    npz = _npz(tmp_path / "pneumoniamnist.npz", labels="binary", rgb=False)
    info = medmnist.export_medmnist(npz, tmp_path / "exp")
    assert info["counts"] == {"train": 40, "val": 10, "test": 12} and info["pseudo_patients"] is True
    assert info["positives"]["test"] == {"pneumonia": 9} and info["task"] == {"kind": "binary", "labels": ["pneumonia"]}
    meta = loader.read_metadata(tmp_path / "exp")
    assert loader.metadata_task(meta) == Task("binary", ("pneumonia",)) and len(meta) == 62
    assert meta["split"].value_counts().to_dict() == {"train": 40, "test": 12, "val": 10}
    df = meta[meta["split"] == "test"][["image", "patient_id", "split", "pneumonia"]]
    back = loader.load_image_set(tmp_path / "exp", df, image_size=12)
    ref = medmnist.load_medmnist(npz, split="test")
    assert back.task == ref.task and back.images == ref.images
    assert np.allclose(back.x, ref.x, atol=1e-6) and (back.y == ref.y).all()
    assert main(["data", "check", "--root", str(tmp_path / "exp")]) == 0


def test_bad_npz_one_line(tmp_path: Path, capsys):
    good = _npz(tmp_path / "g.npz", labels="binary")
    bad = tmp_path / "bad.npz"
    d = dict(np.load(good))
    del d["val_labels"]
    np.savez(bad, **d)
    with pytest.raises(DataError, match=r"bad\.npz: missing array 'val_labels' \(a MedMNIST \.npz holds"):
        medmnist.read_npz(bad)
    capsys.readouterr()
    assert main(["data", "check", "--npz", str(bad)]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert str(bad) in line and "'val_labels'" in line
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match=r"junk\.npz: not a readable \.npz file"):
        medmnist.read_npz(tmp_path / "junk.npz")
    np.savez(bad, **{**d, "val_labels": np.zeros((10, 1)), "val_images": np.zeros((10, 12, 12), np.float32)})
    with pytest.raises(DataError, match=r"val_images must be \(N, S, S\) or \(N, S, S, 3\) uint8"):
        medmnist.read_npz(bad)
    np.savez(bad, **{**d, "val_labels": np.zeros((9, 1))})
    with pytest.raises(DataError, match=r"val_labels must be \(N,\) or \(N, C\) numbers with N = 10"):
        medmnist.read_npz(bad)
    with pytest.raises(DataError, match="not found"):
        medmnist.read_npz(tmp_path / "absent.npz")
    out = tmp_path / "exp"
    assert main(["data", "export-medmnist", "--npz", str(bad), "--out", str(out)]) == 2
    assert not out.exists() and not list(tmp_path.glob(".exp*"))


def test_check_npz_cli(tmp_path: Path, capsys):
    npz = _npz(tmp_path / "pneumoniamnist.npz", labels="binary")
    capsys.readouterr()
    assert main(["data", "check", "--npz", str(npz)]) == 0
    out = capsys.readouterr().out
    assert "task: binary (pneumonia)" in out and "test: 12 images; positives: pneumonia 9" in out and "pseudo-patient" in out
    assert main(["data", "export-medmnist", "--npz", str(npz), "--out", str(tmp_path / "e"), "--task", "multiclass"]) == 0
    assert Task.from_record(json.loads((tmp_path / "e" / "task.json").read_text())) == Task("multiclass", ("normal", "pneumonia"))


def test_prepare_medmnist_keeps_official_splits(tmp_path: Path):
    npz = _npz(tmp_path / "pneumoniamnist.npz", labels="binary", n=(300, 60, 40))
    cfg = DataConfig(source="medmnist", npz=str(npz), root=str(tmp_path / "mm"), hospitals=3, scheme="dirichlet",
                     alpha=0.5, image_size=12)
    p = prepare.prepare_data(cfg, seed=0, manifest_dir=tmp_path / "m")
    assert p.task == Task("binary", ("pneumonia",)) and manifest_task(p.manifest_dir) == p.task
    frames = read_manifest_dir(p.manifest_dir)
    meta = loader.read_metadata(p.root)
    official = meta.set_index("image")["split"]
    assert sorted(frames["test"]["image"]) == sorted(meta.loc[meta.split == "test", "image"])
    for n in ("hospital_a", "hospital_b", "hospital_c"):
        f = frames[n]
        assert (official[f["image"]].to_numpy() == f["split"].to_numpy()).all()  # val rows = official val images
        for split in ("train", "val"):  # every hospital trains and validates on both classes
            assert set(f.loc[f.split == split, "pneumonia"]) == {0, 1}, (n, split)
    assert sum(len(f) for f in frames.values()) == 400
    info = json.loads((p.manifest_dir / "partition.json").read_text())
    assert info["pseudo_patients"] is True and "pseudo-patient" in info["patients_note"]
    assert info["val_split"] == "official val split" and info["test_list"] == "official test split"
    assert info["positives"]["test"] == {"pneumonia": 30} and info["task"]["kind"] == "binary"
    fed = federation.load_federation(p.root, p.manifest_dir, image_size=12)
    assert fed.task == p.task and fed.test.y.shape == (40, 1) and fed.pooled_train().task == p.task
    # the export is cached (same npz + task) and a second seed reuses it
    stamp = (p.root / medmnist.EXPORT_MARKER).stat().st_mtime_ns
    q = prepare.prepare_data(cfg, seed=1, manifest_dir=tmp_path / "m1")
    assert q.root == p.root and (q.root / medmnist.EXPORT_MARKER).stat().st_mtime_ns == stamp
    assert not [x for x in (tmp_path / "mm").iterdir() if x.name.startswith(".")]
    # another task of the same file is another export
    r = prepare.prepare_data(dataclasses.replace(cfg, task="multiclass"), seed=0, manifest_dir=tmp_path / "m2")
    assert r.root != p.root and r.task == Task("multiclass", ("normal", "pneumonia"))


def test_chestmnist_is_medmnist_with_the_nih_task(tmp_path: Path):
    rng = np.random.default_rng(1)
    data = {}
    for s, n in (("train", 30), ("val", 6), ("test", 10)):
        data[f"{s}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        data[f"{s}_labels"] = rng.integers(0, 2, (n, 14)).astype(np.uint8)
    np.savez(tmp_path / "whatever.npz", **data)
    cfg = DataConfig(source="chestmnist", npz=str(tmp_path / "whatever.npz"), root=str(tmp_path / "cm"), hospitals=3,
                     scheme="iid", image_size=28)
    p = prepare.prepare_data(cfg, seed=0, manifest_dir=tmp_path / "m")
    assert p.task == NIH_TASK and not (p.manifest_dir / "task.json").exists()
    assert len(read_manifest_dir(p.manifest_dir)["test"]) == 10


def test_config_fields():
    d = from_dict(DataConfig, {"source": "medmnist", "npz": "x.npz", "task": "binary", "label_names": ["pneumonia"],
                               "stratify_test": True, "scheme": "view"}, source="c.yaml", prefix="data")
    assert d.task == "binary" and d.label_names == ["pneumonia"] and d.stratify_test
    with pytest.raises(ConfigError, match=r"c\.yaml: data\.task: applies to source medmnist, not 'nih'"):
        from_dict(DataConfig, {"source": "nih", "task": "binary"}, source="c.yaml", prefix="data")
    with pytest.raises(ConfigError, match=r"data\.task: must be one of"):
        from_dict(DataConfig, {"source": "medmnist", "task": "regression"}, source="c.yaml", prefix="data")
    with pytest.raises(DataError, match="data.npz: source 'medmnist' needs the path of a MedMNIST .npz"):
        prepare.prepare_data(DataConfig(source="medmnist", root="/nonexistent"), seed=0, manifest_dir=Path("/nonexistent/m"))
