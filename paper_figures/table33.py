"""Table 3.3 of the paper (section 3.3, claims C1-C5): paper vs measured, mean ± sd over seeds.

Rows (paper value where the paper has one):

* macro AUC over the 14 findings (paper "Diagnostic Accuracy (AUC)" 0.961 / 0.942 / 0.948);
* micro AUC, mean per-label accuracy and the all-negative baseline's per-label accuracy, side by
  side, because the paper's 0.948 is most likely a per-label accuracy (CLAIMS note 1);
* precision and recall, macro (paper 0.93 / 0.90 / 0.91 and 0.92 / 0.89 / 0.90) and micro, at the
  run's threshold rule (``threshold_rule`` in ``summary.json``);
* "Privacy leakage (inversion attack rate)" (paper 9.8 % / 6.5 % / 1.7 %): gradient-inversion
  success rate on what the server sees in that arm (federated: a plain client update; B-FDL: the
  DP update, else the secure sum). Centralized training has no update channel, so that cell is
  "no update channel" (CLAIMS note 5); membership-inference TPR at FPR = 1 % is shown for all arms;
* ledger latency overhead per transaction (paper 23.4 ms): the B-FDL runs' ledger processing time
  per round (``ledger_seconds``: hashing, off-chain storage, signing, PBFT commit) divided by the
  transactions per round, and the benchmark's p50 commit latency;
* communication reduction vs centralized (paper 46 % / 43 %): ``1 - bytes(arm)/bytes(centralized)``.

Reads only result files; writes ``table33.csv`` (long form) and ``table33.md``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bfdl_tff.config import ARMS
from bfdl_tff.io_utils import atomic_write_text
from paper_figures import intervals as I
from paper_figures import results as R
from paper_figures.common import Output
from paper_figures.style import arm_label, fmt, markdown_table, write_csv

NAME = "table33"

PAPER = {
    "macro_auc": {"centralized": 0.961, "federated": 0.942, "bfdl": 0.948},
    "precision_macro": {"centralized": 0.93, "federated": 0.90, "bfdl": 0.91},
    "recall_macro": {"centralized": 0.92, "federated": 0.89, "bfdl": 0.90},
    "inversion_rate": {"centralized": 0.098, "federated": 0.065, "bfdl": 0.017},
    "ledger_ms_per_tx": {"bfdl": 23.4},
    "comm_reduction": {"federated": 0.46, "bfdl": 0.43},
}

LABELS = {
    "macro_auc": "Macro AUC (14 findings) [paper: 'Diagnostic Accuracy (AUC)']",
    "micro_auc": "Micro AUC",
    "mean_label_accuracy": "Mean per-label accuracy",
    "all_negative_accuracy": "All-negative baseline, mean per-label accuracy",
    "precision_macro": "Precision (macro)",
    "precision_micro": "Precision (micro)",
    "recall_macro": "Recall (macro)",
    "recall_micro": "Recall (micro)",
    "inversion_rate": "Gradient-inversion success rate [paper: 'Inversion Attack Rate']",
    "mia_tpr_at_fpr_0.01": "Membership inference TPR at FPR=1% (LiRA, else loss threshold)",
    "ledger_ms_per_tx": "Ledger processing, ms per transaction (ledger time per round / tx per round)",
    "ledger_bench_p50_ms": "Ledger benchmark commit latency p50 (ms)",
    "comm_reduction": "Communication reduction vs centralized",
}
PERCENT = {"inversion_rate", "comm_reduction", "mia_tpr_at_fpr_0.01"}

SUMMARY_METRICS = (
    "macro_auc", "micro_auc", "mean_label_accuracy", "all_negative_accuracy",
    "precision_macro", "precision_micro", "recall_macro", "recall_micro",
)


@dataclass
class Cell:
    metric: str
    arm: str
    paper: float | None
    measured: R.Measured = field(default_factory=R.Measured)
    note: str = ""


def mean_label_accuracy(run: R.Run) -> float | None:
    v = R.as_float(run.get("mean_label_accuracy"))
    return v if v is not None else R.as_float(run.get("per_label_accuracy"))


INVERSION_TARGET = {"federated": ("plain_update",), "bfdl": ("dp_update", "secure_sum")}


def inversion_for_arm(runs: list[R.Run], arm: str) -> tuple[R.Measured, str, int, float]:
    """Per-run success rate on the arm's target (pooled over the attacked batch-size/local-step
    settings of that target: successes / targets); also the pooled counts over runs."""
    m = R.Measured()
    chosen = ""
    n_total, k_total = 0, 0.0
    for run in runs:
        p = run.attack_file("inversion.json")
        if not p.is_file():
            continue
        rows = R.read_json(p).get("rows", [])
        for target in INVERSION_TARGET.get(arm, ()):
            hit = [r for r in rows if r.get("target") == target]
            if hit:
                n_run = sum(int(r.get("n_targets", 0)) for r in hit)
                k_run = sum(float(r["success_rate"]) * int(r.get("n_targets", 0)) for r in hit)
                if n_run:
                    m.add(k_run / n_run, p)
                for r in hit:
                    n = int(r.get("n_targets", 0))
                    n_total += n
                    k_total += float(r["success_rate"]) * n
                chosen = target
                break
    return m, chosen, n_total, k_total


def membership_tpr(runs: list[R.Run], key: str = "tpr_at_fpr_0.01") -> tuple[R.Measured, str]:
    m = R.Measured()
    which = ""
    for run in runs:
        p = run.attack_file("membership.json")
        if not p.is_file():
            continue
        doc = R.read_json(p)
        for attack in ("lira", "loss_threshold"):
            if isinstance(doc.get(attack), dict) and doc[attack].get(key) is not None:
                m.add(float(doc[attack][key]), p)
                which = attack
                break
    return m, which


def ledger_seconds(ls: dict) -> list[float]:
    """Ledger work per round: ``ledger_seconds`` (hashing, off-chain store, signing, PBFT commit on
    the hook's background thread); older summaries only have ``hook_seconds``."""
    v = ls.get("ledger_seconds") or ls.get("hook_seconds") or []
    return [float(x) for x in v if x is not None]


def ledger_ms_per_tx(runs: list[R.Run]) -> R.Measured:
    m = R.Measured()
    for run in runs:
        ls = run.ledger_summary()
        if not ls:
            continue
        work, txs = ledger_seconds(ls), ls.get("tx_per_round") or []
        if work and txs and sum(txs) > 0:
            m.add(1000.0 * sum(work) / sum(txs), run.ledger_summary_file)
    return m


def communication(by_arm: dict[str, list[R.Run]]) -> dict[str, R.Measured]:
    out = {}
    for arm, runs in by_arm.items():
        m = R.Measured()
        for run in runs:
            c = run.communication_bytes()
            if c is not None:
                m.add(*c)
        out[arm] = m
    return out


def compute(runs_root: Path) -> list[Cell]:
    runs_root = Path(runs_root)
    arms = R.by_arm(R.load_group(runs_root, R.ARMS_DIR))
    cells: list[Cell] = []
    for metric in SUMMARY_METRICS:
        for arm in ARMS:
            runs = arms.get(arm, [])
            m = R.Measured()
            for run in runs:
                if metric == "mean_label_accuracy":
                    m.add(mean_label_accuracy(run), run.summary_file)
                else:
                    m.add(R.as_float(run.get(metric)), run.summary_file)
            cells.append(Cell(metric, arm, PAPER.get(metric, {}).get(arm), m))
    for arm in ARMS:
        runs = arms.get(arm, [])
        if arm == "centralized":
            cells.append(Cell("inversion_rate", arm, PAPER["inversion_rate"][arm], R.Measured(),
                              "no update channel in centralized training (CLAIMS note 5)"))
        else:
            m, target, n, k = inversion_for_arm(runs, arm)
            note = ""
            if target and n:
                lo, hi = R.wilson_interval(k, n)
                note = (f"target {target}, {int(round(k))}/{n} reconstructions pooled over its attacked settings "
                        f"(95% Wilson CI {lo * 100:.1f}-{hi * 100:.1f}%)")
            cells.append(Cell("inversion_rate", arm, PAPER["inversion_rate"][arm], m, note))
    for arm in ARMS:
        m, which = membership_tpr(arms.get(arm, []))
        cells.append(Cell("mia_tpr_at_fpr_0.01", arm, None, m, which))
    cells.append(Cell("ledger_ms_per_tx", "bfdl", PAPER["ledger_ms_per_tx"]["bfdl"], ledger_ms_per_tx(arms.get("bfdl", []))))
    bench = runs_root / R.LEDGER_BENCH_FILE
    mb = R.Measured()
    if bench.is_file():
        mb.add(R.as_float(R.read_json(bench).get("latency_ms_p50")), bench)
    cells.append(Cell("ledger_bench_p50_ms", "bfdl", None, mb))
    comm = communication(arms)
    cen = comm.get("centralized", R.Measured())
    for arm in ("federated", "bfdl"):
        arm_m = comm.get(arm, R.Measured())
        m = R.Measured()
        if cen.n and arm_m.n and cen.mean:
            # reduction per seed where seeds match, else from the means
            m.add(1.0 - arm_m.mean / cen.mean, arm_m.sources[0])
            m.sources = list(dict.fromkeys(cen.sources + arm_m.sources))
        cells.append(Cell("comm_reduction", arm, PAPER["comm_reduction"][arm], m,
                          "1 - mean bytes(arm) / mean bytes(centralized)" if m.n else ""))
    return cells


def _fmt(metric: str, value: float | None, sd: float | None = None, n: int = 0) -> str:
    if value is None:
        return "n/a"
    unit, digits, scale = ("%", 1, 100.0) if metric in PERCENT else ("", 3, 1.0)
    s = fmt(value * scale, digits) + unit
    if n > 1 and sd is not None:
        s += f" ± {fmt(sd * scale, digits)}{unit}"
    return s + f" (n={n})"


def _paper_fmt(metric: str, v: float | None) -> str:
    if v is None:
        return "—"
    return f"{v * 100:.1f}%" if metric in PERCENT else f"{v:g}"


def generate(runs_root: Path, out_dir: Path) -> Output:
    out = Output(NAME)
    runs_root, out_dir = Path(runs_root), Path(out_dir)
    cells = compute(runs_root)
    recs = []
    for c in cells:
        recs.append({"metric": c.metric, "arm": c.arm, "paper": c.paper, "mean": c.measured.mean,
                     "sd": c.measured.sd, "n": c.measured.n,
                     "source": R.describe_sources(c.measured.sources, runs_root.parent), "note": c.note})
        out.read(*c.measured.sources)
    df = pd.DataFrame.from_records(recs, columns=["metric", "arm", "paper", "mean", "sd", "n", "source", "note"])
    out.files.append(write_csv(df, out_dir / "table33.csv"))
    by = {(c.metric, c.arm): c for c in cells}
    header = ["Metric"]
    for arm in ARMS:
        header += [f"{arm_label(arm)} (paper)", f"{arm_label(arm)} (this repo)"]
    rows = []
    for metric in dict.fromkeys(c.metric for c in cells):
        row = [LABELS.get(metric, metric)]
        for arm in ARMS:
            c = by.get((metric, arm))
            if c is None:
                row += ["—", "—"]
                continue
            meas = _fmt(metric, c.measured.mean, c.measured.sd, c.measured.n) if c.measured.n else (c.note or "not measured")
            row += [_paper_fmt(metric, c.paper), meas]
        rows.append(row)
    srcs = R.describe_sources(out.sources, runs_root.parent)
    md = (
        "# Table 3.3: paper vs this repository\n\n"
        "Measured values are mean ± sample sd over seeds (n = number of runs); generated by "
        "`paper_figures/table33.py` from result files only; `table33.csv` names the file of every cell.\n\n"
        + markdown_table(header, rows)
        + f"\nSource files: {srcs or 'none found'}\n"
        + _intervals_section(runs_root, out_dir, out)
    )
    atomic_write_text(out_dir / "table33.md", md)
    out.files.append(out_dir / "table33.md")
    if not by_arm_present(cells):
        out.miss(f"{runs_root / R.ARMS_DIR}/*/summary.json")
    return out


def _intervals_section(runs_root: Path, out_dir: Path, out: Output) -> str:
    """Macro AUC with 95 % intervals and the paired differences (``paper_figures.intervals``);
    writes ``table33_ci.csv``."""
    doc, path = I.load(runs_root)
    head = "\n## Macro AUC with 95 % intervals, paired differences between arms\n\n"
    if doc is None:
        out.miss(str(path))
        return head + f"not measured (missing {path}; the reproduction's statistics stage writes it)\n"
    out.read(path)
    out.files.append(write_csv(I.frame(doc), out_dir / "table33_ci.csv"))
    return head + I.markdown(doc, R.describe_sources([path], runs_root.parent))


def by_arm_present(cells: list[Cell]) -> bool:
    return any(c.measured.n for c in cells if c.metric == "macro_auc")
