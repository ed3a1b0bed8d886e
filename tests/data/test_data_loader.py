"""Loaders: NIH layouts (Data_Entry 2017 / v2020, CheXNet lists, images/ or Kaggle folders),
PNG conversions, masks from boxes, tf.data pipeline, ChestMNIST, federation, and bad input."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bfdl_tff.data import chestmnist, federation, loader, partition, synth
from bfdl_tff.data.labels import FINDINGS
from bfdl_tff.data.manifest import write_manifest
from bfdl_tff.data.tasks import NIH_TASK
from bfdl_tff.errors import DataError

HEADER_2017 = synth.DATA_ENTRY_HEADER_2017
HEADER_V2020 = synth.DATA_ENTRY_HEADER_V2020


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("loader") / "ds"
    synth.synthesize(root, n_images=240, size=32, seed=9, n_sites=3)
    return root


@pytest.fixture(scope="module")
def manifests(ds: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("man")
    parts = partition.partition(loader.read_metadata(ds), hospitals=3, scheme="iid", seed=0)
    partition.write_partition(out, parts)
    return out


def _manifest_of(meta: pd.DataFrame, split: str = "train") -> pd.DataFrame:
    df = meta[["image", "patient_id"]].assign(split=split)
    for f in FINDINGS:
        df[f] = meta[f].to_numpy()
    return df


def _write_entry(root: Path, rows: list[tuple[str, str]], *, layout: str = "2017", age: str = "45") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    header = HEADER_2017 if layout == "2017" else HEADER_V2020
    trail = "," if layout == "2017" else ""
    lines = [header] + [f"{img},{lab},0,{int(img.split('_')[0])},{age},M,PA,64,64,0.143,0.143{trail}" for img, lab in rows]
    p = root / "Data_Entry_2017.csv"
    p.write_text("\n".join(lines) + "\n")
    return p


def _png(path: Path, arr: np.ndarray, mode: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if mode == "L":
        Image.fromarray(arr, mode="L").save(path)
    elif mode == "RGB":
        Image.fromarray(np.stack([arr] * 3, -1), mode="RGB").save(path)
    elif mode == "RGBA":
        Image.fromarray(np.stack([arr] * 3 + [np.full_like(arr, 255)], -1), mode="RGBA").save(path)
    elif mode == "I;16":
        Image.fromarray(arr.astype(np.uint16) * 257).save(path)  # 16-bit grayscale
    else:  # pragma: no cover
        raise ValueError(mode)


def test_load_image_set_shapes_and_split(ds: Path, manifests: Path):
    s = loader.load_image_set(ds, manifests / "hospital_a.csv", image_size=32)
    df = pd.read_csv(manifests / "hospital_a.csv")
    assert len(s) == len(df) and s.images == df["image"].tolist()
    assert s.x.shape == (len(df), 32, 32, 1) and s.x.dtype == np.float32
    assert 0.0 <= s.x.min() and s.x.max() <= 1.0 and s.x.std() > 0.05
    assert s.y.shape == (len(df), 14) and s.y.dtype == np.float32
    assert (s.y == df[list(FINDINGS)].to_numpy()).all()
    assert s.mask is None
    v = loader.load_image_set(ds, manifests / "hospital_a.csv", image_size=16, split="val")
    assert len(v) == (df["split"] == "val").sum() > 0 and v.x.shape[1:] == (16, 16, 1)
    # pixels equal what PIL reads (RGBA files converted to gray)
    img = np.asarray(Image.open(ds / "images" / s.images[0]).convert("L"), dtype=np.float32) / 255.0
    assert np.abs(s.x[0, ..., 0] - img).max() < 0.01


def test_kaggle_folder_layout(ds: Path, manifests: Path, tmp_path: Path):
    k = tmp_path / "kaggle"
    shutil.copytree(ds, k, ignore=shutil.ignore_patterns("images", "masks"))
    names = sorted(p.name for p in (ds / "images").iterdir())
    for i, n in enumerate(names):
        d = k / f"images_{1 + i % 2:03d}" / "images"
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(ds / "images" / n, d / n)
    a = loader.load_image_set(ds, manifests / "hospital_b.csv", image_size=32)
    b = loader.load_image_set(k, manifests / "hospital_b.csv", image_size=32)
    assert np.array_equal(a.x, b.x) and a.images == b.images


def test_png_modes_converted_to_gray(tmp_path: Path):
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (48, 48), dtype=np.uint8)
    names = ["00000001_000.png", "00000002_000.png", "00000003_000.png", "00000004_000.png"]
    for n, mode in zip(names, ("L", "RGB", "RGBA", "I;16")):
        _png(tmp_path / "images" / n, arr, mode)
    _write_entry(tmp_path, [(n, "No Finding") for n in names])
    meta = loader.read_metadata(tmp_path)
    s = loader.load_image_set(tmp_path, _manifest_of(meta), image_size=48)
    for i in range(4):
        assert np.abs(s.x[i, ..., 0] - arr / 255.0).max() < 2.5 / 255, names[i]
    small = loader.load_image_set(tmp_path, _manifest_of(meta), image_size=12)
    assert small.x.shape == (4, 12, 12, 1)
    assert abs(small.x.mean() - arr.mean() / 255.0) < 0.02


def test_v2020_layout_and_age_formats(tmp_path: Path):
    for layout, age in (("v2020", "58"), ("2017", "058Y")):
        root = tmp_path / layout
        _write_entry(root, [("00000001_000.png", "Cardiomegaly|Emphysema"), ("00000001_001.png", "No Finding")],
                     layout=layout, age=age)
        assert loader.detect_data_entry_layout(root / "Data_Entry_2017.csv") == layout
        meta = loader.read_metadata(root)
        assert meta["patient_id"].tolist() == [1, 1]
        assert meta.loc[0, "Cardiomegaly"] == 1 and meta.loc[0, "Emphysema"] == 1 and meta.loc[1, list(FINDINGS)].sum() == 0
        assert meta["age"].tolist() == [58, 58]


def test_data_entry_gzip_both_layouts(tmp_path: Path):
    import gzip

    rows = [("00000001_000.png", "Cardiomegaly|Emphysema"), ("00000002_000.png", "No Finding")]
    plain = {}
    for layout in ("2017", "v2020"):
        root = tmp_path / layout
        p = _write_entry(root, rows, layout=layout)
        plain[layout] = loader.read_metadata(root)
        gz = tmp_path / f"gz{layout}" / ("Data_Entry_2017.csv.gz" if layout == "2017" else "Data_Entry_2017_v2020.csv.gz")
        gz.parent.mkdir()
        gz.write_bytes(gzip.compress(p.read_bytes()))
        assert loader.detect_data_entry_layout(gz) == layout
        meta = loader.read_metadata(gz.parent)
        assert meta.attrs["source"] == str(gz)
        pd.testing.assert_frame_equal(meta, plain[layout])
    gz.write_bytes(gzip.compress(gzip.decompress(gz.read_bytes()) + b"00000003_000.png,No Finding,0\n"))
    with pytest.raises(DataError, match=r"Data_Entry_2017_v2020\.csv\.gz: malformed CSV: line 4 has 3 fields, the v2020 layout has 11"):
        loader.read_metadata(gz.parent)
    gz.write_bytes(b"\x1f\x8b garbage")
    with pytest.raises(DataError, match=r"Data_Entry_2017_v2020\.csv\.gz: cannot read"):
        loader.read_metadata(gz.parent)


def test_chexnet_lists(tmp_path: Path):
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "train_list.txt").write_text("00000001_000.png " + " ".join(["0"] * 13 + ["1"]) + "\n")
    (tmp_path / "labels" / "test_list.txt").write_text("00000002_000.png " + " ".join(["1"] + ["0"] * 13))
    meta = loader.read_metadata(tmp_path)
    assert meta["image"].tolist() == ["00000001_000.png", "00000002_000.png"]
    assert meta["Hernia"].tolist() == [1, 0] and meta["Atelectasis"].tolist() == [0, 1]
    assert meta["list"].tolist() == ["train", "test"]
    (tmp_path / "labels" / "train_list.txt").write_text("00000001_000.png 0 1\n")
    with pytest.raises(DataError, match=r"train_list\.txt: line 1: expected an image name and 14 labels"):
        loader.read_metadata(tmp_path)


def test_masks_from_files_boxes_and_unknown(tmp_path: Path):
    arr = np.full((64, 64), 100, np.uint8)
    names = ["00000001_000.png", "00000002_000.png", "00000003_000.png"]
    for n in names:
        _png(tmp_path / "images" / n, arr, "L")
    _write_entry(tmp_path, [(names[0], "Mass"), (names[1], "Nodule"), (names[2], "No Finding")])
    # NIH format, coordinates in the PNG's pixels (64 here; 1024 for NIH)
    (tmp_path / "BBox_List_2017.csv").write_text("Image Index,Finding Label,Bbox [x,y,w,h],,,\n"
                                                 f"{names[0]},Mass,16.0,32.0,16.0,8.0,,,\n")
    m = np.zeros((64, 64), np.uint8)
    m[:8, :8] = 255
    _png(tmp_path / "masks" / names[1], m, "L")
    meta = loader.read_metadata(tmp_path)
    s = loader.load_image_set(tmp_path, _manifest_of(meta), image_size=32, with_masks=True)
    box = np.zeros((32, 32))
    box[16:20, 8:16] = 1
    assert np.array_equal(s.mask[0, ..., 0], box)
    assert s.mask[1, :4, :4].min() == 1 and s.mask[1].sum() == 16
    assert (s.mask[2] == -1).all()


def test_make_dataset_batches_shuffle_and_masks(ds: Path, manifests: Path):
    s = loader.load_image_set(ds, manifests / "hospital_a.csv", image_size=16, with_masks=True)
    n = len(s)
    batches = list(loader.make_dataset(s, batch_size=7))
    assert sum(int(b[0].shape[0]) for b in batches) == n and int(batches[0][0].shape[0]) == 7
    assert np.array_equal(np.concatenate([b[0].numpy() for b in batches]), s.x)

    def order(seed, epochs=1):
        ds_ = loader.make_dataset(s, batch_size=n, shuffle_seed=seed, epochs=epochs)
        return [np.concatenate([b[1].numpy() @ np.arange(14) + b[0].numpy().reshape(len(b[0]), -1).sum(1)]) for b in ds_]

    a1, a2, b1 = order(1), order(1), order(2)
    assert np.array_equal(a1[0], a2[0]) and not np.array_equal(a1[0], b1[0])
    two = order(1, epochs=2)
    assert len(two) == 2 and not np.array_equal(two[0], two[1])  # reshuffled every epoch
    x, (y, mask) = next(iter(loader.make_dataset(s, batch_size=4, with_masks=True)))
    assert x.shape == (4, 16, 16, 1) and y.shape == (4, 14) and mask.shape == (4, 16, 16, 1)
    s.mask = None
    with pytest.raises(DataError, match="without masks"):
        loader.make_dataset(s, batch_size=4, with_masks=True)


def test_federation(ds: Path, manifests: Path):
    fed = federation.load_federation(ds, manifests, image_size=16, with_masks=True)
    assert fed.names == ["hospital_a", "hospital_b", "hospital_c"]
    total = sum(len(fed.train[n]) + len(fed.val[n]) for n in fed.names) + len(fed.test)
    assert total == 240
    for n in fed.names:
        assert len(fed.train[n]) > 0 and len(fed.val[n]) > 0
        assert not set(fed.train[n].patient_ids) & set(fed.val[n].patient_ids)
        assert not set(fed.train[n].patient_ids) & set(fed.test.patient_ids)
        assert fed.train[n].mask is not None
    assert len(fed.pooled_train()) == sum(fed.num_examples.values())


def test_chestmnist(tmp_path: Path):
    rng = np.random.default_rng(0)
    data = {}
    for s, n in (("train", 12), ("val", 4), ("test", 6)):
        data[f"{s}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        data[f"{s}_labels"] = rng.integers(0, 2, (n, 14)).astype(np.uint8)
    npz = tmp_path / "chestmnist.npz"
    np.savez(npz, **data)
    s = loader_set = chestmnist.load_chestmnist(npz, split="val")
    assert s.x.shape == (4, 28, 28, 1) and np.allclose(s.x[..., 0], data["val_images"] / 255.0)
    assert (s.y == data["val_labels"]).all() and s.patient_ids.tolist() == [13, 14, 15, 16]
    assert chestmnist.load_chestmnist(npz, split="test", image_size=16).x.shape == (6, 16, 16, 1)
    info = chestmnist.export_chestmnist(npz, tmp_path / "exp")
    assert info["counts"] == {"train": 12, "val": 4, "test": 6}
    meta = loader.read_metadata(tmp_path / "exp")
    assert len(meta) == 22
    assert loader.metadata_task(meta) == NIH_TASK and (meta["split"] == "val").sum() == 4
    back = loader.load_image_set(tmp_path / "exp", _manifest_of(meta[meta["split"] == "val"]), image_size=28)
    assert np.allclose(back.x, loader_set.x, atol=1e-6)
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=data["train_images"])
    with pytest.raises(DataError, match=r"bad\.npz: missing arrays 'train_labels', 'val_images'"):
        chestmnist.load_chestmnist(bad, split="train")
    np.savez(bad, **{**data, "val_labels": np.zeros((4, 13))})
    with pytest.raises(DataError, match=r"val_labels: labels have shape \(4, 13\), the multilabel over 14 labels task"):
        chestmnist.load_chestmnist(bad, split="val")


# ------------------------------------------------------------------------------------ bad input


def test_missing_image_files(ds: Path, manifests: Path, tmp_path: Path):
    root = tmp_path / "copy"
    shutil.copytree(ds, root)
    df = pd.read_csv(manifests / "hospital_c.csv")
    gone = df["image"].iloc[[0, 2, 3]].tolist()
    for g in gone:
        (root / "images" / g).unlink()
    with pytest.raises(DataError) as ei:
        loader.load_image_set(root, manifests / "hospital_c.csv", image_size=16)
    msg = str(ei.value)
    assert "hospital_c.csv" in msg and f"3 of {len(df)} image file(s) missing" in msg and gone[0] in msg


def test_truncated_and_garbage_png(ds: Path, manifests: Path, tmp_path: Path):
    root = tmp_path / "copy"
    shutil.copytree(ds, root)
    df = pd.read_csv(manifests / "hospital_a.csv")
    victim = root / "images" / df["image"].iloc[5]
    victim.write_bytes(victim.read_bytes()[:60])
    with pytest.raises(DataError, match=f"{victim.name}: cannot decode PNG"):
        loader.load_image_set(root, manifests / "hospital_a.csv", image_size=16)
    victim.write_bytes(b"this is not a png at all")
    with pytest.raises(DataError, match=f"{victim.name}: cannot decode PNG"):
        loader.load_image_set(root, manifests / "hospital_a.csv", image_size=16)


def test_unknown_layout_and_malformed_csv(tmp_path: Path):
    root = tmp_path / "x"
    root.mkdir()
    (root / "Data_Entry_2017.csv").write_text("Image,Labels,Patient\n00000001_000.png,Mass,1\n")
    with pytest.raises(DataError, match=r"Data_Entry_2017\.csv: unknown Data_Entry layout"):
        loader.read_metadata(root)
    (root / "Data_Entry_2017.csv").write_text(HEADER_V2020 + "\n00000001_000.png,Mass,0,1\n")
    with pytest.raises(DataError, match=r"Data_Entry_2017\.csv: malformed CSV: line 2 has 4 fields"):
        loader.read_metadata(root)
    (root / "Data_Entry_2017.csv").write_text(HEADER_V2020 + "\n00000001_000.png,Mass,0,1,40,M,PA,1,1,1,1,EXTRA,MORE\n")
    with pytest.raises(DataError, match=r"Data_Entry_2017\.csv: malformed CSV"):
        loader.read_metadata(root)
    with pytest.raises(DataError, match="no label metadata"):
        loader.read_metadata(tmp_path)


def test_unknown_finding_duplicates_and_id_mismatch(tmp_path: Path):
    _write_entry(tmp_path / "a", [("00000001_000.png", "Mass|Lung Cancer")])
    with pytest.raises(DataError, match=r"Data_Entry_2017\.csv: unknown finding 'Lung Cancer'"):
        loader.read_metadata(tmp_path / "a")
    _write_entry(tmp_path / "b", [("00000001_000.png", "Mass"), ("00000001_000.png", "No Finding")])
    with pytest.raises(DataError, match=r"Data_Entry_2017\.csv: 1 duplicate image\(s\), first: 00000001_000\.png"):
        loader.read_metadata(tmp_path / "b")
    p = _write_entry(tmp_path / "c", [("00000001_000.png", "Mass")])
    p.write_text(p.read_text().replace(",0,1,45,", ",0,7,45,"))
    with pytest.raises(DataError, match="does not match image"):
        loader.read_metadata(tmp_path / "c")


def test_manifest_referencing_unknown_images_or_wrong_labels(ds: Path, manifests: Path, tmp_path: Path):
    df = pd.read_csv(manifests / "hospital_a.csv")
    df.loc[0, "image"] = "09999999_000.png"
    df.loc[0, "patient_id"] = 9999999
    bad = write_manifest(tmp_path / "hospital_a.csv", df)
    with pytest.raises(DataError, match=r"hospital_a\.csv: 1 image\(s\) not in the dataset metadata .*09999999_000\.png"):
        loader.load_image_set(ds, bad, image_size=16)
    df = pd.read_csv(manifests / "hospital_a.csv")
    df.loc[3, "Hernia"] = 1 - df.loc[3, "Hernia"]
    bad = write_manifest(tmp_path / "hospital_b.csv", df)
    with pytest.raises(DataError, match=r"hospital_b\.csv: labels of 1 image\(s\) differ.*stale or foreign"):
        loader.load_image_set(ds, bad, image_size=16)
    # a small revision-level difference only warns, and the manifest's labels are used
    with pytest.warns(UserWarning, match="labels of 1 image"):
        s = loader.load_image_set(ds, bad, image_size=16, max_label_mismatch=0.05)
    assert s.y[3, -1] == df.loc[3, "Hernia"]


def test_bad_bbox_file(tmp_path: Path):
    _png(tmp_path / "images" / "00000001_000.png", np.zeros((8, 8), np.uint8), "L")
    _write_entry(tmp_path, [("00000001_000.png", "Mass")])
    meta = loader.read_metadata(tmp_path)
    box = tmp_path / "BBox_List_2017.csv"
    for text, pattern in (
        ("Image Index,Finding Label,Bbox [x,y,w,h]\n00000001_000.png,Tumour,1,1,2,2\n", r"line 2: unknown finding 'Tumour'"),
        ("Image Index,Finding Label,Bbox [x,y,w,h]\n00000001_000.png,Mass,1,1,2\n", r"line 2: expected 6 fields"),
        ("Image,Label,Box\n", r"unknown bounding-box file layout"),
    ):
        box.write_text(text)
        with pytest.raises(DataError, match=pattern) as ei:
            loader.load_image_set(tmp_path, _manifest_of(meta), image_size=8, with_masks=True)
        assert str(box) in str(ei.value)
