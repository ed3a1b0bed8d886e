"""TFF processes (bfdl_tff.federated.processes / dp_sgd / communication) on tiny in-memory data."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tff

SIZE = 16


@pytest.fixture(scope="module")
def setup():
    import tensorflow as tf

    from bfdl_tff.federated import model_bridge, processes, testing
    from bfdl_tff.models import registry

    mcfg = registry.load_model_config("small_cnn", input_size=SIZE, width=4, conv_layers=2)
    bundle = model_bridge.build_bundle(mcfg)
    fed = testing.toy_federation((12, 20, 28), size=SIZE, seed=3)
    opt = lambda lr: processes.make_optimizer("sgd", learning_rate=lr)  # noqa: E731
    fedavg = processes.build_fedavg(bundle.model_fn, client_optimizer=opt(0.1), server_optimizer=opt(1.0))
    dp_client = processes.build_dp_fedavg(
        bundle.model_fn, client_optimizer=opt(0.1), server_optimizer=opt(1.0), noise_multiplier=0.7,
        clients_per_round=3, l2_clip=0.5, noise_seed=11, secure_sum=True,
    )
    dp_sgd = processes.build_dp_sgd_fedavg(
        bundle.model_fn, per_example_loss=bundle.per_example_loss, batch_spec=bundle.batch_spec,
        client_optimizer=opt(0.1), server_optimizer=opt(1.0), noise_multiplier=0.0, l2_clip=1e6,
        batch_size=8, secure_sum=True,
    )
    init = bundle.keras(seed=5)  # after the TFF builds (see runner)
    order = processes.KerasOrder(init)
    mw = order.from_keras(init.get_weights())

    def batches(name, bs=8):
        s = fed.train[name]
        return tf.data.Dataset.from_tensor_slices((s.x, s.y)).batch(bs)

    return dict(bundle=bundle, fed=fed, fedavg=fedavg, dp_client=dp_client, dp_sgd=dp_sgd, mw=mw, order=order, batches=batches, init=init)


def _flat(ws):
    return [np.asarray(w) for w in ws]


def test_fedavg_is_weighted_mean_of_client_updates_and_equals_process_next(setup, tff_context):
    from bfdl_tff.federated import processes
    from bfdl_tff.hashing import weights_digest

    fed, alg = setup["fed"], setup["fedavg"]
    trainer = processes.FederatedTrainer(alg)
    state = trainer.initialize(setup["mw"])
    data = {n: setup["batches"](n) for n in fed.names}
    out = trainer.run_round(state, data)
    # weights n_k
    assert [c.weight for c in out.clients.values()] == [12.0, 20.0, 28.0]
    # hand-computed weighted mean of the hospitals' updates
    n = np.array([12.0, 20.0, 28.0])
    for i, agg in enumerate(out.aggregate):
        manual = sum(nk * c.update[i].astype(np.float64) for nk, c in zip(n, out.clients.values())) / n.sum()
        np.testing.assert_allclose(agg, manual, rtol=1e-5, atol=1e-7)
    # server SGD with lr 1: w_{t+1} = w_t - mean update = sum_k n_k/n w_t^k
    before = _flat(state.global_model_weights.trainable)
    after = _flat(out.state.global_model_weights.trainable)
    for b, a, agg in zip(before, after, out.aggregate):
        np.testing.assert_allclose(a, b - agg, rtol=1e-5, atol=1e-6)
    # the updates differ between hospitals, and each commitment is the hospital's update digest
    digests = {c.commitment for c in out.clients.values()}
    assert len(digests) == 3
    for c in out.clients.values():
        assert c.commitment == weights_digest(c.update)
    # per-hospital execution gives exactly what TFF's build_weighted_fed_avg process computes
    import tensorflow_federated as tff

    official = tff.learning.algorithms.build_weighted_fed_avg(
        setup["bundle"].model_fn,
        client_optimizer_fn=processes.make_optimizer("sgd", learning_rate=0.1),
        server_optimizer_fn=processes.make_optimizer("sgd", learning_rate=1.0),
        client_weighting=tff.learning.ClientWeighting.NUM_EXAMPLES,
    )
    ref = official.next(official.set_model_weights(official.initialize(), setup["mw"]), [data[n] for n in fed.names])
    for a, b in zip(_flat(out.state.global_model_weights.trainable), _flat(ref.state.global_model_weights.trainable)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_non_finite_hospital_update_is_rejected(setup, tff_context, caplog):
    import tensorflow as tf

    from bfdl_tff.federated import processes

    fed, alg = setup["fed"], setup["fedavg"]
    trainer = processes.FederatedTrainer(alg)
    state = trainer.initialize(setup["mw"])
    bad = fed.train["hospital_b"]
    x = bad.x.copy()
    x[0, 0, 0, 0] = np.nan
    data = {n: setup["batches"](n) for n in fed.names}
    data["hospital_b"] = tf.data.Dataset.from_tensor_slices((x, bad.y)).batch(8)
    with caplog.at_level("WARNING"):
        out = trainer.run_round(state, data)
    assert out.clients["hospital_b"].rejected
    assert not out.clients["hospital_a"].rejected
    assert "hospital_b" in caplog.text and "non-finite" in caplog.text
    assert all(np.all(np.isfinite(a)) for a in out.aggregate)
    n = {"hospital_a": 12.0, "hospital_c": 28.0}
    for i, agg in enumerate(out.aggregate):
        manual = sum(n[k] * out.clients[k].update[i] for k in n) / sum(n.values())
        np.testing.assert_allclose(agg, manual, rtol=1e-5, atol=1e-7)


def test_finalizer_rejects_non_finite_aggregate(setup, tff_context):
    alg = setup["fedavg"]
    state = alg.process.initialize()
    w = state.global_model_weights
    bad = [np.full_like(np.asarray(t), np.nan) for t in w.trainable]
    out = alg.finalizer.next(state.finalizer, w, bad)
    assert int(out.measurements["update_non_finite"]) == 1
    for a, b in zip(_flat(out.result.trainable), _flat(w.trainable)):
        np.testing.assert_array_equal(a, b)


def test_dp_fedavg_seeded_noise_and_clipping(setup, tff_test_context):
    from bfdl_tff.federated import processes

    fed, alg = setup["fed"], setup["dp_client"]
    trainer = processes.FederatedTrainer(alg)
    data = {n: setup["batches"](n) for n in fed.names}
    s0 = trainer.initialize(setup["mw"])
    out1 = trainer.run_round(s0, data)
    out2 = trainer.run_round(trainer.initialize(setup["mw"]), data)
    for a, b in zip(out1.aggregate, out2.aggregate):
        np.testing.assert_array_equal(a, b)  # same seed, same noise
    # unweighted mean of clipped updates + N(0, (z C / 3)^2) noise: the noise dominates here
    clip, z = 0.5, 0.7
    clipped = []
    for c in out1.clients.values():
        norm = np.sqrt(sum(float(np.sum(u.astype(np.float64) ** 2)) for u in c.update))
        clipped.append([u * min(1.0, clip / norm) for u in c.update])
    mean = [sum(c[i] for c in clipped) / 3 for i in range(len(out1.aggregate))]
    resid = np.concatenate([(a - m).ravel() for a, m in zip(out1.aggregate, mean)])
    assert resid.std() == pytest.approx(z * clip / 3, rel=0.1)
    # the next round draws fresh noise (the seed advances in the aggregator state)
    out3 = trainer.run_round(out1.state, data)
    assert not np.allclose(out3.aggregate[0], out1.aggregate[0])


def test_dp_sgd_without_noise_or_clipping_is_plain_sgd_on_poisson_batches(setup, tff_test_context):
    """With z = 0 and a huge clip, vectorised per-example gradients summed / B equal the batch
    gradient of the summed loss / B: the DP-SGD client must reproduce a hand-written SGD loop."""
    import tensorflow as tf

    from bfdl_tff.federated import dp_sgd, processes

    fed, alg, bundle = setup["fed"], setup["dp_sgd"], setup["bundle"]
    trainer = processes.FederatedTrainer(alg)
    state = trainer.initialize(setup["mw"])
    name = "hospital_a"
    s = fed.train[name]
    ds = dp_sgd.poisson_dp_sgd_dataset(s.x, s.y, batch_size=8, local_epochs=1, rng=np.random.default_rng(0))
    out = trainer.run_round(state, {name: ds})
    # reference: Keras model, same init, same batches, inference-mode forward, SGD lr 0.1
    model = bundle.keras()
    model.set_weights(setup["init"].get_weights())
    loss_fn = tf.keras.losses.BinaryCrossentropy(reduction="none")
    start = [v.numpy().copy() for v in model.trainable_variables]
    for el in ds:
        with tf.GradientTape() as tape:
            p = model(el["x"], training=False)
            loss = tf.reduce_sum(loss_fn(el["y"], p)) / 8.0
        g = tape.gradient(loss, model.trainable_variables)
        for v, gi in zip(model.trainable_variables, g):
            v.assign_sub(0.1 * gi)
    ref_update = [a - v.numpy() for a, v in zip(start, model.trainable_variables)]
    got = out.clients[name].update
    for a, b in zip(got, ref_update):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-6)
    assert out.clients[name].weight == 12.0
    assert out.secure_sum_rel_error is not None and out.secure_sum_rel_error < 1e-3


def test_poisson_sampling_rate_and_steps():
    from bfdl_tff.federated import dp_sgd

    x = np.zeros((200, 4, 4, 1), np.float32)
    y = np.zeros((200, 14), np.float32)
    ds = dp_sgd.poisson_dp_sgd_dataset(x, y, batch_size=20, local_epochs=2, rng=np.random.default_rng(1))
    sizes = [int(el["x"].shape[0]) for el in ds]
    assert len(sizes) == 20  # 2 epochs x ceil(200/20)
    assert 15 < np.mean(sizes) < 25  # expected batch = q n = 20
    assert len(set(sizes)) > 1  # Poisson: sizes vary


def test_traffic_from_type_signatures(setup):
    from bfdl_tff.federated import communication

    fedavg, dp_client = setup["fedavg"], setup["dp_client"]
    w = setup["init"].get_weights()
    t = communication.process_traffic(fedavg)
    assert t.broadcast_per_client == sum(a.nbytes for a in w)
    trainable = sum(v.numpy().nbytes for v in setup["init"].trainable_weights)
    assert t.upload_per_client == trainable + 4
    ts = communication.process_traffic(dp_client)
    assert ts.upload_per_client == trainable + 4  # 32 bits per value through SecureSum
    assert communication.type_bytes(dp_client.aggregator.next.type_signature.parameter[1], bits_per_value=64) == 2 * trainable


def test_adaptive_clipping_moves_the_clip_norm(setup, tff_context):
    import tensorflow as tf

    from bfdl_tff.federated import processes

    fed, bundle = setup["fed"], setup["bundle"]
    opt = lambda lr: processes.make_optimizer("sgd", learning_rate=lr)  # noqa: E731
    alg = processes.build_dp_fedavg(
        bundle.model_fn, client_optimizer=opt(0.1), server_optimizer=opt(1.0), noise_multiplier=0.2,
        clients_per_round=3, l2_clip=0.1, noise_seed=1, secure_sum=False, adaptive_clipping=True,
    )
    assert alg.context == "native"
    trainer = processes.FederatedTrainer(alg)
    data = {n: setup["batches"](n) for n in fed.names}
    out = trainer.run_round(trainer.initialize(setup["mw"]), data)
    clip = float(out.aggregator_measurements["dp_query_metrics"]["clip"])
    assert clip != pytest.approx(0.1)  # the quantile estimate moved the clip norm
    with pytest.raises(ValueError, match="secure sum"):
        processes.build_dp_fedavg(
            bundle.model_fn, client_optimizer=opt(0.1), server_optimizer=opt(1.0), noise_multiplier=0.2,
            clients_per_round=3, l2_clip=0.1, noise_seed=1, secure_sum=True, adaptive_clipping=True,
        )
