"""Hospital side of secure aggregation (paper 3.1, 3.5): a state machine (Bonawitz et al. 2017, Fig. 4).

States: ``INIT -> ADVERTISED -> SHARED -> MASKED [-> CONFIRMED] -> DONE``; any protocol error
moves to ``ABORTED`` (logged, secrets dropped) and every later call raises
:class:`ProtocolStateError`. Per round the hospital:

0. ``advertise()``: draws ephemeral X25519 keys ``c`` (share encryption) and ``s`` (pairwise
   masks) and signs them together with its long-term kx public key.
1. ``share_keys(AdvertisedKeys)``: checks every advertisement (signature, registered kx key,
   run/round, distinct keys, at least t); draws the self-mask seed ``b``; Shamir-shares ``b`` and
   the secret ``s`` key (t of its share holders = neighbours + itself) and encrypts each holder's
   pair of shares with ChaCha20-Poly1305 under ``HKDF(ECDH(c) || ECDH(kx))``, signing each.
2. ``masked_input(ShareDelivery, q)``: checks and decrypts the shares it holds for its peers,
   returns ``y = q + PRG(b) + sum_{v>me} PRG(s_me,v) - sum_{v<me} PRG(s_me,v) mod 2^b`` over
   the peers that sent shares.
3. ``confirm_survivors(SurvivorList)`` (consistency check): signs the survivor set U3.
4. ``unmask(UnmaskRequest)``: reveals, for each peer it holds shares of, the self-mask share if
   the peer survived or the pairwise-secret share if it dropped - never both, and only once.

The long-term kx key is never shared; only the per-round ``s`` key is, so a reveal after a
dropout exposes that round's masks only.
"""

from __future__ import annotations

import dataclasses
import enum
import os
from typing import Callable, Mapping, TypeVar

import numpy as np

from bfdl_tff.secagg import kdf, shamir
from bfdl_tff.secagg.checks import (
    check_member, check_new, check_round, check_signature, check_sorted_unique, log, protocol_step,
)
from bfdl_tff.secagg.errors import (
    BadKeyError, BadSignatureError, DoubleRevealError, MalformedMessageError, QuantizationError, TooFewSurvivorsError,
    UnknownParticipantError,
)
from bfdl_tff.secagg.keys import KxKey, Signer, verify_signature
from bfdl_tff.secagg.messages import (
    AdvertisedKeys, EncryptedShare, KeyAdvertisement, MaskedInput, ShareDelivery, ShareKeys,
    SurvivorList, SurvivorSignature, UnmaskRequest, UnmaskResponse,
)
from bfdl_tff.secagg.params import Participant, RoundParams
from bfdl_tff.secagg.quantize import Quantizer
from bfdl_tff.secagg.ring import Ring

_SHARE_PAIR_BYTES = 2 * shamir.SHARE_BYTES
_M = TypeVar("_M")


class ClientState(enum.Enum):
    INIT = "init"
    ADVERTISED = "advertised"
    SHARED = "shared"
    MASKED = "masked"
    CONFIRMED = "confirmed"
    DONE = "done"
    ABORTED = "aborted"


S = ClientState


class SecAggClient:
    """One hospital's protocol state for one round."""

    def __init__(
        self,
        *,
        params: RoundParams,
        me: int,
        signer: Signer,
        kx_key: KxKey,
        roster: Mapping[int, Participant],
        entropy: Callable[[int], bytes] = os.urandom,
    ) -> None:
        """``entropy(n)`` -> n random bytes for the per-round keys and self-mask seed; the default
        ``os.urandom`` is the only secure choice (tests pass a seeded source for reproducibility)."""
        if me not in params.participants:
            raise UnknownParticipantError(f"hospital {me} is not a participant of round {params.round}")
        missing = [i for i in params.participants if i not in roster]
        if missing:
            raise UnknownParticipantError(f"roster lacks participants {missing}")
        if roster[me].sign_public != signer.public_key() or roster[me].kx_public != kx_key.public_bytes():
            raise BadKeyError(f"hospital {me}: signer or kx key differs from the registered keys")
        self.params, self.me, self.roster = params, me, roster
        self._signer, self._kx, self._entropy = signer, kx_key, entropy
        self.ring = Ring(params.bits)
        self.state = S.INIT
        self.abort_reason: str | None = None
        self._c: KxKey | None = None
        self._s: KxKey | None = None
        self._seed: bytes | None = None
        self._adverts: dict[int, KeyAdvertisement] = {}
        self._held: dict[int, tuple[bytes, bytes]] = {}  # owner -> (self-mask share, s-key share)
        self._peers: tuple[int, ...] = ()
        self._confirmed: tuple[int, ...] | None = None

    # ------------------------------------------------------------------ bookkeeping
    def _where(self) -> str:
        return f"secagg run {self.params.run_id!r} round {self.params.round} hospital {self.me}"

    def _abort(self, exc: Exception) -> None:
        self.state = S.ABORTED
        self.abort_reason = f"{type(exc).__name__}: {exc}"
        self._c = self._s = None
        self._seed = None
        self._held.clear()
        log.warning("%s: round aborted: %s", self._where(), self.abort_reason)

    @property
    def peers(self) -> tuple[int, ...]:
        """The neighbours this hospital masked with (those whose shares it received)."""
        return self._peers

    # ------------------------------------------------------------------ round 0
    @protocol_step((S.INIT,), S.ADVERTISED)
    def advertise(self) -> KeyAdvertisement:
        self._c = KxKey.from_private_bytes(self._entropy(32))
        self._s = KxKey.from_private_bytes(self._entropy(32))
        msg = KeyAdvertisement(
            run_id=self.params.run_id, round=self.params.round, sender=self.me,
            kx_public=self._kx.public_bytes(), c_public=self._c.public_bytes(), s_public=self._s.public_bytes(),
        )
        return _sign(msg, self._signer, self.params)

    # ------------------------------------------------------------------ round 1
    @protocol_step((S.ADVERTISED,), S.SHARED)
    def share_keys(self, msg: AdvertisedKeys) -> ShareKeys:
        what = f"{self._where()}: advertised keys"
        check_round(msg, self.params, what)
        self._adverts = verify_adverts(msg.adverts, self.params, self.roster, what)
        mine = self._adverts.get(self.me)
        if mine is None or mine.s_public != self._s.public_bytes() or mine.c_public != self._c.public_bytes():
            raise BadKeyError(f"{what}: the server's list does not carry this hospital's own advertisement")
        holders = sorted(self.params.holders_of(self.me) & set(self._adverts))
        if len(holders) < self.params.threshold:
            raise TooFewSurvivorsError(
                f"{what}: {len(holders)} share holders advertised keys, fewer than t = {self.params.threshold}"
            )
        self._seed = self._entropy(32)
        b_shares = shamir.split_bytes(self._seed, threshold=self.params.threshold, xs=holders)
        s_shares = shamir.split_bytes(self._s.private_bytes(), threshold=self.params.threshold, xs=holders)
        self._held[self.me] = (b_shares[self.me], s_shares[self.me])
        out = tuple(self._encrypt_share(v, b_shares[v] + s_shares[v]) for v in holders if v != self.me)
        commit = kdf.self_mask_commitment(self._seed, run_id=self.params.run_id, round_num=self.params.round, owner=self.me)
        reply = ShareKeys(run_id=self.params.run_id, round=self.params.round, sender=self.me,
                          self_mask_commitment=commit, shares=out)
        return _sign(reply, self._signer, self.params)

    def _share_key(self, peer: int) -> bytes:
        adv = self._adverts[peer]
        return kdf.share_key(
            self._c.exchange(adv.c_public), self._kx.exchange(adv.kx_public),
            params_digest=self.params.digest, run_id=self.params.run_id, round_num=self.params.round,
            u=self.me, v=peer,
        )

    def _encrypt_share(self, recipient: int, plaintext: bytes) -> EncryptedShare:
        p = self.params
        aad = kdf.share_aad(params_digest=p.digest, run_id=p.run_id, round_num=p.round, sender=self.me, recipient=recipient)
        ct = kdf.encrypt_share(self._share_key(recipient), plaintext, sender=self.me, recipient=recipient, aad=aad)
        share = EncryptedShare(run_id=p.run_id, round=p.round, sender=self.me, recipient=recipient, ciphertext=ct)
        return _sign(share, self._signer, p)

    # ------------------------------------------------------------------ round 2
    @protocol_step((S.SHARED,), S.MASKED)
    def masked_input(self, msg: ShareDelivery, values: np.ndarray) -> MaskedInput:
        """Mask the quantised update ``values`` (a ring vector, e.g. ``Quantizer.quantize(x)``)."""
        p = self.params
        what = f"{self._where()}: share delivery"
        check_round(msg, p, what)
        if msg.recipient != self.me:
            raise UnknownParticipantError(f"{what}: addressed to hospital {msg.recipient}")
        self.ring.check(values, p.vector_length, what=f"{self._where()}: quantised input")
        for share in msg.shares:
            self._accept_share(share, what)
        self._peers = tuple(sorted(o for o in self._held if o != self.me))
        if len(self._peers) + 1 < p.threshold:
            raise TooFewSurvivorsError(f"{what}: shares from {len(self._peers)} peers; t = {p.threshold} needs more")
        y = values.copy()
        self.ring.add_(y, self.ring.prg(self._seed, p.vector_length))
        for v in self._peers:
            shared = self._s.exchange(self._adverts[v].s_public)
            seed = kdf.pair_mask_seed(shared, run_id=p.run_id, round_num=p.round, u=self.me, v=v)
            mask = self.ring.prg(seed, p.vector_length)
            (self.ring.add_ if v > self.me else self.ring.sub_)(y, mask)
        self.ring.reduce(y)
        out = MaskedInput(run_id=p.run_id, round=p.round, sender=self.me, peers=self._peers, vector=y)
        return _sign(out, self._signer, p)

    @protocol_step((S.SHARED,), None)
    def masked_update(
        self, msg: ShareDelivery, update: np.ndarray, *, quantizer: Quantizer, rng: np.random.Generator | None = None
    ) -> MaskedInput:
        """Quantise a flat float update hospital-side and mask it (wave-2 entry point)."""
        if quantizer.bits != self.params.bits or quantizer.max_summands < len(self.params.participants):
            raise QuantizationError(
                f"{self._where()}: quantiser (b={quantizer.bits}, K={quantizer.max_summands}) does not fit the "
                f"round (b={self.params.bits}, K={len(self.params.participants)}): the sum could wrap"
            )
        return self.masked_input(msg, quantizer.quantize(update, rng=rng))

    def _accept_share(self, share: EncryptedShare, what: str) -> None:
        p = self.params
        check_round(share, p, what)
        if share.recipient != self.me:
            raise UnknownParticipantError(f"{what}: share from {share.sender} is addressed to {share.recipient}")
        check_member(share.sender, p.neighbours_of(self.me) & set(self._adverts), what, "an advertised neighbour")
        check_new(share.sender, self._held, what)
        check_signature(self.roster[share.sender].sign_public, share, p, f"{what}: share from {share.sender}")
        aad = kdf.share_aad(params_digest=p.digest, run_id=p.run_id, round_num=p.round, sender=share.sender, recipient=self.me)
        plain = kdf.decrypt_share(self._share_key(share.sender), share.ciphertext, sender=share.sender, recipient=self.me, aad=aad)
        if len(plain) != _SHARE_PAIR_BYTES:
            raise MalformedMessageError(f"{what}: share from {share.sender} has {len(plain)} bytes")
        self._held[share.sender] = (plain[: shamir.SHARE_BYTES], plain[shamir.SHARE_BYTES:])

    # ------------------------------------------------------------------ round 3 (optional)
    @protocol_step((S.MASKED,), S.CONFIRMED)
    def confirm_survivors(self, msg: SurvivorList) -> SurvivorSignature:
        p = self.params
        what = f"{self._where()}: survivor list"
        check_round(msg, p, what)
        check_sorted_unique(msg.survivors, what)
        check_member(self.me, msg.survivors, what, "in the survivor list it is asked to confirm")
        if len(msg.survivors) < p.threshold:
            raise TooFewSurvivorsError(f"{what}: {len(msg.survivors)} survivors, fewer than t = {p.threshold}")
        self._confirmed = msg.survivors
        return SurvivorSignature(run_id=p.run_id, round=p.round, sender=self.me,
                                 signature=self._signer.sign(msg.signed_payload(p.digest)))

    # ------------------------------------------------------------------ round 4
    @protocol_step((S.MASKED, S.CONFIRMED), S.DONE)
    def unmask(self, msg: UnmaskRequest) -> UnmaskResponse:
        p = self.params
        what = f"{self._where()}: unmask request"
        check_round(msg, p, what)
        survivors, dropped = set(msg.survivors), set(msg.dropped)
        check_sorted_unique(msg.survivors, what)
        check_sorted_unique(msg.dropped, what)
        if survivors & dropped:
            raise DoubleRevealError(
                f"{what}: hospitals {sorted(survivors & dropped)} are listed as survivor and as dropped; "
                "revealing both shares of one hospital would expose its input"
            )
        check_member(self.me, survivors, what, "in the survivor list")
        if len(survivors) < p.threshold:
            raise TooFewSurvivorsError(f"{what}: {len(survivors)} survivors, fewer than t = {p.threshold}")
        if p.consistency_check:
            self._check_confirmations(msg, what)
        unclassified = set(self._peers) - survivors - dropped
        if unclassified:
            raise MalformedMessageError(f"{what}: peers {sorted(unclassified)} are neither survivors nor dropped")
        if dropped - set(self._adverts):
            raise MalformedMessageError(f"{what}: dropped list names hospitals that never advertised keys")
        self_shares = tuple((o, self._held[o][0]) for o in sorted(self._held) if o in survivors)
        pair_shares = tuple((o, self._held[o][1]) for o in sorted(self._held) if o in dropped)
        reply = UnmaskResponse(run_id=p.run_id, round=p.round, sender=self.me,
                               self_mask_shares=self_shares, pairwise_shares=pair_shares)
        self._seed, self._s, self._c = None, None, None
        return _sign(reply, self._signer, p)

    def _check_confirmations(self, msg: UnmaskRequest, what: str) -> None:
        p = self.params
        if self._confirmed is None or tuple(msg.survivors) != self._confirmed:
            raise MalformedMessageError(f"{what}: survivor list differs from the one this hospital confirmed")
        payload = SurvivorList(run_id=p.run_id, round=p.round, survivors=msg.survivors).signed_payload(p.digest)
        signers = set()
        for sender, sig in msg.confirmations:
            check_member(sender, msg.survivors, what, "a survivor (confirmation)")
            if not verify_signature(self.roster[sender].sign_public, sig, payload):
                raise BadSignatureError(f"{what}: confirmation of hospital {sender} does not verify")
            signers.add(sender)
        if len(signers) < p.threshold:
            raise TooFewSurvivorsError(f"{what}: {len(signers)} confirmations of the survivor list, t = {p.threshold}")


def verify_adverts(
    adverts: tuple[KeyAdvertisement, ...], params: RoundParams, roster: Mapping[int, Participant], what: str
) -> dict[int, KeyAdvertisement]:
    """Check a list of advertisements (used by clients and the server); return them by sender."""
    out: dict[int, KeyAdvertisement] = {}
    for adv in adverts:
        check_advert(adv, params, roster, out, what)
        out[adv.sender] = adv
    if len(out) < params.threshold:
        raise TooFewSurvivorsError(f"{what}: {len(out)} hospitals advertised keys, fewer than t = {params.threshold}")
    return out


def check_advert(
    adv: KeyAdvertisement, params: RoundParams, roster: Mapping[int, Participant],
    seen: Mapping[int, KeyAdvertisement], what: str,
) -> None:
    check_round(adv, params, what)
    check_member(adv.sender, params.participants, what, "a participant of this round")
    check_new(adv.sender, seen, what)
    if adv.kx_public != roster[adv.sender].kx_public:
        raise BadKeyError(f"{what}: hospital {adv.sender} advertises a kx key that is not its registered one")
    check_signature(roster[adv.sender].sign_public, adv, params, f"{what}: advertisement of {adv.sender}")
    used = {k for a in seen.values() for k in (a.c_public, a.s_public)}
    if adv.c_public == adv.s_public or {adv.c_public, adv.s_public} & used:
        raise BadKeyError(f"{what}: hospital {adv.sender} reuses an ephemeral key")


def _sign(msg: _M, signer: Signer, params: RoundParams) -> _M:
    return dataclasses.replace(msg, signature=signer.sign(msg.signed_payload(params.digest)))
