"""Salted update commitments and canonical off-chain checkpoints (paper 3.1, 3.4, 3.6).

Update commitments. The runner hands the hook, per participating hospital, the hospital-side
digest ``d = weights_digest(update)`` of that hospital's own model update
(:mod:`bfdl_tff.federated.hooks`). Publishing ``d`` itself would let anyone who can guess the
update (e.g. a server that knows the global model and a candidate batch) confirm the guess, so the
hospital publishes a *salted* commitment instead::

    salt        = 32 random bytes (kept by the hospital)
    commitment  = SHA-256("bfdl-commit-v1" || round (8 bytes LE) || salt || d)
    salt_hash   = SHA-256(salt)

and signs ``round.commit_update {round, commitment, num_examples, salt_hash}`` with its own key.
The opening ``(round, salt, d)`` stays with the hospital (here: ``ledger/openings/<hospital>.jsonl``,
mode 0600, standing in for the hospital's private storage); given it, an auditor can check the
commitment (``bfdl audit verify`` does so when the openings are present). Binding the round
number into the hash means a commitment cannot be replayed into another round even if the
contract's own replay check were bypassed.

Checkpoints. The aggregator stores each round's global model off-chain (content-addressed,
:class:`ledger.offchain.OffchainStore`) as an ``.npz`` with arrays ``w0000, w0001, ...`` (the
``final_model.npz`` layout) and commits on-chain both ``model_hash = weights_digest(weights)``
and the checkpoint's byte address/SHA-256, so an auditor can fetch the checkpoint, check its bytes
and check that the weights inside hash to the committed model.
"""

from __future__ import annotations

import hashlib
import io
import os
import struct
from typing import Sequence

import numpy as np

COMMIT_DOMAIN = b"bfdl-commit-v1"


def commit_update(round_num: int, update_digest_hex: str, salt: bytes) -> str:
    d = bytes.fromhex(update_digest_hex)
    if len(d) != 32:
        raise ValueError(f"update digest must be 32 bytes hex, got {len(d)} bytes")
    if len(salt) < 16:
        raise ValueError("salt must be at least 16 bytes")
    h = hashlib.sha256()
    h.update(COMMIT_DOMAIN + struct.pack("<Q", round_num) + salt + d)
    return h.hexdigest()


def salt_hash(salt: bytes) -> str:
    return hashlib.sha256(salt).hexdigest()


def new_salt() -> bytes:
    return os.urandom(32)


def weights_to_npz_bytes(weights: Sequence[np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **{f"w{i:04d}": np.asarray(w) for i, w in enumerate(weights)})
    return buf.getvalue()


def npz_to_weights(data: bytes | str | os.PathLike[str]) -> list[np.ndarray]:
    """Load ``w0000, w0001, ...`` from npz bytes or a path, in index order (strict names)."""
    src = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    with np.load(src, allow_pickle=False) as z:
        names = sorted(z.files)
        expected = [f"w{i:04d}" for i in range(len(names))]
        if names != expected:
            raise ValueError(f"npz arrays must be named w0000..w{len(names) - 1:04d}, got {names[:5]}...")
        return [z[n] for n in names]
