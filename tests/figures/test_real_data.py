"""``python -m paper_figures real-data`` (issue 15): the "Real data" section from run summaries only:
mean and 95 % t-interval over seeds per arm, test counts, the published MedMNIST v2 rows beside a
PneumoniaMNIST set; bad input is one error line and nothing written."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from paper_figures.__main__ import main
from paper_figures.real_data import load_published, mean_ci

BINARY = {"kind": "binary", "labels": ["pneumonia"]}


def _runs(root: Path, aucs: dict[str, list[float]], *, task=BINARY) -> Path:
    for arm, vals in aucs.items():
        for seed, auc in enumerate(vals):
            d = root / "arms" / f"{arm}-s{seed}"
            d.mkdir(parents=True)
            (d / "summary.json").write_text(json.dumps({
                "arm": arm, "seed": seed, "final_macro_auc": auc, "accuracy_at_0.5": auc - 0.1,
                "per_label_accuracy": auc - 0.05, "task": task, "num_test_examples": 624,
                "num_positives_test": {"pneumonia": 390}, "num_examples": {"a": 100, "b": 50}, "wall_s": 10.0 + seed,
                "all_negative_accuracy": 0.9,
                "epsilon": 1.0 if arm == "bfdl" else None}))
    return root


def test_mean_ci_is_the_student_t_interval():
    ci = mean_ci([0.90, 0.92, 0.94])
    half = 4.302652729911275 * 0.02 / math.sqrt(3)  # t(0.975, 2) * sd / sqrt(n)
    assert ci["mean"] == pytest.approx(0.92) and ci["lo"] == pytest.approx(0.92 - half) and ci["hi"] == pytest.approx(0.92 + half)
    assert mean_ci([0.5]) == {"n": 1, "mean": 0.5, "lo": None, "hi": None}
    assert mean_ci([])["mean"] is None


def test_real_data_section_puts_ours_beside_the_published_rows(tmp_path, capsys):
    runs = _runs(tmp_path / "pm", {"centralized": [0.95, 0.96, 0.97], "federated": [0.93, 0.94, 0.95], "bfdl": [0.7, 0.8, 0.9]})
    out = tmp_path / "out"
    assert main(["real-data", "--set", f"PneumoniaMNIST={runs}", "--out", str(out)]) == 0
    md = (out / "real_data.md").read_text()
    rec = json.loads((out / "real_data.json").read_text())
    assert md.startswith("## Real data") and "### PneumoniaMNIST" in md
    assert "Test split: 624 images; positives: 390; training images (all hospitals): 150" in md
    arms = {r["arm"]: r for r in rec["sets"][0]["arms"]}
    assert list(arms) == ["centralized", "federated", "bfdl"] and arms["bfdl"]["seeds"] == [0, 1, 2]
    assert arms["federated"]["test_macro_auc"]["mean"] == pytest.approx(0.94)
    assert "| federated | 0,1,2 | 0.940 [" in md and "| ResNet-18 (28) | 28 | 0.944 | 0.854 |" in md
    assert "Yang" in md and rec["published"]["rows"][0]["method"] == "ResNet-18 (28)"


def test_reproduction_form_label_and_runs(tmp_path):
    runs = _runs(tmp_path / "pm", {"federated": [0.9, 0.92, 0.94]})
    out = tmp_path / "out"
    assert main(["real-data", "--runs", str(runs), "--out", str(out), "--label", "PneumoniaMNIST (real)"]) == 0
    assert "### PneumoniaMNIST (real)" in (out / "real_data.md").read_text()
    assert main(["real-data", "--out", str(out)]) == 2


def test_multilabel_set_has_no_published_rows(tmp_path):
    nih = {"kind": "multilabel", "labels": ["Atelectasis", "Hernia"]}
    runs = _runs(tmp_path / "nih", {"federated": [0.6, 0.62]}, task=nih)
    out = tmp_path / "out"
    assert main(["real-data", "--set", f"real NIH images, 621-image sample={runs}", "--out", str(out)]) == 0
    md = (out / "real_data.md").read_text()
    assert "### real NIH images, 621-image sample" in md and "Published" not in md and "ACC at 0.5" not in md
    assert "| federated | 0,1 | 0.610 [" in md and "| 0.900 |" in md  # all-negative baseline beside per-label ACC


def test_bad_input_is_one_line_and_nothing_written(tmp_path, capsys):
    out = tmp_path / "out"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["real-data", "--set", f"x={empty}", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no run summaries" in err[0] and not out.exists()
    assert main(["real-data", "--set", "no-equals-sign", "--out", str(out)]) == 2
    bad = tmp_path / "bad" / "arms" / "x"
    bad.mkdir(parents=True)
    (bad / "summary.json").write_text("{not json")
    assert main(["real-data", "--set", f"x={tmp_path / 'bad'}", "--out", str(out)]) == 2
    assert "unreadable run summary" in capsys.readouterr().err and not out.exists()


def test_published_table_is_cited_and_complete():
    pub = load_published()
    assert "Scientific Data" in pub["citation"] and "2023" in pub["citation"]
    rows = {r["method"]: (r["auc"], r["acc"]) for r in pub["rows"]}
    assert rows["ResNet-18 (28)"] == (0.944, 0.854) and rows["ResNet-50 (224)"] == (0.962, 0.884)
    assert len(rows) == 7
