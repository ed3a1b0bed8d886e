"""Drive a :class:`LedgerHook` with synthetic rounds (no TensorFlow): for tests, benchmarks and
demonstrations of the audit trail. The weights, updates and metrics are random but the ledger
path is the real one (keys, signatures, PBFT cluster, off-chain store, contracts)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bfdl_tff.hashing import weights_digest
from bfdl_tff.integration.commitments import weights_to_npz_bytes


def synthetic_rounds(
    run_dir: Path,
    *,
    hospitals: Sequence[str],
    rounds: int,
    shapes: Sequence[tuple[int, ...]] = ((64, 32), (32,), (32, 14), (14,)),
    seed: int = 0,
    epsilon_per_round: float = 0.1,
    round_seconds: float = 1.0,
    start_round: int = 1,
) -> list[Any]:
    """A list of :class:`bfdl_tff.federated.hooks.RoundContext` with evolving weights."""
    from bfdl_tff.federated.hooks import RoundContext

    rng = np.random.default_rng(seed)
    w = [rng.normal(size=s).astype(np.float32) for s in shapes]
    out = []
    for r in range(start_round, start_round + rounds):
        updates = {h: [rng.normal(scale=0.01, size=x.shape).astype(np.float32) for x in w] for h in hospitals}
        n = {h: int(20 + 10 * i) for i, h in enumerate(hospitals)}
        tot = sum(n.values())
        w = [x - sum(n[h] / tot * updates[h][i] for h in hospitals) for i, x in enumerate(w)]
        w = [x.astype(np.float32) for x in w]
        out.append(
            RoundContext(
                round_num=r,
                run_dir=Path(run_dir),
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
            )
        )
    return out


def run_info(run_dir: Path, hospitals: Sequence[str], num_params: int = 0) -> Any:
    from bfdl_tff.federated.hooks import RunInfo

    return RunInfo(run_dir=Path(run_dir), config=None, hospital_names=list(hospitals),
                   num_examples={h: 0 for h in hospitals}, num_params=num_params)


def write_final_model(run_dir: Path, weights: Sequence[np.ndarray]) -> Path:
    from bfdl_tff.io_utils import atomic_write_bytes

    p = Path(run_dir) / "final_model.npz"
    atomic_write_bytes(p, weights_to_npz_bytes(weights))
    return p


def run_synthetic(hook: Any, run_dir: Path, *, hospitals: Sequence[str], rounds: int, **kw: Any) -> list[Any]:
    """on_start, ``rounds`` synthetic rounds, final_model.npz, on_end. Returns the contexts."""
    ctxs = synthetic_rounds(run_dir, hospitals=hospitals, rounds=rounds, **kw)
    hook.on_start(run_info(run_dir, hospitals))
    try:
        for c in ctxs:
            hook.on_round_end(c)
        write_final_model(run_dir, ctxs[-1].global_weights)
        hook.on_end({})
    finally:
        hook.close()
    return ctxs
