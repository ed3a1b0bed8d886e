"""One row per claim of the paper (C1-C14, ``docs/CLAIMS.md``) for ``results/REPORT.md``:
paper value, this repository's measurement (with the result file behind it), the deviation and why.
Paper values are the constants quoted from the paper (section given per claim)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bfdl_tff.config import ARMS
from paper_figures import results as R
from paper_figures import table33 as T
from paper_figures.fig4_scalability import compute as scal_compute
from paper_figures.fig4_scalability import fits as scal_fits
from paper_figures.report_context import ReportContext, all_synthetic, arms_line, cell, measured_text
from paper_figures.style import arm_label, fmt

REPO_ROOT = Path(__file__).resolve().parent.parent


def _c1(ctx: ReportContext) -> list[str]:
    txt, srcs = arms_line(ctx, "macro_auc")
    acc, s2 = arms_line(ctx, "mean_label_accuracy")
    neg, s3 = arms_line(ctx, "all_negative_accuracy")
    dev = []
    means = {a: ctx.cells[("macro_auc", a)].measured.mean for a in ARMS if ctx.cells[("macro_auc", a)].measured.n}
    if means:
        order = " > ".join(arm_label(a) for a in sorted(means, key=lambda a: -means[a]))
        dev.append(f"measured order {order} (paper: Centralized > B-FDL > Federated)")
        dev.append("; ".join(f"{arm_label(a)} {means[a] - T.PAPER['macro_auc'][a]:+.3f} vs paper" for a in means))
    dev.append("published ChestX-ray14 macro AUCs are 0.74-0.84; the paper's 0.948 is likely a per-label "
               "accuracy (see 'Doubtful claim 1')")
    if all_synthetic(ctx):
        dev.append("synthetic data and a small model: absolute values are not comparable with NIH results")
    return ["C1", "AUC 0.961 / 0.942 / 0.948 ± 0.005 (centralized / federated / B-FDL)",
            f"macro AUC: {txt}. Per-label accuracy: {acc}. All-negative baseline: {neg}",
            ". ".join(dev), ctx.src(srcs + s2 + s3)]




def _c2(ctx: ReportContext) -> list[str]:
    p, s1 = arms_line(ctx, "precision_macro")
    r, s2 = arms_line(ctx, "recall_macro")
    pm, s3 = arms_line(ctx, "precision_micro")
    rm, s4 = arms_line(ctx, "recall_micro")
    rules = sorted({str(run.get("threshold_rule")) for a in ARMS for run in ctx.arm_runs.get(a, []) if run.get("threshold_rule")})
    dev = [f"threshold rule: {', '.join(rules) if rules else 'not recorded'}"]
    dev.append("precision depends on prevalence (a few % per finding on ChestX-ray14), so 0.9+ macro precision "
               "together with 0.9+ recall is implausible; the paper states no threshold rule")
    return ["C2", "precision 0.93 / 0.90 / 0.91, recall 0.92 / 0.89 / 0.90",
            f"precision (macro) {p}. Recall (macro) {r}. Precision (micro) {pm}. Recall (micro) {rm}",
            ". ".join(dev), ctx.src(s1 + s2 + s3 + s4)]


def _c3_inversion_detail(ctx: ReportContext) -> tuple[str, list[Path]]:
    """Per arm and target, the pooled inversion count over every attacked setting with its Wilson
    interval, and the best setting (highest success rate)."""
    parts, srcs = [], []
    for arm in ("federated", "bfdl"):
        pooled: dict[str, list[float]] = {}
        best: dict[str, tuple[float, str]] = {}
        for run in ctx.arm_runs.get(arm, []):
            p = run.attack_file("inversion.json")
            if not p.is_file():
                continue
            srcs.append(p)
            for r in R.read_json(p).get("rows", []):
                n = int(r.get("n_targets", 0))
                k = float(r["successes"]) if r.get("successes") is not None else float(r.get("success_rate", 0)) * n
                acc = pooled.setdefault(str(r.get("target")), [0.0, 0, 0])
                acc[0] += k
                acc[1] += n
                acc[2] += 1
                rate = k / n if n else 0.0
                where = f"B{r.get('batch_size')} s{r.get('local_steps')} {r.get('round', 'final')}"
                if rate >= best.get(str(r.get("target")), (-1.0, ""))[0]:
                    best[str(r.get("target"))] = (rate, where)
        for target, (k, n, settings) in pooled.items():
            lo, hi = R.wilson_interval(k, n)
            parts.append(f"{arm_label(arm)} {target}: {int(round(k))}/{n} over {settings} settings "
                         f"(95% Wilson {lo * 100:.1f}-{hi * 100:.1f}%; best {best[target][1]} "
                         f"{best[target][0] * 100:.1f}%)")
    return "; ".join(parts), srcs


def _c3_membership_detail(ctx: ReportContext) -> tuple[str, list[Path]]:
    """LiRA TPR at 1 % FPR per arm with its Clopper-Pearson interval, and each DP run's audit."""
    parts, srcs = [], []
    for arm in ARMS:
        for run in ctx.arm_runs.get(arm, []):
            p = run.attack_file("membership.json")
            if not p.is_file():
                continue
            srcs.append(p)
            doc = R.read_json(p)
            li = doc.get("lira") or {}
            if li.get("tpr_ci_low_at_fpr_0.01") is not None:
                txt = (f"{arm_label(arm)} {run.run_dir.name}: LiRA TPR@1%FPR {li['tpr_at_fpr_0.01'] * 100:.2f}% "
                       f"[{li['tpr_ci_low_at_fpr_0.01'] * 100:.2f}, {li['tpr_ci_high_at_fpr_0.01'] * 100:.2f}] "
                       f"({doc.get('n_members')}+{doc.get('n_nonmembers')} images, {li.get('n_shadows')} shadows)")
                audit = doc.get("dp_audit") or {}
                if audit:
                    bad = [lv for lv, e in audit.items() if e.get("violated")]
                    e = audit.get("0.01", {})
                    txt += (f", DP audit {'VIOLATED at FPR ' + ', '.join(bad) if bad else 'passed'} (TPR lower "
                            f"bound {e.get('tpr_low', float('nan')) * 100:.2f}% vs bound "
                            f"{e.get('bound_at_fpr_high', float('nan')) * 100:.2f}% at 1% FPR)")
                parts.append(txt)
    return "; ".join(parts), srcs


def _c3(ctx: ReportContext) -> list[str]:
    inv, s1 = arms_line(ctx, "inversion_rate", "*/attacks/inversion.json", digits=1, scale=100.0, unit="%")
    notes = [f"{arm_label(a)}: {ctx.cells[('inversion_rate', a)].note}" for a in ("federated", "bfdl")
             if ctx.cells[("inversion_rate", a)].note]
    mia, s2 = arms_line(ctx, "mia_tpr_at_fpr_0.01", "*/attacks/membership.json", digits=2, scale=100.0, unit="%")
    inv_detail, s3 = _c3_inversion_detail(ctx)
    mia_detail, s4 = _c3_membership_detail(ctx)
    dev = ["the paper does not define its 'inversion attack rate'; here: share of >= 100 target images per attacked "
           "setting (target x batch x local steps x first/final round) whose reconstruction has SSIM >= 0.5 and "
           "re-identifies the image among >= 100 others (attacks/inversion.json 'setting'), on the update the "
           "server sees, with 95% Wilson intervals",
           "centralized training has no update channel (CLAIMS note 5); membership-inference TPR at FPR = 1 % on the "
           "released model (>= 1000 members and 1000 non-members where the data allow, exact Clopper-Pearson "
           "intervals) is the measure common to all arms",
           "a measured 0 % is a lower bound on leakage at this attack budget (docs/privacy.md: the project's CNNs "
           "are not inverted on CPU even from one-image updates), not a proof of privacy; the DP arm's epsilon caps "
           "membership TPR by the bound in fig3 and the DP audit checks the measured TPR against it"]
    if notes:
        dev.append("; ".join(notes))
    measured = f"inversion success: {inv}. Membership TPR@FPR=1%: {mia}"
    eps_parts = [(r.name, *per_hospital_epsilon(r)) for r in ctx.arm_runs.get("bfdl", [])[:1]]
    eps_text = "; ".join(f"{name}: {txt}" for name, txt, _ in eps_parts if txt)
    if eps_text:  # the guarantee the DP arm's leakage is bounded by (issue 16.7)
        measured += f". B-FDL guarantee: {eps_text}"
        s4 = list(s4) + [p for _, _, ps in eps_parts for p in ps]
    if inv_detail:
        measured += f". Inversion per target: {inv_detail}"
    if mia_detail:
        measured += f". {mia_detail}"
    return ["C3", "privacy leakage ('inversion attack rate') 9.8% / 6.5% / 1.7%", measured, ". ".join(dev),
            ctx.src(s1 + s2 + s3 + s4)]


def _c4(ctx: ReportContext) -> list[str]:
    hook, s1 = cell(ctx, "ledger_ms_per_tx", "bfdl", ctx.pattern(R.ARMS_DIR, "bfdl-s*/ledger/ledger_summary.json"), digits=2, unit=" ms")
    bench = ctx.runs / R.LEDGER_BENCH_FILE
    srcs = list(s1)
    blocked, rounds_ms = R.Measured(), R.Measured()
    for r in ctx.arm_runs.get("bfdl", []):
        ls = r.ledger_summary()
        if ls and ls.get("hook_seconds") and ls.get("round_seconds"):
            blocked.add(100.0 * sum(ls["hook_seconds"]) / max(sum(ls["round_seconds"]), 1e-12), r.ledger_summary_file)
    if blocked.n:
        hook += f"; training waited for the hook {measured_text(blocked, 2, unit='%')} of round time"
    if bench.is_file():
        b = R.read_json(bench)
        bt = f"benchmark commit latency p50 {fmt(b.get('latency_ms_p50'), 2)} ms, p99 {fmt(b.get('latency_ms_p99'), 2)} ms ({b.get('replicas')} replicas, {b.get('transport')})"
        srcs.append(bench)
    else:
        bt = "benchmark " + ctx.missing_text(str(bench))
    # convergence with / without ledger
    off = R.load_group(ctx.runs, R.LEDGER_OFF_DIR)
    on = ctx.arm_runs.get("bfdl", [])
    if off and on:
        auc_on, auc_off = R.measure(on, "macro_auc"), R.measure(off, "macro_auc")
        w_on, w_off = R.Measured(), R.Measured()
        for runs, m in ((on, w_on), (off, w_off)):
            for r in runs:
                df = r.metrics()
                if df is not None and "wall_s" in df.columns:
                    m.add(float(df["wall_s"].mean()), r.metrics_file)
        conv = (f"final macro AUC with ledger {measured_text(auc_on)} vs without {measured_text(auc_off)}; mean round time "
                f"{measured_text(w_on, 2, unit=' s')} vs {measured_text(w_off, 2, unit=' s')}")
        srcs += auc_on.sources + auc_off.sources + w_on.sources + w_off.sources
    else:
        conv = "convergence with/without ledger " + ctx.missing_text(ctx.pattern(R.LEDGER_OFF_DIR, "bfdl-s*/summary.json"))
    return ["C4", "blockchain latency overhead 23.4 ms per transaction; convergence not slowed",
            f"ledger processing per transaction {hook}; {bt}. {conv}",
            "this repo's ledger is an in-process PBFT emulation (CLAIMS note 3), not Hyperledger Fabric over a "
            "network; processing = hashing, off-chain storage, signing and PBFT commit of a round's transactions, "
            "on a background thread, so training only waits for the enqueue (and for the drain at the end); "
            "wall times come from a shared machine whose load varies between runs, so the hook's share of the "
            "round time is the load-independent measure",
            ctx.src(srcs)]


def _c5(ctx: ReportContext) -> list[str]:
    txt, srcs = [], []
    for arm in ("federated", "bfdl"):
        t, s = cell(ctx, "comm_reduction", arm, ctx.pattern(R.ARMS_DIR, "*/summary.json"), digits=1, scale=100.0, unit="%")
        txt.append(f"{arm_label(arm)}: {t}")
        srcs += s
    return ["C5", "communication reduction vs centralized: 46% (FL), 43% (B-FDL)",
            "reduction = 1 - bytes(arm) / bytes(centralized): " + "; ".join(txt),
            "bytes are computed from tensor sizes (TFF 0.87 has no sizing executor); the reduction depends on model "
            "size × rounds versus the size of the raw images, so it is a property of the setting, not of B-FDL; "
            "see results/communication.md", ctx.src(srcs)]


def _c6(ctx: ReportContext) -> list[str]:
    bench = ctx.runs / R.LEDGER_BENCH_FILE
    srcs = []
    if bench.is_file():
        b = R.read_json(bench)
        srcs.append(bench)
        t = (f"{fmt(b.get('tx_per_s'), 1)} tx/s, block interval {fmt(b.get('block_interval_ms'), 1)} ms, "
             f"{b.get('transactions')} transactions, heads agree: {b.get('heads_agree')}")
        if b.get("latency_curve"):
            best, p50 = b.get("max_tx_per_s_with_p50_target"), b.get("min_p50_ms_with_tx_per_s_target")
            p50_goal, tps_goal = fmt(b.get("target_p50_ms"), 0), fmt(b.get("target_tx_per_s"), 0)
            t += ("; latency/throughput curve: "
                  + (f"best {fmt(best, 0)} tx/s with p50 <= {p50_goal} ms" if best is not None
                     else f"no point with p50 <= {p50_goal} ms")
                  + ", "
                  + (f"lowest p50 {fmt(p50, 2)} ms at >= {tps_goal} tx/s" if p50 is not None
                     else f"no point reached {tps_goal} tx/s"))
    else:
        t = ctx.missing_text(str(bench))
    txs = []
    for r in ctx.arm_runs.get("bfdl", []):
        ls = r.ledger_summary()
        if ls and ls.get("tx_per_round"):
            txs += [int(x) for x in ls["tx_per_round"]]
            srcs.append(r.ledger_summary_file)
    if txs:
        t += f"; transactions per round {min(txs)}-{max(txs)} (mean {sum(txs) / len(txs):.1f}, {len(txs)} rounds)"
    else:
        t += "; tx per round " + ctx.missing_text(ctx.pattern(R.ARMS_DIR, "bfdl-s*/ledger/ledger_summary.json"))
    return ["C6", "PBFT 211 tx/s, block processing < 0.5 s, 50-70 transactions per round", t,
            "the number of transactions per round follows from the protocol (round open, one commitment per hospital, "
            "global model, privacy record, metrics, close): it grows with K, so 50-70 with 3 hospitals implies "
            "transactions the paper does not describe; throughput is for an in-process cluster on this CPU",
            ctx.src(srcs)]


def _c7(ctx: ReportContext) -> list[str]:
    parts, srcs = [], []
    for r in ctx.arm_runs.get("bfdl", []):
        v = r.verify_file
        if v.is_file():
            d = R.read_json(v)
            srcs.append(v)
            parts.append(f"{r.name}: verify ok={d.get('ok')}")
        ls = r.ledger_summary()
        if ls and ls.get("heads"):
            heads = {json.dumps(h, sort_keys=True) for h in ls["heads"]}
            parts.append(f"{r.name}: {len(ls['heads'])} replica heads {'agree' if len(heads) == 1 else 'DISAGREE'}")
            srcs.append(r.ledger_summary_file)
    t = "; ".join(parts) if parts else ctx.missing_text(ctx.pattern(R.ARMS_DIR, "bfdl-s*/audit/verify.json"))
    return ["C7", "Merkle roots compared across nodes stop replay and tampering",
            t + ". Tamper/replay rejection is exercised by tests/ledger/ (test_block_storage_and_verify.py, test_signed_transactions.py, test_pbft_commit_certificates.py) and tests/integration/test_integration_{audit_binds,rewritten_history}.py",
            "cross-replica comparison of block hashes (which commit the Merkle tx root) plus re-execution by "
            "`bfdl audit`; no numbers in the paper to compare", ctx.src(srcs)]


def _c8(ctx: ReportContext) -> list[str]:
    srcs, parts = [], []
    for r in ctx.arm_runs.get("bfdl", []):
        v = r.verify_file
        if v.is_file():
            d = R.read_json(v)
            ac = d.get("access_control") or d.get("access")
            if ac is not None:
                parts.append(f"{r.name}: {json.dumps(ac, sort_keys=True)}")
                srcs.append(v)
    t = "; ".join(parts) if parts else ("no result file records access-control checks; demonstrated by tests "
                                        "(tests/integration/test_integration_hook.py, tests/ledger/test_contracts_paper_3_4.py)")
    return ["C8", "only registered hospital nodes may join training or read gradient summaries", t,
            "contract logic is Python executed by every replica (CLAIMS note 3), not Solidity", ctx.src(srcs)]


def per_hospital_epsilon(r: Any) -> tuple[str, list[Path]]:
    """Issue 16.2/16.7: each hospital's epsilon per privacy unit (patient or image) from the run's
    ``privacy.json`` (sample-level DP-SGD, noise calibrated per hospital); ``""`` otherwise."""
    path = r.run_dir.privacy_file
    rec = R.read_json(path) if path.is_file() else None
    rows = (rec or {}).get("per_hospital") or []
    if not rows:
        return "", []
    unit = rows[0].get("units") or (rec or {}).get("unit") or "image"
    per = ", ".join(f"{h.get('hospital')} {fmt(R.as_float(h.get('epsilon')))} (z {fmt(R.as_float(h.get('noise_multiplier')))}, "
                    f"{h.get('num_units')} {unit}s)" for h in rows)
    return f"per-{unit} epsilon per hospital (delta {rows[0].get('delta')}): {per}", [path]


def _c9(ctx: ReportContext) -> list[str]:
    parts, srcs = [], []
    for r in ctx.arm_runs.get("bfdl", []):
        e = R.as_float(r.get("epsilon"))
        if e is not None:
            per, psrc = per_hospital_epsilon(r)
            parts.append(f"{r.name}: epsilon {fmt(e)} (delta {r.get('delta')}, {r.get('accountant')}, "
                         f"noise multiplier {fmt(R.as_float(r.get('noise_multiplier')))}, mode {r.get('privacy_mode') or R._dig(r.config, 'privacy.mode')})"
                         + (f"; {per}" if per else ""))
            srcs += [r.summary_file, *psrc]
    t = "; ".join(parts) if parts else ctx.missing_text(ctx.pattern(R.ARMS_DIR, "bfdl-s*/summary.json"))
    recorded = []
    for r in ctx.arm_runs.get("bfdl", []):
        ls = r.ledger_summary()
        kinds = (ls or {}).get("tx_kinds_per_round")
        if kinds:
            n = sum(int(k.get("privacy.record", 0)) if isinstance(k, dict) else list(k).count("privacy.record")
                    for k in kinds)
            recorded.append(f"{r.name}: {n} privacy.record transactions in {len(kinds)} rounds")
            srcs.append(r.ledger_summary_file)
    if recorded:
        t += ". On-chain: " + "; ".join(recorded)
    return ["C9", "DP at epsilon = 1.0, every budget change recorded on-chain", t,
            "the paper names no accountant, delta or DP level; here every epsilon comes from the accountant named "
            "beside it; per-round values and the noise needed at client vs sample level: 'Privacy accounting' below",
            ctx.src(srcs)]


def _c10(ctx: ReportContext) -> list[str]:
    df, srcs = scal_compute(ctx.runs)
    if df.empty:
        return ["C10", "3-10 nodes: sync time linear, ledger overhead sub-linear, end-to-end +27% at 10 nodes",
                ctx.missing_text(ctx.pattern(R.SCALABILITY_DIR, "k*/summary.json")), "", ""]
    f = scal_fits(df)
    k10 = df.loc[df["hospitals"] == df["hospitals"].max()]
    rel = float(k10["relative_to_k3"].iloc[0]) if len(k10) else math.nan
    t = (f"K = {int(df['hospitals'].min())}..{int(df['hospitals'].max())}: end-to-end at K={int(df['hospitals'].max())} "
         f"{(rel - 1) * 100:+.1f}% vs K=3; sync time linear fit R² {fmt(f['sync_r2'])} "
         f"(slope {fmt(f['sync_slope_s_per_node'])} s/node); ledger overhead log-log slope "
         f"{fmt(f['overhead_loglog_slope'])}"
         + ("" if f["overhead_loglog_slope"] is None else
            f" ({'sub-linear' if f['overhead_loglog_slope'] < 1 else 'not sub-linear'})")
         + ("" if f["sync_r2"] is not None else " (fits need >= 3 node counts)"))
    return ["C10", "3-10 nodes: sync time linear, ledger overhead sub-linear, end-to-end +27% at 10 nodes", t,
            "simulated hospitals in one process share the CPU, so 'sync time' is dominated by sequential local "
            "training and grows with the number of hospitals' updates; one seed per K, short runs, on a machine "
            "whose load varies (see results/scalability.csv)", ctx.src(srcs)]


def _c11(ctx: ReportContext) -> list[str]:
    on, off, srcs = R.Measured(), R.Measured(), []
    for r in ctx.arm_runs.get("bfdl", []):
        ls = r.ledger_summary()
        if not ls:
            continue
        rounds = len(ls.get("tx_per_round") or []) or int(r.get("rounds") or 0)
        if rounds and ls.get("bytes_on_chain") is not None:
            on.add(float(ls["bytes_on_chain"]) / rounds * 100 / 1e6, r.ledger_summary_file)
        if rounds and ls.get("bytes_off_chain") is not None:
            off.add(float(ls["bytes_off_chain"]) / rounds * 100 / 1e6, r.ledger_summary_file)
    if not on.n:
        t = ctx.missing_text(ctx.pattern(R.ARMS_DIR, "bfdl-s*/ledger/ledger_summary.json"))
    else:
        t = f"on-chain {measured_text(on, 3, unit=' MB')} per 100 rounds; off-chain {measured_text(off, 3, unit=' MB') or 'n/a'} per 100 rounds"
    return ["C11", "ledger grows ~4.3 MB per 100 rounds (on-chain/off-chain)", t,
            "extrapolated linearly from the run's rounds (bytes / rounds × 100); off-chain holds checkpoints, whose "
            "size is the model's", ctx.src(on.sources + off.sources)]


def _secure_aggregation(config: object) -> str:
    """``privacy.secure_aggregation`` of a run's config (issue 18); older configs: ``secure_sum``
    true = tff_secure_sum, false = none; neither = the default, masked."""
    mode = R._dig(config, "privacy.secure_aggregation")
    if mode:
        return str(mode)
    old = R._dig(config, "privacy.secure_sum")
    return "masked" if old is None else ("tff_secure_sum" if old else "none")


def _c12(ctx: ReportContext) -> list[str]:
    models = sorted({str(R._dig(r.config, "model.config")) for a in ARMS for r in ctx.arm_runs.get(a, [])})
    modes = sorted({str(R._dig(r.config, "privacy.mode")) for r in ctx.arm_runs.get("bfdl", [])})
    secure = sorted({_secure_aggregation(r.config) for r in ctx.arm_runs.get("bfdl", [])})
    srcs = [r.config_file for a in ARMS for r in ctx.arm_runs.get(a, [])]
    t = (f"TensorFlow Federated FedAvg (weights n_k/n); model(s) {', '.join(models) or 'n/a'}; B-FDL DP mode "
         f"{', '.join(modes) or 'n/a'}, secure aggregation {', '.join(secure) or 'n/a'}; ledger: this repo's PBFT emulation")
    return ["C12", "TFF, Hyperledger Fabric with PBFT, Solidity, U-Net + ResNet-50, DP-SGD, secure aggregation, FedAvg n_k/n", t,
            "Fabric has no PBFT orderer and runs no Solidity: PBFT + contract logic are emulated in `ledger/` "
            "(CLAIMS note 3); " + ("secure aggregation `masked` = Bonawitz et al.'s protocol (bfdl_tff.secagg; the "
            "server's sum of masked vectors is a TFF computation); " if "masked" in secure else "")
            + ("TFF's simulation secure sum has the right semantics but no cryptography (note 4); "
               if "tff_secure_sum" in secure or not secure else "")
            + "ResNet-50/U-Net at 224 px only in the paper profile (GPU)", ctx.src(srcs)]


def _c13(ctx: ReportContext) -> list[str]:
    man = ctx.out / "figures_manifest.json"
    if not man.is_file():
        return ["C13", "Figures 2-5", ctx.missing_text(str(man)), "", ""]
    m = R.read_json(man)
    parts = []
    for name, d in m.items():
        parts.append(f"{name}: {', '.join(d['files'])}" + (f" (missing inputs: {', '.join(d['missing'])})" if d["missing"] else ""))
    return ["C13", "Figure 2 performance, 3 privacy, 4 scalability, 5 convergence", "; ".join(parts),
            "the paper's figures have no data; ours are regenerated from result files by `bfdl figures`",
            ctx.rel(man)]


C14_FEATURES = (
    ("2D imaging (chest X-ray)", "bfdl_tff/data"),
    ("3D imaging (CT, MRI)", None),
    ("differential privacy (DP-SGD, DP-FedAvg)", "bfdl_tff/federated"),
    ("secure aggregation with cryptography (Bonawitz et al. masking, Shamir dropout recovery)", "bfdl_tff/secagg"),
    ("homomorphic encryption / general SMPC", None),
    ("contributor traceability and reputation (ledger contract)", "ledger/contracts.py"),
    ("audit interface (`bfdl audit`)", "bfdl_tff/commands/audit.py"),
    ("auditable privacy budget (privacy.record on-chain)", "bfdl_tff/integration"),
)


def _c14(ctx: ReportContext) -> list[str]:
    parts = []
    for feat, path in C14_FEATURES:
        if path is None:
            parts.append(f"{feat}: not implemented")
        else:
            parts.append(f"{feat}: {'present' if (REPO_ROOT / path).exists() else 'absent'} ({path})")
    return ["C14", "2D and 3D imaging, SMPC/DP/HE, traceability and reputation, audit interface, auditable budgets",
            "; ".join(parts), "objectives stated in 1.2 without evaluation in the paper; 3D, HE and SMPC are out of "
            "scope here", "repository tree"]


CLAIM_ROWS = (_c1, _c2, _c3, _c4, _c5, _c6, _c7, _c8, _c9, _c10, _c11, _c12, _c13, _c14)


def claim_rows(ctx: ReportContext) -> list[list[str]]:
    """Every claim's row: id, paper, this repo, deviation, source."""
    return [f(ctx) for f in CLAIM_ROWS]


__all__ = ["C14_FEATURES", "CLAIM_ROWS", "claim_rows"]
