"""Checks shared by the client and server state machines (replay, signatures, membership)."""

from __future__ import annotations

import enum
import functools
import logging
from typing import Any, Callable, Iterable, TypeVar

from bfdl_tff.secagg.errors import (
    BadSignatureError,
    DuplicateMessageError,
    LateMessageError,
    MalformedMessageError,
    ProtocolStateError,
    ReplayError,
    SecAggError,
    UnknownParticipantError,
)
from bfdl_tff.secagg.keys import verify_signature
from bfdl_tff.secagg.params import RoundParams

log = logging.getLogger("bfdl_tff.secagg")
F = TypeVar("F", bound=Callable[..., Any])


def check_round(msg: Any, params: RoundParams, what: str) -> None:
    """Reject a message of another run or round (a replay)."""
    if msg.run_id != params.run_id or msg.round != params.round:
        raise ReplayError(
            f"{what}: belongs to run {msg.run_id!r} round {msg.round}, "
            f"not run {params.run_id!r} round {params.round} (replayed?)"
        )


def check_signature(public_key: bytes, msg: Any, params: RoundParams, what: str) -> None:
    if not verify_signature(public_key, msg.signature, msg.signed_payload(params.digest)):
        raise BadSignatureError(f"{what}: signature does not verify against the sender's identity key")


def check_member(hospital: int, allowed: Iterable[int], what: str, role: str) -> None:
    if hospital not in set(allowed):
        raise UnknownParticipantError(f"{what}: hospital {hospital} is not {role}")


def check_new(hospital: int, seen: Iterable[int], what: str) -> None:
    if hospital in set(seen):
        raise DuplicateMessageError(f"{what}: hospital {hospital} already sent this message in this round")


def check_sorted_unique(ids: tuple[int, ...], what: str) -> None:
    if list(ids) != sorted(set(ids)):
        raise MalformedMessageError(f"{what}: hospital list {list(ids)} is not sorted and unique")


def _is_late(state: enum.Enum, allowed: tuple[enum.Enum, ...]) -> bool:
    order = list(type(state))  # states are declared in protocol order; ABORTED last
    return state.name != "ABORTED" and order.index(state) > max(order.index(a) for a in allowed)


def protocol_step(allowed: tuple[enum.Enum, ...], then: enum.Enum | None, *, late_ok: bool = False) -> Callable[[F], F]:
    """Decorate a state-machine method: enforce the state, abort on any SecAggError, advance.

    ``then = None`` keeps the state (a message collected within a step). With ``late_ok``, a
    message that arrives after its step closed (a straggler, e.g. a hospital already counted as
    dropped) raises :class:`LateMessageError` and is ignored without aborting the round; any
    other out-of-order call aborts. The instance provides ``state``, ``abort_reason``,
    ``_abort(exc)`` and ``_where()``."""

    def deco(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            if late_ok and _is_late(self.state, allowed):
                late = LateMessageError(
                    f"{self._where()}: {fn.__name__} after its step closed (state {self.state.value}); ignored"
                )
                log.info("%s", late)
                raise late
            if self.state not in allowed:
                exc = ProtocolStateError(
                    f"{self._where()}: {fn.__name__} not allowed in state {self.state.value}"
                    + (f" (round aborted: {self.abort_reason})" if self.abort_reason else "")
                )
                if self.abort_reason is None:
                    self._abort(exc)
                raise exc
            try:
                out = fn(self, *args, **kwargs)
            except SecAggError as exc:
                if self.abort_reason is None:  # nested steps abort once
                    self._abort(exc)
                raise
            if then is not None:
                self.state = then
            return out

        return wrapper  # type: ignore[return-value]

    return deco
