"""Secure aggregation with real cryptography (issue 18; paper 3.1 and 3.5: "secure aggregation
was also performed during the aggregation process").

The protocol of Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine
Learning" (CCS 2017), with the SecAgg+ neighbour graph of Bell et al. (CCS 2020) as an option:
pairwise masks from X25519 + HKDF-SHA256, self-masks, ChaCha20 mask expansion in Z_{2^b},
Shamir-shared dropout recovery with ChaCha20-Poly1305-encrypted, Ed25519-signed shares, explicit
client/server state machines and a ledger-ready transcript. See ``docs/secagg.md``.

Self-contained: numpy and ``cryptography`` only (no TensorFlow, no ``ledger`` import).
"""

from bfdl_tff.secagg.aggregate import MaskedRound, MaskedSettings, masked_sum
from bfdl_tff.secagg.client import ClientState, SecAggClient
from bfdl_tff.secagg.errors import (
    BadKeyError,
    BadSignatureError,
    DecryptionError,
    DoubleRevealError,
    DuplicateMessageError,
    KxKeyStoreError,
    LateMessageError,
    MalformedMessageError,
    MalformedVectorError,
    ProtocolStateError,
    QuantizationError,
    ReconstructionError,
    ReplayError,
    SecAggError,
    TooFewSurvivorsError,
    UnknownParticipantError,
)
from bfdl_tff.secagg.keyring import EphemeralKeyring, Keyring, protocol_ids
from bfdl_tff.secagg.keys import Ed25519Signer, KxKey, KxKeyStore, Signer
from bfdl_tff.secagg.messages import decode, encode
from bfdl_tff.secagg.params import Participant, RoundParams, default_threshold
from bfdl_tff.secagg.quantize import Quantizer, bits_for
from bfdl_tff.secagg.ring import Ring
from bfdl_tff.secagg.server import AggregateResult, SecAggServer, ServerState
from bfdl_tff.secagg.transcript import Transcript, audit_transcript

__all__ = [
    "AggregateResult", "BadKeyError", "EphemeralKeyring", "Keyring", "MaskedRound", "MaskedSettings",
    "masked_sum", "protocol_ids", "BadSignatureError", "ClientState", "DecryptionError",
    "DoubleRevealError", "DuplicateMessageError", "Ed25519Signer", "KxKey", "KxKeyStore",
    "KxKeyStoreError", "LateMessageError", "MalformedMessageError", "MalformedVectorError", "Participant",
    "ProtocolStateError", "QuantizationError", "Quantizer", "ReconstructionError", "ReplayError",
    "Ring", "RoundParams", "SecAggClient", "SecAggError", "SecAggServer", "ServerState", "Signer",
    "TooFewSurvivorsError", "Transcript", "UnknownParticipantError", "audit_transcript", "bits_for",
    "decode", "default_threshold", "encode",
]
