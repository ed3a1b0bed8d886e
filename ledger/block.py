"""Blocks of the B-FDL ledger (paper 3.4: PBFT-ordered blocks whose Merkle roots are compared
across nodes).

A :class:`BlockHeader` holds ``height``, ``prev_hash`` (hash of the previous header; 32 zero
bytes for genesis), ``tx_root`` (RFC 6962 Merkle root over ``tx.tx_hash()`` of the block's
transactions in order), ``state_root`` (``ContractState.state_root()`` *after* executing the
block's transactions in order), ``view`` and ``proposer`` (PBFT view and primary id that ordered
the block) and ``timestamp_ms`` (proposer's clock, carried in the pre-prepare, so deterministic for
every replica).  ``hash()`` is SHA-256 over a domain tag and the canonical JSON of the header.

A :class:`Block` is ``(header, txs, results)`` where ``results[i]`` is the
``contracts.TxResult`` of ``txs[i]``.  Results are not committed by the header (they are a
deterministic function of the previous state and the transactions, which are); ``verify.py``
recomputes and compares them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from . import crypto, merkle
from .errors import BlockDecodeError
from .tx import Transaction

__all__ = ["Block", "BlockDecodeError", "BlockHeader", "GENESIS_PREV_HASH", "build_block", "genesis_block", "tx_root"]

HEADER_DOMAIN = b"bfdl-block-v1\x00"
GENESIS_PREV_HASH = bytes(32)
HEADER_VERSION = 1


def tx_root(txs: Sequence[Transaction]) -> bytes:
    """Merkle root of a block's transactions (leaf data = tx hash)."""
    return merkle.merkle_root([t.tx_hash() for t in txs])


def _int(obj: dict, key: str, lo: int = 0) -> int:
    v = obj.get(key)
    if type(v) is not int or not lo <= v < 2**63:
        raise BlockDecodeError(f"header.{key}: integer >= {lo} expected")
    return v


def _h32(obj: dict, key: str) -> bytes:
    v = obj.get(key)
    if not crypto.is_hex(v, 32):
        raise BlockDecodeError(f"header.{key}: 64 lowercase hex characters expected")
    return bytes.fromhex(v)


@dataclass(frozen=True)
class BlockHeader:
    height: int
    prev_hash: bytes
    tx_root: bytes
    state_root: bytes
    view: int
    proposer: int
    timestamp_ms: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "v": HEADER_VERSION,
            "height": self.height,
            "prev_hash": self.prev_hash.hex(),
            "tx_root": self.tx_root.hex(),
            "state_root": self.state_root.hex(),
            "view": self.view,
            "proposer": self.proposer,
            "timestamp_ms": self.timestamp_ms,
        }

    def encode(self) -> bytes:
        # A frozen header has one encoding: computed once (hash(), storage, replies all use it).
        enc = self.__dict__.get("_enc")
        if enc is None:
            enc = crypto.canonical_json(self.to_dict())
            object.__setattr__(self, "_enc", enc)
        return enc

    def hash(self) -> bytes:
        h = self.__dict__.get("_hash")
        if h is None:
            h = crypto.sha256(HEADER_DOMAIN + self.encode())
            object.__setattr__(self, "_hash", h)
        return h

    @classmethod
    def from_dict(cls, obj: Any) -> "BlockHeader":
        if not isinstance(obj, dict):
            raise BlockDecodeError("header: JSON object expected")
        expected = {"v", "height", "prev_hash", "tx_root", "state_root", "view", "proposer", "timestamp_ms"}
        if set(obj) != expected:
            raise BlockDecodeError(f"header: field set mismatch ({sorted(set(obj) ^ expected)[:8]})")
        if obj["v"] != HEADER_VERSION or type(obj["v"]) is not int:
            raise BlockDecodeError("header: unsupported version")
        return cls(
            height=_int(obj, "height"),
            prev_hash=_h32(obj, "prev_hash"),
            tx_root=_h32(obj, "tx_root"),
            state_root=_h32(obj, "state_root"),
            view=_int(obj, "view"),
            proposer=_int(obj, "proposer", lo=-1),
            timestamp_ms=_int(obj, "timestamp_ms"),
        )


@dataclass(frozen=True)
class Block:
    header: BlockHeader
    txs: tuple[Transaction, ...]
    results: tuple  # tuple[contracts.TxResult, ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "txs", tuple(self.txs))
        object.__setattr__(self, "results", tuple(self.results))

    @property
    def height(self) -> int:
        return self.header.height

    def hash(self) -> bytes:
        return self.header.hash()

    def check_body(self) -> str | None:
        """None if the body matches the header (tx root, result count), else the problem."""
        if len(self.results) != len(self.txs):
            return f"{len(self.txs)} transactions but {len(self.results)} results"
        root = tx_root(self.txs)
        if root != self.header.tx_root:
            return f"tx_root {self.header.tx_root.hex()[:16]} != Merkle root of the transactions {root.hex()[:16]}"
        return None

    def body_dict(self) -> dict[str, Any]:
        return {
            "txs": [t.to_dict() for t in self.txs],
            "results": self.body_dict_results(),
        }

    def encode_body(self) -> bytes:
        """``canonical_json(body_dict())``, assembled from each transaction's cached canonical
        encoding instead of re-encoding every transaction (canonical JSON nests: the encoding of
        an object is its sorted members' encodings joined with ``,``; keys "results" < "txs")."""
        results = crypto.canonical_json(self.body_dict_results())
        return b'{"results":' + results + b',"txs":[' + b",".join(t.encode() for t in self.txs) + b"]}"

    def body_dict_results(self) -> list[list[Any]]:
        return [[bool(r.ok), str(r.code), str(r.message)] for r in self.results]

    def encode(self) -> bytes:
        # == canonical_json({"header": header.to_dict(), "body": body_dict()}); "body" < "header".
        return b'{"body":' + self.encode_body() + b',"header":' + self.header.encode() + b"}"

    def inclusion_proof(self, index: int) -> list[bytes]:
        return merkle.inclusion_proof([t.tx_hash() for t in self.txs], index)

    @classmethod
    def from_parts(cls, header: BlockHeader, body: Any) -> "Block":
        from .contracts import TxResult

        if not isinstance(body, dict) or set(body) != {"txs", "results"}:
            raise BlockDecodeError("body: object with 'txs' and 'results' expected")
        if not isinstance(body["txs"], list) or not isinstance(body["results"], list):
            raise BlockDecodeError("body: lists expected")
        txs = tuple(Transaction.from_dict(t) for t in body["txs"])
        results = []
        for r in body["results"]:
            if (
                not isinstance(r, list)
                or len(r) != 3
                or not isinstance(r[0], bool)
                or not isinstance(r[1], str)
                or not isinstance(r[2], str)
            ):
                raise BlockDecodeError("body: result [ok, code, message] expected")
            results.append(TxResult(r[0], r[1], r[2]))
        return cls(header, txs, tuple(results))

    @classmethod
    def decode(cls, data: bytes) -> "Block":
        import json

        try:
            obj = json.loads(bytes(data).decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError, TypeError) as exc:
            raise BlockDecodeError(f"block is not valid JSON: {type(exc).__name__}") from None
        if not isinstance(obj, dict) or set(obj) != {"header", "body"}:
            raise BlockDecodeError("block: object with 'header' and 'body' expected")
        return cls.from_parts(BlockHeader.from_dict(obj["header"]), obj["body"])


def genesis_block(genesis: Any) -> Block:
    """Height-0 block: no transactions, state root of the genesis contract state.

    Its hash commits to the genesis configuration (admin keys, epsilon cap, chain id) through the
    state root, so replicas configured differently have different chains from block 0.
    """
    from .contracts import ContractState

    state = ContractState(genesis)
    header = BlockHeader(
        height=0,
        prev_hash=GENESIS_PREV_HASH,
        tx_root=merkle.EMPTY_ROOT,
        state_root=state.state_root(),
        view=0,
        proposer=-1,
        timestamp_ms=0,
    )
    return Block(header, (), ())


def build_block(
    state: Any,
    txs: Sequence[Transaction],
    *,
    height: int,
    prev_hash: bytes,
    view: int = 0,
    proposer: int = 0,
    timestamp_ms: int = 0,
    check_signature: bool = True,
) -> Block:
    """Execute ``txs`` on ``state`` (a ``ContractState``, mutated) and return the block.

    This is what every replica does at commit: results and the post-state root come from
    execution; the header's ``tx_root`` is the Merkle root of the transactions.
    """
    txs = tuple(txs)
    results = tuple(
        state.apply(t, height=height, timestamp_ms=timestamp_ms, check_signature=check_signature) for t in txs
    )
    header = BlockHeader(
        height=height,
        prev_hash=prev_hash,
        tx_root=tx_root(txs),
        state_root=state.state_root(),
        view=view,
        proposer=proposer,
        timestamp_ms=timestamp_ms,
    )
    return Block(header, txs, results)
