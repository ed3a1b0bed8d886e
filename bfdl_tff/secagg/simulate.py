"""In-process driver of one secure-aggregation round (tests, benchmark, TFF simulation in wave 2).

:func:`run_round` plays every hospital and the server through the five protocol steps, passing
each message through the wire codec (``encode`` -> bytes -> ``decode``), so it measures the bytes
each party sends and the time each spends (its state-machine calls plus encoding what it sends and
decoding what it receives). Dropouts are simulated by hospitals that stop after a given step; an
optional ``intercept(stage, message) -> message`` lets tests tamper with or replay messages in
flight. The first protocol error propagates (the server or client has aborted the round; the server is
aborted with it and its transcript, with the reason, is attached to the error).
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from bfdl_tff.secagg.client import SecAggClient
from bfdl_tff.secagg.errors import SecAggError
from bfdl_tff.secagg.keys import Ed25519Signer, KxKey, KxKeyStore, Signer
from bfdl_tff.secagg.messages import Message, SurvivorList, decode, encode
from bfdl_tff.secagg.params import Participant, RoundParams
from bfdl_tff.secagg.server import AggregateResult, SecAggServer

Intercept = Callable[[str, Message], Message]


@dataclass
class Hospital:
    """A simulated hospital's long-term keys: Ed25519 identity and X25519 kx key."""

    id: int
    name: str
    signer: Signer
    kx: KxKey

    def participant(self) -> Participant:
        return Participant(id=self.id, name=self.name, sign_public=self.signer.public_key(),
                           kx_public=self.kx.public_bytes())


def make_hospitals(count: int, *, kx_store: KxKeyStore | None = None) -> list[Hospital]:
    """``count`` hospitals with ids 1..count (kx keys from ``kx_store`` if given, else in memory)."""
    out = []
    for i in range(1, count + 1):
        name = f"hospital-{i}"
        kx = kx_store.load_or_create(name) if kx_store is not None else KxKey.generate()
        out.append(Hospital(id=i, name=name, signer=Ed25519Signer(), kx=kx))
    return out


def roster_of(hospitals: Iterable[Hospital]) -> dict[int, Participant]:
    return {h.id: h.participant() for h in hospitals}


@dataclass
class RoundReport:
    """What one simulated round produced and cost."""

    result: AggregateResult
    server: SecAggServer
    clients: dict[int, SecAggClient]
    bytes_sent: dict[int, int] = field(default_factory=dict)
    bytes_received: dict[int, int] = field(default_factory=dict)
    server_bytes_sent: int = 0
    client_seconds: dict[int, float] = field(default_factory=dict)
    server_seconds: float = 0.0
    server_inbox: list[Message] = field(default_factory=list)


class _Wire:
    """Moves messages through the codec, counting bytes and charging time to each party."""

    def __init__(self, intercept: Intercept | None) -> None:
        self.intercept = intercept
        self.sent: dict[Any, int] = defaultdict(int)
        self.received: dict[Any, int] = defaultdict(int)
        self.seconds: dict[Any, float] = defaultdict(float)
        self.server_inbox: list[Message] = []

    def call(self, party: Any, fn: Callable[..., Any], *args: Any) -> Any:
        t0 = time.perf_counter()
        try:
            return fn(*args)
        finally:
            self.seconds[party] += time.perf_counter() - t0

    def send(self, stage: str, src: Any, dst: Any, msg: Message) -> Message:
        if self.intercept is not None:
            msg = self.intercept(stage, msg)
        data = self.call(src, encode, msg)
        self.sent[src] += len(data)
        self.received[dst] += len(data)
        out = self.call(dst, decode, data)
        if dst == "server":
            self.server_inbox.append(out)
        return out


def run_round(
    params: RoundParams,
    hospitals: Iterable[Hospital],
    inputs: Mapping[int, np.ndarray],
    *,
    drop_after_advertise: Iterable[int] = (),
    drop_after_shares: Iterable[int] = (),
    drop_after_masked: Iterable[int] = (),
    drop_after_confirm: Iterable[int] = (),
    intercept: Intercept | None = None,
    entropy: Mapping[int, Callable[[int], bytes]] | None = None,
    sum_fn: Callable[[Sequence[np.ndarray]], np.ndarray] | None = None,
) -> RoundReport:
    """Run one round; ``inputs[i]`` is hospital i's quantised ring vector. See module docstring.

    ``entropy[i]`` replaces hospital i's randomness source (tests only; default ``os.urandom``);
    ``sum_fn`` is passed to :class:`SecAggServer` (the server's summation of masked vectors).
    A protocol error from any party aborts the server too and is raised with the server's
    transcript of the aborted round in ``exc.transcript``."""
    hosp = {h.id: h for h in hospitals if h.id in params.participants}
    roster = roster_of(hosp.values())
    server = SecAggServer(params=params, roster=roster, sum_fn=sum_fn)
    try:
        return _run(params, server, hosp, roster, inputs, drops=(
            set(drop_after_advertise), set(drop_after_shares), set(drop_after_masked), set(drop_after_confirm)),
            intercept=intercept, entropy=entropy)
    except SecAggError as exc:
        server.abort(exc)  # a hospital's error ends the round too; the server's first reason wins
        exc.transcript = server.transcript.to_record()
        raise


def _run(params: RoundParams, server: SecAggServer, hosp: Mapping[int, Hospital], roster: Mapping[int, Participant],
         inputs: Mapping[int, np.ndarray], *, drops: tuple[set[int], ...], intercept: Intercept | None,
         entropy: Mapping[int, Callable[[int], bytes]] | None) -> RoundReport:
    """The five steps of :func:`run_round` (``drops``: after advertise, shares, masked, confirm)."""
    drop_after_advertise, drop_after_shares, drop_after_masked, drop_after_confirm = drops
    extra = {i: {"entropy": entropy[i]} if entropy and i in entropy else {} for i in hosp}
    clients = {
        i: SecAggClient(params=params, me=i, signer=h.signer, kx_key=h.kx, roster=roster, **extra[i])
        for i, h in hosp.items()
    }
    wire = _Wire(intercept)
    active = set(clients)

    for i in sorted(active):
        adv = wire.call(i, clients[i].advertise)
        wire.call("server", server.receive_advertisement, wire.send("advertise", i, "server", adv))
    adverts = wire.call("server", server.close_advertisements)
    active -= set(drop_after_advertise)
    for i in sorted(active):
        msg = wire.call(i, clients[i].share_keys, wire.send("advertised", "server", i, adverts))
        wire.call("server", server.receive_shares, wire.send("share", i, "server", msg))
    deliveries = wire.call("server", server.close_shares)
    active -= set(drop_after_shares)
    for i in sorted(active):
        delivery = wire.send("delivery", "server", i, deliveries[i])
        msg = wire.call(i, clients[i].masked_input, delivery, inputs[i])
        wire.call("server", server.receive_masked_input, wire.send("masked", i, "server", msg))
    request = wire.call("server", server.close_masked_inputs)
    active -= set(drop_after_masked)
    if isinstance(request, SurvivorList):
        for i in sorted(active):
            sig = wire.call(i, clients[i].confirm_survivors, wire.send("survivors", "server", i, request))
            wire.call("server", server.receive_confirmation, wire.send("confirm", i, "server", sig))
        request = wire.call("server", server.close_confirmations)
        active -= set(drop_after_confirm)
    for i in sorted(active):
        resp = wire.call(i, clients[i].unmask, wire.send("unmask-request", "server", i, request))
        wire.call("server", server.receive_unmask_response, wire.send("unmask", i, "server", resp))
    result = wire.call("server", server.finish)
    return RoundReport(
        result=result, server=server, clients=clients,
        bytes_sent={i: wire.sent[i] for i in clients}, bytes_received={i: wire.received[i] for i in clients},
        server_bytes_sent=wire.sent["server"], client_seconds={i: wire.seconds[i] for i in clients},
        server_seconds=wire.seconds["server"], server_inbox=wire.server_inbox,
    )
