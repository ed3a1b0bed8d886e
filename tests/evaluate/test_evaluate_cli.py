"""``bfdl evaluate`` end to end (issue 15.4) on a tiny run directory (a small_cnn released model,
no TFF training) and a tiny NIH-layout dataset of mixed PNG flavours (8/16-bit gray, RGB, RGBA):
the numbers are checked against scikit-learn on independently computed predictions; then every
bad input gives one line, exit 2 and writes nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from eval_helpers import (ABSENT_LABEL, SIGNAL_LABEL, TINY_MODEL, files_under, make_run, one_error_line,
                          write_binary_dataset, write_nih_dataset)
from sklearn.metrics import roc_auc_score

from bfdl_tff.cli import main
from bfdl_tff.data.labels import FINDINGS
from bfdl_tff.hashing import weights_digest

BINARY_TASK = {"kind": "binary", "labels": ["pneumonia"]}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> tuple[Path, dict]:
    root = tmp_path_factory.mktemp("ext") / "hospital_x"
    return root, write_nih_dataset(root, n=48, size=24, seed=0)


@pytest.fixture(scope="module")
def trained(dataset) -> list[np.ndarray]:
    """small_cnn (16 px) fitted for a few seconds on the dataset: learns the bright-image label."""
    import tensorflow as tf

    from bfdl_tff.data.external import load_external
    from bfdl_tff.models import registry

    ext = load_external(dataset[0], image_size=16)
    model = registry.build_model(registry.load_model_config("small_cnn", **TINY_MODEL), seed=1)
    model.compile(optimizer=tf.keras.optimizers.Adam(0.02), loss="binary_crossentropy")
    model.fit(ext.images.x, ext.images.y, epochs=25, batch_size=16, verbose=0)
    return model.get_weights()


def _scores(weights: list[np.ndarray], root: Path) -> tuple[np.ndarray, np.ndarray]:
    """Predictions computed here, outside bfdl_tff.evaluate: (y, scores)."""
    from bfdl_tff.data.external import load_external
    from bfdl_tff.models import registry

    model = registry.build_model(registry.load_model_config("small_cnn", **TINY_MODEL))
    model.set_weights(weights)
    ext = load_external(root, image_size=16)
    return ext.images.y, model.predict(ext.images.x, verbose=0)


def test_evaluate_trained_model_end_to_end(tmp_path, dataset, trained, capsys):
    root, truth = dataset
    thresholds = {f: 0.3 + 0.01 * j for j, f in enumerate(FINDINGS)}
    run = make_run(tmp_path / "run", weights=trained, seed=4,
                   summary={"thresholds": thresholds, "threshold_rule": "youden_val",
                            "final_model_digest": weights_digest(trained), "final_macro_auc": 0.7, "synthetic": True})
    out = tmp_path / "results" / "ext.json"
    rc = main(["evaluate", str(run.path), "--data-root", str(root), "--out", str(out), "--bootstrap", "300",
               "--seed", "3", "--batch-size", "7"])
    stdout = capsys.readouterr().out
    assert rc == 0
    rec = json.loads(out.read_text())
    y, s = _scores(trained, root)
    n = len(truth["images"])
    assert rec["n_images"] == n and rec["data"]["images"] == n and rec["data"]["image_size"] == 16
    assert rec["positives"] == {f: int(truth["y"][:, j].sum()) for j, f in enumerate(FINDINGS)}
    assert rec["task"] == {"kind": "multilabel", "labels": list(FINDINGS)}
    auc = rec["auc"]
    defined = [f for f in FINDINGS if f != ABSENT_LABEL]
    for f in defined:
        j = FINDINGS.index(f)
        la = auc["per_label"][f]
        assert la["auc"] == pytest.approx(roc_auc_score(y[:, j], s[:, j]), abs=1e-6), f
        assert la["low"] <= la["auc"] <= la["high"] and la["resamples_used"] + la["resamples_undefined"] == 300
    # the learned label is well separated: its interval excludes chance
    assert auc["per_label"][SIGNAL_LABEL]["auc"] > 0.9 and auc["per_label"][SIGNAL_LABEL]["low"] > 0.6
    # a label without positives is undefined (null + reason), never 0.5, and not in the macro mean
    assert auc["per_label"][ABSENT_LABEL]["auc"] is None and auc["per_label"][ABSENT_LABEL]["reason"] == "no positives"
    assert auc["undefined_labels"] == {ABSENT_LABEL: "no positives"}
    assert auc["macro"]["labels"] == defined and auc["macro"]["n_labels"] == 13
    assert auc["macro"]["estimate"] == pytest.approx(np.mean([roc_auc_score(y[:, FINDINGS.index(f)], s[:, FINDINGS.index(f)])
                                                              for f in defined]), abs=1e-6)
    assert auc["micro"]["estimate"] == pytest.approx(roc_auc_score(y.ravel(), s.ravel()), abs=1e-6)
    assert (auc["n_boot"], auc["seed"]) == (300, 3)
    # accuracy at the run's thresholds, at 0.5 and the all-negative baseline
    acc = rec["accuracy"]
    assert acc["thresholds_source"].startswith("summary.json (youden_val")
    for j, f in enumerate(FINDINGS):
        a = acc["per_label"][f]
        assert a["threshold"] == pytest.approx(thresholds[f])
        assert a["accuracy"] == pytest.approx(((s[:, j] >= thresholds[f]) == (y[:, j] > 0.5)).mean())
        assert a["accuracy_at_0.5"] == pytest.approx(((s[:, j] >= 0.5) == (y[:, j] > 0.5)).mean())
        assert a["all_negative_accuracy"] == pytest.approx(1 - y[:, j].mean())
    # the run's identity
    r = rec["run"]
    assert (r["name"], r["arm"], r["seed"], r["model"]) == ("evaltest", "federated", 4, "small_cnn")
    assert r["final_model_digest"] == weights_digest(trained) and r["digest_matches_summary"] is True
    # the printed table
    assert f"{n} images" in stdout and "(no positives)" in stdout and f"wrote {out}" in stdout
    assert any(ln.startswith(SIGNAL_LABEL) for ln in stdout.splitlines())
    assert "macro AUC over 13 label(s)" in stdout
    # deterministic given the seed
    out2 = tmp_path / "again.json"
    assert main(["evaluate", str(run.path), "--data-root", str(root), "--out", str(out2), "--bootstrap", "300",
                 "--seed", "3"]) == 0
    assert json.loads(out2.read_text())["auc"] == auc


def test_default_out_manifest_rows_and_fixed_thresholds(tmp_path, dataset, capsys):
    root, truth = dataset
    run = make_run(tmp_path / "run")  # untrained, no summary.json
    rows = truth["images"][:20]
    man = pd.DataFrame({"image": rows, "patient_id": [int(r[:8]) for r in rows], "split": "test"})
    for j, f in enumerate(FINDINGS):
        man[f] = truth["y"][:20, j].astype(int)
    man_path = tmp_path / "subset.csv"
    man.to_csv(man_path, index=False)
    rc = main(["evaluate", str(run.path), "--data-root", str(root), "--manifest", str(man_path), "--bootstrap", "50"])
    assert rc == 0
    out = run.evaluations_dir / f"{root.name}-subset.json"
    assert out.is_file() and f"wrote {out}" in capsys.readouterr().out
    rec = json.loads(out.read_text())
    assert rec["n_images"] == 20 and rec["data"]["manifest"] == str(man_path.resolve())
    assert rec["accuracy"]["thresholds_source"] == "fixed 0.5 (no summary.json in the run)"
    assert all(a["threshold"] == 0.5 for a in rec["accuracy"]["per_label"].values())
    assert rec["run"]["digest_matches_summary"] is None
    # every label without positives (or negatives) in these 20 rows is undefined with its reason
    for j, f in enumerate(FINDINGS):
        pos = int(truth["y"][:20, j].sum())
        la = rec["auc"]["per_label"][f]
        if pos in (0, 20):
            assert la["auc"] is None and la["reason"] == ("no positives" if pos == 0 else "no negatives")
        else:
            assert la["auc"] is not None and f in rec["auc"]["macro"]["labels"]


def test_binary_run_on_binary_dataset(tmp_path, capsys):
    from bfdl_tff.models import registry

    root = tmp_path / "pneu"
    write_binary_dataset(root, n=12, size=16)
    mcfg = registry.load_model_config("small_cnn", **TINY_MODEL, num_findings=1)
    run = make_run(tmp_path / "run", weights=registry.build_model(mcfg, seed=0).get_weights(), task=BINARY_TASK)
    out = tmp_path / "b.json"
    assert main(["evaluate", str(run.path), "--data-root", str(root), "--out", str(out), "--bootstrap", "40"]) == 0
    rec = json.loads(out.read_text())
    assert rec["task"] == BINARY_TASK and rec["run"]["outputs"] == 1 and rec["positives"] == {"pneumonia": 6}
    assert list(rec["auc"]["per_label"]) == ["pneumonia"] and rec["auc"]["macro"]["n_labels"] == 1
    assert "binary (pneumonia)" in capsys.readouterr().out


# --------------------------------------------------------------------------------------------
# Bad input: one line, exit code 2, nothing written
# --------------------------------------------------------------------------------------------


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _refused(argv: list[str], capsys, *, watch: list[Path], expect: list[str]) -> str:
    before = {p: files_under(p) for p in watch}
    rc = main(argv)
    line = one_error_line(capsys.readouterr().err)
    assert rc == 2, line
    for e in expect:
        assert e in line, line
    for p in watch:
        assert files_under(p) == before[p], f"{p} changed"
    return line


def test_bad_data_root_with_unlisted_image(tmp_path, dataset, capsys):
    root = _copy(dataset[0], tmp_path / "data")
    shutil.copy(root / "images" / "00000001_000.png", root / "images" / "00000999_000.png")
    run = make_run(tmp_path / "run")
    out = tmp_path / "o" / "x.json"
    _refused(["evaluate", str(run.path), "--data-root", str(root), "--out", str(out)], capsys,
             watch=[tmp_path], expect=[str(root), "not in the metadata", "00000999_000.png"])


def test_bad_run_without_released_model(tmp_path, dataset, capsys):
    run = make_run(tmp_path / "run")
    run.final_model_file.unlink()
    _refused(["evaluate", str(run.path), "--data-root", str(dataset[0])], capsys,
             watch=[tmp_path], expect=["final_model.npz", "no released model"])


def test_bad_not_a_run_directory(tmp_path, dataset, capsys):
    (tmp_path / "empty").mkdir()
    _refused(["evaluate", str(tmp_path / "empty"), "--data-root", str(dataset[0])], capsys,
             watch=[tmp_path], expect=["not a run directory"])


def test_bad_nih_model_on_binary_dataset(tmp_path, capsys):
    root = tmp_path / "pneu"
    write_binary_dataset(root)
    run = make_run(tmp_path / "run")
    _refused(["evaluate", str(run.path), "--data-root", str(root)], capsys, watch=[tmp_path],
             expect=["binary (pneumonia)", "the model's multilabel over 14 labels"])


def test_bad_binary_model_on_nih_dataset(tmp_path, dataset, capsys):
    from bfdl_tff.models import registry

    mcfg = registry.load_model_config("small_cnn", **TINY_MODEL, num_findings=1)
    run = make_run(tmp_path / "run", weights=registry.build_model(mcfg).get_weights(), task=BINARY_TASK)
    _refused(["evaluate", str(run.path), "--data-root", str(dataset[0])], capsys, watch=[tmp_path, dataset[0]],
             expect=["multilabel over 14 labels", "the model's binary (pneumonia)"])


def test_bad_weights_that_do_not_fit_the_runs_model(tmp_path, dataset, capsys):
    from bfdl_tff.models import registry

    other = registry.build_model(registry.load_model_config("small_cnn", **{**TINY_MODEL, "width": 8})).get_weights()
    run = make_run(tmp_path / "run", weights=other)
    _refused(["evaluate", str(run.path), "--data-root", str(dataset[0])], capsys, watch=[tmp_path],
             expect=["final_model.npz", "expects"])


def test_bad_unreadable_image(tmp_path, dataset, capsys):
    root = _copy(dataset[0], tmp_path / "data")
    (root / "images" / "00000005_000.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    run = make_run(tmp_path / "run")
    _refused(["evaluate", str(run.path), "--data-root", str(root), "--out", str(tmp_path / "x.json")], capsys,
             watch=[tmp_path], expect=["00000005_000.png"])


def test_bad_out_is_a_directory(tmp_path, dataset, capsys):
    run = make_run(tmp_path / "run")
    (tmp_path / "outdir").mkdir()
    _refused(["evaluate", str(run.path), "--data-root", str(dataset[0]), "--out", str(tmp_path / "outdir")], capsys,
             watch=[tmp_path], expect=[str(tmp_path / "outdir"), "is a directory"])


def test_bad_out_under_a_file(tmp_path, dataset, capsys):
    run = make_run(tmp_path / "run")
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub" / "e.json"
    _refused(["evaluate", str(run.path), "--data-root", str(dataset[0]), "--out", str(out)], capsys,
             watch=[tmp_path], expect=[str(out), "is not a directory"])


def test_bad_out_unwritable(tmp_path, dataset, capsys):
    target = Path("/proc/bfdl-evaluate-test.json")  # not writable even for root
    if not Path("/proc/self").is_dir():
        pytest.skip("no /proc on this system: the unwritable-directory case needs it")
    run = make_run(tmp_path / "run")
    _refused(["evaluate", str(run.path), "--data-root", str(dataset[0]), "--out", str(target)], capsys,
             watch=[tmp_path], expect=[str(target), "cannot write"])
    assert not target.exists()


def test_bad_bootstrap_count(tmp_path, dataset, capsys):
    run = make_run(tmp_path / "run")
    _refused(["evaluate", str(run.path), "--data-root", str(dataset[0]), "--bootstrap", "0"], capsys,
             watch=[tmp_path], expect=["--bootstrap must be >= 1"])


def test_bad_out_over_the_runs_own_files(tmp_path, dataset, capsys):
    run = make_run(tmp_path / "run", summary={"final_macro_auc": 0.7})
    before = run.summary_file.read_bytes()
    _refused(["evaluate", str(run.path), "--data-root", str(dataset[0]), "--out", str(run.summary_file)], capsys,
             watch=[tmp_path], expect=["summary.json", "only", "evaluations/ may be written"])
    assert run.summary_file.read_bytes() == before
