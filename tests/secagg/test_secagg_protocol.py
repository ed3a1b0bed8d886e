"""End-to-end rounds: exact aggregates, dropouts, uniformity of masked vectors, what the server holds."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from bfdl_tff.secagg import kdf, shamir
from bfdl_tff.secagg.keys import KxKey
from bfdl_tff.secagg.messages import MaskedInput, UnmaskResponse
from bfdl_tff.secagg.simulate import run_round
from bfdl_tff.secagg.transcript import audit_transcript
from secagg_helpers import make_params, plain_sum, quantised_inputs, seeded_entropy


@pytest.mark.parametrize(
    "k,threshold,neighbours,bits",
    [(3, 2, None, 32), (10, 6, None, 32), (10, 3, 4, 32), (10, 6, None, 48), (10, 4, 5, 64), (3, 2, None, 20)],
)
def test_aggregate_equals_the_plain_quantised_sum_exactly(hospitals10, k, threshold, neighbours, bits):
    n = 1000
    params = make_params(k, threshold=threshold, n=n, bits=bits, neighbours=neighbours)
    quant, floats, qs = quantised_inputs(k, n, bits=bits, seed=k + bits)
    report = run_round(params, hospitals10[:k], qs)
    assert np.array_equal(report.result.vector, plain_sum(quant, qs, range(1, k + 1)))
    assert report.result.survivors == tuple(range(1, k + 1)) and report.result.dropped == ()
    exact = sum(np.clip(x, -1, 1) for x in floats.values())
    assert np.abs(quant.dequantize_sum(report.result.vector) - exact).max() <= k * quant.step / 2 + 1e-12
    assert audit_transcript(report.result.transcript) == []


def test_dropout_after_sending_keys_before_masked_input_gives_the_survivors_sum(hospitals10):
    params = make_params(3, threshold=2)
    quant, _, qs = quantised_inputs(3, params.vector_length, seed=1)
    report = run_round(params, hospitals10[:3], qs, drop_after_shares=[2])
    assert np.array_equal(report.result.vector, plain_sum(quant, qs, [1, 3]))
    assert report.result.survivors == (1, 3) and report.result.dropped == (2,)
    record = report.result.transcript
    assert record["revealed"] == {"1": {"self_mask": [1, 3], "pairwise": [2]},
                                  "3": {"self_mask": [1, 3], "pairwise": [2]}}
    assert audit_transcript(record) == []


def test_dropout_after_masked_input_keeps_its_input_in_the_sum(hospitals10):
    params = make_params(3, threshold=2)
    quant, _, qs = quantised_inputs(3, params.vector_length, seed=2)
    report = run_round(params, hospitals10[:3], qs, drop_after_masked=[3])
    assert np.array_equal(report.result.vector, plain_sum(quant, qs, [1, 2, 3]))
    rec = report.result.transcript
    assert rec["masked"] == [1, 2, 3] and rec["confirmed"] == [1, 2] and rec["responded"] == [1, 2]
    assert rec["dropped"] == [] and audit_transcript(rec) == []


def test_dropout_after_advertising_needs_no_reconstruction(hospitals10):
    params = make_params(3, threshold=2)
    quant, _, qs = quantised_inputs(3, params.vector_length, seed=3)
    report = run_round(params, hospitals10[:3], qs, drop_after_advertise=[1])
    assert np.array_equal(report.result.vector, plain_sum(quant, qs, [2, 3]))
    assert report.result.transcript["shared"] == [2, 3] and report.result.dropped == ()


def _dropouts(params, wanted):
    """Greedily keep the wanted (stage, hospital) dropouts that leave every hospital >= t live holders."""
    gone: dict[str, list[int]] = {"advertise": [], "shares": [], "masked": [], "confirm": []}
    silent: set[int] = set()  # hospitals that send no unmask response
    for stage, h in wanted:
        trial = silent | {h}
        if all(len(params.holders_of(o) - trial) >= params.threshold for o in params.participants):
            gone[stage].append(h)
            silent = trial
    return gone


@pytest.mark.parametrize("neighbours,threshold", [(None, 6), (4, 3), (6, 4)])
def test_k10_with_dropouts_at_every_step(hospitals10, neighbours, threshold):
    params = make_params(10, threshold=threshold, neighbours=neighbours)
    quant, _, qs = quantised_inputs(10, params.vector_length, seed=4)
    gone = _dropouts(params, [("advertise", 1), ("shares", 4), ("masked", 7), ("confirm", 9),
                              ("shares", 2), ("masked", 5), ("confirm", 10)])
    assert gone["shares"], "the graph must allow at least one recovered dropout"
    report = run_round(params, hospitals10, qs, drop_after_advertise=gone["advertise"],
                       drop_after_shares=gone["shares"], drop_after_masked=gone["masked"],
                       drop_after_confirm=gone["confirm"])
    summed = sorted(set(range(1, 11)) - set(gone["advertise"]) - set(gone["shares"]))
    assert np.array_equal(report.result.vector, plain_sum(quant, qs, summed))
    assert report.result.dropped == tuple(sorted(gone["shares"]))
    assert audit_transcript(report.result.transcript) == []


def test_round_without_consistency_check(hospitals10):
    params = make_params(4, threshold=3, consistency_check=False)
    quant, _, qs = quantised_inputs(4, params.vector_length, seed=5)
    report = run_round(params, hospitals10[:4], qs, drop_after_shares=[2])
    assert np.array_equal(report.result.vector, plain_sum(quant, qs, [1, 3, 4]))
    assert report.result.transcript["confirmed"] == []


def test_masked_vector_alone_is_indistinguishable_from_uniform(hospitals10):
    # Hospital 1's input is all zeros: any structure left in y_1 would show. Seeded randomness
    # makes the statistics reproducible (fixed p-values, no flakiness); significance level 0.001.
    n = 50_000
    params = make_params(3, threshold=2, n=n)
    qs = {i: np.zeros(n, dtype=np.uint32) for i in (1, 2, 3)}
    report = run_round(params, hospitals10[:3], qs, entropy={i: seeded_entropy(100 + i) for i in (1, 2, 3)})
    y = next(m.vector for m in report.server_inbox if isinstance(m, MaskedInput) and m.sender == 1)
    for shift in (0, 8, 16, 24):  # every byte of the 32-bit residues is uniform over 256 values
        counts = np.bincount(((y >> np.uint32(shift)) & np.uint32(0xFF)).astype(np.int64), minlength=256)
        assert stats.chisquare(counts).pvalue > 1e-3
    assert stats.kstest(y.astype(np.float64) / 2**32, "uniform").pvalue > 1e-3
    # ...and uncorrelated with a structured input: mask a ramp, compare residues with the ramp.
    assert abs(stats.spearmanr(y[:5000], np.arange(5000)).correlation) < 0.05


def test_masks_are_fresh_every_round(hospitals10):
    qs = {i: np.zeros(64, dtype=np.uint32) for i in (1, 2, 3)}
    ys = []
    for rnd in (1, 2):
        report = run_round(make_params(3, threshold=2, n=64, round_num=rnd), hospitals10[:3], qs)
        ys.append(next(m.vector for m in report.server_inbox if isinstance(m, MaskedInput) and m.sender == 1))
    assert np.count_nonzero(ys[0] == ys[1]) < 3


def test_server_never_receives_or_holds_an_individual_input(hospitals10):
    n = 4096
    params = make_params(3, threshold=2, n=n)
    quant, _, qs = quantised_inputs(3, n, seed=6)
    report = run_round(params, hospitals10[:3], qs, drop_after_shares=[2])
    server = report.server
    # 1. What crossed into the server: no masked vector agrees with its hospital's q(x) (chance: n/2^32).
    masked = {m.sender: m.vector for m in report.server_inbox if isinstance(m, MaskedInput)}
    assert set(masked) == {1, 3}
    for i, y in masked.items():
        assert np.count_nonzero(y == qs[i]) <= 2
    # 2. No array the server object holds equals any individual input.
    arrays = [m.vector for m in server._masked.values()] + [report.result.vector]
    assert not any(np.array_equal(a, q) for a in arrays for q in qs.values())
    # 3. Reveals follow the rule: self-mask shares of survivors only, pairwise shares of dropped only.
    responses = [m for m in report.server_inbox if isinstance(m, UnmaskResponse)]
    assert {o for r in responses for o, _ in r.self_mask_shares} == {1, 3}
    assert {o for r in responses for o, _ in r.pairwise_shares} == {2}
    # 4. Even using everything it learned (b_1 and the dropped hospital's s key), the server's best
    #    view of hospital 1's input is still hidden by the pairwise mask shared with survivor 3.
    b1 = shamir.reconstruct_bytes(server._shares_of(1, self_mask=True), threshold=2)
    s2 = KxKey.from_private_bytes(shamir.reconstruct_bytes(server._shares_of(2, self_mask=False), threshold=2))
    ring = quant.ring
    view = masked[1].copy()
    ring.sub_(view, ring.prg(b1, n))
    seed12 = kdf.pair_mask_seed(s2.exchange(server._adverts[1].s_public), run_id=params.run_id,
                                round_num=params.round, u=1, v=2)
    ring.sub_(view, ring.prg(seed12, n))  # 1 < 2: hospital 1 added +PRG(s_12)
    ring.reduce(view)
    assert np.count_nonzero(view == qs[1]) <= 2
    # ...whereas adding hospital 3's view cancels s_13: only the sum is revealed.
    assert np.array_equal(report.result.vector, plain_sum(quant, qs, [1, 3]))


def test_bytes_sent_are_dominated_by_the_masked_vector(hospitals10):
    n = 10_000
    params = make_params(3, threshold=2, n=n)
    _, _, qs = quantised_inputs(3, n, seed=7)
    report = run_round(params, hospitals10[:3], qs)
    for i, sent in report.bytes_sent.items():
        assert 4 * n < sent < 4 * n + 8_000
    assert all(t > 0 for t in report.client_seconds.values()) and report.server_seconds > 0


def test_transcript_audit_flags_both_shares_of_one_hospital(hospitals10):
    params = make_params(3, threshold=2)
    _, _, qs = quantised_inputs(3, params.vector_length, seed=8)
    record = run_round(params, hospitals10[:3], qs, drop_after_shares=[2]).result.transcript
    record["revealed"]["1"]["self_mask"].append(2)
    problems = audit_transcript(record)
    assert any("both the self-mask and the pairwise-secret shares of hospital 2" in p for p in problems)
    assert any("did not survive" in p for p in problems)


def test_transcript_advertisements_verify_against_the_identity_keys(hospitals10):
    params = make_params(3, threshold=2)
    _, _, qs = quantised_inputs(3, params.vector_length, seed=9)
    record = run_round(params, hospitals10[:3], qs).result.transcript
    keys = {h.id: h.signer.public_key() for h in hospitals10[:3]}
    assert audit_transcript(record, identity_keys=keys) == []
    keys[2] = hospitals10[5].signer.public_key()
    assert audit_transcript(record, identity_keys=keys) == [
        "key advertisement of hospital 2 does not verify against its identity key"]
    record["params"]["threshold"] = 3
    assert "params_digest is not the SHA-256 of the recorded parameters" in audit_transcript(record)


def test_the_server_sum_computation_receives_only_masked_vectors(hospitals10):
    # The boundary wave 2 replaces by a TFF computation: record everything that crosses into it.
    params = make_params(3, threshold=2, n=2048)
    quant, _, qs = quantised_inputs(3, 2048, seed=10)
    crossed: list[np.ndarray] = []

    def tff_like_sum(vectors):  # an int64 sum as a TensorFlow computation would return it
        crossed.extend(v.copy() for v in vectors)
        return np.sum([v.astype(np.int64) for v in vectors], axis=0)

    report = run_round(params, hospitals10[:3], qs, drop_after_shares=[3], sum_fn=tff_like_sum)
    assert np.array_equal(report.result.vector, plain_sum(quant, qs, [1, 2]))
    assert len(crossed) == 2
    for v in crossed:
        assert all(np.count_nonzero(v == q) <= 2 for q in qs.values())
