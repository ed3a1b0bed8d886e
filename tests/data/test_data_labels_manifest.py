"""Labels and manifests: parsing, validation, atomic deterministic writes, disjointness."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bfdl_tff.data import labels, manifest
from bfdl_tff.data.labels import FINDINGS
from bfdl_tff.errors import DataError


def _frame(names, pids, split="train"):
    df = pd.DataFrame({"image": names, "patient_id": pids, "split": split})
    rng = np.random.default_rng(0)
    for f in FINDINGS:
        df[f] = rng.integers(0, 2, len(names))
    return df


def test_findings_order_and_count():
    assert labels.NUM_FINDINGS == 14
    assert labels.FINDINGS[0] == "Atelectasis" and labels.FINDINGS[-1] == "Hernia"
    assert labels.FINDINGS[12] == "Pleural_Thickening"


def test_parse_and_format_roundtrip():
    v = labels.parse_finding_labels("Cardiomegaly|Emphysema")
    assert v.tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0]
    assert labels.format_finding_labels(v) == "Cardiomegaly|Emphysema"
    assert labels.parse_finding_labels("No Finding").sum() == 0
    assert labels.format_finding_labels(np.zeros(14)) == "No Finding"
    assert labels.parse_finding_labels("Infiltrate")[3] == 1  # BBox-file spelling


def test_unknown_finding_names_the_source():
    with pytest.raises(DataError, match=r"entries\.csv: unknown finding 'Pneumonitis'"):
        labels.parse_finding_labels("Mass|Pneumonitis", source="entries.csv")


def test_patient_id_from_image():
    assert labels.patient_id_from_image("00000001_000.png") == 1
    assert labels.patient_id_from_image("00030805_002.png") == 30805
    with pytest.raises(DataError):
        labels.patient_id_from_image("img1.png")


@pytest.mark.parametrize("ext", [".csv", ".csv.gz"])
def test_write_read_roundtrip_and_bytes_deterministic(tmp_path: Path, ext: str):
    df = _frame(["00000002_000.png", "00000001_000.png", "00000001_001.png"], [2, 1, 1])
    df.loc[0, "split"] = "val"
    p = manifest.write_manifest(tmp_path / f"hospital_a{ext}", df)
    back = manifest.read_manifest(p)
    assert list(back.columns) == list(manifest.MANIFEST_COLUMNS)
    assert back["image"].tolist() == df["image"].tolist()
    assert (back[list(FINDINGS)].to_numpy() == df[list(FINDINGS)].to_numpy()).all()
    first = p.read_bytes()
    manifest.write_manifest(tmp_path / f"hospital_a{ext}", df)
    assert p.read_bytes() == first
    if ext == ".csv.gz":
        assert first[4:8] == b"\x00\x00\x00\x00"  # gzip mtime 0
        assert gzip.decompress(first).startswith(b"image,patient_id,split,Atelectasis")


@pytest.mark.parametrize(
    "mutate, pattern",
    [
        (lambda d: d.drop(columns=["Hernia"]), r"missing columns \['Hernia'\]"),
        (lambda d: d.assign(Extra=1), r"unknown columns \['Extra'\]"),
        (lambda d: d.assign(split="test"), r"split 'test' not allowed"),
        (lambda d: d.assign(Mass=2), r"column Mass must be 0 or 1"),
        (lambda d: d.assign(patient_id="x"), r"patient_id 'x'"),
        (lambda d: d.assign(image="00000001_000.png"), r"duplicate image"),
    ],
)
def test_validation_errors_name_the_file(tmp_path: Path, mutate, pattern):
    df = mutate(_frame(["00000001_000.png", "00000002_000.png"], [1, 2]))
    p = tmp_path / "hospital_a.csv"
    df.to_csv(p, index=False)
    with pytest.raises(DataError, match=pattern) as ei:
        manifest.read_manifest(p)
    assert str(p) in str(ei.value)
    # writing the same frame fails before touching the disk
    q = tmp_path / "out" / "hospital_b.csv"
    with pytest.raises(DataError):
        manifest.write_manifest(q, df)
    assert not q.exists()


def test_patient_in_train_and_val_rejected(tmp_path: Path):
    df = _frame(["00000001_000.png", "00000001_001.png"], [1, 1])
    df.loc[1, "split"] = "val"
    with pytest.raises(DataError, match="more than one split"):
        manifest.write_manifest(tmp_path / "hospital_a.csv", df)


def test_malformed_csv(tmp_path: Path):
    p = tmp_path / "hospital_a.csv"
    p.write_bytes(b"\x00\xff\xfe garbage")
    with pytest.raises(DataError, match=str(p)):
        manifest.read_manifest(p)
    g = tmp_path / "hospital_b.csv.gz"
    g.write_bytes(b"not gzip")
    with pytest.raises(DataError, match=str(g)):
        manifest.read_manifest(g)


def test_hospital_names_and_dir_crosscheck(tmp_path: Path):
    manifest.write_manifest(tmp_path / "hospital_b.csv", _frame(["00000003_000.png"], [3]))
    manifest.write_manifest(tmp_path / "hospital_a.csv.gz", _frame(["00000001_000.png"], [1]))
    manifest.write_manifest(tmp_path / "test.csv", _frame(["00000002_000.png"], [2], split="test"))
    (tmp_path / "partition.json").write_text("{}")
    assert manifest.hospital_names(tmp_path) == ["hospital_a", "hospital_b"]
    frames = manifest.read_manifest_dir(tmp_path)
    assert list(frames) == ["hospital_a", "hospital_b", "test"]
    # a patient shared between a hospital and the test split
    manifest.write_manifest(tmp_path / "test.csv", _frame(["00000003_001.png"], [3], split="test"))
    with pytest.raises(DataError, match=r"patient\(s\) of test also in hospital_b"):
        manifest.read_manifest_dir(tmp_path)


def test_patients_shared_between_hospitals(tmp_path: Path):
    manifest.write_manifest(tmp_path / "hospital_a.csv", _frame(["00000001_000.png"], [1]))
    manifest.write_manifest(tmp_path / "hospital_b.csv", _frame(["00000001_001.png"], [1]))
    manifest.write_manifest(tmp_path / "test.csv", _frame(["00000002_000.png"], [2], split="test"))
    with pytest.raises(DataError, match="patient-disjoint"):
        manifest.read_manifest_dir(tmp_path)


def test_missing_dir_and_manifest(tmp_path: Path):
    with pytest.raises(DataError, match="manifest directory not found"):
        manifest.hospital_names(tmp_path / "nope")
    with pytest.raises(DataError, match="no hospital manifests"):
        manifest.hospital_names(tmp_path)
    with pytest.raises(DataError, match="manifest not found"):
        manifest.read_manifest(tmp_path / "hospital_a.csv")
