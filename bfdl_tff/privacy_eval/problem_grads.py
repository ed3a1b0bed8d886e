"""Weight gradients of many independent "problems" in one pass (the engine of batched inversion;
paper 3.3 / 3.5, claim C3; issue 16.6).

A *problem* is ``n`` images with their labels; its gradient is the gradient, w.r.t. the model's
trainable variables, of the binary cross-entropy averaged over its ``n`` images and the findings
(:func:`bce_mean`, what one hospital's local step computes).
Gradient inversion (:mod:`bfdl_tff.privacy_eval.inversion`) needs the gradients of ``P``
independent problems (one per attacked update) at every iteration, differentiably in the images,
and the simulation of hospital updates needs per-example gradients (DP-SGD clipping): both are
:func:`make_problem_gradients`.

Two engines, same result:

* ``chain`` (fast): for a functional model that is a chain of layers (every layer fed by the one
  before, the project's ``small_cnn`` family) whose trainable layers are ``Conv2D`` (also with a
  kernel transform such as the weight-standardised ``WSConv2D``), ``Dense`` and
  ``GroupNormalization``: one forward pass over all ``P * n`` images records each trainable layer's
  input ``a_i`` and pre-activation output ``z_i``; one backward pass of the summed loss gives
  ``g_i = dL/dz_i`` (examples never interact, so ``g_i`` is also the gradient of the image's own
  problem). Each problem's weight gradient is then formed from ``a`` and ``g`` of its images, as
  in per-example gradient clipping (Goodfellow 2015; Lee & Kifer 2021): Dense ``sum_i a_i^T g_i``,
  Conv2D ``sum_i patches(a_i)^T g_i`` (im2col, as shifted slices), GroupNorm ``sum_i sum_pixels g_i * xhat_i``; a
  kernel transform is applied through its vector-Jacobian product. Everything is ordinary
  differentiable TensorFlow, so the inversion's second-order gradient (w.r.t. the images) runs
  batched too. The chain is checked once against ``tf.GradientTape`` on random inputs.
* ``loop`` (any model, few problems): one tape per problem, unrolled in the graph; for a handful
  of large problems (e.g. 2 updates of 64 images) this is ordinary batched backpropagation and
  the cheapest engine (measured 3.5x cheaper per image than ``chain`` at 100 images per problem).
* ``vmap`` (any model): ``tf.vectorized_map`` over problems of a ``tf.GradientTape`` gradient.
  Correct for every Keras model, but TensorFlow 2.14 runs the per-problem ``Conv2DBackpropFilter``
  in a while loop (measured 6x slower than ``chain`` on the 6.4k-parameter ``cnn32``).

No other module builds these gradients; tests compare both engines with per-problem tapes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

ProblemGradients = Callable[[Any, Any], list]  # (x [P, n, S, S, C], y [P, n, K]) -> [[P, *var.shape]]


@dataclass
class _Record:
    kind: str  # conv | dense | gn
    layer: Any
    a: Any  # layer input (conv/dense) or normalised input xhat (gn)
    z: Any  # pre-activation output (gradient taken w.r.t. it)
    transform: Callable[[Any], Any] | None = None  # kernel transform of a conv (None: identity)


def _tf() -> Any:
    import tensorflow as tf

    return tf


def classification_forward(model: Any) -> Callable[[Any], Any]:
    """``x -> probabilities [B, 14]`` (the first output for a model with a segmentation head)."""

    def fwd(x: Any) -> Any:
        out = model(x, training=False)
        if isinstance(out, (list, tuple)):
            out = out[0]
        return out

    return fwd


def bce_mean(y: Any, p: Any) -> Any:
    """Binary cross-entropy averaged over findings and batch (Keras ``BinaryCrossentropy``)."""
    tf = _tf()
    return tf.reduce_mean(tf.keras.losses.binary_crossentropy(y, p))


def kernel_transform(layer: Any) -> Callable[[Any], Any] | None:
    """The map raw kernel -> kernel a ``Conv2D`` subclass convolves with (None: identity).

    A layer may say so itself (``kernel_transform`` method); the weight-standardised ``WSConv2D``
    of ``bfdl_tff.models.layers`` is recognised by name. Any other override of
    ``convolution_op`` is unsupported (the ``vmap`` engine is used)."""
    tf = _tf()
    if type(layer).convolution_op is tf.keras.layers.Conv2D.convolution_op:
        return None
    fn = getattr(layer, "kernel_transform", None)
    if callable(fn):
        return fn
    if type(layer).__name__ == "WSConv2D":
        from bfdl_tff.models import layers as model_layers  # the module defining WSConv2D

        return getattr(model_layers, "standardize_kernel")
    raise NotImplementedError(f"{type(layer).__name__}: unknown convolution_op override")


def chain_layers(model: Any) -> list[Any] | None:
    """The model's layers after the input if it is a single-input, single-output chain, else None."""
    tf = _tf()
    layers = list(model.layers)
    if not layers or not isinstance(layers[0], tf.keras.layers.InputLayer) or len(model.outputs) != 1:
        return None
    for prev, layer in zip(layers, layers[1:]):
        nodes = getattr(layer, "_inbound_nodes", [])
        if len(nodes) != 1:
            return None
        inbound = nodes[0].inbound_layers
        if isinstance(inbound, (list, tuple)):
            if len(inbound) != 1:
                return None
            inbound = inbound[0]
        if inbound is not prev:
            return None
    return layers[1:]


def _supported(layer: Any) -> str:
    """``conv`` / ``dense`` / ``gn`` / ``free`` (no trainable weights); raises when unsupported."""
    tf = _tf()
    if not layer.trainable_weights:
        return "free"
    conv_like = type(layer).__name__ in ("Conv2D", "WSConv2D") or callable(getattr(layer, "kernel_transform", None))
    if isinstance(layer, tf.keras.layers.Conv2D) and conv_like:
        if layer.groups != 1 or tuple(layer.dilation_rate) != (1, 1) or layer.data_format != "channels_last":
            raise NotImplementedError(f"{layer.name}: grouped/dilated/channels_first convolution")
        kernel_transform(layer)
        return "conv"
    if type(layer) is tf.keras.layers.Dense:
        return "dense"
    if type(layer) is tf.keras.layers.GroupNormalization:
        if layer.axis not in (-1, 3):
            raise NotImplementedError(f"{layer.name}: GroupNormalization over axis {layer.axis}")
        return "gn"
    raise NotImplementedError(f"{layer.name}: {type(layer).__name__} with trainable weights")


def _group_norm(layer: Any, a: Any) -> tuple[Any, Any]:
    """``(xhat, z)`` of Keras' ``GroupNormalization`` (no mask): ``z = xhat * gamma + beta``."""
    tf = _tf()
    shape = tf.shape(a)
    c = int(a.shape[-1])
    groups = int(layer.groups)
    grouped = tf.reshape(a, tf.concat([shape[:-1], [groups, c // groups]], axis=0))
    axes = list(range(1, grouped.shape.rank))
    axes.pop(-2)
    # not tf.nn.moments: it stops the gradient through the mean inside the variance, which is
    # exact to first order only (the inversion differentiates twice)
    mean = tf.reduce_mean(grouped, axis=axes, keepdims=True)
    centred = grouped - mean
    var = tf.reduce_mean(tf.square(centred), axis=axes, keepdims=True)
    xhat = tf.reshape(centred * tf.math.rsqrt(var + layer.epsilon), shape)
    z = xhat
    if layer.scale:
        z = z * layer.gamma
    if layer.center:
        z = z + layer.beta
    return xhat, z


def _pad_same(size: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow's ``SAME`` padding (before, after) of one spatial axis."""
    out = -(-size // s)
    total = max((out - 1) * s + k - size, 0)
    return total // 2, total - total // 2


def _shifted_inputs(layer: Any, a: Any, out_hw: tuple[int, int]) -> list[Any]:
    """For every kernel offset ``(u, v)`` (kernel order), the input pixels it multiplies:
    ``[N, H_out, W_out, c_in]`` slices of the padded input (im2col without ``extract_patches``,
    whose gradient is a slow scatter)."""
    tf = _tf()
    kh, kw = (int(d) for d in layer.kernel.shape[:2])
    sh, sw = (int(s) for s in layer.strides)
    h, w = int(a.shape[1]), int(a.shape[2])
    if layer.padding == "same":
        (pt, pb), (pl, pr) = _pad_same(h, kh, sh), _pad_same(w, kw, sw)
        a = tf.pad(a, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
    ho, wo = out_hw
    return [a[:, u : u + (ho - 1) * sh + 1 : sh, v : v + (wo - 1) * sw + 1 : sw, :]
            for u in range(kh) for v in range(kw)]


def _chain_forward(layers: list[Any], x: Any) -> tuple[Any, list[_Record]]:
    """The model's output for ``x`` ``[N, ...]`` plus the records of the trainable layers."""
    tf = _tf()
    a, records = x, []
    for layer in layers:
        kind = _supported(layer)
        if kind == "free":
            a = layer(a, training=False)
            continue
        if kind == "gn":
            xhat, z = _group_norm(layer, a)
            records.append(_Record("gn", layer, xhat, z))
            a = z
            continue
        if kind == "conv":
            transform = kernel_transform(layer)
            kernel = transform(layer.kernel) if transform else layer.kernel
            z = tf.keras.layers.Conv2D.convolution_op(layer, a, kernel)
            if layer.use_bias:
                z = tf.nn.bias_add(z, layer.bias)
        else:
            if a.shape.rank != 2:
                raise NotImplementedError(f"{layer.name}: Dense on a rank-{a.shape.rank} input")
            transform = None
            z = tf.matmul(a, layer.kernel)
            if layer.use_bias:
                z = z + layer.bias
        records.append(_Record(kind, layer, a, z, transform))
        a = layer.activation(z) if layer.activation is not None else z
    return a, records


def _batched_vjp(transform: Callable[[Any], Any], kernel: Any, cotangents: Any) -> Any:
    """``J^T c_p`` of ``transform`` at ``kernel`` for every cotangent ``c_p`` (leading axis P)."""
    tf = _tf()

    def one(c: Any) -> Any:
        with tf.GradientTape() as tape:
            tape.watch(kernel)
            out = transform(kernel)
        return tape.gradient(out, kernel, output_gradients=c)

    return tf.vectorized_map(one, cotangents)


def _record_grads(rec: _Record, g: Any, p: Any, n: Any) -> list[tuple[Any, Any]]:
    """Per-problem gradients ``[(variable, [P, *shape])]`` of one recorded layer."""
    tf = _tf()
    layer = rec.layer
    if rec.kind == "gn":
        c = int(g.shape[-1])
        gg = tf.reshape(g, [p, -1, c])
        out = []
        if layer.scale:
            out.append((layer.gamma, tf.reduce_sum(gg * tf.reshape(rec.a, [p, -1, c]), axis=1)))
        if layer.center:
            out.append((layer.beta, tf.reduce_sum(gg, axis=1)))
        return out
    if rec.kind == "dense":
        a = tf.reshape(rec.a, [p, n, -1])
        gg = tf.reshape(g, [p, n, -1])
        out = [(layer.kernel, tf.einsum("pni,pno->pio", a, gg))]
        return out + ([(layer.bias, tf.reduce_sum(gg, axis=1))] if layer.use_bias else [])
    shape = [int(d) for d in layer.kernel.shape]
    out_hw = (int(g.shape[1]), int(g.shape[2]))
    gg = tf.reshape(g, [p, -1, shape[3]])  # [P, n * pixels_out, c_out]
    cols = [tf.einsum("pqi,pqo->pio", tf.reshape(sa, [p, -1, shape[2]]), gg)
            for sa in _shifted_inputs(layer, rec.a, out_hw)]
    dk = tf.reshape(tf.stack(cols, axis=1), [p] + shape)
    if rec.transform is not None:
        dk = _batched_vjp(rec.transform, layer.kernel, dk)
    out = [(layer.kernel, dk)]
    return out + ([(layer.bias, tf.reduce_sum(gg, axis=1))] if layer.use_bias else [])


def _problem_loss_sum(probs: Any, y: Any, p: Any, n: Any) -> Any:
    """Sum over problems of each problem's mean BCE (over its images and the findings)."""
    tf = _tf()
    per_image = tf.keras.losses.binary_crossentropy(y, probs)  # [P*n] (mean over findings)
    return tf.reduce_sum(tf.reduce_mean(tf.reshape(per_image, [p, n]), axis=1))


def _chain_engine(model: Any, layers: list[Any]) -> ProblemGradients:
    tf = _tf()
    tvars = list(model.trainable_variables)

    def grads(x: Any, y: Any) -> list:
        p, n = tf.shape(x)[0], tf.shape(x)[1]
        flat_x = tf.reshape(x, tf.concat([[p * n], tf.shape(x)[2:]], axis=0))
        flat_y = tf.reshape(y, [p * n, -1])
        with tf.GradientTape() as tape:
            probs, records = _chain_forward(layers, flat_x)
            loss = _problem_loss_sum(probs, flat_y, p, n)
        gz = tape.gradient(loss, [r.z for r in records])
        by_var: dict[Any, Any] = {}
        for rec, g in zip(records, gz):
            for var, val in _record_grads(rec, g, p, n):
                by_var[var.ref()] = val
        missing = [v.name for v in tvars if v.ref() not in by_var]
        if missing:
            raise NotImplementedError(f"no chain gradient for {missing}")
        return [by_var[v.ref()] for v in tvars]

    return grads


def _vmap_engine(model: Any) -> ProblemGradients:
    tf = _tf()
    fwd = classification_forward(model)
    tvars = list(model.trainable_variables)

    def one(args: Any) -> list:
        xi, yi = args
        with tf.GradientTape() as tape:
            loss = bce_mean(yi, fwd(xi))
        return tape.gradient(loss, tvars)

    def grads(x: Any, y: Any) -> list:
        return tf.vectorized_map(one, (x, y))

    return grads


def _loop_engine(model: Any) -> ProblemGradients:
    """One tape per problem, unrolled over the (static) number of problems: cheapest when problems
    are few and large (each is an ordinary batch), e.g. 2 updates of 64 images."""
    tf = _tf()
    fwd = classification_forward(model)
    tvars = list(model.trainable_variables)

    def grads(x: Any, y: Any) -> list:
        p = x.shape[0]
        if p is None:
            raise ValueError("the loop engine needs a static number of problems")
        per = []
        for i in range(int(p)):
            with tf.GradientTape() as tape:
                loss = bce_mean(y[i], fwd(x[i]))
            per.append(tape.gradient(loss, tvars))
        return [tf.stack([g[k] for g in per]) for k in range(len(tvars))]

    return grads


def reference_gradients(model: Any, x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Per-problem gradients by one ``tf.GradientTape`` per problem (the tests' reference)."""
    tf = _tf()
    fwd = classification_forward(model)
    out = []
    for xi, yi in zip(x, y):
        with tf.GradientTape() as tape:
            loss = bce_mean(tf.constant(yi, tf.float32), fwd(tf.constant(xi, tf.float32)))
        out.append([g.numpy() for g in tape.gradient(loss, model.trainable_variables)])
    return [np.stack([o[k] for o in out]) for k in range(len(out[0]))]


def _chain_agrees(model: Any, fn: ProblemGradients, *, rtol: float = 1e-3) -> bool:
    """The chain engine against per-problem tapes on random inputs (2 problems of 2 images)."""
    tf = _tf()
    shape = tuple(int(d) for d in model.input_shape[1:])
    k = int(model.output_shape[-1])
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (2, 2, *shape)).astype(np.float32)
    y = (rng.uniform(size=(2, 2, k)) < 0.3).astype(np.float32)
    got = fn(tf.constant(x), tf.constant(y))
    ref = reference_gradients(model, x, y)
    for a, b in zip(got, ref):
        scale = float(np.max(np.abs(b))) + 1e-12
        if not np.allclose(np.asarray(a), b, rtol=rtol, atol=rtol * scale):
            return False
    return True


def make_problem_gradients(model: Any, *, engine: str = "auto") -> tuple[ProblemGradients, str]:
    """``(fn, engine used)``: ``fn(x [P, n, ...], y [P, n, K]) -> [[P, *var.shape] per variable]``.

    ``engine``: ``auto`` (``chain`` when the model supports it and agrees with the tape, else
    ``vmap``), ``chain`` (raises if unsupported), ``vmap`` or ``loop`` (one tape per problem,
    unrolled: for a few large problems; needs a static number of problems, so a ``tf.function``
    around it without ``reduce_retracing``). ``fn`` is plain TensorFlow (call it
    inside a ``tf.function`` and under a tape: it is differentiable in ``x`` and ``y``)."""
    if engine not in ("auto", "chain", "vmap", "loop"):
        raise ValueError(f"unknown engine {engine!r} (auto, chain, vmap or loop)")
    if engine == "loop":
        return _loop_engine(model), "loop"
    if engine != "vmap":
        layers = chain_layers(model)
        try:
            if layers is None:
                raise NotImplementedError("not a single-input chain of layers")
            for layer in layers:
                _supported(layer)
            fn = _chain_engine(model, layers)
            if _chain_agrees(model, fn):
                return fn, "chain"
            if engine == "chain":
                raise ValueError("the chain engine disagrees with tf.GradientTape on this model")
        except NotImplementedError:
            if engine == "chain":
                raise
    return _vmap_engine(model), "vmap"


__all__ = ["ProblemGradients", "bce_mean", "chain_layers", "classification_forward", "kernel_transform", "make_problem_gradients", "reference_gradients"]
