"""Ledger performance tables (paper sections 3.3, 3.4 and 3.6; claims C4, C6 and C11).

Rows (paper value in brackets where it has one):

* from the benchmark ``runs/ledger_bench/bench.json`` (``bfdl ledger bench --json``):
  throughput tx/s [211], commit latency p50/p99 ms, block interval ms [block processing < 500],
  bytes per transaction, replicas, transport, heads agree;
* from the B-FDL runs' ``ledger/ledger_summary.json``: transactions per federated round (mean,
  min, max) [50-70]; ledger processing per round and per transaction (``ledger_seconds``: hashing,
  off-chain storage, signing, PBFT commit, run on the hook's background thread) [23.4 ms per tx];
  PBFT commit per round (``commit_seconds``); the time training waited for the hook
  (``hook_seconds``: copying and enqueuing the round) [convergence not slowed]; bytes on-chain
  and off-chain scaled to 100 rounds (``bytes / rounds × 100``) [4.3 MB per 100 rounds].

Writes ``ledger_tables.{csv,md}`` and ``ledger_tables.{png,pdf}`` (tx per round, and on/off-chain
bytes per 100 rounds).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from bfdl_tff.io_utils import atomic_write_text
from paper_figures import results as R
from paper_figures.common import Output
from paper_figures.style import fmt, markdown_table, new_figure, no_data, save_figure, write_csv
from paper_figures.table33 import ledger_seconds

NAME = "ledger_tables"

BENCH_ROWS = (
    ("tx_per_s", "Throughput (tx/s)", "211"),
    ("latency_ms_p50", "Commit latency p50 (ms)", "23.4 (per tx overhead)"),
    ("latency_ms_p99", "Commit latency p99 (ms)", "—"),
    ("block_interval_ms", "Block interval (ms)", "< 500 (block processing)"),
    ("bytes_per_tx", "Bytes per transaction", "—"),
    ("replicas", "Replicas", "— (Fabric, PBFT claimed)"),
    ("transactions", "Transactions in the benchmark", "—"),
    ("ed25519_bound_tx_per_s", "Ed25519 bound (tx/s, cores x 1e6 / (n x verify us))", "—"),
    ("max_tx_per_s_with_p50_target", "Best tx/s with p50 <= 5 ms (curve)", "—"),
    ("min_p50_ms_with_tx_per_s_target", "Lowest p50 (ms) at >= 2,110 tx/s (curve)", "—"),
)


def _num(v: float | None) -> str:
    if v is not None and v == v and float(v).is_integer():
        return str(int(v))
    return fmt(v)


def _bfdl_ledger_runs(runs_root: Path) -> list[R.Run]:
    return [r for r in R.load_group(runs_root, R.ARMS_DIR) if r.arm == "bfdl" and r.ledger_summary() is not None]


def compute(runs_root: Path) -> tuple[pd.DataFrame, pd.DataFrame, list[Path]]:
    runs_root = Path(runs_root)
    recs, sources = [], []
    bench = runs_root / R.LEDGER_BENCH_FILE
    if bench.is_file():
        b = R.read_json(bench)
        sources.append(bench)
        for key, label, paper in BENCH_ROWS:
            v = b.get(key)
            if v is not None:
                recs.append({"quantity": key, "label": label, "paper": paper, "mean": R.as_float(v), "sd": None,
                             "min": None, "max": None, "n": 1, "source": "bench"})
        for key in ("transport", "heads_agree"):
            if key in b:
                recs.append({"quantity": key, "label": key.replace("_", " "), "paper": "—",
                             "mean": float(bool(b[key])) if key == "heads_agree" else None, "sd": None, "min": None,
                             "max": None, "n": 1, "source": f"bench:{b[key]}"})
    per_round = []
    tx_all, hook_round, work_round, commit_round, work_tx, on100, off100 = [], [], [], [], [], [], []
    for run in _bfdl_ledger_runs(runs_root):
        ls = run.ledger_summary() or {}
        sources.append(run.ledger_summary_file)
        txs = [int(x) for x in ls.get("tx_per_round") or []]
        hooks = [float(x) for x in ls.get("hook_seconds") or []]
        work = ledger_seconds(ls)
        commits = [float(x) for x in ls.get("commit_seconds") or [] if x is not None]
        for i, t in enumerate(txs, start=1):
            per_round.append({"run": run.name, "round": i, "tx": t, "hook_s": hooks[i - 1] if i <= len(hooks) else np.nan})
        tx_all += txs
        if hooks:
            hook_round.append(1000.0 * float(np.mean(hooks)))
        if work:
            work_round.append(1000.0 * float(np.mean(work)))
        if commits:
            commit_round.append(1000.0 * float(np.mean(commits)))
        if work and txs and sum(txs):
            work_tx.append(1000.0 * sum(work) / sum(txs))
        rounds = len(txs) or int(run.get("rounds") or 0)
        if rounds:
            if ls.get("bytes_on_chain") is not None:
                on100.append(float(ls["bytes_on_chain"]) / rounds * 100 / 1e6)
            if ls.get("bytes_off_chain") is not None:
                off100.append(float(ls["bytes_off_chain"]) / rounds * 100 / 1e6)

    def add(key: str, label: str, paper: str, vals: list[float]) -> None:
        if vals:
            recs.append({"quantity": key, "label": label, "paper": paper, "mean": float(np.mean(vals)),
                         "sd": float(np.std(vals, ddof=1)) if len(vals) > 1 else None,
                         "min": float(np.min(vals)), "max": float(np.max(vals)), "n": len(vals), "source": "runs"})

    add("tx_per_round", "Transactions per federated round", "50-70", [float(x) for x in tx_all])
    add("ledger_ms_per_round", "Ledger processing per round (ms): hash, store, sign, PBFT commit", "—", work_round)
    add("ledger_ms_per_tx", "Ledger processing per transaction (ms)", "23.4", work_tx)
    add("commit_ms_per_round", "PBFT commit per round (ms)", "< 500 (block processing)", commit_round)
    add("hook_ms_per_round", "Training blocked by the ledger hook per round (ms)", "— (convergence not slowed)", hook_round)
    add("mb_on_chain_per_100_rounds", "On-chain MB per 100 rounds", "4.3 (ledger growth)", on100)
    add("mb_off_chain_per_100_rounds", "Off-chain MB per 100 rounds", "— (IPFS-style)", off100)
    cols = ["quantity", "label", "paper", "mean", "sd", "min", "max", "n", "source"]
    return pd.DataFrame.from_records(recs, columns=cols), pd.DataFrame.from_records(per_round, columns=["run", "round", "tx", "hook_s"]), sources


def generate(runs_root: Path, out_dir: Path) -> Output:
    out = Output(NAME)
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    table, per_round, sources = compute(runs_root)
    out.read(*sources)
    if not (runs_root / R.LEDGER_BENCH_FILE).is_file():
        out.miss(str(runs_root / R.LEDGER_BENCH_FILE))
    if per_round.empty:
        out.miss(f"{runs_root / R.ARMS_DIR}/bfdl-s*/ledger/ledger_summary.json")
    out.files.append(write_csv(table, out_dir / f"{NAME}.csv"))
    rows = []
    for _, r in table.iterrows():
        if r["quantity"] == "transport":
            val = str(r["source"]).split(":", 1)[1]
        elif r["quantity"] == "heads_agree":
            val = "yes" if r["mean"] else "NO"
        else:
            val = _num(r["mean"])
            if r["n"] > 1:
                unit = "rounds" if r["quantity"] == "tx_per_round" else "runs"
                val += f" (min {_num(r['min'])}, max {_num(r['max'])}, over {int(r['n'])} {unit})"
        src = str(runs_root.name + "/" + R.LEDGER_BENCH_FILE) if str(r["source"]).startswith("bench") else \
            f"{runs_root.name}/{R.ARMS_DIR}/bfdl-s*/ledger/ledger_summary.json"
        rows.append([r["label"], r["paper"], val, src])
    md = "# Ledger performance (claims C4, C6, C11)\n\n" + (
        markdown_table(["Quantity", "Paper", "This repo", "Source"], rows) if rows else
        "not measured (missing " + ", ".join(out.missing) + ")\n")
    atomic_write_text(out_dir / f"{NAME}.md", md)
    out.files.append(out_dir / f"{NAME}.md")
    fig, axes = new_figure(2, 1, width=7.2, height=3.0)
    ax_a, ax_b = axes[0]
    if per_round.empty:
        no_data(ax_a, "not measured:\nno ledger_summary.json")
        no_data(ax_b, "not measured:\nno ledger_summary.json")
    else:
        for run in dict.fromkeys(per_round["run"]):
            s = per_round[per_round["run"] == run]
            ax_a.plot(s["round"], s["tx"], "o-", ms=3, label=run)
        ax_a.axhspan(50, 70, color="#C44E52", alpha=0.15, label="paper: 50-70")
        ax_a.set_xlabel("round")
        ax_a.xaxis.get_major_locator().set_params(integer=True)
        ax_a.set_ylim(bottom=0)
        ax_a.set_ylabel("transactions")
        ax_a.set_title("(a) Ledger transactions per round")
        ax_a.legend(fontsize=6)
        t = table.set_index("quantity")["mean"]
        vals = [t.get("mb_on_chain_per_100_rounds", np.nan), t.get("mb_off_chain_per_100_rounds", np.nan)]
        ax_b.bar([0, 1], vals, color=["#4C72B0", "#8C8C8C"])
        ax_b.axhline(4.3, color="#C44E52", ls="--", label="paper: 4.3 MB / 100 rounds")
        ax_b.set_xticks([0, 1], ["on-chain", "off-chain"])
        ax_b.set_ylabel("MB per 100 rounds")
        ax_b.set_title("(b) Ledger growth")
        ax_b.legend(loc="lower center")
    out.files += save_figure(fig, out_dir / NAME)
    out.files.append(write_csv(per_round, out_dir / f"{NAME}_per_round.csv"))
    return out
