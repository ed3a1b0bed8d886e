"""Ledger latency versus throughput (claims C4 and C6; issue 6 "Performance").

Reads the curve of ``runs/ledger_bench/bench.json`` (``bfdl ledger bench --sweep --json``): for
client requests of 1..64 transactions at window 1 (one request = one block at that load), the
measured throughput and the p50 / p99 commit latency (REQUEST sent to f+1 matching signed
REPLYs), with the issue's targets (>= 2,110 tx/s, p50 <= 5 ms) drawn as lines and the paper's
211 tx/s / 23.4 ms as a point. Nothing is drawn when the benchmark did not record a curve.

Writes ``ledger_latency.{png,pdf,csv,md}``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from bfdl_tff.io_utils import atomic_write_text
from paper_figures import results as R
from paper_figures.common import Output
from paper_figures.style import fmt, markdown_table, new_figure, no_data, save_figure, write_csv

NAME = "ledger_latency"
PAPER_TX_PER_S = 211.0
PAPER_MS = 23.4
COLUMNS = ["client_batch", "window", "transactions", "tx_per_s", "latency_ms_p50", "latency_ms_p99",
           "txs_per_block", "heads_agree"]


def compute(runs_root: Path) -> tuple[pd.DataFrame, dict, list[Path]]:
    bench = Path(runs_root) / R.LEDGER_BENCH_FILE
    if not bench.is_file():
        return pd.DataFrame(columns=COLUMNS), {}, []
    b = R.read_json(bench)
    curve = b.get("latency_curve") or []
    df = pd.DataFrame.from_records([{k: c.get(k) for k in COLUMNS} for c in curve], columns=COLUMNS)
    return df, b, [bench]


def generate(runs_root: Path, out_dir: Path) -> Output:
    out = Output(NAME)
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    df, b, sources = compute(runs_root)
    out.read(*sources)
    fig, axes = new_figure(1, 1, width=5.2, height=3.4)
    ax = axes[0][0]
    if df.empty:
        what = f"{runs_root / R.LEDGER_BENCH_FILE}" + (" (no latency_curve: run the benchmark with --sweep)" if b else "")
        out.miss(what)
        no_data(ax, "not measured: no latency/throughput curve in runs/ledger_bench/bench.json")
        md = "not measured (missing " + ", ".join(out.missing) + ")\n"
    else:
        tgt_tx, tgt_ms = float(b.get("target_tx_per_s", 2110.0)), float(b.get("target_p50_ms", 5.0))
        ax.plot(df["tx_per_s"], df["latency_ms_p50"], "o-", label="p50")
        ax.plot(df["tx_per_s"], df["latency_ms_p99"], "s--", alpha=0.6, label="p99")
        for r in df.itertuples():
            ax.annotate(str(int(r.client_batch)), (r.tx_per_s, r.latency_ms_p50), xytext=(3, -9),
                        textcoords="offset points", fontsize=6)
        ax.axvline(tgt_tx, color="0.5", lw=0.8, ls=":")
        ax.axhline(tgt_ms, color="0.5", lw=0.8, ls=":")
        ax.plot([PAPER_TX_PER_S], [PAPER_MS], "x", color="k", label="paper (211 tx/s, 23.4 ms)")
        ax.set_ylim(bottom=0)
        ax.set_xlabel("throughput (tx/s)")
        ax.set_ylabel("commit latency (ms)")
        ax.set_title(f"PBFT ledger, n = {b.get('replicas')}, {b.get('transport')}: latency vs throughput\n"
                     "(labels: transactions per request; dotted: issue targets)", fontsize=8)
        ax.legend(fontsize=7)
        rows = [[int(r.client_batch), fmt(r.tx_per_s, 0), fmt(r.latency_ms_p50, 2), fmt(r.latency_ms_p99, 2),
                 fmt(r.txs_per_block, 1), bool(r.heads_agree)] for r in df.itertuples()]
        md = markdown_table(["Transactions per request", "tx/s", "p50 ms", "p99 ms", "tx per block", "heads agree"], rows)
        best, p50 = b.get("max_tx_per_s_with_p50_target"), b.get("min_p50_ms_with_tx_per_s_target")
        md += (f"\nBest throughput with p50 <= {fmt(tgt_ms, 0)} ms: {fmt(best, 0) if best is not None else 'none'} tx/s; "
               f"lowest p50 at >= {fmt(tgt_tx, 0)} tx/s: {fmt(p50, 2) if p50 is not None else 'none'} ms; "
               f"both at one point: {b.get('both_targets_at_one_point')}. Ed25519 verify "
               f"{fmt(b.get('verify_us_per_sig'), 1)} us per signature on this machine.\n")
        md += "\nSource: " + R.describe_sources(sources, runs_root.parent) + "\n"
    atomic_write_text(out_dir / f"{NAME}.md", "# Ledger latency versus throughput (C4, C6)\n\n" + md)
    out.files += save_figure(fig, out_dir / NAME)
    out.files.append(write_csv(df, out_dir / f"{NAME}.csv"))
    out.files.append(out_dir / f"{NAME}.md")
    return out
