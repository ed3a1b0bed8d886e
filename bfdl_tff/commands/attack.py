"""``bfdl attack``: privacy attacks on a finished run (paper 3.3, 3.5; claim C3).

``bfdl attack inversion --run RUN_DIR`` writes ``RUN_DIR/attacks/inversion.json`` (+ CSV and a
PNG grid of originals vs reconstructions); ``bfdl attack membership --run RUN_DIR`` writes
``RUN_DIR/attacks/membership.json`` and exits 3 with one line if a membership attack beats the
run's DP bound (the DP audit, ``bfdl_tff.privacy_eval.dp_audit``). See docs/privacy.md.
"""

from __future__ import annotations

import argparse
import sys
import time


def _ints(text: str) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in text.replace(",", " ").split())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like '1,4', got {text!r}") from None
    if not vals or any(v < 1 for v in vals):
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return vals


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("attack", help="privacy attacks: gradient inversion, membership inference")
    asub = p.add_subparsers(dest="attack", metavar="ATTACK")

    inv = asub.add_parser("inversion", help="Inverting-Gradients attack on simulated updates (first and final round)")
    inv.add_argument("--run", required=True, help="run directory (with config.yaml, final_model.npz)")
    inv.add_argument("--images", type=int, default=100, help="target images per setting, at least (default 100)")
    inv.add_argument("--batch-sizes", type=_ints, default=(1, 4, 16), help="local batch sizes (default 1,4,16)")
    inv.add_argument("--local-steps", type=_ints, default=(1, 4), help="local steps (default 1,4)")
    inv.add_argument("--rounds", default="first,final",
                     help="attacked rounds: first (initial model), final (released model); default both")
    inv.add_argument("--protected", choices=("best_per_round", "grid"), default="best_per_round",
                     help="where secure_sum / dp_update are attacked: at the best plain setting of each round "
                     "(default) or over the whole grid")
    inv.add_argument("--iterations", type=int, default=150, help="optimisation steps per restart (default 150)")
    inv.add_argument("--restarts", type=int, default=1, help="random restarts (default 1)")
    inv.add_argument("--tv-weight", type=float, default=1e-4, help="total-variation weight (default 1e-4)")
    inv.add_argument(
        "--kinds", default="", help="comma list of plain_update,secure_sum,dp_update (default: the arm's)"
    )
    inv.add_argument(
        "--label-mode", choices=("oracle", "joint"), default="oracle",
        help="labels for updates of several images: oracle (true labels, strongest attacker; default) "
        "or joint (label-blind DLG)",
    )
    inv.add_argument("--noise-multiplier", type=float, default=None, help="DP noise for dp_update (default: the run's)")
    inv.add_argument("--seed", type=int, default=0)
    inv.set_defaults(func=run_inversion)

    mem = asub.add_parser("membership", help="loss-threshold and LiRA membership inference + DP audit")
    mem.add_argument("--run", required=True, help="run directory")
    mem.add_argument("--shadows", type=int, default=16, help="LiRA shadow models, even (default 16)")
    mem.add_argument("--max-per-class", type=int, default=1000, help="members and non-members each (default 1000)")
    mem.add_argument("--shadow-epochs", type=int, default=None, help="default: rounds * local_epochs of the run")
    mem.add_argument("--shadow-data", choices=("target_size", "audited"), default="target_size",
                     help="shadow training sets: half of the audited population plus the run's other training "
                     "images (default: the target's size) or the half only")
    mem.add_argument("--offline", action="store_true", help="offline LiRA (out-shadows only)")
    mem.add_argument("--seed", type=int, default=0)
    mem.set_defaults(func=run_membership)
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])


def _log(msg: str) -> None:
    print(f"  {msg}", file=sys.stderr, flush=True)


def run_inversion(args: argparse.Namespace) -> int:
    from bfdl_tff.config import from_dict
    from bfdl_tff.privacy_eval.options import InversionOptions
    from bfdl_tff.privacy_eval.run_attacks import inversion_on_run

    opts = from_dict(InversionOptions, {
        "images_per_setting": args.images, "batch_sizes": list(args.batch_sizes),
        "local_steps": list(args.local_steps), "rounds": [r.strip() for r in args.rounds.split(",") if r.strip()],
        "protected": args.protected, "iterations": args.iterations, "restarts": args.restarts,
        "tv_weight": args.tv_weight, "label_mode": args.label_mode,
        "targets": [k.strip() for k in args.kinds.split(",") if k.strip()],
        "noise_multiplier": args.noise_multiplier}, source="bfdl attack inversion")
    t0 = time.perf_counter()
    res = inversion_on_run(args.run, opts, seed=args.seed, progress=_log)
    if not res["setting"].get("applicable", True):
        print(f"inversion: not applicable ({res['setting']['reason']})")
    for r in res["rows"]:
        print(
            f"{r['target']:13s} B={r['batch_size']:<3d} steps={r['local_steps']:<2d} {r['round']:5s} "
            f"success {r['successes']}/{r['n_targets']} = {r['success_rate']:.3f} "
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]  SSIM {r['mean_ssim']:.3f}  PSNR {r['mean_psnr']:.1f}  "
            f"labels {r['label_recovery_rate']:.2f}  {r['seconds']:.1f}s"
        )
    print(f"wrote {args.run}/attacks/inversion.json ({time.perf_counter() - t0:.1f}s)")
    return 0


def run_membership(args: argparse.Namespace) -> int:
    """Exit 3 with one line when a membership attack beats the run's DP bound (after writing)."""
    from bfdl_tff.config import from_dict
    from bfdl_tff.privacy_eval.options import MembershipOptions
    from bfdl_tff.privacy_eval.run_attacks import membership_on_run

    opts = from_dict(MembershipOptions, {"n_shadows": args.shadows, "max_per_class": args.max_per_class,
                                         "shadow_epochs": args.shadow_epochs, "online": not args.offline,
                                         "shadow_data": args.shadow_data}, source="bfdl attack membership")
    t0 = time.perf_counter()
    res = membership_on_run(args.run, opts, seed=args.seed, progress=_log)
    for name in ("loss_threshold", "lira"):
        r = res[name]
        print(f"{name:15s} AUC {r['auc']:.3f}  advantage {r['advantage']:.3f}  " + "  ".join(
            f"TPR@{float(lv) * 100:g}%FPR {r[f'tpr_at_fpr_{lv}']:.4f} [{r[f'tpr_ci_low_at_fpr_{lv}']:.4f}, "
            f"{r[f'tpr_ci_high_at_fpr_{lv}']:.4f}]" for lv in ("0.001", "0.01")))
    b = res["dp_bound"]
    if b:
        print(
            f"DP bound (eps={b['epsilon']:.3g}, delta={b['delta']:.1g}): TPR@0.1%FPR <= "
            f"{b['tpr_bound_at_fpr_0.001']:.4f}, TPR@1%FPR <= {b['tpr_bound_at_fpr_0.01']:.4f}; DP audit: no violation"
        )
    print(f"members {res['n_members']}, non-members {res['n_nonmembers']}, shadows {res['lira']['n_shadows']}; "
          f"wrote {args.run}/attacks/membership.json ({time.perf_counter() - t0:.1f}s)")
    return 0
