"""``bfdl attack``: privacy attacks on a finished run (paper 3.3, 3.5; claim C3).

``bfdl attack inversion --run RUN_DIR`` writes ``RUN_DIR/attacks/inversion.json`` (+ CSV and a
PNG grid of originals vs reconstructions); ``bfdl attack membership --run RUN_DIR`` writes
``RUN_DIR/attacks/membership.json``. Defaults are sized for 2 CPU cores; see docs/privacy.md.
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

    inv = asub.add_parser("inversion", help="Inverting-Gradients attack on simulated updates at the released model")
    inv.add_argument("--run", required=True, help="run directory (with config.yaml, final_model.npz)")
    inv.add_argument("--targets", type=int, default=3, help="attacked updates per setting (default 3)")
    inv.add_argument("--batch-sizes", type=_ints, default=(1, 4), help="local batch sizes to sweep (default 1,4)")
    inv.add_argument("--local-steps", type=_ints, default=(1, 4), help="local steps to sweep (default 1,4)")
    inv.add_argument("--iterations", type=int, default=150, help="optimisation steps per restart (default 150)")
    inv.add_argument("--restarts", type=int, default=1, help="random restarts (default 1)")
    inv.add_argument("--tv-weight", type=float, default=1e-4, help="total-variation weight (default 1e-4)")
    inv.add_argument(
        "--kinds", default="", help="comma list of plain_update,secure_sum,dp_update (default: all applicable)"
    )
    inv.add_argument(
        "--label-mode", choices=("oracle", "joint"), default="oracle",
        help="labels for updates of several images: oracle (true labels, strongest attacker; default) "
        "or joint (label-blind DLG)",
    )
    inv.add_argument("--noise-multiplier", type=float, default=None, help="DP noise for dp_update (default: the run's)")
    inv.add_argument("--seed", type=int, default=0)
    inv.set_defaults(func=run_inversion)

    mem = asub.add_parser("membership", help="loss-threshold and LiRA membership inference on the released model")
    mem.add_argument("--run", required=True, help="run directory")
    mem.add_argument("--shadows", type=int, default=4, help="LiRA shadow models, even (default 4)")
    mem.add_argument("--max-per-class", type=int, default=200, help="members and non-members each (default 200)")
    mem.add_argument("--shadow-epochs", type=int, default=None, help="default: rounds * local_epochs of the run")
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
        "n_updates": args.targets, "batch_sizes": list(args.batch_sizes), "local_steps": list(args.local_steps),
        "iterations": args.iterations, "restarts": args.restarts, "tv_weight": args.tv_weight,
        "label_mode": args.label_mode, "targets": [k.strip() for k in args.kinds.split(",") if k.strip()],
        "noise_multiplier": args.noise_multiplier}, source="bfdl attack inversion")
    t0 = time.perf_counter()
    res = inversion_on_run(args.run, opts, seed=args.seed, progress=_log)
    if not res["setting"].get("applicable", True):
        print(f"inversion: not applicable ({res['setting']['reason']})")
    for r in res["rows"]:
        print(
            f"{r['target']:13s} B={r['batch_size']:<3d} steps={r['local_steps']:<3d} "
            f"success {r['successes']}/{r['n_targets']} = {r['success_rate']:.3f} "
            f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}]  SSIM {r['mean_ssim']:.3f}  PSNR {r['mean_psnr']:.1f}  "
            f"labels {r['label_recovery_rate']:.2f}"
        )
    print(f"wrote {args.run}/attacks/inversion.json ({time.perf_counter() - t0:.1f}s)")
    return 0


def run_membership(args: argparse.Namespace) -> int:
    from bfdl_tff.config import from_dict
    from bfdl_tff.privacy_eval.options import MembershipOptions
    from bfdl_tff.privacy_eval.run_attacks import membership_on_run

    opts = from_dict(MembershipOptions, {"n_shadows": args.shadows, "max_per_class": args.max_per_class,
                                         "shadow_epochs": args.shadow_epochs, "online": not args.offline},
                     source="bfdl attack membership")
    t0 = time.perf_counter()
    res = membership_on_run(args.run, opts, seed=args.seed, progress=_log)
    for name in ("loss_threshold", "lira"):
        r = res[name]
        print(
            f"{name:15s} AUC {r['auc']:.3f}  advantage {r['advantage']:.3f}  "
            f"TPR@0.1%FPR {r['tpr_at_fpr_0.001']:.3f}  TPR@1%FPR {r['tpr_at_fpr_0.01']:.3f}"
        )
    b = res["dp_bound"]
    if b:
        print(
            f"DP bound (eps={b['epsilon']:.3g}, delta={b['delta']:.1g}): TPR@0.1%FPR <= "
            f"{b['tpr_bound_at_fpr_0.001']:.4f}, TPR@1%FPR <= {b['tpr_bound_at_fpr_0.01']:.4f}"
        )
    print(f"members {res['n_members']}, non-members {res['n_nonmembers']}; "
          f"wrote {args.run}/attacks/membership.json ({time.perf_counter() - t0:.1f}s)")
    return 0
