"""Validation score of finished runs, for hyperparameter sweeps on validation data only
(docs/sweeps.md, "NIH sample" and "PneumoniaMNIST"; issue 15.2/15.3).

    PYTHONPATH=$PWD .venv/bin/python scripts/val_sweep.py RUN_DIR [RUN_DIR ...] [--out FILE.json]

For each run: its released model (``final_model.npz``) on the pooled validation rows of the run's
own hospitals (the run's manifests), never the test split. Prints one line per run (macro AUC over
labels with both classes in validation, accuracy at 0.5, n validation images) and optionally
writes the lines as JSON. A run directory without a released model is one clear error line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np


def validation_score(run_dir: str | Path) -> dict[str, Any]:
    """Macro AUC / accuracy at 0.5 of ``run_dir``'s released model on its hospitals' validation rows."""
    from sklearn.metrics import roc_auc_score

    from bfdl_tff.data.federation import load_federation
    from bfdl_tff.data.tasks import Task
    from bfdl_tff.evaluate import load_released_model, predict, run_model_config
    from bfdl_tff.runs import RunDir

    run = RunDir.open(run_dir)
    weights = run.load_model()
    task = Task.from_record(run.task(), source=str(run.data_file))
    mcfg = run_model_config(run, task.num_outputs, task.kind)
    rec = run.data_record()
    fed = load_federation(rec["root"], run.manifest_dir(), image_size=mcfg.input_size)
    x = np.concatenate([fed.val[n].x for n in fed.names])
    y = np.concatenate([fed.val[n].y for n in fed.names])
    p = predict(load_released_model(run, mcfg, weights), x, channels=mcfg.channels, batch_size=256)
    aucs = [roc_auc_score(y[:, j], p[:, j]) for j in range(y.shape[1]) if 0 < y[:, j].sum() < len(y)]
    cfg = run.config
    return {"run": str(run.path), "arm": cfg.arm, "seed": cfg.seed, "image_size": cfg.data.image_size,
            "client_lr": cfg.federated.client_lr, "rounds": cfg.federated.rounds,
            "n_val": int(len(y)), "val_macro_auc": float(np.mean(aucs)) if aucs else None,
            "val_labels_with_auc": len(aucs), "val_accuracy_at_0.5": float(((p >= 0.5) == (y > 0.5)).mean())}


def main(argv: list[str] | None = None) -> int:
    from bfdl_tff.errors import BfdlError
    from bfdl_tff.io_utils import atomic_write_json

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--out", default="")
    args = ap.parse_args(argv)
    rows = []
    try:
        for r in args.runs:
            row = validation_score(r)
            rows.append(row)
            print(json.dumps(row), flush=True)
    except BfdlError as e:
        print(f"val_sweep: error: {e}", file=sys.stderr)
        return 2
    if args.out:
        atomic_write_json(Path(args.out), rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
