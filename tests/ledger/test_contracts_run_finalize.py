"""``run.finalize`` (issue 17.3, contract side; paper 1.2 objective 6 and 3.4: the chain binds a
run's released results) and the declarative kind table (issue 13.6): every kind of
``ledger.txkinds.TX_KINDS`` has exactly one handler, the docs print the table itself."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger import contracts, handlers, txkinds
from ledger.contracts import ContractState, Genesis
from ledger.tx import sign_tx

from test_contracts_paper_3_4 import ADMIN, AGG, HOSP, World, commit

REPO = Path(__file__).resolve().parents[2]
FILES = {name: f"{i:02x}" * 32 for i, name in enumerate(txkinds.RUN_FILES)}


def _round(w: World, r: int) -> None:
    assert w.do(AGG, "round.open", {"round": r}).ok
    assert commit(w, HOSP[0], r).ok
    assert w.do(AGG, "round.close", {"round": r}).ok


def _finalize(w: World, signer=AGG, **payload):
    return w.do(signer, "run.finalize", {"rounds": 2, "files": dict(FILES), **payload})


def test_finalize_after_the_last_round_is_recorded_and_queryable() -> None:
    w = World().setup()
    assert w.st.query("run/final") is None
    for r in (1, 2):
        _round(w, r)
    root_before = w.st.state_root()
    res = _finalize(w)
    assert (res.ok, res.code) == (True, "finalized"), res
    rec = w.st.query("run/final")
    assert rec["rounds"] == 2 and rec["files"] == FILES and rec["finalizer"] == AGG.key_id()
    assert rec["height"] == w.h and len(rec["tx"]) == 64
    assert w.st.state_root() != root_before and w.st.state_root() == w.st.full_state_root()
    # Survives a snapshot (state transfer) unchanged.
    assert ContractState.from_snapshot(w.g, w.st.snapshot()).query("run/final") == rec


def test_finalize_is_accepted_once_and_no_round_opens_after_it() -> None:
    w = World().setup()
    _round(w, 1)
    _round(w, 2)
    assert _finalize(w).ok
    again = _finalize(w)
    assert (again.ok, again.code) == (False, "duplicate")
    late = w.do(AGG, "round.open", {"round": 3})
    assert (late.ok, late.code) == (False, "run_finalized")
    assert w.st.query("summary")["last_round"] == 2


def test_finalize_refused_while_a_round_is_open_or_for_another_round_count() -> None:
    w = World().setup()
    _round(w, 1)
    assert w.do(AGG, "round.open", {"round": 2}).ok
    res = _finalize(w)
    assert (res.ok, res.code) == (False, "round_still_open")
    assert w.do(AGG, "round.close", {"round": 2}).ok
    for rounds in (1, 3):
        res = _finalize(w, rounds=rounds)
        assert (res.ok, res.code) == (False, "wrong_round"), rounds
    assert _finalize(w).ok  # still possible: the refused attempts changed nothing


def test_finalize_before_any_round_is_refused() -> None:
    w = World().setup()
    res = _finalize(w, rounds=1)
    assert (res.ok, res.code) == (False, "wrong_round")


@pytest.mark.parametrize("signer,code", [(HOSP[0], "unauthorized"), (ADMIN, "finalized")])
def test_finalize_senders_are_the_table_roles(signer, code: str) -> None:
    w = World().setup()
    _round(w, 1)
    _round(w, 2)
    assert _finalize(w, signer=signer).code == code


@pytest.mark.parametrize("payload,msg", [
    ({"rounds": 0}, "rounds"),
    ({"rounds": True}, "rounds"),
    ({"rounds": "2"}, "rounds"),
    ({"files": {k: v for k, v in FILES.items() if k != "config.yaml"}}, "exactly"),
    ({"files": {**FILES, "extra.txt": "00" * 32}}, "exactly"),
    ({"files": {**FILES, "metrics.csv": "AB" * 32}}, "metrics.csv"),
    ({"files": {**FILES, "summary.json": "ab" * 31}}, "summary.json"),
    ({"files": ["metrics.csv"]}, "exactly"),
])
def test_finalize_payload_is_strict(payload: dict, msg: str) -> None:
    w = World().setup()
    _round(w, 1)
    _round(w, 2)
    res = _finalize(w, **payload)
    assert (res.ok, res.code) == (False, "bad_payload") and msg in res.message, res
    res = w.do(AGG, "run.finalize", {"rounds": 2})  # a missing field: the table's row
    assert res.code == "bad_payload" and "files" in res.message


def test_a_chain_that_never_finalizes_keeps_its_state_root() -> None:
    """The run record is created only by run.finalize: chains from before it hash as they did."""
    st = ContractState(Genesis(admins=(ADMIN.key_id(),)))
    assert "run" not in st._s
    tx = sign_tx(ADMIN, "round.open", {"round": 1}, chain_id=st.genesis.chain_id)
    st.apply(tx, height=1, timestamp_ms=1)
    assert "run" not in st._s


def test_every_kind_of_the_table_has_one_handler_and_kinds_derive_from_it() -> None:
    assert set(handlers.HANDLERS) == set(txkinds.TX_KINDS)
    assert contracts.KINDS == tuple(txkinds.TX_KINDS)
    with pytest.raises(ValueError, match="not in ledger.txkinds.TX_KINDS"):
        handlers.handles("no.such_kind")(lambda *a: None)
    with pytest.raises(ValueError, match="two handlers"):
        handlers.handles("round.open")(lambda *a: None)


def test_docs_print_the_kind_table_itself() -> None:
    assert txkinds.markdown_table() in (REPO / "docs" / "ledger.md").read_text(encoding="utf-8")
