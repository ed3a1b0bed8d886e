"""Contract rules for secure-aggregation records (issue 18.1; paper 3.1 and 3.5: "secure
aggregation was also performed during the aggregation process").

The protocol (Bonawitz et al., CCS 2017; SecAgg+ of Bell et al., CCS 2020) runs between the
hospitals and the aggregator off-chain (``bfdl_tff.secagg``); the chain holds what makes it
auditable:

* ``secagg.register_kx`` {kx_pubkey}: a hospital's long-term X25519 key-agreement key, in a
  transaction signed by the hospital's Ed25519 identity key (once per hospital, a key belongs to
  one hospital). The key advertisements inside a transcript name these keys, which ties every
  protocol id of a round to a registered hospital.
* ``secagg.transcript`` {round, transcript}: the aggregator's record of one round (who advertised
  keys, sent shares, sent a masked input, confirmed, answered the unmasking; who dropped; which
  holder revealed which kind of share of whom; message hashes; aggregate hash; abort reason).

This module restates the record's structure and rules so that the ledger stays independent of
``bfdl_tff`` (it imports nothing from it): :func:`check_transcript` returns ``(code, message)``
for a record the contract must refuse, ``None`` for an acceptable one. The **never-both rule**
(no hospital's self-mask share and pairwise-secret share both revealed: together they would
unmask its individual input) is enforced here, by the contract, not only by the protocol's state
machines and the audit. Signatures of the key advertisements are not checked by the contract
(the audit does, against the identity keys registered with the kx keys); the contract checks that
every advertised kx key is registered to an active hospital.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

__all__ = ["RECORD_FIELDS", "PARAM_FIELDS", "check_transcript", "transcript_summary"]

#: Exactly the fields of a transcript record (``bfdl_tff.secagg.transcript.Transcript.to_record``).
RECORD_FIELDS = frozenset({
    "params", "params_digest", "protocol", "advertised", "advertisements", "shared", "masked", "confirmed",
    "responded", "dropped", "revealed", "messages", "aggregate_sha256", "aborted",
})
#: Exactly the fields of the round parameters (``bfdl_tff.secagg.params.RoundParams.to_record``).
PARAM_FIELDS = frozenset({
    "version", "run_id", "round", "participants", "threshold", "bits", "vector_length", "neighbours",
    "consistency_check",
})
_SETS = ("advertised", "shared", "masked", "confirmed", "responded", "dropped")
_ADVERT_FIELDS = frozenset({"sender", "kx_public", "c_public", "s_public", "signature"})
_MESSAGE_FIELDS = frozenset({"stage", "direction", "party", "sha256", "bytes"})
MAX_ID = 2**31 - 1
MAX_REASON = 1000

Problem = tuple[str, str]


def _hex(v: Any, nbytes: int) -> bool:
    return isinstance(v, str) and len(v) == 2 * nbytes and all(c in "0123456789abcdef" for c in v)


def _int(v: Any, lo: int, hi: int) -> bool:
    return type(v) is int and lo <= v <= hi


def _ids(v: Any) -> bool:
    """A sorted list of distinct protocol ids."""
    return (isinstance(v, list) and all(_int(x, 1, MAX_ID) for x in v)
            and all(a < b for a, b in zip(v, v[1:])))


def _params_problem(p: Any, digest: Any, *, round_num: int, chain_id: str) -> Problem | None:
    if not isinstance(p, dict) or set(p) != PARAM_FIELDS:
        return ("bad_payload", f"transcript params must have exactly the fields {sorted(PARAM_FIELDS)}")
    if not _ids(p["participants"]) or len(p["participants"]) < 2:
        return ("bad_payload", "transcript params: participants must be >= 2 sorted distinct ids")
    k = len(p["participants"])
    if not (_int(p["threshold"], 2, k) and _int(p["bits"], 8, 64) and _int(p["vector_length"], 1, 2**40)
            and (p["neighbours"] is None or _int(p["neighbours"], 2, k - 1))
            and type(p["consistency_check"]) is bool and isinstance(p["version"], str)
            and isinstance(p["run_id"], str) and type(p["round"]) is int):
        return ("bad_payload", "transcript params: threshold, bits, vector_length, neighbours or flags out of range")
    text = json.dumps(p, sort_keys=True, separators=(",", ":"))
    if digest != hashlib.sha256(text.encode("utf-8")).hexdigest():
        return ("bad_transcript", "params_digest is not the SHA-256 of the transcript's params")
    if p["round"] != round_num:
        return ("wrong_round", f"the transcript is of protocol round {p['round']}, not of round {round_num}")
    if p["run_id"] != chain_id:
        return ("wrong_run", f"the transcript is bound to run {p['run_id'][:80]!r}, not to this chain")
    return None


def _sets_problem(r: dict) -> Problem | None:
    for name in _SETS:
        if not _ids(r[name]):
            return ("bad_payload", f"transcript {name} must be a sorted list of distinct protocol ids")
    s = {name: set(r[name]) for name in _SETS}
    parts = set(r["params"]["participants"])
    chain = [("advertised", parts, "participants"), ("shared", s["advertised"], "advertised"),
             ("masked", s["shared"], "shared"), ("confirmed", s["masked"], "masked"),
             ("responded", s["confirmed"] if r["params"]["consistency_check"] else s["masked"], "asked to unmask")]
    for name, outer, what in chain:
        if not s[name] <= outer:
            return ("bad_transcript", f"transcript {name} {sorted(s[name] - outer)} are not {what}")
    # A step's set is recorded when the step closes: a round aborted before the masked inputs
    # were closed has no survivors and no dropped hospitals yet.
    expect = s["shared"] - s["masked"]
    if (s["dropped"] != expect) if r["aborted"] is None else not s["dropped"] <= expect:
        return ("bad_transcript", "transcript dropped is not the hospitals that sent shares but no masked input")
    return None


def _reveal_problem(r: dict) -> Problem | None:
    rev = r["revealed"]
    if not isinstance(rev, dict) or len(rev) > MAX_ID:
        return ("bad_payload", "transcript revealed must be an object holder -> {self_mask, pairwise}")
    responded, masked, dropped = set(r["responded"]), set(r["masked"]), set(r["dropped"])
    self_owners: dict[int, int] = {}
    pair_owners: dict[int, int] = {}
    for holder, kinds in sorted(rev.items()):
        if not (holder.isdigit() and int(holder) in responded):
            return ("bad_transcript", f"revealed: holder {holder[:16]!r} did not answer the unmask request")
        if not isinstance(kinds, dict) or set(kinds) != {"self_mask", "pairwise"}:
            return ("bad_payload", "revealed: each holder lists exactly self_mask and pairwise owners")
        if not _ids(kinds["self_mask"]) or not _ids(kinds["pairwise"]):
            return ("bad_payload", "revealed: owner lists must be sorted distinct protocol ids")
        for o in kinds["self_mask"]:
            self_owners[o] = self_owners.get(o, 0) + 1
        for o in kinds["pairwise"]:
            pair_owners[o] = pair_owners.get(o, 0) + 1
    both = sorted(set(self_owners) & set(pair_owners))
    if both:
        return ("double_reveal", f"both the self-mask and the pairwise-secret shares of hospital(s) {both} were "
                "revealed; together they unmask an individual input")
    if set(self_owners) - masked:
        return ("bad_transcript", f"self-mask shares revealed of {sorted(set(self_owners) - masked)}, which did not survive")
    if set(pair_owners) - dropped:
        return ("bad_transcript", f"pairwise-secret shares revealed of {sorted(set(pair_owners) - dropped)}, "
                "which did not drop")
    if r["aborted"] is None:
        t = r["params"]["threshold"]
        short = [o for o in sorted(masked) if self_owners.get(o, 0) < t]
        short += [o for o in sorted(dropped) if pair_owners.get(o, 0) < t]
        if len(masked) < t or short:
            return ("bad_transcript", f"a completed round needs t = {t} survivors and t shares per reconstructed "
                    f"secret (short: {short or sorted(masked)})")
    return None


def _advert_problem(r: dict, kx_owner: Mapping[str, str]) -> Problem | None:
    ads = r["advertisements"]
    if not isinstance(ads, list):
        return ("bad_payload", "transcript advertisements must be a list")
    seen: dict[str, int] = {}
    for a in ads:
        if not isinstance(a, dict) or set(a) != _ADVERT_FIELDS or not _int(a["sender"], 1, MAX_ID):
            return ("bad_payload", f"each advertisement has exactly the fields {sorted(_ADVERT_FIELDS)}")
        if not all(_hex(a[k], 32) for k in ("kx_public", "c_public", "s_public")) or not _hex(a["signature"], 64):
            return ("bad_payload", "advertisement keys must be 64 hex characters, signatures 128")
        if a["kx_public"] not in kx_owner:
            return ("unregistered_kx", f"hospital {a['sender']} advertised a kx key that is not registered to an "
                    "active hospital")
        if a["kx_public"] in seen:
            return ("bad_transcript", f"protocol ids {seen[a['kx_public']]} and {a['sender']} advertised one kx key")
        seen[a["kx_public"]] = a["sender"]
    if sorted(a["sender"] for a in ads) != r["advertised"]:
        return ("bad_transcript", "the advertisements do not match the advertised set")
    return None


def _shape_problem(r: Any) -> Problem | None:
    if not isinstance(r, dict) or set(r) != RECORD_FIELDS:
        return ("bad_payload", f"transcript must have exactly the fields {sorted(RECORD_FIELDS)}")
    if r["protocol"] not in ("secagg", "secagg+") or not _hex(r["params_digest"], 32):
        return ("bad_payload", "transcript protocol must be secagg or secagg+, params_digest 64 hex")
    if r["aborted"] is not None and not (isinstance(r["aborted"], str) and 1 <= len(r["aborted"]) <= MAX_REASON):
        return ("bad_payload", f"transcript aborted must be null or a reason of 1-{MAX_REASON} characters")
    agg = r["aggregate_sha256"]
    if (r["aborted"] is None) != _hex(agg, 32) or (r["aborted"] is not None and agg is not None):
        return ("bad_transcript", "a completed round has an aggregate_sha256; an aborted round has none")
    msgs = r["messages"]
    if not isinstance(msgs, list) or not all(
            isinstance(m, dict) and set(m) == _MESSAGE_FIELDS and _hex(m["sha256"], 32)
            and _int(m["bytes"], 0, 2**40) for m in msgs):
        return ("bad_payload", f"transcript messages: objects with exactly {sorted(_MESSAGE_FIELDS)}")
    return None


def check_transcript(record: Any, *, round_num: int, chain_id: str, kx_owner: Mapping[str, str]) -> Problem | None:
    """``(code, message)`` if the contract must refuse ``record`` for the open round ``round_num``
    of chain ``chain_id``; ``kx_owner`` maps each kx key registered to an *active* hospital to
    that hospital's identity key. Codes: ``bad_payload`` (shape), ``wrong_round`` / ``wrong_run``
    (bound to another round or chain), ``unregistered_kx``, ``double_reveal`` (never-both rule),
    ``bad_transcript`` (inconsistent sets or reveals)."""
    for step in (
        lambda: _shape_problem(record),
        lambda: _params_problem(record["params"], record["params_digest"], round_num=round_num, chain_id=chain_id),
        lambda: _sets_problem(record),
        lambda: _advert_problem(record, kx_owner),
        lambda: _reveal_problem(record),
    ):
        problem = step()
        if problem is not None:
            return problem
    return None


def transcript_summary(record: Mapping[str, Any], *, tx_hash: str, kx_owner: Mapping[str, str]) -> dict[str, Any]:
    """What the contract keeps of an accepted transcript (the full record stays in the block)."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"))
    ids = {a["sender"]: kx_owner[a["kx_public"]] for a in record["advertisements"]}
    return {
        "digest": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "protocol": record["protocol"],
        "threshold": record["params"]["threshold"],
        "hospitals": {str(i): ids[i] for i in sorted(ids)},
        "masked": list(record["masked"]),
        "dropped": list(record["dropped"]),
        "aborted": record["aborted"],
        "aggregate_sha256": record["aggregate_sha256"],
        "tx": tx_hash,
    }
