"""``round.abort`` (issue 17.1, contract side): a round left open on chain by a crash, whose signed
transactions are lost, is aborted with a recorded reason; its effects (reputation, privacy budget,
last round) are undone and the same round number may be opened and recorded again (paper 3.4:
the chain keeps the history, including the aborted attempt)."""

from __future__ import annotations

import pytest

from ledger.contracts import ContractState

from test_contracts_paper_3_4 import ADMIN, AGG, HOSP, World, commit


def _privacy(w: World, r: int, eps: float):
    return w.do(AGG, "privacy.record", {"round": r, "epsilon": eps, "delta": 1e-5, "accountant": "rdp",
                                        "noise_multiplier": 1.1})


def _abort(w: World, r: int, reason: str = "outbox lost", signer=AGG):
    return w.do(signer, "round.abort", {"round": r, "reason": reason})


def test_abort_undoes_the_open_round_and_the_round_opens_again() -> None:
    w = World().setup()
    assert w.do(AGG, "round.open", {"round": 1}).ok
    assert commit(w, HOSP[0], 1).ok
    assert _privacy(w, 1, 0.3).ok
    assert w.do(AGG, "round.close", {"round": 1}).ok
    rep0 = w.st.query(f"reputation/{HOSP[0].key_id()}")
    priv0 = w.st.query("privacy")

    assert w.do(AGG, "round.open", {"round": 2}).ok
    assert commit(w, HOSP[0], 2, n=7).ok
    assert commit(w, HOSP[1], 2, n=5).ok
    assert _privacy(w, 2, 0.6).ok
    res = _abort(w, 2, "round 2: no signed transactions persisted for the round open on chain")
    assert (res.ok, res.code) == (True, "aborted"), res
    s = w.st.query("summary")
    assert s["open_round"] is None and s["last_round"] == 1
    assert w.st.query("privacy") == priv0  # budget of the aborted attempt given back
    assert w.st.query(f"reputation/{HOSP[0].key_id()}") == rep0
    assert w.st.query(f"reputation/{HOSP[1].key_id()}")["accepted"] == 0
    rnd = w.st.query("rounds/2")
    assert rnd["status"] == "aborted"
    (attempt,) = rnd["aborted"]
    assert attempt["reason"].startswith("round 2: no signed") and attempt["aborter"] == AGG.key_id()
    assert attempt["commitments"] == sorted([HOSP[0].key_id(), HOSP[1].key_id()]) and len(attempt["tx"]) == 64

    # The same round number is recorded again; the aborted attempt stays in the history.
    assert w.do(AGG, "round.open", {"round": 2}).ok
    assert commit(w, HOSP[0], 2, n=7).ok  # not a duplicate: a new attempt
    assert _privacy(w, 2, 0.6).ok
    assert w.do(AGG, "round.close", {"round": 2}).ok
    rnd = w.st.query("rounds/2")
    assert rnd["status"] == "closed" and [a["reason"] for a in rnd["aborted"]] == [attempt["reason"]]
    assert w.st.query("privacy")["records"] == 2 and w.st.query("privacy")["epsilon"] == 0.6
    rep = w.st.query(f"reputation/{HOSP[0].key_id()}")
    assert (rep["accepted"], rep["participated"], rep["examples"]) == (2, 2, 17)
    assert w.st.state_root() == w.st.full_state_root()
    assert ContractState.from_snapshot(w.g, w.st.snapshot()).query("rounds/2") == rnd


def test_abort_needs_the_open_round_a_reason_and_a_server_role() -> None:
    w = World().setup()
    res = _abort(w, 1)
    assert (res.ok, res.code) == (False, "wrong_round")  # nothing open
    assert w.do(AGG, "round.open", {"round": 1}).ok
    assert _abort(w, 2).code == "wrong_round"
    assert _abort(w, 1, reason="").code == "bad_payload"
    assert _abort(w, 1, reason="x" * 257).code == "bad_payload"
    assert w.do(AGG, "round.abort", {"round": 1}).code == "bad_payload"  # reason is required
    assert _abort(w, 1, signer=HOSP[0]).code == "unauthorized"
    assert w.st.query("summary")["open_round"] == 1  # the refused attempts changed nothing
    assert _abort(w, 1, signer=ADMIN).ok


def test_closed_rounds_cannot_be_aborted_and_finalize_sees_the_rollback() -> None:
    w = World().setup()
    assert w.do(AGG, "round.open", {"round": 1}).ok
    assert w.do(AGG, "round.close", {"round": 1}).ok
    assert _abort(w, 1).code == "wrong_round"
    assert w.do(AGG, "round.open", {"round": 2}).ok
    assert _abort(w, 2).ok
    files = {name: "ab" * 32 for name in ("metrics.csv", "summary.json", "config.yaml", "final_model.npz")}
    assert w.do(AGG, "run.finalize", {"rounds": 2, "files": files}).code == "wrong_round"
    assert w.do(AGG, "run.finalize", {"rounds": 1, "files": files}).ok


@pytest.mark.parametrize("first_eps", [None, 0.25])
def test_abort_of_the_first_round_resets_the_budget(first_eps) -> None:
    w = World().setup()
    assert w.do(AGG, "round.open", {"round": 1}).ok
    if first_eps is not None:
        assert _privacy(w, 1, first_eps).ok
    assert _abort(w, 1).ok
    assert w.st.query("privacy") == {"epsilon": 0.0, "records": 0, "last_round": 0}
    assert w.st.query("summary")["last_round"] == 0
