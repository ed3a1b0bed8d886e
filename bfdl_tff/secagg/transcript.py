"""The per-round protocol transcript, designed to be committed on the ledger (issue 18).

A :class:`Transcript` records, for one round: the parameters (and their digest), who advertised
keys (U1), who sent shares (U2), who sent a masked input (U3), who confirmed the survivor list
(U4), who answered the unmasking (U5), the signed key advertisements (so an auditor can check them
against the registered identity keys and the revealed keys against them), who dropped (U2 \\ U3), which holder revealed which kind of
share of which hospital, the SHA-256 and size of every message the server received or sent, the
hash of the aggregate, and the abort reason if the round aborted. ``to_record()`` is plain JSON
(a ledger transaction payload); :func:`audit_transcript` re-checks a record independently: no
hospital ever had both its self-mask share and its pairwise-secret share revealed, self-mask
shares were revealed only for survivors and pairwise shares only for dropped hospitals, and every
reconstruction had at least ``t`` shares.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping

from bfdl_tff.secagg.keys import verify_signature
from bfdl_tff.secagg.messages import KeyAdvertisement

SELF = "self_mask"
PAIRWISE = "pairwise"


@dataclass
class Transcript:
    """Mutable record the server fills in as the round progresses."""

    params: dict[str, Any]
    params_digest: str
    protocol: str
    advertised: list[int] = field(default_factory=list)
    advertisements: list[dict[str, Any]] = field(default_factory=list)
    shared: list[int] = field(default_factory=list)
    masked: list[int] = field(default_factory=list)
    confirmed: list[int] = field(default_factory=list)
    responded: list[int] = field(default_factory=list)
    dropped: list[int] = field(default_factory=list)
    revealed: dict[int, dict[str, list[int]]] = field(default_factory=dict)
    messages: list[dict[str, Any]] = field(default_factory=list)
    aggregate_sha256: str | None = None
    aborted: str | None = None

    def log_message(self, *, stage: str, direction: str, party: int | None, sha256: str, size: int) -> None:
        self.messages.append(
            {"stage": stage, "direction": direction, "party": party, "sha256": sha256, "bytes": size}
        )

    def record_reveal(self, holder: int, *, self_mask: list[int], pairwise: list[int]) -> None:
        self.revealed[holder] = {SELF: sorted(self_mask), PAIRWISE: sorted(pairwise)}

    def to_record(self) -> dict[str, Any]:
        """JSON-serialisable record (keys of ``revealed`` as strings, lists sorted)."""
        return {
            "params": self.params,
            "params_digest": self.params_digest,
            "protocol": self.protocol,
            "advertised": sorted(self.advertised),
            "advertisements": list(self.advertisements),
            "shared": sorted(self.shared),
            "masked": sorted(self.masked),
            "confirmed": sorted(self.confirmed),
            "responded": sorted(self.responded),
            "dropped": sorted(self.dropped),
            "revealed": {str(h): v for h, v in sorted(self.revealed.items())},
            "messages": list(self.messages),
            "aggregate_sha256": self.aggregate_sha256,
            "aborted": self.aborted,
        }

    def digest(self) -> str:
        """Hex SHA-256 of the canonical JSON of :meth:`to_record`."""
        text = json.dumps(self.to_record(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()


def audit_transcript(record: Mapping[str, Any], *, identity_keys: Mapping[int, bytes] | None = None) -> list[str]:
    """Problems found in a transcript record (empty list = consistent). Independent of the server.

    With ``identity_keys`` (hospital id -> Ed25519 public key, e.g. from the ledger registry) the
    recorded key advertisements' signatures are verified as well."""
    problems: list[str] = []
    text = json.dumps(record["params"], sort_keys=True, separators=(",", ":"))
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != record["params_digest"]:
        problems.append("params_digest is not the SHA-256 of the recorded parameters")
    if identity_keys is not None:
        problems += _check_advertisements(record, identity_keys)
    threshold = int(record["params"]["threshold"])
    masked = set(record["masked"])
    dropped = set(record["dropped"])
    if masked & dropped:
        problems.append(f"hospitals both survived and dropped: {sorted(masked & dropped)}")
    # A step's set is recorded when the step closes: a round aborted before the masked inputs
    # were closed has neither survivors nor dropped hospitals yet.
    expect = set(record["shared"]) - masked
    if (dropped != expect) if record.get("aborted") is None else not dropped <= expect:
        problems.append("dropped is not U2 \\ U3")
    self_count: dict[int, int] = {}
    pair_count: dict[int, int] = {}
    for holder, kinds in record["revealed"].items():
        for owner in kinds.get(SELF, []):
            self_count[owner] = self_count.get(owner, 0) + 1
            if owner not in masked:
                problems.append(f"holder {holder} revealed the self-mask share of {owner}, which did not survive")
        for owner in kinds.get(PAIRWISE, []):
            pair_count[owner] = pair_count.get(owner, 0) + 1
            if owner not in dropped:
                problems.append(f"holder {holder} revealed the pairwise-secret share of {owner}, which did not drop")
    for owner in sorted(set(self_count) & set(pair_count)):
        problems.append(f"both the self-mask and the pairwise-secret shares of hospital {owner} were revealed")
    if record.get("aborted") is None and record.get("aggregate_sha256"):
        for owner in sorted(masked):
            if self_count.get(owner, 0) < threshold:
                problems.append(f"self-mask of {owner} reconstructed from {self_count.get(owner, 0)} < t shares")
        for owner in sorted(dropped):
            if pair_count.get(owner, 0) < threshold:
                problems.append(f"pairwise secret of {owner} reconstructed from {pair_count.get(owner, 0)} < t shares")
        if len(masked) < threshold:
            problems.append(f"{len(masked)} survivors are fewer than t = {threshold}")
    return problems


def _check_advertisements(record: Mapping[str, Any], identity_keys: Mapping[int, bytes]) -> list[str]:
    problems = []
    digest = bytes.fromhex(record["params_digest"])
    params = record["params"]
    for adv in record.get("advertisements", []):
        msg = KeyAdvertisement(
            run_id=params["run_id"], round=params["round"], sender=adv["sender"],
            kx_public=bytes.fromhex(adv["kx_public"]), c_public=bytes.fromhex(adv["c_public"]),
            s_public=bytes.fromhex(adv["s_public"]), signature=bytes.fromhex(adv["signature"]),
        )
        key = identity_keys.get(msg.sender)
        if key is None or not verify_signature(key, msg.signature, msg.signed_payload(digest)):
            problems.append(f"key advertisement of hospital {msg.sender} does not verify against its identity key")
    if sorted(a["sender"] for a in record.get("advertisements", [])) != sorted(record["advertised"]):
        problems.append("advertisements do not match the advertised set U1")
    return problems
