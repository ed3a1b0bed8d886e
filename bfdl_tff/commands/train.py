"""``bfdl train --config FILE [--arm NAME] [--out RUN_DIR] [--resume] [--overwrite] [--rounds N]``.

Trains one arm of an experiment (paper 2.1/3.1: centralized, federated, B-FDL) into a run
directory (default ``runs/<name>-<arm>-s<seed>``). For the ``bfdl`` arm with ``ledger.enabled`` the
B-FDL ledger hook (``bfdl_tff.integration.hook.attach_hooks``) records every round on the PBFT
ledger. ``--resume`` continues an interrupted run from its last checkpoint (same config required);
``--overwrite`` moves an existing run directory aside first.

SIGTERM / SIGINT stop training cleanly (hooks closed, TFF worker stopped, the newest checkpoint
kept): one line on stderr naming the signal and how to continue, exit code ``128 + signum``.
"""

from __future__ import annotations

import argparse
import json
import sys


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train one arm (centralized | federated | bfdl) of an experiment config")
    p.add_argument("--config", required=True, help="experiment config: a YAML path or a name under configs/experiments/ (e.g. smoke)")
    from bfdl_tff.config import ARMS

    p.add_argument("--arm", choices=ARMS, default=None, help="override the config's arm")
    p.add_argument("--out", default=None, help="run directory (default runs/<name>-<arm>-s<seed>)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--resume", action="store_true", help="continue an interrupted run from its last checkpoint")
    g.add_argument("--overwrite", action="store_true", help="move an existing run directory aside and start again")
    p.add_argument("--rounds", type=int, default=None, help="override federated.rounds")
    p.add_argument("--seed", type=int, default=None, help="override the experiment seed")
    p.add_argument("--no-ledger", action="store_true", help="bfdl arm without the ledger hook (ledger.enabled=false)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_train)


def _train(args: argparse.Namespace) -> int:
    from bfdl_tff.config import load_config, resolve_experiment_config
    from bfdl_tff.errors import ConfigError
    from bfdl_tff.runs import RunDir, default_run_dir

    path = resolve_experiment_config(args.config)
    overrides: dict = {}
    if args.arm:
        overrides["arm"] = args.arm
    if args.rounds is not None:
        if args.rounds < 1:
            raise ConfigError(str(path), "federated.rounds", f"--rounds must be >= 1, got {args.rounds}")
        overrides["federated.rounds"] = args.rounds
    if args.seed is not None:
        overrides["seed"] = args.seed
    if args.no_ledger:
        overrides["ledger.enabled"] = False
    cfg = load_config(path, overrides=overrides)
    out = args.out or str(default_run_dir(cfg))
    rd = RunDir.create(out, cfg, resume=args.resume, overwrite=args.overwrite)

    from bfdl_tff.experiment import train_arm
    from bfdl_tff.tff_runtime import Terminated

    try:
        summary = train_arm(cfg, rd, resume=args.resume, progress=not args.quiet)
    except Terminated as e:
        print(f"bfdl: train: stopped by {e.signal_name}; {rd.path} keeps its newest checkpoint: "
              "continue with the same options and --resume", file=sys.stderr)
        return int(e.code)
    brief = {
        k: summary.get(k)
        for k in ("arm", "rounds", "final_macro_auc", "final_micro_auc", "f1_macro", "all_negative_accuracy",
                  "per_label_accuracy", "epsilon", "delta", "noise_multiplier", "cum_bytes", "wall_s", "synthetic")
    }
    print(json.dumps({"run_dir": str(rd.path), **brief}, indent=2))
    return 0
