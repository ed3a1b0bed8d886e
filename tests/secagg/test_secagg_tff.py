"""The masked aggregation inside TFF (issue 18.2): the server's sum is a TFF computation over the
masked vectors placed at CLIENTS; what crosses into it is never a hospital's quantised update
(nor correlated with one); the aggregate is the weighted mean up to the quantisation step; a
dropout of one of three hospitals (t = 2) gives the survivors' weighted mean; bad input aborts
with nothing returned."""

from __future__ import annotations

import numpy as np
import pytest

from bfdl_tff.secagg import EphemeralKeyring, MaskedSettings, Quantizer
from bfdl_tff.secagg.messages import MaskedInput

pytestmark = pytest.mark.tff

H = ["hospital_a", "hospital_b", "hospital_c"]
SHAPES = [(5, 7), (7,), (7, 3), (3,)]


def _updates(seed: int = 0, scale: float = 0.05):
    rng = np.random.default_rng(seed)
    return {h: [rng.normal(0, scale, s).astype(np.float32) for s in SHAPES] for h in H}


def _flat(u):
    return np.concatenate([np.asarray(a, np.float64).ravel() for a in u])


def test_tff_modular_sum_is_the_sum_mod_2b(tff_context):
    from bfdl_tff.federated.masked import TffModularSum

    rng = np.random.default_rng(1)
    for bits in (32, 17):
        vs = [rng.integers(0, 1 << bits, 50, dtype=np.uint64).astype(np.uint32) for _ in range(3)]
        got = TffModularSum(bits)(vs)
        want = sum(v.astype(np.int64) for v in vs) % (1 << bits)
        assert got.dtype == np.int64 and np.array_equal(got, want)


def _aggregation(bits: int = 32, **kw):
    from bfdl_tff.federated.masked import MaskedAggregation

    seen: list[np.ndarray] = []
    agg = MaskedAggregation(settings=MaskedSettings(bits=bits, clip=1.0), keyring=EphemeralKeyring(H, run_id="t"),
                            on_server_input=lambda vs: seen.extend(np.array(v, copy=True) for v in vs), **kw)
    return agg, seen


def test_server_sum_never_receives_an_unmasked_update(tff_context):
    """Record every vector that crosses into the server's TFF computation and every masked input
    the server's state machine received: none equals, or correlates with, any hospital's
    quantised (weighted) update; the aggregate is still the weighted mean."""
    agg, seen = _aggregation()
    ups = _updates()
    weights = {"hospital_a": 12.0, "hospital_b": 20.0, "hospital_c": 28.0}
    out = agg.aggregate(1, ups, weights)
    assert out.aborted is None and len(seen) == 3
    quant = Quantizer(bits=32, clip=1.0, max_summands=3)
    total = sum(weights.values())
    plain = {h: quant.quantize(weights[h] / total * _flat(ups[h])) for h in H}
    inbox = [m.vector for m in out.raw.server_inbox if isinstance(m, MaskedInput)]
    assert len(inbox) == 3
    for v in seen + inbox:
        for h, q in plain.items():
            assert not np.array_equal(np.asarray(v, np.uint32), q), f"unmasked update of {h} reached the server"
            # as signed integers the update is small and the masked vector is uniform: no correlation
            r = np.corrcoef(quant.ring.to_signed(np.asarray(v, np.uint32)).astype(np.float64),
                            quant.ring.to_signed(q).astype(np.float64))[0, 1]
            assert abs(r) < 0.35, (h, r)  # 91 coordinates: |r| < 0.35 with probability > 0.999
    exact = sum(weights[h] / total * _flat(ups[h]) for h in H)
    got = np.concatenate([a.ravel() for a in out.mean_update])
    assert np.max(np.abs(got - exact)) <= 3 * quant.step / 2 + 1e-7  # float32 output
    assert out.metrics["secagg_rel_error"] < 1e-6 and out.metrics["secagg_aborted"] == 0.0
    assert out.transcript["masked"] == [1, 2, 3] and out.transcript["aggregate_sha256"]


def test_dropout_of_one_of_three_gives_the_survivors_weighted_mean(tff_context):
    from bfdl_tff.federated.masked import RoundFaults

    agg, seen = _aggregation()
    agg.faults[4] = RoundFaults(drop_after_shares=("hospital_b",))
    ups = _updates(seed=2)
    weights = {"hospital_a": 10.0, "hospital_b": 30.0, "hospital_c": 60.0}
    out = agg.aggregate(4, ups, weights)
    assert out.aborted is None and out.transcript["dropped"] == [2] and len(seen) == 2
    assert out.raw.survivors == ("hospital_a", "hospital_c")
    # the survivors' n_k-weighted mean: (10 x_a + 60 x_c) / 70
    exact = (10 * _flat(ups["hospital_a"]) + 60 * _flat(ups["hospital_c"])) / 70
    got = np.concatenate([a.ravel() for a in out.mean_update])
    step = Quantizer(bits=32, clip=1.0, max_summands=3).step
    assert np.max(np.abs(got - exact)) <= 2 * step / 2 / 0.7 + 1e-7
    assert any(v["pairwise"] == [2] for v in out.transcript["revealed"].values())


def test_bad_vector_aborts_and_nothing_is_returned(tff_context):
    from bfdl_tff.federated.masked import RoundFaults

    def out_of_range(stage, msg):
        if stage == "masked" and msg.sender == 1:
            v = msg.vector.copy()
            v[0] = 1 << 20  # outside the modulus of a 20-bit ring
            return MaskedInput(run_id=msg.run_id, round=msg.round, sender=msg.sender, peers=msg.peers, vector=v,
                               signature=msg.signature)
        return msg

    agg, seen = _aggregation(bits=20)
    agg.faults[2] = RoundFaults(intercept=out_of_range)
    out = agg.aggregate(2, _updates(), {h: 1.0 for h in H})
    assert out.mean_update is None and seen == []
    assert out.aborted.startswith("MalformedVectorError") and "hospital_a" in out.aborted
    assert out.transcript["aborted"].startswith("MalformedVectorError") and out.metrics["secagg_aborted"] == 1.0


@pytest.fixture(scope="module")
def toy_fl():
    import tensorflow as tf

    from bfdl_tff.federated import model_bridge, processes, testing
    from bfdl_tff.models import registry

    mcfg = registry.load_model_config("small_cnn", input_size=16, width=4, conv_layers=2)
    bundle = model_bridge.build_bundle(mcfg)
    fed = testing.toy_federation((12, 20, 28), size=16, seed=3)
    opt = lambda lr: processes.make_optimizer("sgd", learning_rate=lr)  # noqa: E731
    alg = processes.build_fedavg(bundle.model_fn, client_optimizer=opt(0.1), server_optimizer=opt(1.0))
    init = bundle.keras(seed=5)
    mw = processes.KerasOrder(init).from_keras(init.get_weights())
    data = {n: tf.data.Dataset.from_tensor_slices((fed.train[n].x, fed.train[n].y)).batch(8) for n in fed.names}
    return alg, mw, data, fed.names


def test_trainer_round_masked_equals_plain_fedavg_and_server_sees_only_masked(toy_fl, tff_context):
    """A TFF round (each hospital's client work its own TFF computation) under masked: the
    global model equals plain weighted FedAvg's up to the quantisation step, and the vectors that
    enter the server's TFF sum are none of the hospitals' quantised weighted updates."""
    from bfdl_tff.federated import processes
    from bfdl_tff.federated.masked import MaskedAggregation, flatten

    alg, mw, data, names = toy_fl
    plain = processes.FederatedTrainer(alg)
    state = plain.initialize(mw)
    ref = plain.run_round(state, data)
    seen: list[np.ndarray] = []
    masked = processes.FederatedTrainer(alg, masked=MaskedAggregation(
        settings=MaskedSettings(bits=32, clip=1.0), keyring=EphemeralKeyring(names, run_id="trainer"),
        on_server_input=lambda vs: seen.extend(np.array(v, copy=True) for v in vs)))
    out = masked.run_round(state, data, round_num=1)
    assert out.secagg.aborted is None and out.secagg.transcript["masked"] == [1, 2, 3]
    for a, b in zip(out.state.global_model_weights.trainable, ref.state.global_model_weights.trainable):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-6)
    quant = Quantizer(bits=32, clip=1.0, max_summands=3)
    total = sum(c.weight for c in out.clients.values())
    plain_q = [quant.quantize(c.weight / total * flatten(c.update)) for c in out.clients.values()]
    assert len(seen) == 3
    for v in seen:
        assert all(not np.array_equal(np.asarray(v, np.uint32), q) for q in plain_q)
    assert out.secure_sum_rel_error < 1e-6


def test_trainer_aborted_round_leaves_the_state_unchanged(toy_fl, tff_context):
    from bfdl_tff.federated import processes
    from bfdl_tff.federated.masked import MaskedAggregation, RoundFaults

    alg, mw, data, names = toy_fl
    agg = MaskedAggregation(settings=MaskedSettings(), keyring=EphemeralKeyring(names, run_id="abort"))
    agg.faults[1] = RoundFaults(drop_after_shares=tuple(names[:2]))  # 1 survivor < t = 2
    trainer = processes.FederatedTrainer(alg, masked=agg)
    state = trainer.initialize(mw)
    out = trainer.run_round(state, data, round_num=1)
    assert out.state is state and out.aggregate == []
    assert out.secagg.aborted.startswith("TooFewSurvivorsError") and "fewer than t = 2" in out.secagg.aborted
    assert out.secagg.transcript["aborted"] and out.secagg.transcript["aggregate_sha256"] is None


def test_old_config_secure_sum_true_still_runs_tff_secure_sum(tmp_path):
    """``privacy.secure_sum: true`` of an older config keeps its meaning: TFF's secure sum (test
    context), no protocol columns, no transcripts."""
    import csv

    from bfdl_tff.config import from_dict, ExperimentConfig
    from bfdl_tff.federated.hooks import RecordingHook
    from bfdl_tff.federated.runner import run_experiment
    from bfdl_tff.federated.testing import toy_federation

    cfg = from_dict(ExperimentConfig, {
        "name": "old", "arm": "bfdl",
        "model": {"config": "small_cnn", "overrides": {"input_size": 16, "width": 4, "conv_layers": 2}},
        "federated": {"rounds": 2, "batch_size": 8}, "ledger": {"enabled": False},
        "privacy": {"mode": "sample", "noise_multiplier": 0.5, "delta": 1e-3, "secure_sum": True}})
    hook = RecordingHook()
    summary = run_experiment(cfg, tmp_path, hooks=[hook], data=toy_federation((12, 20, 28), size=16), progress=False)
    assert summary["secure_aggregation"] == "tff_secure_sum" and "secagg" not in summary
    rows = list(csv.DictReader((tmp_path / "metrics.csv").open()))
    assert all(r["secagg_aborted"] == "" for r in rows) and all(r["secure_sum_rel_error"] for r in rows)
    assert all(c.secagg_transcript is None for c in hook.rounds)
