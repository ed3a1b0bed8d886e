"""Typed errors of the secure-aggregation protocol (paper 3.1/3.5: secure aggregation).

Every error is a :class:`bfdl_tff.errors.BfdlError` (one line, exit code 2 at the CLI) and names
the run, the round, the hospital and the problem. A protocol error raised by a state machine
aborts the round on that side: the object moves to ``ABORTED``, records the reason in its
transcript, logs it, and never returns a partial aggregate.
"""

from __future__ import annotations

from bfdl_tff.errors import BfdlError


class SecAggError(BfdlError):
    """Base class of every secure-aggregation error.

    ``transcript``: when a round driver (``bfdl_tff.secagg.simulate.run_round``) lets the error
    through, the server's transcript of the aborted round (with the reason in ``aborted``), so
    the caller can commit it to the ledger; ``None`` otherwise."""

    transcript: dict | None = None


class ProtocolStateError(SecAggError):
    """A message or call arrived in the wrong protocol state (or after the round aborted)."""


class LateMessageError(ProtocolStateError):
    """A message arrived after its step closed; it is ignored and the round continues."""


class MalformedMessageError(SecAggError):
    """A message cannot be decoded, or its fields have the wrong type, size or value."""


class MalformedVectorError(MalformedMessageError):
    """A masked vector has the wrong length, dtype, or an element outside ``[0, 2^b)``."""


class BadSignatureError(SecAggError):
    """An Ed25519 signature does not verify against the sender's registered identity key."""


class ReplayError(SecAggError):
    """A message belongs to another run or round (or is addressed to another hospital)."""


class DuplicateMessageError(SecAggError):
    """A hospital sent the same protocol message twice in one round."""


class UnknownParticipantError(SecAggError):
    """A message names a hospital that is not on the roster or not in the expected set."""


class BadKeyError(SecAggError):
    """A key-agreement key is invalid, repeated, or differs from the registered one."""


class DecryptionError(SecAggError):
    """An encrypted share fails authentication (wrong key, tampered, or misaddressed)."""


class TooFewSurvivorsError(SecAggError):
    """Fewer than ``t`` hospitals remain at some step; the round cannot complete."""


class DoubleRevealError(SecAggError):
    """A reveal of both the self-mask share and the pairwise-secret share of one hospital."""


class ReconstructionError(SecAggError):
    """Revealed shares are not enough, or inconsistent, to reconstruct a secret."""


class KxKeyStoreError(SecAggError):
    """The local key-agreement key store cannot be used (path, permissions, file contents)."""


class QuantizationError(SecAggError):
    """Quantisation parameters cannot guarantee a wrap-free sum, or an input is not finite."""
