"""The DP-SGD client work (bfdl_tff.federated.dp_sgd) with patient units, fast clipping and the
per-hospital noise carried in the step data."""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.tff

SIZE = 16


@pytest.fixture(scope="module")
def setup():
    from bfdl_tff.federated import model_bridge, processes, testing
    from bfdl_tff.models import registry

    mcfg = registry.load_model_config("cnn32", input_size=SIZE, width=4, conv_layers=2)
    bundle = model_bridge.build_bundle(mcfg)
    fed = testing.toy_federation((30, 40), size=SIZE, seed=4)
    for k, name in enumerate(fed.names):  # patients with 1-4 images
        n = len(fed.train[name])
        fed.train[name].patient_ids = 1000 * (k + 1) + np.repeat(np.arange(n), np.resize([1, 2, 3, 4], n))[:n]
    opt = lambda lr: processes.make_optimizer("sgd", learning_rate=lr)  # noqa: E731
    alg = processes.build_dp_sgd_fedavg(
        bundle.model_fn, per_example_loss=bundle.per_example_loss, batch_spec=bundle.batch_spec,
        client_optimizer=opt(0.1), server_optimizer=opt(1.0), noise_multiplier=0.0, l2_clip=1e6, batch_size=8,
        secure_sum=False, keras_model_fn=bundle.keras,
    )
    init = bundle.keras(seed=5)
    mw = processes.KerasOrder(init).from_keras(init.get_weights())
    return dict(bundle=bundle, fed=fed, alg=alg, init=init, mw=mw)


def _reference(bundle, init, ds, *, lr=0.1):
    """Hand-written patient-level DP-SGD without noise or clipping: per step, the gradient of the
    summed loss of the sampled images divided by the expected number of patients."""
    import tensorflow as tf

    model = bundle.keras()
    model.set_weights(init.get_weights())
    start = [v.numpy().copy() for v in model.trainable_variables]
    for el in ds:
        with tf.GradientTape() as tape:
            loss = bundle.per_example_loss(el["y"], model(el["x"], training=False)) / el["denom"]
        for v, g in zip(model.trainable_variables, tape.gradient(loss, model.trainable_variables)):
            v.assign_sub(lr * g)
    return [a - v.numpy() for a, v in zip(start, model.trainable_variables)]


def test_patient_level_client_without_noise_is_sgd_over_patients(setup, tff_context):
    from bfdl_tff.federated import dp_sgd, processes

    fed, bundle = setup["fed"], setup["bundle"]
    trainer = processes.FederatedTrainer(setup["alg"])
    state = trainer.initialize(setup["mw"])
    name = fed.names[1]
    ds = dp_sgd.round_dataset(fed.train[name], batch_size=8, local_epochs=1, rng=np.random.default_rng(2),
                              unit="patient", max_images_per_patient=3, noise_multiplier=0.0)
    out = trainer.run_round(state, {name: ds})
    ref = _reference(bundle, setup["init"], ds)
    for a, b in zip(out.clients[name].update, ref):
        np.testing.assert_allclose(a, b, rtol=2e-3, atol=2e-6)
    assert out.clients[name].weight == 40.0
    assert out.clients[name].metrics["train/clipped_fraction"] == 0.0


def test_per_hospital_noise_comes_from_the_step_data(setup, tff_context):
    """Same sampling, z = 0 vs z = 2 in the elements: the update moves by the noise, with the
    spread expected from z * C / denom per coordinate and step."""
    from bfdl_tff.federated import dp_sgd, processes

    fed = setup["fed"]
    alg = setup["alg"]
    name = fed.names[0]
    ts = fed.train[name]

    def run(z):
        trainer = processes.FederatedTrainer(alg)
        ds = dp_sgd.round_dataset(ts, batch_size=8, local_epochs=1, rng=np.random.default_rng(9), unit="patient",
                                  noise_multiplier=z)
        return trainer.run_round(trainer.initialize(setup["mw"]), {name: ds}), ds

    quiet, ds = run(0.0)
    noisy, _ = run(2.0)
    diff = np.concatenate([(a - b).ravel() for a, b in zip(noisy.clients[name].update, quiet.clients[name].update)])
    steps = sum(1 for _ in ds)
    denom = float(next(iter(ds))["denom"])
    # l2_clip is 1e6 in this fixture: noise std per coordinate and step = lr * z * C / denom
    expected = 0.1 * 2.0 * 1e6 / denom * np.sqrt(steps)
    assert 0.8 * expected < diff.std() < 1.2 * expected
