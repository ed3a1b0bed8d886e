"""Losses and metrics: masked segmentation loss, class weighting, Keras compile/fit and one TFF round."""

from __future__ import annotations

import numpy as np
import pytest

from bfdl_tff.models.registry import build_model, input_spec, load_model_config


def _bce(y, p):
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return -(y * np.log(p) + (1 - y) * np.log(1 - p))


def _masks(rng, n, s):
    m = (rng.random((n, s, s, 1)) > 0.7).astype(np.float32)
    return m


def test_masked_seg_loss_ignores_minus_one_masks():
    import tensorflow as tf

    from bfdl_tff.models.losses import MaskedBinaryCrossentropy

    rng = np.random.default_rng(0)
    n, s = 4, 8
    y = _masks(rng, n, s)
    y[1] = -1.0  # no mask for example 1
    y[3] = -1.0
    p = rng.uniform(0.05, 0.95, size=(n, s, s, 1)).astype(np.float32)
    expected_per = np.array([_bce(y[i], p[i]).mean() if y[i].min() >= 0 else 0.0 for i in range(n)])
    expected = expected_per[[0, 2]].mean()

    loss = MaskedBinaryCrossentropy()
    got = float(loss(tf.constant(y), tf.constant(p)))
    assert got == pytest.approx(expected, rel=1e-5)
    per = MaskedBinaryCrossentropy(reduction=tf.keras.losses.Reduction.NONE)(y, p).numpy()
    np.testing.assert_allclose(per, expected_per, rtol=1e-5)
    # Predictions for mask-less images do not matter at all (value and gradient).
    p2 = p.copy()
    p2[[1, 3]] = rng.uniform(0.05, 0.95, size=(2, s, s, 1))
    assert float(loss(y, p2)) == pytest.approx(got, rel=1e-6)
    pv = tf.Variable(p)
    with tf.GradientTape() as tape:
        val = loss(y, pv)
    g = tape.gradient(val, pv).numpy()
    assert np.all(g[[1, 3]] == 0) and np.any(g[[0, 2]] != 0)
    # A batch without any mask contributes exactly zero.
    assert float(loss(-np.ones_like(y), p)) == 0.0
    # Partially valid pixels: only those count.
    y_part = y.copy()
    y_part[0, :4] = -1.0
    exp_part = (_bce(y_part[0, 4:], p[0, 4:]).mean() + expected_per[2]) / 2
    assert float(loss(y_part, p)) == pytest.approx(exp_part, rel=1e-5)


def test_weighted_bce_and_positive_weights():
    import tensorflow as tf

    from bfdl_tff.models.losses import WeightedBinaryCrossentropy, build_loss, positive_weights

    rng = np.random.default_rng(1)
    y = (rng.random((6, 14)) > 0.8).astype(np.float32)
    p = rng.uniform(0.05, 0.95, size=(6, 14)).astype(np.float32)
    plain = float(tf.keras.losses.BinaryCrossentropy()(y, p))
    ones = float(WeightedBinaryCrossentropy([1.0] * 14)(y, p))
    assert ones == pytest.approx(plain, rel=1e-5)
    w = np.linspace(1, 5, 14).astype(np.float32)
    expected = np.mean(-(w * y * np.log(p) + (1 - y) * np.log(1 - p)))
    cfg = load_model_config("small_cnn")
    loss, lw = build_loss(cfg, class_weights=w)
    assert lw is None and float(loss(y, p)) == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="14 values"):
        build_loss(cfg, class_weights=[1.0, 2.0])

    labels = np.zeros((100, 3), dtype=np.float32)
    labels[:10, 0] = 1  # 10 % -> 9
    labels[:60, 1] = 1  # 60 % -> clipped to 1
    # column 2: no positives -> max_weight
    np.testing.assert_allclose(positive_weights(labels, max_weight=10.0), [9.0, 1.0, 10.0])
    assert positive_weights(labels, max_weight=5.0)[0] == 5.0


def test_build_loss_shapes_and_reduction_none():
    from bfdl_tff.models.losses import MaskedBinaryCrossentropy, build_loss

    hyb = load_model_config("resnet_unet_small", seg_loss_weight=0.3)
    loss, lw = build_loss(hyb)
    assert isinstance(loss, list) and len(loss) == 2 and isinstance(loss[1], MaskedBinaryCrossentropy)
    assert lw == [1.0, 0.3]
    loss_n, _ = build_loss(hyb, reduction="none")
    y = np.zeros((5, 14), np.float32)
    p = np.full((5, 14), 0.3, np.float32)
    assert loss_n[0](y, p).shape == (5,)
    assert loss_n[1](-np.ones((5, 4, 4, 1), np.float32), np.full((5, 4, 4, 1), 0.5, np.float32)).shape == (5,)
    loss_c, lw_c = build_loss(load_model_config("resnet_unet_small", seg_loss_weight=0.0))
    assert not isinstance(loss_c, list) and lw_c is None


def test_metrics_accept_structured_values_and_are_fresh():
    from bfdl_tff.models.losses import build_metrics

    a, b = build_metrics(), build_metrics()
    assert {m.name for m in a} == {"auc", "micro_auc", "binary_accuracy"}
    assert all(x is not y for x, y in zip(a, b))
    rng = np.random.default_rng(2)
    y = (rng.random((32, 14)) > 0.5).astype(np.float32)
    p = np.clip(y * 0.6 + rng.random((32, 14)) * 0.4, 0, 1).astype(np.float32)
    mask = -np.ones((32, 8, 8, 1), np.float32)
    for m_flat, m_struct in zip(a, b):
        m_flat.update_state(y, p)
        m_struct.update_state((y, mask), [p, np.zeros_like(mask)])
        assert float(m_flat.result()) == pytest.approx(float(m_struct.result()))
    from sklearn.metrics import roc_auc_score

    macro = roc_auc_score(y, p, average="macro")
    assert float(a[0].result()) == pytest.approx(macro, abs=0.02)
    # Serialisable (TFF rebuilds metrics from their config).
    for m in a:
        clone = type(m).from_config(m.get_config())
        assert type(clone) is type(m) and clone.name == m.name


def test_keras_compile_and_fit_hybrid_one_step():
    import tensorflow as tf

    from bfdl_tff.models.losses import compile_model

    cfg = load_model_config("resnet_unet_small", input_size=32, width=4, blocks=[1, 1])
    model = compile_model(build_model(cfg, seed=0), cfg, optimizer=tf.keras.optimizers.SGD(0.1))
    rng = np.random.default_rng(3)
    x = rng.random((8, 32, 32, 1), dtype=np.float32)
    y = (rng.random((8, 14)) > 0.8).astype(np.float32)
    m = _masks(rng, 8, 32)
    m[4:] = -1
    hist = model.fit(x, (y, m), batch_size=4, epochs=1, verbose=0)
    assert np.isfinite(hist.history["loss"][0])
    assert "findings_auc" in hist.history


def test_tff_fedavg_round_with_masked_hybrid(tff_context):
    """The two-output hybrid + masked seg loss builds into FedAvg and trains; -1 masks give the
    decoder's segmentation head no update while the classifier still learns."""
    import tensorflow as tf
    import tensorflow_federated as tff

    from bfdl_tff.models.losses import build_loss, build_metrics

    cfg = load_model_config("resnet_unet_small", input_size=32, width=4, blocks=[1, 1], seg_loss_weight=1.0)
    spec = input_spec(cfg)

    def model_fn():
        loss, loss_weights = build_loss(cfg)
        return tff.learning.models.from_keras_model(
            build_model(cfg), input_spec=spec, loss=loss, loss_weights=loss_weights, metrics=build_metrics()
        )

    process = tff.learning.algorithms.build_weighted_fed_avg(
        model_fn,
        client_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=0.1),
        server_optimizer_fn=tff.learning.optimizers.build_sgdm(learning_rate=1.0),
    )
    state = process.initialize()
    rng = np.random.default_rng(4)

    def client(masked: bool):
        x = rng.random((6, 32, 32, 1), dtype=np.float32)
        y = (rng.random((6, 14)) > 0.7).astype(np.float32)
        m = _masks(rng, 6, 32) if masked else -np.ones((6, 32, 32, 1), np.float32)
        return tf.data.Dataset.from_tensor_slices((x, (y, m))).batch(3)

    probe = build_model(cfg)
    names = [v.name for v in probe.trainable_weights]
    lesion_idx = [i for i, n in enumerate(names) if n.startswith("lesion/")]
    findings_idx = [i for i, n in enumerate(names) if n.startswith("findings/")]
    assert lesion_idx and findings_idx

    w0 = [np.array(w) for w in process.get_model_weights(state).trainable]
    out = process.next(state, [client(False), client(False)])
    w1 = [np.array(w) for w in process.get_model_weights(out.state).trainable]
    train = out.metrics["client_work"]["train"]
    assert np.isfinite(train["loss"]) and train["num_examples"] == 12
    assert 0.0 <= train["auc"] <= 1.0
    assert all(np.array_equal(w0[i], w1[i]) for i in lesion_idx)
    assert any(not np.array_equal(w0[i], w1[i]) for i in findings_idx)

    out2 = process.next(out.state, [client(True), client(False)])
    w2 = [np.array(w) for w in process.get_model_weights(out2.state).trainable]
    assert any(not np.array_equal(w1[i], w2[i]) for i in lesion_idx)
    assert np.isfinite(out2.metrics["client_work"]["train"]["loss"])
