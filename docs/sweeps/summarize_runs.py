"""Summarise finished runs (run directories) per arm: test macro AUC mean and spread over seeds,
the findings averaged and their test positives, train loss first -> last round, wall times,
per-hospital epsilons. Prints one JSON document (the tables of docs/sweeps.md are taken from it).

    PYTHONPATH=$PWD python docs/sweeps/summarize_runs.py RUN_DIR [RUN_DIR ...] [--times times.jsonl]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
from collections import defaultdict
from pathlib import Path


def train_loss(run: Path, row: dict) -> float:
    """The round's training loss: ``metrics.csv``'s, else (``bfdl`` arm: hospital-side statistics,
    issue 16.3) the example-weighted mean of the hospitals' own ``hospitals/*/local_metrics.csv``,
    which only the operator of a simulation holds."""
    if row.get("train_loss"):
        return float(row["train_loss"])
    pairs = []
    for f in sorted((run / "hospitals").glob("*/local_metrics.csv")):
        with open(f, newline="") as fh:
            pairs += [(float(r["train_loss"]), float(r["num_examples"] or 1)) for r in csv.DictReader(fh)
                      if r["round"] == row["round"] and r["train_loss"]]
    n = sum(w for _, w in pairs)
    return sum(v * w for v, w in pairs) / n if n else float("nan")


def test_positives(run: Path) -> dict[str, int]:
    from bfdl_tff.data.labels import FINDINGS

    rec = json.loads((run / "data.json").read_text())
    with open(Path(rec["manifest_dir"]) / "test.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {f: sum(int(r[f]) for r in rows) for f in FINDINGS}


def one(run: Path) -> dict:
    s = json.loads((run / "summary.json").read_text())
    with open(run / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    priv = json.loads((run / "privacy.json").read_text()) if (run / "privacy.json").exists() else {}
    if not isinstance(priv.get("per_hospital"), list):  # runs written before the key became a list
        priv["per_hospital"] = []
    return {
        "run": run.name, "arm": s["arm"], "seed": s["seed"], "test_macro_auc": s["final_macro_auc"],
        "test_micro_auc": s["final_micro_auc"], "findings_averaged": 14 - len(s["skipped_findings"]),
        "skipped_findings": s["skipped_findings"], "test_images": s["num_test_examples"],
        "test_positives": test_positives(run), "train_loss_first": train_loss(run, rows[0]),
        "train_loss_last": train_loss(run, rows[-1]), "test_auc_by_round": [round(float(r["test_macro_auc"]), 4) for r in rows],
        "run_wall_s": round(s["wall_s"], 1), "round_wall_s_mean": round(s["round_wall_s_mean"], 2),
        "epsilon": s.get("epsilon"), "per_hospital_epsilon": {h["hospital"]: round(h["epsilon"], 4) for h in priv.get("per_hospital", [])},
        "per_hospital_noise": {h["hospital"]: round(h["noise_multiplier"], 3) for h in priv.get("per_hospital", [])},
        "per_finding_auc": {k: (round(v, 3) if v is not None else None) for k, v in s["per_finding_auc"].items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs", nargs="+")
    ap.add_argument("--times", default="", help="JSON lines {run, process_wall_s} (the whole `bfdl train` process)")
    args = ap.parse_args()
    times = {}
    if args.times:
        for line in Path(args.times).read_text().splitlines():
            d = json.loads(line)
            times[d["run"]] = d["process_wall_s"]
    runs = [one(Path(r)) for r in args.runs if (Path(r) / "summary.json").exists()]
    for r in runs:
        r["process_wall_s"] = times.get(r["run"])
    by_arm: dict[str, list[dict]] = defaultdict(list)
    for r in runs:
        by_arm[r["arm"]].append(r)
    arms = {}
    for arm, rs in by_arm.items():
        aucs = [r["test_macro_auc"] for r in rs]
        arms[arm] = {
            "seeds": [r["seed"] for r in rs], "test_macro_auc": [round(a, 4) for a in aucs],
            "mean": round(statistics.mean(aucs), 4), "sd": round(statistics.stdev(aucs), 4) if len(aucs) > 1 else None,
            "min_test_positives_per_seed": [min(r["test_positives"].values()) for r in rs],
            "train_loss_first_last": [(round(r["train_loss_first"], 4), round(r["train_loss_last"], 4)) for r in rs],
            "run_wall_s": [r["run_wall_s"] for r in rs], "process_wall_s": [r["process_wall_s"] for r in rs],
        }
    print(json.dumps({"arms": arms, "runs": runs}, indent=1))


if __name__ == "__main__":
    main()
