"""Drive a :class:`LedgerHook` with synthetic rounds (no TensorFlow): for tests, benchmarks and
demonstrations of the audit trail (paper 3.1, 3.4). The weights, updates and metrics are random
but the ledger path is the real one (keys, signatures, PBFT cluster, off-chain store, contracts),
and the run directory is a real :class:`bfdl_tff.runs.RunDir` with the files the runner writes
(``config.yaml``, ``metrics.csv``, ``summary.json``, ``final_model.npz``)."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.federated.hooks import RoundContext, RunInfo
from bfdl_tff.hashing import weights_digest
from bfdl_tff.integration.hook import LedgerHook
from bfdl_tff.io_utils import atomic_write_json, atomic_write_text
from bfdl_tff.runs import RunDir
from bfdl_tff.secagg.aggregate import MaskedSettings, masked_sum
from bfdl_tff.secagg.simulate import Intercept


def synthetic_run_dir(path: Path, *, name: str = "synthetic", secure_aggregation: str = "tff_secure_sum") -> RunDir:
    """A fresh ``bfdl``-arm run directory (``config.yaml``, ``environment.json``); its config
    states the secure aggregation the synthetic rounds claim (``masked``: give the hook
    ``secagg=True`` so every round carries a transcript, which the audit then requires)."""
    cfg = ExperimentConfig(name=name, arm="bfdl")
    cfg.privacy.secure_aggregation = secure_aggregation
    return RunDir.create(path, cfg)


def synthetic_rounds(
    run: RunDir,
    *,
    hospitals: Sequence[str],
    rounds: int,
    shapes: Sequence[tuple[int, ...]] = ((64, 32), (32,), (32, 14), (14,)),
    seed: int = 0,
    epsilon_per_round: float = 0.1,
    round_seconds: float = 1.0,
    start_round: int = 1,
) -> list[RoundContext]:
    """Round contexts with evolving weights (FedAvg of random per-hospital updates)."""
    rng = np.random.default_rng(seed)
    w = [rng.normal(size=s).astype(np.float32) for s in shapes]
    out = []
    for r in range(start_round, start_round + rounds):
        updates = {h: [rng.normal(scale=0.01, size=x.shape).astype(np.float32) for x in w] for h in hospitals}
        n = {h: int(20 + 10 * i) for i, h in enumerate(hospitals)}
        tot = sum(n.values())
        w = [(x - sum(n[h] / tot * updates[h][i] for h in hospitals)).astype(np.float32) for i, x in enumerate(w)]
        out.append(RoundContext(
            round_num=r,
            run_dir=run.path,
            global_weights=[x.copy() for x in w],
            participants=list(hospitals),
            num_examples=n,
            client_commitments={h: weights_digest(updates[h]) for h in hospitals},
            metrics={"round": r, "wall_s": round_seconds, "train_loss": float(1.0 / r),
                     "test_macro_auc": float(0.5 + 0.01 * r), "test_micro_auc": float("nan")},
            privacy={"mode": "sample", "epsilon": epsilon_per_round * r, "delta": 1e-5,
                     "accountant": "rdp", "noise_multiplier": 1.1, "l2_clip": 1.0},
            round_seconds=round_seconds,
            checkpoint_path=None,
        ))
    return out


def run_info(run: RunDir, hospitals: Sequence[str], num_params: int = 0) -> RunInfo:
    return RunInfo(run_dir=run.path, config=run.config, hospital_names=list(hospitals),
                   num_examples={h: 0 for h in hospitals}, num_params=num_params)


def write_results(run: RunDir, ctxs: Sequence[RoundContext]) -> dict:
    """What the runner writes before ``on_end``: ``metrics.csv``, ``final_model.npz``, ``summary.json``."""
    rows = [c.metrics for c in ctxs]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(run.metrics_file, buf.getvalue())
    last = ctxs[-1]
    run.save_model(last.global_weights)
    summary = {"arm": "bfdl", "name": run.config.name, "rounds": len(ctxs),
               "final_macro_auc": last.metrics["test_macro_auc"], "epsilon": last.privacy["epsilon"],
               "synthetic": True, "final_model_digest": weights_digest(last.global_weights)}
    atomic_write_json(run.summary_file, summary)
    return summary


def attach_transcripts(hook: LedgerHook, ctxs: Sequence[RoundContext], *, vector_length: int = 64, seed: int = 0,
                       drop_after_shares: Mapping[int, Sequence[str]] | None = None,
                       intercept: Mapping[int, Intercept] | None = None) -> list[str | None]:
    """Run the real masked protocol (issue 18) for each round with the hook's keyring (keystore
    keys, roster from the chain) on random updates and attach its transcript to the context
    (``secagg_transcript``). An aborted round (e.g. ``intercept`` tampers with a message) keeps
    the previous round's global weights: nothing partial is applied. Returns each round's abort
    reason (None if it completed)."""
    rng = np.random.default_rng(seed)
    keyring = hook.secagg_keyring()
    reasons: list[str | None] = []
    for i, c in enumerate(ctxs):
        r = int(c.round_num)
        updates = {h: rng.normal(0.0, 0.01, vector_length) for h in c.participants}
        out = masked_sum(updates, keyring=keyring, round_num=r, settings=MaskedSettings(),
                         drop_after_shares=(drop_after_shares or {}).get(r, ()),
                         intercept=(intercept or {}).get(r))
        c.secagg_transcript = out.transcript  # type: ignore[attr-defined]
        if out.aborted is not None and i > 0:
            c.global_weights = [w.copy() for w in ctxs[i - 1].global_weights]
        reasons.append(out.aborted)
    return reasons


def run_synthetic(hook: LedgerHook, run: RunDir, *, hospitals: Sequence[str], rounds: int,
                  secagg: Mapping[str, object] | None = None, **kw: object) -> list[RoundContext]:
    """on_start, ``rounds`` synthetic rounds, the result files, on_end. Returns the contexts.

    With ``hook.secagg`` every round carries a real protocol transcript
    (:func:`attach_transcripts`, options ``secagg``)."""
    ctxs = synthetic_rounds(run, hospitals=hospitals, rounds=rounds, **kw)  # type: ignore[arg-type]
    hook.on_start(run_info(run, hospitals))
    try:
        if hook.secagg:
            attach_transcripts(hook, ctxs, **(secagg or {}))  # type: ignore[arg-type]
        for c in ctxs:
            hook.on_round_end(c)
        hook.on_end(write_results(run, ctxs))
    finally:
        hook.close()
    return ctxs


__all__ = ["attach_transcripts", "run_info", "run_synthetic", "synthetic_rounds", "synthetic_run_dir", "write_results"]
