"""``bfdl models list`` and ``bfdl models show NAME [--input-size N]`` (model registry, paper 3.1)."""

from __future__ import annotations

import argparse
import json


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model configs or show a model's parameters and outputs")
    s = p.add_subparsers(dest="models_cmd", metavar="ACTION", required=True)
    ls = s.add_parser("list", help="list the model configs under configs/models/")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=_list)
    sh = s.add_parser("show", help="build a model and print parameters, trainable parameters, output shapes")
    sh.add_argument("name", help="registry name (configs/models/<name>.yaml) or a model config file")
    sh.add_argument("--input-size", type=int, default=None, help="override input_size (pixels)")
    sh.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config key (YAML value), e.g. --set norm=group --set seg_loss_weight=0",
    )
    sh.add_argument("--summary", action="store_true", help="also print the Keras layer summary")
    sh.add_argument("--json", action="store_true", help="machine-readable output")
    sh.set_defaults(func=_show)


def _list(args: argparse.Namespace) -> int:
    from bfdl_tff.models.registry import list_models, load_model_config

    rows = []
    for name in list_models():
        cfg = load_model_config(name)
        rows.append(
            {
                "name": name,
                "architecture": cfg.architecture,
                "input_size": cfg.input_size,
                "channels": cfg.channels,
                "norm": cfg.norm,
                "seg_head": cfg.seg_head and cfg.seg_loss_weight > 0,
                "description": cfg.description,
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(f"{'name':<20} {'architecture':<18} {'size':>5} {'ch':>3} {'norm':<6} {'seg':<4} description")
    for r in rows:
        print(
            f"{r['name']:<20} {r['architecture']:<18} {r['input_size']:>5} {r['channels']:>3} "
            f"{r['norm']:<6} {'yes' if r['seg_head'] else 'no':<4} {r['description']}"
        )
    return 0


def _parse_sets(items: list[str]) -> dict:
    import yaml

    from bfdl_tff.errors import ConfigError

    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError("--set", item, "expected KEY=VALUE")
        k, v = item.split("=", 1)
        out[k.strip()] = yaml.safe_load(v)
    return out


def _show(args: argparse.Namespace) -> int:
    from bfdl_tff.models.registry import build_model, describe, load_model_config

    overrides = _parse_sets(args.set)
    if args.input_size is not None:
        overrides["input_size"] = args.input_size
    cfg = load_model_config(args.name, **overrides)
    model = build_model(cfg)
    info = describe(cfg, model)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    print(f"model:                {info['name']} ({info['architecture']}) from {info['source']}")
    print(f"input:                {info['input_shape']}")
    for name, shape in info["outputs"].items():
        print(f"output {name + ':':<15}{shape}")
    print(f"parameters:           {info['parameters']:,}")
    print(f"trainable parameters: {info['trainable_parameters']:,}")
    print(f"non-trainable:        {info['non_trainable_parameters']:,}")
    print(f"layers:               {info['layers']}")
    print(f"normalisation:        {info['norm']}")
    print(f"update size (f32):    {info['update_bytes_float32'] / 2**20:.2f} MiB")
    if args.summary:
        model.summary(line_length=110)
    return 0
