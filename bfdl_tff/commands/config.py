"""``bfdl config check FILE`` and ``bfdl config show FILE``: validate / print a resolved config."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("config", help="validate or show an experiment config")
    s = p.add_subparsers(dest="config_cmd", metavar="ACTION", required=True)
    c = s.add_parser("check", help="validate a config file (exit 2 with file and key on error)")
    c.add_argument("file", help="config YAML or a name under configs/experiments/")
    c.set_defaults(func=_check)
    sh = s.add_parser("show", help="print the resolved config with defaults filled in")
    sh.add_argument("file")
    sh.set_defaults(func=_show)


def _load(name: str):
    from bfdl_tff.config import load_config, resolve_experiment_config

    return load_config(resolve_experiment_config(name))


def _check(args: argparse.Namespace) -> int:
    """The config, then the model config it names with its overrides (an unknown model, a missing
    model file or a bad override fails here as it would in ``bfdl train``)."""
    from bfdl_tff.config import resolve_experiment_config
    from bfdl_tff.experiment import check_model

    cfg = _load(args.file)
    check_model(cfg, source=str(resolve_experiment_config(args.file)))
    print(f"{args.file}: OK ({cfg.name}, arm={cfg.arm}, model={cfg.model.config})")
    return 0


def _show(args: argparse.Namespace) -> int:
    from bfdl_tff.config import dump_yaml

    print(dump_yaml(_load(args.file)), end="")
    return 0
