"""Server (aggregator) side of secure aggregation (paper 3.1, 3.5): an explicit state machine.

Bonawitz et al. (CCS 2017), Figure 4, with the SecAgg+ neighbour graph of Bell et al. (CCS 2020)
as an option. States (each ``receive_*`` collects one message, each ``close_*`` ends a step - in
a deployment at a timeout - and returns what the server broadcasts next):

``ADVERTISE --close_advertisements--> SHARE --close_shares--> MASKED --close_masked_inputs-->
[CONFIRM --close_confirmations-->] UNMASK --finish--> DONE``.

The server is honest-but-curious: it verifies every signature and message shape, so bad input
is caught here (typed error, logged, round ``ABORTED``, no aggregate ever returned), and it holds
only what the protocol gives it: advertisements, encrypted shares it cannot decrypt, masked
vectors, and the shares survivors reveal under the rule "self-mask share of a survivor, pairwise
secret share of a dropped hospital, never both". :meth:`finish` reconstructs the survivors'
self-mask seeds (checked against their commitments) and the dropped hospitals' per-round ``s``
keys (checked against their advertised public keys), removes the masks and returns the sum of
the survivors' quantised inputs modulo 2^b together with the round's transcript.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from bfdl_tff.secagg import kdf, shamir
from bfdl_tff.secagg.checks import (
    check_member, check_new, check_round, check_signature, log, protocol_step,
)
from bfdl_tff.secagg.client import check_advert
from bfdl_tff.secagg.errors import (
    BadKeyError, BadSignatureError, DoubleRevealError, MalformedMessageError, ReconstructionError, TooFewSurvivorsError,
)
from bfdl_tff.secagg.keys import KxKey, verify_signature
from bfdl_tff.secagg.messages import (
    AdvertisedKeys, EncryptedShare, KeyAdvertisement, MaskedInput, Message, ShareDelivery, ShareKeys,
    SurvivorList, SurvivorSignature, UnmaskRequest, UnmaskResponse, encode, vector_bytes,
)
from bfdl_tff.secagg.params import Participant, RoundParams
from bfdl_tff.secagg.ring import Ring
from bfdl_tff.secagg.transcript import Transcript

_CIPHERTEXT_BYTES = 2 * shamir.SHARE_BYTES + 16  # two shares + Poly1305 tag


class ServerState(enum.Enum):
    ADVERTISE = "collect-advertisements"
    SHARE = "collect-shares"
    MASKED = "collect-masked-inputs"
    CONFIRM = "collect-confirmations"
    UNMASK = "collect-unmask-responses"
    DONE = "done"
    ABORTED = "aborted"


S = ServerState


@dataclass(frozen=True, eq=False)
class AggregateResult:
    """Sum of the survivors' quantised inputs in Z_2^b, who survived and dropped, the transcript."""

    vector: np.ndarray
    survivors: tuple[int, ...]
    dropped: tuple[int, ...]
    transcript: dict[str, Any]


class SecAggServer:
    """The aggregator's protocol state for one round."""

    def __init__(
        self,
        *,
        params: RoundParams,
        roster: Mapping[int, Participant],
        sum_fn: Callable[[Sequence[np.ndarray]], np.ndarray] | None = None,
    ) -> None:
        """``sum_fn(masked vectors) -> their sum mod 2^b`` replaces the numpy sum (wave 2: a TFF
        server computation); it only ever receives the survivors' masked vectors."""
        missing = [i for i in params.participants if i not in roster]
        if missing:
            raise MalformedMessageError(f"roster lacks participants {missing}")
        self.params, self.roster, self.ring = params, roster, Ring(params.bits)
        self._sum_fn = sum_fn
        self.state = S.ADVERTISE
        self.abort_reason: str | None = None
        self.transcript = Transcript(params=params.to_record(), params_digest=params.digest.hex(), protocol=params.protocol)
        self._adverts: dict[int, KeyAdvertisement] = {}
        self._share_msgs: dict[int, ShareKeys] = {}
        self._peers: dict[int, tuple[int, ...]] = {}
        self._masked: dict[int, MaskedInput] = {}
        self._confirmations: dict[int, bytes] = {}
        self._survivor_list: SurvivorList | None = None
        self._responses: dict[int, UnmaskResponse] = {}

    # ------------------------------------------------------------------ bookkeeping
    def _where(self) -> str:
        return f"secagg server run {self.params.run_id!r} round {self.params.round}"

    def _abort(self, exc: Exception) -> None:
        self.state = S.ABORTED
        self.abort_reason = f"{type(exc).__name__}: {exc}"
        self.transcript.aborted = self.abort_reason
        self._masked.clear()
        self._responses.clear()
        log.warning("%s: round aborted: %s", self._where(), self.abort_reason)

    def abort(self, exc: Exception) -> None:
        """Abort the round from outside the state machine (a hospital detected bad input and
        stopped, or the round's driver failed); the first reason wins, no aggregate is returned."""
        if self.abort_reason is None and self.state is not S.DONE:
            self._abort(exc)

    def _log(self, stage: str, direction: str, party: int | None, msg: Message) -> None:
        data = encode(msg)
        self.transcript.log_message(stage=stage, direction=direction, party=party,
                                    sha256=kdf.sha256(data).hex(), size=len(data))

    def _need(self, count: int, what: str) -> None:
        if count < self.params.threshold:
            raise TooFewSurvivorsError(f"{self._where()}: {count} {what}, fewer than t = {self.params.threshold}")

    @property
    def survivors(self) -> tuple[int, ...]:
        return tuple(sorted(self._masked))

    # ------------------------------------------------------------------ round 0
    @protocol_step((S.ADVERTISE,), None, late_ok=True)
    def receive_advertisement(self, msg: KeyAdvertisement) -> None:
        check_advert(msg, self.params, self.roster, self._adverts, f"{self._where()}: advertisement")
        self._adverts[msg.sender] = msg
        self._log("advertise", "in", msg.sender, msg)

    @protocol_step((S.ADVERTISE,), S.SHARE)
    def close_advertisements(self) -> AdvertisedKeys:
        self._need(len(self._adverts), "hospitals advertised keys")
        self.transcript.advertised = sorted(self._adverts)
        self.transcript.advertisements = [
            {"sender": a.sender, "kx_public": a.kx_public.hex(), "c_public": a.c_public.hex(),
             "s_public": a.s_public.hex(), "signature": a.signature.hex()}
            for a in (self._adverts[i] for i in sorted(self._adverts))
        ]
        out = AdvertisedKeys(run_id=self.params.run_id, round=self.params.round,
                             adverts=tuple(self._adverts[i] for i in sorted(self._adverts)))
        self._log("advertise", "out", None, out)
        return out

    # ------------------------------------------------------------------ round 1
    @protocol_step((S.SHARE,), None, late_ok=True)
    def receive_shares(self, msg: ShareKeys) -> None:
        p, what = self.params, f"{self._where()}: shares"
        check_round(msg, p, what)
        check_member(msg.sender, self._adverts, what, "an advertiser of this round")
        check_new(msg.sender, self._share_msgs, what)
        check_signature(self.roster[msg.sender].sign_public, msg, p, f"{what} of {msg.sender}")
        expected = sorted((p.holders_of(msg.sender) & set(self._adverts)) - {msg.sender})
        if [s.recipient for s in msg.shares] != expected:
            raise MalformedMessageError(
                f"{what}: hospital {msg.sender} sent shares to {[s.recipient for s in msg.shares]}, expected {expected}"
            )
        for share in msg.shares:
            self._check_share(share, msg.sender, what)
        if len(msg.self_mask_commitment) != 32:
            raise MalformedMessageError(f"{what}: hospital {msg.sender}'s self-mask commitment is not 32 bytes")
        self._share_msgs[msg.sender] = msg
        self._log("share", "in", msg.sender, msg)

    def _check_share(self, share: EncryptedShare, sender: int, what: str) -> None:
        check_round(share, self.params, what)
        if share.sender != sender:
            raise MalformedMessageError(f"{what}: hospital {sender} forwards a share signed as {share.sender}")
        check_signature(self.roster[sender].sign_public, share, self.params, f"{what}: share {sender}->{share.recipient}")
        if len(share.ciphertext) != _CIPHERTEXT_BYTES:
            raise MalformedMessageError(f"{what}: share {sender}->{share.recipient} is not {_CIPHERTEXT_BYTES} bytes")

    @protocol_step((S.SHARE,), S.MASKED)
    def close_shares(self) -> dict[int, ShareDelivery]:
        """One delivery per hospital in U2: the shares U2 members addressed to it."""
        self._need(len(self._share_msgs), "hospitals sent shares")
        u2 = sorted(self._share_msgs)
        self.transcript.shared = u2
        out: dict[int, ShareDelivery] = {}
        for v in u2:
            shares = tuple(s for u in u2 for s in self._share_msgs[u].shares if s.recipient == v)
            self._peers[v] = tuple(s.sender for s in shares)
            out[v] = ShareDelivery(run_id=self.params.run_id, round=self.params.round, recipient=v, shares=shares)
            self._log("share", "out", v, out[v])
        return out

    # ------------------------------------------------------------------ round 2
    @protocol_step((S.MASKED,), None, late_ok=True)
    def receive_masked_input(self, msg: MaskedInput) -> None:
        p, what = self.params, f"{self._where()}: masked input"
        check_round(msg, p, what)
        check_member(msg.sender, self._share_msgs, what, "a hospital that sent shares")
        check_new(msg.sender, self._masked, what)
        self.ring.check(msg.vector, p.vector_length, what=f"{what} of {msg.sender}")
        check_signature(self.roster[msg.sender].sign_public, msg, p, f"{what} of {msg.sender}")
        if tuple(msg.peers) != self._peers[msg.sender]:
            raise MalformedMessageError(
                f"{what}: hospital {msg.sender} masked with {list(msg.peers)}, "
                f"but was delivered shares of {list(self._peers[msg.sender])}"
            )
        self._masked[msg.sender] = msg
        self._log("masked", "in", msg.sender, msg)

    @protocol_step((S.MASKED,), None)
    def close_masked_inputs(self) -> SurvivorList | UnmaskRequest:
        """U3; the survivor list to confirm (consistency check) or directly the unmask request."""
        self._need(len(self._masked), "hospitals sent masked inputs")
        u3 = self.survivors
        self.transcript.masked = list(u3)
        self.transcript.dropped = sorted(set(self._share_msgs) - set(u3))
        if self.params.consistency_check:
            self._survivor_list = SurvivorList(run_id=self.params.run_id, round=self.params.round, survivors=u3)
            self._log("confirm", "out", None, self._survivor_list)
            self.state = S.CONFIRM
            return self._survivor_list
        self.state = S.UNMASK
        return self._unmask_request()

    def _unmask_request(self) -> UnmaskRequest:
        out = UnmaskRequest(run_id=self.params.run_id, round=self.params.round, survivors=self.survivors,
                            dropped=tuple(self.transcript.dropped),
                            confirmations=tuple(sorted(self._confirmations.items())))
        self._log("unmask", "out", None, out)
        return out

    # ------------------------------------------------------------------ round 3 (optional)
    @protocol_step((S.CONFIRM,), None, late_ok=True)
    def receive_confirmation(self, msg: SurvivorSignature) -> None:
        p, what = self.params, f"{self._where()}: survivor confirmation"
        check_round(msg, p, what)
        check_member(msg.sender, self._masked, what, "a survivor")
        check_new(msg.sender, self._confirmations, what)
        if not verify_signature(self.roster[msg.sender].sign_public, msg.signature,
                                self._survivor_list.signed_payload(p.digest)):
            raise BadSignatureError(f"{what}: hospital {msg.sender}'s signature of the survivor list does not verify")
        self._confirmations[msg.sender] = msg.signature
        self._log("confirm", "in", msg.sender, msg)

    @protocol_step((S.CONFIRM,), S.UNMASK)
    def close_confirmations(self) -> UnmaskRequest:
        self._need(len(self._confirmations), "hospitals confirmed the survivor list")
        self.transcript.confirmed = sorted(self._confirmations)
        return self._unmask_request()

    # ------------------------------------------------------------------ round 4
    @protocol_step((S.UNMASK,), None, late_ok=True)
    def receive_unmask_response(self, msg: UnmaskResponse) -> None:
        p, what = self.params, f"{self._where()}: unmask response"
        check_round(msg, p, what)
        allowed = self._confirmations if p.consistency_check else self._masked
        check_member(msg.sender, allowed, what, "a survivor asked to unmask")
        check_new(msg.sender, self._responses, what)
        check_signature(self.roster[msg.sender].sign_public, msg, p, f"{what} of {msg.sender}")
        self_owners = [o for o, _ in msg.self_mask_shares]
        pair_owners = [o for o, _ in msg.pairwise_shares]
        both = set(self_owners) & set(pair_owners)
        if both:
            raise DoubleRevealError(f"{what}: hospital {msg.sender} reveals both shares of {sorted(both)}")
        if len(set(self_owners)) != len(self_owners) or len(set(pair_owners)) != len(pair_owners):
            raise MalformedMessageError(f"{what}: hospital {msg.sender} reveals a share twice")
        dropped = set(self.transcript.dropped)
        for owner in self_owners:
            check_member(owner, self._masked, what, "a survivor (self-mask share)")
        for owner in pair_owners:
            check_member(owner, dropped, what, "a dropped hospital (pairwise-secret share)")
        for owner, share in (*msg.self_mask_shares, *msg.pairwise_shares):
            check_member(msg.sender, self.params.holders_of(owner), what, f"a share holder of hospital {owner}")
            if len(share) != shamir.SHARE_BYTES:
                raise MalformedMessageError(f"{what}: share of {owner} is not {shamir.SHARE_BYTES} bytes")
        self._responses[msg.sender] = msg
        self.transcript.record_reveal(msg.sender, self_mask=self_owners, pairwise=pair_owners)
        self._log("unmask", "in", msg.sender, msg)

    @protocol_step((S.UNMASK,), S.DONE)
    def finish(self) -> AggregateResult:
        """Reconstruct, remove every mask, return the sum of the survivors' inputs mod 2^b."""
        self._need(len(self._responses), "hospitals answered the unmask request")
        self.transcript.responded = sorted(self._responses)
        seeds = {u: self._reconstruct_seed(u) for u in self.survivors}
        s_keys = {u: self._reconstruct_s_key(u) for u in self.transcript.dropped}
        total = self._unmasked_sum(seeds, s_keys)
        self.transcript.aggregate_sha256 = kdf.sha256(vector_bytes(total)).hex()
        return AggregateResult(vector=total, survivors=self.survivors, dropped=tuple(self.transcript.dropped),
                               transcript=self.transcript.to_record())

    def _shares_of(self, owner: int, *, self_mask: bool) -> dict[int, bytes]:
        out: dict[int, bytes] = {}
        for holder, resp in self._responses.items():
            for o, share in resp.self_mask_shares if self_mask else resp.pairwise_shares:
                if o == owner:
                    out[holder] = share
        return out

    def _reconstruct_seed(self, owner: int) -> bytes:
        shares = self._shares_of(owner, self_mask=True)
        self._need(len(shares), f"self-mask shares of hospital {owner} were revealed")
        seed = shamir.reconstruct_bytes(shares, threshold=self.params.threshold)
        expect = self._share_msgs[owner].self_mask_commitment
        if kdf.self_mask_commitment(seed, run_id=self.params.run_id, round_num=self.params.round, owner=owner) != expect:
            raise ReconstructionError(f"{self._where()}: reconstructed self-mask seed of {owner} fails its commitment")
        return seed

    def _reconstruct_s_key(self, owner: int) -> KxKey:
        shares = self._shares_of(owner, self_mask=False)
        self._need(len(shares), f"pairwise-secret shares of dropped hospital {owner} were revealed")
        key = KxKey.from_private_bytes(shamir.reconstruct_bytes(shares, threshold=self.params.threshold))
        if key.public_bytes() != self._adverts[owner].s_public:
            raise BadKeyError(f"{self._where()}: reconstructed key of {owner} does not match its advertised key")
        return key

    def _masked_sum(self) -> np.ndarray:
        vectors = [self._masked[v].vector for v in self.survivors]
        if self._sum_fn is None:
            total = self.ring.zeros(self.params.vector_length)
            for v in vectors:
                self.ring.add_(total, v)
            return self.ring.reduce(total)
        total = np.asarray(self._sum_fn(vectors))
        if total.dtype != self.ring.dtype and total.dtype.kind in "iu":
            total = self.ring.from_signed(total.astype(np.int64))  # e.g. an int64 sum from TensorFlow
        return self.ring.check(total.copy(), self.params.vector_length, what=f"{self._where()}: sum_fn result")

    def _unmasked_sum(self, seeds: Mapping[int, bytes], s_keys: Mapping[int, KxKey]) -> np.ndarray:
        p, ring = self.params, self.ring
        total = self._masked_sum()
        for v, seed in seeds.items():
            ring.sub_(total, ring.prg(seed, p.vector_length))
        for u, key in s_keys.items():
            for v in self.survivors:
                if u not in self._peers[v]:
                    continue
                shared = key.exchange(self._adverts[v].s_public)
                mask = ring.prg(kdf.pair_mask_seed(shared, run_id=p.run_id, round_num=p.round, u=u, v=v), p.vector_length)
                # v added +PRG(s_vu) when u > v and -PRG(s_vu) when u < v: undo it.
                (ring.sub_ if u > v else ring.add_)(total, mask)
        return ring.reduce(total)
