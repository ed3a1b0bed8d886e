"""Typed protocol messages and their wire encoding (Bonawitz et al. 2017, Figure 4 rounds 0-4).

=====  =====================  ==================  ============================================
round  message                direction           content
=====  =====================  ==================  ============================================
0      KeyAdvertisement       hospital -> server  long-term kx key, per-round c/s keys, signed
0      AdvertisedKeys         server -> all       every advertisement received (U1)
1      ShareKeys              hospital -> server  self-mask commitment + one EncryptedShare per
                                                  share holder, each signed
1      ShareDelivery          server -> holder    the EncryptedShares addressed to it (from U2)
2      MaskedInput            hospital -> server  y_k in Z_2^b, the peers it masked with, signed
3      SurvivorList           server -> U3        U3 (optional consistency check)
3      SurvivorSignature      hospital -> server  signature of U3
4      UnmaskRequest          server -> survivors U3, dropped U2 \\ U3, the signatures of U3
4      UnmaskResponse         hospital -> server  self-mask shares of survivors, pairwise-secret
                                                  shares of dropped hospitals, signed
=====  =====================  ==================  ============================================

Wire format: ``encode(msg)`` is canonical JSON (sorted keys, byte strings in base64) and, for a
:class:`MaskedInput`, a newline and the raw little-endian vector. ``decode`` checks every field's
type and raises :class:`MalformedMessageError`. Every signed message has
``signed_payload(params_digest)``: a :func:`~bfdl_tff.secagg.kdf.binding` of a domain label, the
round parameters' digest, run id, round, sender and content, so a signature from another run,
round or protocol step never verifies.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from typing import Any, ClassVar, Union

import numpy as np

from bfdl_tff.secagg.errors import MalformedMessageError
from bfdl_tff.secagg.kdf import binding, sha256

Pairs = tuple[tuple[int, bytes], ...]


def _pairs_list(pairs: Pairs) -> list[list[Any]]:
    return [[i, b] for i, b in pairs]


def vector_bytes(v: np.ndarray) -> bytes:
    """Little-endian bytes of a ring vector (what the wire carries and the signature hashes)."""
    return v.astype(v.dtype.newbyteorder("<"), copy=False).tobytes()


@dataclass(frozen=True)
class KeyAdvertisement:
    KIND: ClassVar[str] = "advertise"
    SPEC: ClassVar[dict[str, str]] = {
        "run_id": "str", "round": "int", "sender": "int",
        "kx_public": "bytes", "c_public": "bytes", "s_public": "bytes", "signature": "bytes",
    }
    run_id: str
    round: int
    sender: int
    kx_public: bytes
    c_public: bytes
    s_public: bytes
    signature: bytes = b""

    def signed_payload(self, params_digest: bytes) -> bytes:
        return binding(self.KIND, params_digest, self.run_id, self.round, self.sender,
                       self.kx_public, self.c_public, self.s_public)


@dataclass(frozen=True)
class AdvertisedKeys:
    KIND: ClassVar[str] = "advertised"
    SPEC: ClassVar[dict[str, str]] = {"run_id": "str", "round": "int", "adverts": "adverts"}
    run_id: str
    round: int
    adverts: tuple[KeyAdvertisement, ...]


@dataclass(frozen=True)
class EncryptedShare:
    KIND: ClassVar[str] = "share"
    SPEC: ClassVar[dict[str, str]] = {
        "run_id": "str", "round": "int", "sender": "int", "recipient": "int",
        "ciphertext": "bytes", "signature": "bytes",
    }
    run_id: str
    round: int
    sender: int
    recipient: int
    ciphertext: bytes
    signature: bytes = b""

    def signed_payload(self, params_digest: bytes) -> bytes:
        return binding(self.KIND, params_digest, self.run_id, self.round, self.sender,
                       self.recipient, sha256(self.ciphertext))


@dataclass(frozen=True)
class ShareKeys:
    KIND: ClassVar[str] = "share-keys"
    SPEC: ClassVar[dict[str, str]] = {
        "run_id": "str", "round": "int", "sender": "int", "self_mask_commitment": "bytes",
        "shares": "shares", "signature": "bytes",
    }
    run_id: str
    round: int
    sender: int
    self_mask_commitment: bytes
    shares: tuple[EncryptedShare, ...]
    signature: bytes = b""

    def signed_payload(self, params_digest: bytes) -> bytes:
        recipients = [s.recipient for s in self.shares]
        return binding(self.KIND, params_digest, self.run_id, self.round, self.sender,
                       self.self_mask_commitment, recipients)


@dataclass(frozen=True)
class ShareDelivery:
    KIND: ClassVar[str] = "delivery"
    SPEC: ClassVar[dict[str, str]] = {"run_id": "str", "round": "int", "recipient": "int", "shares": "shares"}
    run_id: str
    round: int
    recipient: int
    shares: tuple[EncryptedShare, ...]


@dataclass(frozen=True, eq=False)
class MaskedInput:
    KIND: ClassVar[str] = "masked"
    SPEC: ClassVar[dict[str, str]] = {
        "run_id": "str", "round": "int", "sender": "int", "peers": "ints",
        "vector": "vector", "signature": "bytes",
    }
    run_id: str
    round: int
    sender: int
    peers: tuple[int, ...]
    vector: np.ndarray
    signature: bytes = b""

    def signed_payload(self, params_digest: bytes) -> bytes:
        v = self.vector
        digest = sha256(vector_bytes(v)) if isinstance(v, np.ndarray) else b""
        width = v.dtype.itemsize if isinstance(v, np.ndarray) else 0
        return binding(self.KIND, params_digest, self.run_id, self.round, self.sender,
                       list(self.peers), width, digest)


@dataclass(frozen=True)
class SurvivorList:
    KIND: ClassVar[str] = "survivors"
    SPEC: ClassVar[dict[str, str]] = {"run_id": "str", "round": "int", "survivors": "ints"}
    run_id: str
    round: int
    survivors: tuple[int, ...]

    def signed_payload(self, params_digest: bytes) -> bytes:
        return binding(self.KIND, params_digest, self.run_id, self.round, list(self.survivors))


@dataclass(frozen=True)
class SurvivorSignature:
    KIND: ClassVar[str] = "survivor-signature"
    SPEC: ClassVar[dict[str, str]] = {"run_id": "str", "round": "int", "sender": "int", "signature": "bytes"}
    run_id: str
    round: int
    sender: int
    signature: bytes


@dataclass(frozen=True)
class UnmaskRequest:
    KIND: ClassVar[str] = "unmask-request"
    SPEC: ClassVar[dict[str, str]] = {
        "run_id": "str", "round": "int", "survivors": "ints", "dropped": "ints", "confirmations": "pairs",
    }
    run_id: str
    round: int
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    confirmations: Pairs = ()


@dataclass(frozen=True)
class UnmaskResponse:
    KIND: ClassVar[str] = "unmask"
    SPEC: ClassVar[dict[str, str]] = {
        "run_id": "str", "round": "int", "sender": "int",
        "self_mask_shares": "pairs", "pairwise_shares": "pairs", "signature": "bytes",
    }
    run_id: str
    round: int
    sender: int
    self_mask_shares: Pairs
    pairwise_shares: Pairs
    signature: bytes = b""

    def signed_payload(self, params_digest: bytes) -> bytes:
        return binding(self.KIND, params_digest, self.run_id, self.round, self.sender,
                       _pairs_list(self.self_mask_shares), _pairs_list(self.pairwise_shares))


Message = Union[
    KeyAdvertisement, AdvertisedKeys, EncryptedShare, ShareKeys, ShareDelivery, MaskedInput,
    SurvivorList, SurvivorSignature, UnmaskRequest, UnmaskResponse,
]
MESSAGE_TYPES: dict[str, type] = {
    cls.KIND: cls
    for cls in (KeyAdvertisement, AdvertisedKeys, EncryptedShare, ShareKeys, ShareDelivery, MaskedInput,
                SurvivorList, SurvivorSignature, UnmaskRequest, UnmaskResponse)
}

# ---------------------------------------------------------------------------------- wire codec


def _b64(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def _to_obj(msg: Any, tail: list[bytes]) -> dict[str, Any]:
    obj: dict[str, Any] = {"kind": msg.KIND}
    for name, kind in msg.SPEC.items():
        value = getattr(msg, name)
        if kind == "bytes":
            obj[name] = _b64(value)
        elif kind == "ints":
            obj[name] = [int(i) for i in value]
        elif kind == "pairs":
            obj[name] = [[int(i), _b64(b)] for i, b in value]
        elif kind in ("adverts", "shares"):
            obj[name] = [_to_obj(m, tail) for m in value]
        elif kind == "vector":
            obj[name] = {"dtype": value.dtype.str[1:], "length": int(value.shape[0])}
            tail.append(vector_bytes(value))
        else:
            obj[name] = value
    return obj


def encode(msg: Message) -> bytes:
    """Wire bytes of a message (canonical JSON header; raw vector after a newline)."""
    tail: list[bytes] = []
    head = json.dumps(_to_obj(msg, tail), sort_keys=True, separators=(",", ":")).encode("utf-8")
    return head + b"".join(b"\n" + t for t in tail)


def _bad(kind: str, name: str, problem: str) -> MalformedMessageError:
    return MalformedMessageError(f"{kind} message: field {name!r} {problem}")


def _field(kind: str, name: str, spec: str, raw: Any, tail: bytes | None) -> Any:
    if spec == "str":
        if not isinstance(raw, str):
            raise _bad(kind, name, "is not a string")
        return raw
    if spec == "int":
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise _bad(kind, name, "is not an integer")
        return raw
    if spec == "bytes":
        return _unb64(kind, name, raw)
    if spec == "ints":
        if not isinstance(raw, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in raw):
            raise _bad(kind, name, "is not a list of integers")
        return tuple(raw)
    if spec == "pairs":
        if not isinstance(raw, list) or not all(isinstance(p, list) and len(p) == 2 for p in raw):
            raise _bad(kind, name, "is not a list of [id, bytes] pairs")
        return tuple((_field(kind, name, "int", i, None), _unb64(kind, name, b)) for i, b in raw)
    if spec in ("adverts", "shares"):
        want = KeyAdvertisement if spec == "adverts" else EncryptedShare
        if not isinstance(raw, list):
            raise _bad(kind, name, "is not a list")
        return tuple(_from_obj(o, None, want) for o in raw)
    if spec == "vector":
        return _vector(kind, name, raw, tail)
    raise AssertionError(spec)


def _unb64(kind: str, name: str, raw: Any) -> bytes:
    if not isinstance(raw, str):
        raise _bad(kind, name, "is not base64 text")
    try:
        return base64.b64decode(raw.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise _bad(kind, name, "is not valid base64") from None


def _vector(kind: str, name: str, raw: Any, tail: bytes | None) -> np.ndarray:
    if not isinstance(raw, dict) or raw.get("dtype") not in ("u4", "u8") or not isinstance(raw.get("length"), int):
        raise _bad(kind, name, "has no valid dtype (u4/u8) and length")
    dtype = np.dtype("<" + raw["dtype"])
    if tail is None or len(tail) != raw["length"] * dtype.itemsize:
        got = "no" if tail is None else f"{len(tail)}"
        raise _bad(kind, name, f"announces {raw['length']} elements of {dtype.itemsize} bytes but {got} bytes follow")
    return np.frombuffer(tail, dtype=dtype).astype(dtype.newbyteorder("="))


def _from_obj(obj: Any, tail: bytes | None, want: type | None = None) -> Any:
    if not isinstance(obj, dict) or obj.get("kind") not in MESSAGE_TYPES:
        raise MalformedMessageError(f"not a secure-aggregation message (kind {obj.get('kind') if isinstance(obj, dict) else None!r})")
    cls = MESSAGE_TYPES[obj["kind"]]
    if want is not None and cls is not want:
        raise MalformedMessageError(f"expected a {want.KIND} message inside, got {cls.KIND}")
    extra = set(obj) - set(cls.SPEC) - {"kind"}
    missing = set(cls.SPEC) - set(obj)
    if extra or missing:
        raise MalformedMessageError(f"{cls.KIND} message: unexpected fields {sorted(extra)}, missing {sorted(missing)}")
    values = {name: _field(cls.KIND, name, spec, obj[name], tail) for name, spec in cls.SPEC.items()}
    return cls(**values)


def decode(data: bytes) -> Message:
    """Parse wire bytes into a typed message (raises :class:`MalformedMessageError`)."""
    head, sep, tail = bytes(data).partition(b"\n")
    try:
        obj = json.loads(head.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise MalformedMessageError(f"message header is not JSON: {exc}") from None
    return _from_obj(obj, tail if sep else None)


def message_hash(msg: Message) -> str:
    """Hex SHA-256 of the wire bytes (what the transcript records)."""
    return sha256(encode(msg)).hex()
