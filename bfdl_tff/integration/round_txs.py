"""The signed transactions of one federated round (paper 3.1, 3.4, 3.5), built off the training
thread by :class:`bfdl_tff.integration.hook.LedgerHook`.

===========================  ==========  ===================================================
kind                         signer      payload
===========================  ==========  ===================================================
``round.open``               aggregator  round
``round.commit_update`` x K  hospital k  round, salted commitment to the hospital's update,
                                         num_examples, salt_hash (participation + commitment)
``secagg.transcript``        aggregator  round, the secure-aggregation protocol transcript
                                         (masked runs only; issue 18)
``round.global_model``       aggregator  round, weights_digest(global weights), off-chain
                                         checkpoint address and SHA-256
``privacy.record``           aggregator  round, epsilon, delta, accountant, noise multiplier,
                                         each hospital's epsilon/delta/noise (sample-level DP)
                                         (the privacy-budget contract refuses it past the cap)
``metrics.record``           aggregator  round, the round's metrics row (finite values)
``access.request_summary``   hospital k  round (x K: each hospital fetching the new global
                                         model; the contract grants it to registered hospitals)
``round.close``              aggregator  round (the contract updates reputations)
===========================  ==========  ===================================================

i.e. ``2K + 5`` transactions per round (11 with the paper's three hospitals; ``2K + 6`` with
masked secure aggregation). No half-signed
round: :meth:`RoundSigner.round_txs` signs every transaction before any is submitted, so a signing
failure (Vault down, wrong token, missing key) raises before anything reaches the chain.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from ledger.offchain import OffchainStore
from ledger.tx import Transaction, sign_tx

from bfdl_tff.federated.hooks import RoundContext
from bfdl_tff.hashing import weights_digest
from bfdl_tff.integration.commitments import commit_update, new_salt, salt_hash, weights_to_npz_bytes
from bfdl_tff.keys import AGGREGATOR_NAME, Signer


@dataclass
class RoundJob:
    """A round handed from the training thread to the ledger thread (weights copied)."""

    round_num: int
    weights: list[np.ndarray]
    participants: list[str]
    num_examples: dict[str, int]
    client_commitments: dict[str, str]
    metrics: dict[str, Any]
    privacy: dict[str, Any]
    round_seconds: float
    secagg_transcript: dict[str, Any] | None = None  # masked secure aggregation (issue 18)

    @classmethod
    def from_context(cls, ctx: RoundContext) -> "RoundJob":
        return cls(
            round_num=int(ctx.round_num),
            weights=[np.array(w, copy=True) for w in ctx.global_weights],
            participants=list(ctx.participants),
            num_examples={k: int(v) for k, v in ctx.num_examples.items()},
            client_commitments=dict(ctx.client_commitments),
            metrics=dict(ctx.metrics),
            privacy=dict(ctx.privacy or {}),
            round_seconds=float(ctx.round_seconds),
            secagg_transcript=getattr(ctx, "secagg_transcript", None),
        )


@dataclass
class SignedRound:
    """Every transaction of a round, signed, plus what the hospitals keep private."""

    round_num: int
    txs: list[Transaction]
    openings: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (key name, opening)
    sign_seconds: float = 0.0


def finite_metrics(metrics: dict[str, Any]) -> dict[str, float | int]:
    """The metrics row restricted to finite numbers (NaN has no canonical JSON encoding)."""
    out: dict[str, float | int] = {}
    for k, v in metrics.items():
        if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
            continue
        if math.isfinite(float(v)):
            out[str(k)] = int(v) if isinstance(v, (int, np.integer)) else float(v)
    return out


class RoundSigner:
    """Signs transactions for the institutions of one run (``names``: runner name -> key name)."""

    def __init__(self, *, signers: dict[str, Signer], names: dict[str, str], chain_id: str,
                 offchain: OffchainStore, request_summaries: bool = True) -> None:
        self.signers = signers
        self.names = names
        self.chain_id = chain_id
        self.offchain = offchain
        self.request_summaries = request_summaries

    def sign(self, who: str, kind: str, payload: dict[str, Any]) -> Transaction:
        """``who`` is a key name (``aggregator``, ``hospital-a``, ``admin``)."""
        return sign_tx(self.signers[who], kind, payload, chain_id=self.chain_id)

    def who(self, sender_hex: str) -> str:
        """The key name of a sender's public key (for error messages)."""
        for k, s in self.signers.items():
            if s.public_key().hex() == sender_hex:
                return k
        return sender_hex[:16]

    def round_txs(self, job: RoundJob) -> SignedRound:
        """Store the checkpoint off-chain, then sign every transaction of the round."""
        r, agg = job.round_num, AGGREGATOR_NAME
        ckpt = weights_to_npz_bytes(job.weights)
        address = self.offchain.put(ckpt)
        t0 = time.perf_counter()
        out = SignedRound(round_num=r, txs=[self.sign(agg, "round.open", {"round": r})])
        for h in job.participants:
            out.txs.append(self._commitment(job, h, out.openings))
        if job.secagg_transcript is not None:
            out.txs.append(self.sign(agg, "secagg.transcript", {"round": r, "transcript": job.secagg_transcript}))
        out.txs.append(self.sign(agg, "round.global_model", {
            "round": r, "model_hash": weights_digest(job.weights), "checkpoint_address": address,
            "checkpoint_sha256": hashlib.sha256(ckpt).hexdigest()}))
        p = job.privacy
        if p.get("epsilon") is not None and math.isfinite(float(p["epsilon"])):
            out.txs.append(self.sign(agg, "privacy.record", {
                "round": r, "epsilon": float(p["epsilon"]), "delta": float(p.get("delta") or 0.0),
                "accountant": str(p.get("accountant") or ""),
                "noise_multiplier": float(p.get("noise_multiplier") or 0.0),
                # each hospital's own budget (sample-level DP, calibrated per hospital; issue 16.2)
                **({"hospitals": {h: {k: float(v[k]) for k in ("epsilon", "delta", "noise_multiplier")}
                                  for h, v in p["hospitals"].items()}} if p.get("hospitals") else {})}))
        out.txs.append(self.sign(agg, "metrics.record", {"round": r, "metrics": finite_metrics(job.metrics)}))
        if self.request_summaries:
            out.txs.extend(self.sign(self.names[h], "access.request_summary", {"round": r}) for h in job.participants)
        out.txs.append(self.sign(agg, "round.close", {"round": r}))
        out.sign_seconds = time.perf_counter() - t0
        return out

    def _commitment(self, job: RoundJob, hospital: str, openings: list[tuple[str, dict[str, Any]]]) -> Transaction:
        """Hospital ``hospital``'s salted commitment to its update; the opening is kept aside."""
        r, digest = job.round_num, job.client_commitments[hospital]
        salt = new_salt()
        commitment = commit_update(r, digest, salt)
        kname = self.names[hospital]
        openings.append((kname, {"round": r, "salt": salt.hex(), "update_digest": digest, "commitment": commitment}))
        return self.sign(kname, "round.commit_update", {
            "round": r, "commitment": commitment, "num_examples": int(job.num_examples.get(hospital, 0)),
            "salt_hash": salt_hash(salt)})


def save_openings(openings_dir: Path, openings: list[tuple[str, dict[str, Any]]]) -> None:
    """Append each hospital's openings to ``<openings_dir>/<hospital>.jsonl`` (0600, dir 0700),
    standing in for the hospital's private storage (paper 3.1). Idempotent: a line already in the
    file is not appended again (a round re-submitted from the outbox on resume)."""
    if not openings_dir.exists():
        openings_dir.mkdir(mode=0o700)
        os.chmod(openings_dir, 0o700)
    for kname, op in openings:
        path, line = openings_dir / f"{kname}.jsonl", json.dumps(op, sort_keys=True)
        if path.is_file() and line in path.read_text(encoding="utf-8").splitlines():
            continue
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            os.write(fd, (line + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)


__all__ = ["RoundJob", "RoundSigner", "SignedRound", "finite_metrics", "save_openings"]
