"""Hyperparameter sweeps through the real pipeline (``bfdl train``), scored on VALIDATION data.

For every variant (a set of dotted config overrides) and seed: write the config, run
``python -m bfdl_tff.cli train`` in a subprocess (output to a log file, never a pipe: TFF's
worker would hold it open), then score the final model on the run's pooled hospital validation
split (macro AUC over the findings with both classes) and append one JSON line: the command, the
overrides, the validation numbers, the per-round train loss, the wall time, and the test macro
AUC from ``summary.json`` for the record only (choices are made on validation). Used for the
tables in docs/sweeps.md.

    PYTHONPATH=$PWD python docs/sweeps/run_sweep.py --base configs/experiments/default.yaml \\
        --arm federated --out /tmp/sweep.jsonl --variants '[{"label": "lr0.1", "federated.client_lr": 0.1}]'
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]


def write_config(base: Path, overrides: dict, path: Path) -> None:
    from bfdl_tff.config import dump_yaml, load_config

    cfg = load_config(base, overrides=overrides)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dump_yaml(cfg), encoding="utf-8")


def val_scores(run_dir: Path) -> dict:
    """Macro AUC of the run's final model on the pooled validation images of all hospitals."""
    from sklearn.metrics import roc_auc_score

    from bfdl_tff.config import load_config
    from bfdl_tff.data.federation import load_federation
    from bfdl_tff.data.labels import FINDINGS
    from bfdl_tff.models import registry
    from bfdl_tff.runs import load_weights_npz

    cfg = load_config(run_dir / "config.yaml")
    rec = json.loads((run_dir / "data.json").read_text())
    fed = load_federation(rec["root"], rec["manifest_dir"], image_size=cfg.data.image_size)
    x = np.concatenate([fed.val[n].x for n in fed.names])
    y = np.concatenate([fed.val[n].y for n in fed.names])
    model = registry.build_model(registry.load_model_config(cfg.model.config, **cfg.model.overrides))
    model.set_weights(load_weights_npz(run_dir / "final_model.npz"))
    p = model.predict(x, verbose=0, batch_size=512)
    p = p[0] if isinstance(p, list) else p
    per = {f: float(roc_auc_score(y[:, i], p[:, i])) for i, f in enumerate(FINDINGS) if 0 < y[:, i].sum() < len(y)}
    return {"val_macro_auc": round(float(np.mean(list(per.values()))), 4), "val_findings": len(per),
            "val_images": int(len(y)), "val_per_finding": {k: round(v, 3) for k, v in per.items()}}


def train_losses(run_dir: Path) -> list[float]:
    with open(run_dir / "metrics.csv", newline="") as fh:
        return [round(float(r["train_loss"]), 4) for r in csv.DictReader(fh) if r["train_loss"]]


def run_variant(base: Path, arm: str, variant: dict, seed: int, work: Path, timeout: int) -> dict:
    label = variant["label"]
    overrides = {k: v for k, v in variant.items() if k != "label"}
    overrides["seed"] = seed
    name = f"{label}-{arm}-s{seed}"
    cfg_path, run_dir, log = work / "cfg" / f"{name}.yaml", work / "runs" / name, work / "logs" / f"{name}.log"
    write_config(base, overrides, cfg_path)
    log.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "bfdl_tff.cli", "train", "--config", str(cfg_path), "--arm", arm, "--out", str(run_dir),
           "--quiet", "--overwrite", "--no-ledger"]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout, cwd=REPO).returncode
    wall = time.perf_counter() - t0
    out = {"label": label, "arm": arm, "seed": seed, "overrides": overrides, "command": " ".join(cmd[1:]),
           "returncode": rc, "process_wall_s": round(wall, 1)}
    if rc != 0:
        out["error"] = log.read_text()[-600:]
        return out
    summary = json.loads((run_dir / "summary.json").read_text())
    out.update(val_scores(run_dir))
    out.update({"train_loss": train_losses(run_dir), "run_wall_s": round(summary["wall_s"], 1),
                "round_wall_s_mean": round(summary["round_wall_s_mean"], 2), "epsilon": summary.get("epsilon"),
                "noise_multiplier": summary.get("noise_multiplier"), "num_examples": summary["num_examples"],
                "test_macro_auc_for_record_only": round(summary["final_macro_auc"], 4)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--base", required=True)
    ap.add_argument("--arm", required=True)
    ap.add_argument("--variants", required=True, help="JSON list of {label, dotted.key: value, ...}")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--out", required=True, help="JSON lines file to append to")
    ap.add_argument("--work", default="/tmp/sci/sweep")
    ap.add_argument("--timeout", type=int, default=1200)
    args = ap.parse_args()
    for variant in json.loads(args.variants):
        for seed in [int(s) for s in args.seeds.split(",")]:
            res = run_variant(Path(args.base), args.arm, variant, seed, Path(args.work), args.timeout)
            with open(args.out, "a") as fh:
                fh.write(json.dumps(res) + "\n")
            print(json.dumps({k: res.get(k) for k in ("label", "arm", "seed", "val_macro_auc", "train_loss",
                                                      "run_wall_s", "process_wall_s", "error")}), flush=True)


if __name__ == "__main__":
    main()
