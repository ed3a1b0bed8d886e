"""``bfdl evaluate`` on the real NIH sample (``../shared/nih_cxr14/real_sample_256``: 621 real
ChestX-ray14 images, one per patient; issue 15.4/15.6), with an untrained tiny model: checks the
counts against the metadata read here, that every finding has an AUC with an interval, and a
manifest subset. Skipped with the reason when the shared data is absent."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from eval_helpers import REPO_ROOT, make_run, shared_dir

from bfdl_tff.cli import main
from bfdl_tff.data.labels import FINDINGS


@pytest.fixture(scope="module")
def nih_sample() -> Path:
    p = shared_dir() / "nih_cxr14" / "real_sample_256"
    if not (p / "Data_Entry_2017.csv").is_file():
        pytest.skip(f"shared real data {p} not present (set BFDL_SHARED or put the shared folder at "
                    f"{REPO_ROOT.parent / 'shared'})")
    return p


def _positives(meta: pd.DataFrame) -> dict[str, int]:
    labels = meta["Finding Labels"].str.split("|")
    return {f: int(labels.apply(lambda ls, f=f: f in ls).sum()) for f in FINDINGS}


def test_evaluate_on_the_real_nih_sample(tmp_path, nih_sample, capsys):
    meta = pd.read_csv(nih_sample / "Data_Entry_2017.csv")
    run = make_run(tmp_path / "run")
    out = tmp_path / "nih.json"
    rc = main(["evaluate", str(run.path), "--data-root", str(nih_sample), "--out", str(out), "--bootstrap", "200"])
    stdout = capsys.readouterr().out
    assert rc == 0
    rec = json.loads(out.read_text())
    assert rec["n_images"] == len(meta) == 621 and rec["data"]["patients"] == 621
    assert rec["positives"] == _positives(meta)
    assert rec["data"]["metadata_rows_without_image"] == 0
    auc = rec["auc"]
    assert auc["undefined_labels"] == {} and auc["macro"]["n_labels"] == 14
    for f in FINDINGS:
        la = auc["per_label"][f]
        assert 0.0 <= la["low"] <= la["auc"] <= la["high"] <= 1.0
    # Hernia (20 positives) never loses all of them in 200 resamples of 621 images (p ~ e^-20)
    assert auc["per_label"]["Hernia"]["resamples_undefined"] == 0
    acc = rec["accuracy"]["per_label"]
    assert acc["Hernia"]["all_negative_accuracy"] == pytest.approx(1 - 20 / 621)
    assert "621 images, 621 patients" in stdout


def test_manifest_subset_of_the_real_sample(tmp_path, nih_sample):
    meta = pd.read_csv(nih_sample / "Data_Entry_2017.csv").sort_values("Image Index").head(60)
    pos = _positives(meta)
    man = pd.DataFrame({"image": meta["Image Index"], "patient_id": meta["Patient ID"], "split": "test"})
    labels = meta["Finding Labels"].str.split("|")
    for f in FINDINGS:
        man[f] = labels.apply(lambda ls, f=f: int(f in ls)).to_numpy()
    man.to_csv(tmp_path / "first60.csv", index=False)
    run = make_run(tmp_path / "run")
    out = tmp_path / "sub.json"
    assert main(["evaluate", str(run.path), "--data-root", str(nih_sample), "--manifest", str(tmp_path / "first60.csv"),
                 "--out", str(out), "--bootstrap", "100"]) == 0
    rec = json.loads(out.read_text())
    assert rec["n_images"] == 60 and rec["positives"] == pos
    absent = {f for f, n in pos.items() if n == 0}
    assert set(rec["auc"]["undefined_labels"]) == absent
    assert rec["auc"]["macro"]["labels"] == [f for f in FINDINGS if f not in absent]
