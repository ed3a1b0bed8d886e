"""The synthetic NIH-layout generator: layout, determinism, real label statistics, site shift,
masks/boxes, and that a small CNN learns it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bfdl_tff.data import loader, partition, synth
from bfdl_tff.data.labels import FINDINGS
from bfdl_tff.errors import DataError


@pytest.fixture(scope="module")
def ds(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "ds"
    synth.synthesize(root, n_images=400, size=32, seed=5, n_sites=3)
    return root


def test_layout_and_marker(ds: Path):
    for name in ("Data_Entry_2017.csv", "BBox_List_2017.csv", synth.SITES_FILE, synth.MARKER, synth.INFO):
        assert (ds / name).is_file(), name
    assert "NOT NIH" in (ds / synth.MARKER).read_text()
    assert len(list((ds / "images").glob("*.png"))) == 400
    assert len(list((ds / "masks").glob("*.png"))) == 400
    header = (ds / "Data_Entry_2017.csv").read_text().splitlines()[0]
    assert header == synth.DATA_ENTRY_HEADER_2017
    assert loader.detect_data_entry_layout(ds / "Data_Entry_2017.csv") == "2017"
    info = json.loads((ds / synth.INFO).read_text())
    assert info["synthetic"] is True and info["n_images"] == 400


def test_several_images_per_patient_and_names(ds: Path):
    meta = loader.read_metadata(ds)
    assert len(meta) == 400
    per = meta.groupby("patient_id").size()
    assert per.max() > 1 and per.mean() > 1.5
    assert (meta["image"].str.split("_").str[0].astype(int) == meta["patient_id"]).all()
    assert set(meta["site"]) == {0, 1, 2}


def test_deterministic(tmp_path: Path, ds: Path):
    other = tmp_path / "again"
    synth.synthesize(other, n_images=400, size=32, seed=5, n_sites=3)
    for name in ("Data_Entry_2017.csv", "BBox_List_2017.csv", synth.SITES_FILE):
        assert (other / name).read_bytes() == (ds / name).read_bytes()
    for img in ("00000001_000.png", sorted(p.name for p in (ds / "images").iterdir())[-1]):
        assert (other / "images" / img).read_bytes() == (ds / "images" / img).read_bytes()
    third = tmp_path / "seed6"
    synth.synthesize(third, n_images=400, size=32, seed=6, n_sites=3)
    assert (third / "Data_Entry_2017.csv").read_bytes() != (ds / "Data_Entry_2017.csv").read_bytes()


def test_refuses_to_overwrite(ds: Path):
    with pytest.raises(DataError, match="already exists"):
        synth.synthesize(ds, n_images=10, size=32, seed=0)


def test_label_sampler_matches_real_statistics():
    stats = synth.load_label_stats()
    s = synth.default_label_sampler()
    y = s.sample(np.random.default_rng(123), 60000)
    prev = np.array([stats["per_label_prevalence"][f] for f in FINDINGS])
    got = y.mean(axis=0)
    tol = 4 * np.sqrt(prev * (1 - prev) / len(y)) + 0.003
    assert (np.abs(got - prev) < tol).all(), (got, prev)
    assert abs((y.sum(axis=1) == 0).mean() - stats["no_finding_fraction"]) < 0.01
    # co-occurrence: strongest real pairs stay positively associated
    co = y.T.astype(np.int64) @ y / len(y)
    a, e = FINDINGS.index("Atelectasis"), FINDINGS.index("Effusion")
    assert co[a, e] > 1.5 * got[a] * got[e]


def test_synth_prevalence_close_to_real(tmp_path: Path):
    root = tmp_path / "big"
    info = synth.synthesize(root, n_images=3000, size=8, seed=1, write_masks=False)
    stats = synth.load_label_stats()
    got = np.array([info["per_label_count"][f] for f in FINDINGS]) / 3000
    prev = np.array([stats["per_label_prevalence"][f] for f in FINDINGS])
    # patients share labels across images: allow a design effect of ~4
    tol = 4 * np.sqrt(4 * prev * (1 - prev) / 3000) + 0.005
    assert (np.abs(got - prev) < tol).all(), dict(zip(FINDINGS, np.round(got - prev, 4)))


def test_v2020_layout_and_no_site_shift(tmp_path: Path):
    a, b = tmp_path / "a", tmp_path / "b"
    synth.synthesize(a, n_images=150, size=32, seed=2, layout="v2020", site_shift=False, write_masks=False)
    assert loader.detect_data_entry_layout(a / "Data_Entry_2017.csv") == "v2020"
    synth.synthesize(b, n_images=150, size=32, seed=2, layout="v2020", site_shift=True, write_masks=False)
    assert not (a / "masks").exists()
    # same labels, different acquisition
    assert (a / "Data_Entry_2017.csv").read_bytes() == (b / "Data_Entry_2017.csv").read_bytes()


def test_site_shift_changes_intensity_statistics(tmp_path: Path):
    meta_means = {}
    for shift in (True, False):
        root = tmp_path / f"s{shift}"
        synth.synthesize(root, n_images=240, size=16, seed=3, site_shift=shift, write_masks=False)
        meta = loader.read_metadata(root)
        df = meta[["image", "patient_id"]].assign(split="train")
        for f in FINDINGS:
            df[f] = meta[f]
        s = loader.load_image_set(root, df, image_size=16)
        means = [s.x[meta["site"].to_numpy() == k].mean() for k in range(3)]
        meta_means[shift] = np.ptp(means)
    assert meta_means[True] > 0.03
    assert meta_means[False] < 0.015


def test_masks_and_boxes_follow_lesions(ds: Path):
    meta = loader.read_metadata(ds)
    df = meta[["image", "patient_id"]].assign(split="train")
    for f in FINDINGS:
        df[f] = meta[f]
    s = loader.load_image_set(ds, df, image_size=32, with_masks=True)
    assert set(np.unique(s.mask)) <= {0.0, 1.0}
    lesion = meta[["Mass", "Nodule", "Effusion"]].sum(axis=1).to_numpy() > 0
    none = meta[list(FINDINGS)].sum(axis=1).to_numpy() == 0
    area = s.mask.reshape(len(s), -1).mean(axis=1)
    assert area[lesion].mean() > 0.01
    assert area[none].max() == 0.0
    boxes = pd.read_csv(ds / "BBox_List_2017.csv")
    assert list(boxes.columns) == ["Image Index", "Finding Label", "Bbox [x", "y", "w", "h]"]
    assert set(boxes["Finding Label"]) <= {"Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax"}
    mass = boxes[boxes["Finding Label"] == "Mass"]
    assert set(mass["Image Index"]) <= set(meta.loc[meta["Mass"] == 1, "image"])
    assert (mass["w"] > 0).all() and (mass["Bbox [x"] + mass["w"] <= 32).all()


def _macro_auc(y, p):
    from sklearn.metrics import roc_auc_score

    aucs = [roc_auc_score(y[:, i], p[:, i]) for i in range(y.shape[1]) if 0 < y[:, i].sum() < len(y)]
    return float(np.mean(aucs)), len(aucs)


def _cnn_auc(tmp: Path, *, n: int, size: int, epochs: int, widths=(16, 32, 32), lr: float = 2e-3) -> float:
    import tensorflow as tf

    root = tmp / f"learn{size}"
    synth.synthesize(root, n_images=n, size=size, seed=11, write_masks=False)
    meta = loader.read_metadata(root)
    parts = partition.partition(meta, hospitals=1, scheme="iid", seed=0, test_fraction=0.25, val_fraction=0.0)
    tr = loader.load_image_set(root, parts["hospital_a"], image_size=size)
    te = loader.load_image_set(root, parts["test"], image_size=size)
    tf.keras.utils.set_random_seed(0)
    L = tf.keras.layers

    def blk(f):
        return [L.Conv2D(f, 3, padding="same", use_bias=False), L.BatchNormalization(), L.ReLU(), L.MaxPool2D()]

    model = tf.keras.Sequential([L.Input((size, size, 1))] + [lay for w in widths for lay in blk(w)]
                                + [L.GlobalAveragePooling2D(), L.Dense(14, activation="sigmoid")])
    model.compile(tf.keras.optimizers.Adam(lr), "binary_crossentropy")
    model.fit(loader.make_dataset(tr, batch_size=32, shuffle_seed=0), epochs=epochs, verbose=0)
    auc, n_labels = _macro_auc(te.y, model.predict(te.x, verbose=0))
    assert n_labels >= 10
    return auc


def test_small_cnn_learns_it_quickly(tmp_path: Path):
    """A 3-block CNN, 32 px, ~1200 training images, 10 epochs: clearly better than chance."""
    auc = _cnn_auc(tmp_path, n=1600, size=32, epochs=10)
    assert auc > 0.62, auc


@pytest.mark.slow
def test_small_cnn_learns_it_at_64px(tmp_path: Path):
    auc = _cnn_auc(tmp_path, n=3000, size=64, epochs=8, widths=(16, 32, 64, 64), lr=1e-3)
    assert auc > 0.72, auc
