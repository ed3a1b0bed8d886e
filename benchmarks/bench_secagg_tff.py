"""Masked vs TFF secure sum inside a TFF round (issue 18 Performance); prints numbers only.

    PYTHONPATH=$PWD nice -n 10 .venv/bin/python benchmarks/bench_secagg_tff.py [--config default]
        [--hospitals 3,10] [--rounds 4] [--images 48] [--json out.json] > /tmp/bench.log 2>&1

For each K in ``--hospitals`` the experiment config (``--config``, default the reproduction's
default profile: its model, image size, privacy mode, batch size, optimisers) is run through the
real training engine (:class:`bfdl_tff.federated.tff_engine.FederatedEngine`: one TFF computation
per hospital's client work, then the aggregation and the server optimizer) twice, with
``privacy.secure_aggregation: tff_secure_sum`` (TFF's SecureSumFactory, test context) and
``masked`` (the protocol of ``bfdl_tff.secagg``, the server's sum a TFF computation, native
context), on the same in-memory toy federation of ``--images`` images per hospital. Per mode:

* round s: wall time of ``engine.run_round`` (client work + aggregation + finalizer), round 1
  (tracing, warm-up) listed apart, the mean and min of rounds 2..R;
* aggregation s: the part after the hospitals' client work (``tff_secure_sum``: TFF's aggregator
  + finalizer; ``masked``: hospital-side quantise/mask, the protocol, the server's TFF sum,
  unmasking, finalizer), mean of rounds 2..R - the two contexts run the client work at different
  speeds (TFF's test context is slower), so both the whole round and this part are shown;
* masked only: the protocol's time (slowest hospital, server incl. the TFF sum) per round;
* upload B/hospital: ``tff_secure_sum``: what TFF's secure sum moves (32-bit values per
  parameter, ``federated.communication``); ``masked``: every protocol message a hospital sends
  (keys, encrypted shares, signatures, the masked vector, the unmask response), measured on the wire
  codec.

The ledger is off here (its cost is ``benchmarks/bench_integration.py``'s). The toy data keep the
rounds short, so the aggregation's share of a round is larger than in a run on the profile's data:
the ratio is an upper bound for the profile. Never piped: TFF's worker holds pipes open.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

import numpy as np

MODES = ("tff_secure_sum", "masked")


def _engines(cfg_name: str, k: int, images: int, rounds: int) -> tuple[dict[str, Any], Any]:
    """Both modes' engines, built before any Keras model (see FederatedEngine)."""
    from bfdl_tff.config import load_config, resolve_experiment_config
    from bfdl_tff.federated import accounting, model_bridge
    from bfdl_tff.federated.testing import toy_federation
    from bfdl_tff.federated.tff_engine import FederatedEngine
    from bfdl_tff.models import registry

    engines = {}
    for mode in MODES:
        cfg = load_config(resolve_experiment_config(cfg_name))
        cfg.arm = "bfdl"
        cfg.data.hospitals = k
        cfg.federated.rounds = rounds
        cfg.ledger.enabled = False
        cfg.privacy.secure_sum = None
        cfg.privacy.secure_aggregation = mode
        model_cfg = registry.load_model_config(cfg.model.config, **cfg.model.overrides)
        data = toy_federation([images] * k, size=int(model_cfg.input_size), seed=k)
        sched = accounting.schedule_for_config(
            cfg, {n: len(data.train[n]) for n in data.names}, source="bench",
            num_patients={n: len(set(data.train[n].patient_ids.tolist())) for n in data.names})
        bundle = model_bridge.build_bundle(model_cfg)
        engines[mode] = (cfg, FederatedEngine(cfg, data, bundle, sched), bundle, data)
    return engines, model_cfg


def _run(cfg: Any, engine: Any, bundle: Any, data: Any, rounds: int) -> dict[str, Any]:
    from bfdl_tff import tff_runtime
    from bfdl_tff.secagg.keyring import EphemeralKeyring

    engine.attach_initial_model(bundle.keras(seed=cfg.resolved_seeds()["model_init"]))
    if engine.aggregation == "masked":
        engine.attach_secagg_keyring(EphemeralKeyring(data.names, run_id="bench", noise_seed=1))
    times, proto_client, proto_server, upload = [], [], [], []
    agg_times: list[float] = []
    trainer = engine.trainer
    for name in ("_aggregate", "_masked_round"):  # time the aggregation part of each round
        fn = getattr(trainer, name)

        def timed(*a: Any, _fn: Any = fn, **kw: Any) -> Any:
            t = time.perf_counter()
            try:
                return _fn(*a, **kw)
            finally:
                agg_times.append(time.perf_counter() - t)

        setattr(trainer, name, timed)
    with tff_runtime.execution_context(engine.context_kind):
        state = engine.initial_state()
        for r in range(1, rounds + 1):
            t0 = time.perf_counter()
            state, rr = engine.run_round(state, r)
            times.append(time.perf_counter() - t0)
            if rr.secagg:
                proto_client.append(rr.secagg["secagg_client_ms_max"])
                proto_server.append(rr.secagg["secagg_server_ms"])
                upload.append(rr.secagg["secagg_bytes_sent_max"])
            else:
                upload.append(rr.bytes_uploaded / len(rr.participants))
        num_params = int(sum(np.size(w) for w in engine.global_weights(state)))
    steady = times[1:] or times
    out = {"round1_s": times[0], "mean_s": float(np.mean(steady)), "min_s": float(np.min(steady)),
           "rounds_s": times, "upload_B_per_hospital": float(max(upload)), "num_params": num_params,
           "aggregation_mean_s": float(np.mean(agg_times[1:] or agg_times))}
    if proto_client:
        out["protocol_client_ms_max"] = float(np.mean(proto_client[1:] or proto_client))
        out["protocol_server_ms"] = float(np.mean(proto_server[1:] or proto_server))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="default")
    ap.add_argument("--hospitals", default="3,10")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--images", type=int, default=48, help="training images per hospital")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    results = []
    for k in [int(x) for x in args.hospitals.split(",")]:
        engines, model_cfg = _engines(args.config, k, args.images, args.rounds)
        row: dict[str, Any] = {"K": k, "model": engines["masked"][0].model.config, "image_size": int(model_cfg.input_size),
                               "images_per_hospital": args.images}
        for mode in MODES:
            cfg, engine, bundle, data = engines[mode]
            row[mode] = _run(cfg, engine, bundle, data, args.rounds)
        row["num_params"] = row["masked"]["num_params"]
        row["ratio_mean"] = row["masked"]["mean_s"] / row["tff_secure_sum"]["mean_s"]
        row["ratio_min"] = row["masked"]["min_s"] / row["tff_secure_sum"]["min_s"]
        results.append(row)
        t, m = row["tff_secure_sum"], row["masked"]
        print(f"K={k} model={row['model']} {row['image_size']}px params={row['num_params']} images/hospital="
              f"{args.images} privacy={cfg.privacy.mode}: "
              f"round s (rounds 2..{args.rounds}) tff_secure_sum mean {t['mean_s']:.3f} min {t['min_s']:.3f} | "
              f"masked mean {m['mean_s']:.3f} min {m['min_s']:.3f} | ratio mean {row['ratio_mean']:.3f} "
              f"min {row['ratio_min']:.3f} | aggregation s tff_secure_sum {t['aggregation_mean_s']:.3f} masked "
              f"{m['aggregation_mean_s']:.3f} | round 1 s {t['round1_s']:.2f} / {m['round1_s']:.2f} | "
              f"protocol ms client max {m['protocol_client_ms_max']:.1f} server {m['protocol_server_ms']:.1f} | "
              f"upload B/hospital tff_secure_sum {t['upload_B_per_hospital']:.0f} masked "
              f"{m['upload_B_per_hospital']:.0f}", flush=True)
    if args.json:
        from bfdl_tff.io_utils import atomic_write_json

        atomic_write_json(args.json, json.loads(json.dumps(results, default=float)))


if __name__ == "__main__":
    main()
