"""Round parameters and the SecAgg+ k-regular neighbour graph."""

from __future__ import annotations

import pytest

from bfdl_tff.secagg.params import RoundParams, default_threshold, neighbour_graph


def _params(**kw) -> RoundParams:
    base = dict(run_id="run", round=3, participants=tuple(range(1, 11)), threshold=3, bits=32,
                vector_length=10, neighbours=4)
    base.update(kw)
    return RoundParams(**base)


@pytest.mark.parametrize("k,degree", [(10, 4), (10, 3), (9, 4), (10, 9), (7, 2), (3, 2)])
def test_graph_is_k_regular_symmetric_and_without_self_loops(k, degree):
    ids = tuple(range(1, k + 1))
    g = neighbour_graph(ids, degree=degree, run_id="r", round_num=0)
    assert set(g) == set(ids)
    for i, nb in g.items():
        assert len(nb) == degree and i not in nb
        assert all(i in g[j] for j in nb)


def test_graph_is_deterministic_and_changes_with_the_round():
    ids = tuple(range(1, 11))
    g0 = neighbour_graph(ids, degree=4, run_id="r", round_num=0)
    assert g0 == neighbour_graph(ids, degree=4, run_id="r", round_num=0)
    assert any(g0 != neighbour_graph(ids, degree=4, run_id="r", round_num=r) for r in range(1, 5))


def test_complete_graph_is_plain_secagg():
    p = _params(neighbours=None, threshold=6)
    assert p.protocol == "secagg" and p.degree == 9
    assert p.holders_of(1) == frozenset(range(1, 11))
    assert _params().protocol == "secagg+"


def test_params_validation():
    with pytest.raises(ValueError, match="threshold"):
        _params(threshold=6)  # degree 4: at most 5 holders
    with pytest.raises(ValueError, match="threshold"):
        _params(threshold=1)
    with pytest.raises(ValueError, match="regular"):
        _params(participants=tuple(range(1, 10)), neighbours=3)  # 9 * 3 odd
    with pytest.raises(ValueError, match="increasing"):
        _params(participants=(2, 1, 3))
    with pytest.raises(ValueError, match="bits"):
        _params(bits=4)


def test_digest_binds_every_parameter():
    base = _params()
    assert base.digest == _params().digest
    for change in (dict(round=4), dict(run_id="x"), dict(bits=48), dict(vector_length=11),
                   dict(threshold=4), dict(neighbours=2), dict(consistency_check=False)):
        assert _params(**change).digest != base.digest


def test_default_threshold_is_a_majority():
    assert default_threshold(3) == 2 and default_threshold(10) == 6 and default_threshold(5) == 3
