"""Fast per-unit gradient clipping for DP-SGD (paper 3.1 "DP-SGD"; issue 14.5 / 16.1).

DP-SGD needs, for every privacy unit ``u`` of a step (an image, or a patient = the set of that
patient's images in the step), the gradient ``G_u = sum_{i in u} grad L_i``, its norm, the clip
factor ``c_u = min(1, C / ||G_u||)`` and the clipped sum ``sum_u c_u G_u``. A per-example Jacobian
(``tf.vectorized_map`` over examples) runs the whole backward pass once per example. Here, as in
ghost clipping (Goodfellow 2015; Lee & Kifer 2021; tensorflow-privacy's ``fast_gradient_clipping``,
whose 0.9.0 registry covers Dense / Embedding / LayerNorm but not Conv2D), the model runs **one
forward and one backward pass of the summed loss**; each registered layer then forms its
per-example weight gradient from two tensors it already has, its input ``a_i`` and the gradient
``g_i`` of the loss w.r.t. its pre-activation output (per-example because no layer mixes examples):

- ``Dense``: ``dW_i = a_i^T g_i``, ``db_i = g_i``;
- ``Conv2D`` (and :class:`~bfdl_tff.models.layers.WSConv2D`): ``dW_i[dy, dx] = sum_pixels
  a_i[shifted by (dy, dx)]^T g_i`` (im2col as ``kh * kw`` strided slices of the padded input, one
  small matrix product per example and tap: the FLOPs of the batch weight gradient),
  ``db_i = sum_pixels g_i``; for ``WSConv2D`` the standardisation's Jacobian is applied
  (:func:`~bfdl_tff.models.layers.ws_kernel_vjp`);
- ``GroupNormalization``: ``dgamma_i = sum_pixels g_i * xhat_i``, ``dbeta_i = sum_pixels g_i``.

Pass 1 (norms): layer by layer, the per-example gradients are summed into units
(``unsorted_segment_sum``) and only their squared norms are kept and accumulated over layers, so
the per-example gradients of the whole model never exist at once (one layer's ``batch x layer
parameters`` tensor at a time; for the CPU models of this project, convs with few channels at
32 px, this is cheaper than the ghost norm of a conv layer, whose cost grows with the square of
the number of pixels). Pass 2 (clipped sum): the gradient of the clip-weighted loss
``sum_i c_u(i) L_i``, computed per layer from the same ``a_i`` and ``g_i`` scaled by ``c_u(i)``
(the output gradients do not depend on the weights, so no second backward pass through the
network is needed) with the batch contracted directly. Models with other trainable layers (e.g. BatchNormalization) fall
back to the per-example Jacobian in :mod:`bfdl_tff.federated.dp_sgd`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import tensorflow as tf

from bfdl_tff.models.layers import WS_EPS, WSConv2D, ws_kernel_vjp

LossSum = Callable[[Any, Any], tf.Tensor]
#: Up to this many trainable parameters the clipped sum is formed from the per-unit gradients of
#: pass 1 (``units x parameters`` floats, e.g. 256 x 200k x 4 B = 200 MB at most) instead of pass 2.
KEEP_UNITS_MAX_PARAMS = 200_000


@dataclass
class _Record:
    """What a registered layer leaves after the forward pass."""

    layer: tf.keras.layers.Layer
    watched: tf.Tensor  # pre-activation output (gradient taken w.r.t. it)
    # g -> [(variable, per-example gradient [B, ...], linear map to the variable's gradient or None)]
    per_example: Callable[[tf.Tensor], list[tuple[tf.Variable, tf.Tensor, "_WSMap | None"]]]
    # g -> [(variable, gradient summed over the batch)] (g may be scaled per example)
    summed: Callable[[tf.Tensor], list[tuple[tf.Variable, tf.Tensor]]]


def _activation(layer: tf.keras.layers.Layer, z: tf.Tensor) -> tf.Tensor:
    act = getattr(layer, "activation", None)
    return z if act is None else act(z)


def _dense(layer: tf.keras.layers.Dense, a: tf.Tensor) -> tuple[tf.Tensor, _Record]:
    z = tf.matmul(a, layer.kernel)
    if layer.use_bias:
        z = z + layer.bias

    def per_example(g: tf.Tensor) -> list[tuple[tf.Variable, tf.Tensor, None]]:
        out = [(layer.kernel, a[:, :, None] * g[:, None, :], None)]
        if layer.use_bias:
            out.append((layer.bias, g, None))
        return out

    def summed(g: tf.Tensor) -> list[tuple[tf.Variable, tf.Tensor]]:
        out = [(layer.kernel, tf.matmul(a, g, transpose_a=True))]
        if layer.use_bias:
            out.append((layer.bias, tf.reduce_sum(g, axis=0)))
        return out

    return _activation(layer, z), _Record(layer, z, per_example, summed)


class _WSMap:
    """The Jacobian of scaled weight standardisation, ``dw = J^T g`` (:func:`ws_kernel_vjp`), as a
    linear map on gradients w.r.t. the standardised kernel: per-unit squared norms of ``J^T g``
    in closed form, and ``J^T`` applied once to the clipped sum (it is linear)."""

    def __init__(self, kernel: tf.Tensor, eps: float) -> None:
        self.kernel, self.eps = kernel, eps
        self.fan_in = float(kernel.shape[0] * kernel.shape[1] * kernel.shape[2])
        centred = kernel - tf.reduce_mean(kernel, axis=[0, 1, 2], keepdims=True)
        var = tf.reduce_mean(tf.square(centred), axis=[0, 1, 2])  # [O]
        self.inv2 = 1.0 / (var + eps)
        self.rho = var * self.inv2
        self.w_hat = centred * tf.math.rsqrt(var + eps)

    def sq_norm(self, g: tf.Tensor) -> tf.Tensor:
        """``||J^T g_u||^2`` per unit of ``g`` ``[U, kh, kw, C, O]``: with sums over the fan-in,
        ``inv^2 / F * (||g||^2 - (sum g)^2 / F - (2 - rho) (g . w_hat)^2 / F)`` per output channel."""
        f = self.fan_in
        s1 = tf.reduce_sum(g, axis=[1, 2, 3])
        n2 = tf.reduce_sum(tf.square(g), axis=[1, 2, 3])
        s2 = tf.reduce_sum(g * self.w_hat, axis=[1, 2, 3])
        per_out = self.inv2 / f * (n2 - tf.square(s1) / f - (2.0 - self.rho) * tf.square(s2) / f)
        return tf.reduce_sum(tf.maximum(per_out, 0.0), axis=1)

    def apply(self, g: tf.Tensor) -> tf.Tensor:
        return ws_kernel_vjp(self.kernel, g, eps=self.eps)


def _per_example_kernel_grads(layer: tf.keras.layers.Conv2D, a: tf.Tensor, g: tf.Tensor) -> tf.Tensor:
    """Per-example gradients of the kernel used by the convolution, ``[B, kh, kw, cin, cout]``: the
    batch moved into the channels makes the examples the groups of one grouped convolution, whose
    native filter gradient (``Conv2DBackpropFilter``) is then the per-group = per-example one."""
    kh, kw, cin, cout = layer.kernel.shape
    b = tf.shape(a)[0]
    s = layer.strides
    inp = tf.reshape(tf.transpose(a, [1, 2, 0, 3]), tf.stack([1, a.shape[1], a.shape[2], b * cin]))
    out = tf.reshape(tf.transpose(g, [1, 2, 0, 3]), tf.stack([1, g.shape[1], g.shape[2], b * cout]))
    dk = tf.raw_ops.Conv2DBackpropFilter(input=inp, filter_sizes=tf.stack([kh, kw, cin, b * cout]), out_backprop=out,
                                         strides=[1, s[0], s[1], 1], padding=layer.padding.upper())
    return tf.transpose(tf.reshape(dk, tf.stack([kh, kw, cin, b, cout])), [3, 0, 1, 2, 4])


def _conv(layer: tf.keras.layers.Conv2D, a: tf.Tensor) -> tuple[tf.Tensor, _Record]:
    kernel = layer.kernel
    z = layer.convolution_op(a, kernel)  # WSConv2D standardises inside convolution_op
    if layer.use_bias:
        z = tf.nn.bias_add(z, layer.bias)
    ws = _WSMap(kernel, WS_EPS) if isinstance(layer, WSConv2D) else None
    shape = kernel.shape
    s = layer.strides

    def per_example(g: tf.Tensor) -> list[tuple[tf.Variable, tf.Tensor, _WSMap | None]]:
        out = [(layer.kernel, _per_example_kernel_grads(layer, a, g), ws)]
        return out + ([(layer.bias, tf.reduce_sum(g, axis=[1, 2]), None)] if layer.use_bias else [])

    def summed(g: tf.Tensor) -> list[tuple[tf.Variable, tf.Tensor]]:
        # The batch weight gradient of the (clip-weighted) loss: TensorFlow's own kernel.
        dk = tf.compat.v1.nn.conv2d_backprop_filter(a, tf.constant(list(shape)), g, strides=[1, s[0], s[1], 1],
                                                    padding=layer.padding.upper())
        out = [(layer.kernel, ws.apply(dk) if ws is not None else dk)]
        return out + ([(layer.bias, tf.reduce_sum(g, axis=[0, 1, 2]))] if layer.use_bias else [])

    return _activation(layer, z), _Record(layer, z, per_example, summed)


def _group_norm(layer: tf.keras.layers.GroupNormalization, x: tf.Tensor) -> tuple[tf.Tensor, _Record]:
    shape = tf.shape(x)
    c = int(x.shape[-1])
    grouped = tf.reshape(x, tf.concat([shape[:-1], [layer.groups, c // layer.groups]], axis=0))
    axes = list(range(1, grouped.shape.rank))
    axes.pop(-2)
    mean, var = tf.nn.moments(grouped, axes=axes, keepdims=True)
    xhat = tf.reshape((grouped - mean) * tf.math.rsqrt(var + layer.epsilon), shape)
    z = xhat
    if layer.scale:
        z = z * layer.gamma
    if layer.center:
        z = z + layer.beta
    red = list(range(1, x.shape.rank - 1))

    def per_example(g: tf.Tensor, axes: list[int] = red) -> list[tuple[tf.Variable, tf.Tensor, None]]:
        out = []
        if layer.scale:
            out.append((layer.gamma, tf.reduce_sum(g * xhat, axis=axes), None))
        if layer.center:
            out.append((layer.beta, tf.reduce_sum(g, axis=axes), None))
        return out

    return z, _Record(layer, z, per_example, lambda g: [(v, t) for v, t, _ in per_example(g, [0, *red])])


def _conv_supported(layer: tf.keras.layers.Layer) -> bool:
    return (type(layer) in (tf.keras.layers.Conv2D, WSConv2D) and layer.data_format == "channels_last"
            and tuple(layer.dilation_rate) == (1, 1) and layer.groups == 1)


def _handler(layer: tf.keras.layers.Layer) -> Callable[..., tuple[tf.Tensor, _Record]] | None:
    if not layer.trainable_weights:
        return None
    if type(layer) is tf.keras.layers.Dense:
        return _dense
    if _conv_supported(layer):
        return _conv
    if type(layer) is tf.keras.layers.GroupNormalization and layer.axis in (-1, 3):
        return _group_norm
    return None


def supports_fast_clipping(model: tf.keras.Model) -> bool:
    """True if every layer with trainable weights has a per-example gradient rule here
    (Dense on 2-D inputs is checked at trace time)."""
    return all(_handler(layer) is not None for layer in model.layers if layer.trainable_weights) and all(
        not isinstance(layer, tf.keras.Model) for layer in model.layers
    )


def _forward(model: tf.keras.Model, x: tf.Tensor) -> tuple[Any, list[_Record]]:
    from tensorflow_privacy.privacy.fast_gradient_clipping.gradient_clipping_utils import model_forward_pass

    records: list[_Record] = []

    def generator(layer: tf.keras.layers.Layer, args: Sequence[Any], kwargs: dict) -> tuple[Any, None]:
        handler = _handler(layer)
        if handler is None:
            return layer(*args, **kwargs), None
        (a,) = args
        if isinstance(layer, tf.keras.layers.Dense) and a.shape.rank != 2:
            raise ValueError(f"fast clipping: Dense layer {layer.name} on a rank-{a.shape.rank} input")
        out, rec = handler(layer, a)
        records.append(rec)
        return out, None

    outputs, _ = model_forward_pass(model, x, generator)
    layers = [r.layer for r in records]
    if len(set(map(id, layers))) != len(layers):
        raise ValueError("fast clipping: a layer is called more than once (shared weights)")
    return outputs, records


def clipped_gradient_sum(
    model: tf.keras.Model,
    x: tf.Tensor,
    y: Any,
    loss_sum: LossSum,
    *,
    segment_ids: tf.Tensor,
    num_segments: tf.Tensor,
    l2_clip: float,
    keep_unit_gradients: bool | None = None,
) -> tuple[list[tf.Tensor], tf.Tensor, tf.Tensor]:
    """``(sum_u c_u G_u per trainable variable, summed loss, per-unit gradient norms [num_segments])``.

    ``loss_sum(y, outputs)`` must return the *sum* of the examples' losses; ``segment_ids[i]`` is
    the unit (0 .. num_segments-1) of example ``i`` (``tf.range(batch)`` for image-level DP).
    ``keep_unit_gradients``: form the clipped sum from the per-unit gradients of pass 1
    (``units x parameters`` floats; default for models up to :data:`KEEP_UNITS_MAX_PARAMS`
    parameters) instead of pass 2 (see the module doc).
    """
    if keep_unit_gradients is None:
        keep_unit_gradients = sum(int(v.shape.num_elements()) for v in model.trainable_variables) <= KEEP_UNITS_MAX_PARAMS
    with tf.GradientTape() as tape:
        outputs, records = _forward(model, x)
        total = loss_sum(y, outputs)
    watched = [r.watched for r in records]
    grads_z = [tf.zeros_like(w) if g is None else g for w, g in zip(watched, tape.gradient(total, watched))]
    # Pass 1, layer by layer: per-example -> per-unit gradients and their squared norms.
    sq = tf.zeros([num_segments], tf.float32)
    units: dict[int, tuple[tf.Tensor, _WSMap | None]] = {}
    for rec, g in zip(records, grads_z):
        for var, pe, lin in rec.per_example(g):
            pu = tf.math.unsorted_segment_sum(pe, segment_ids, num_segments)
            sq += lin.sq_norm(pu) if lin is not None else tf.reduce_sum(tf.reshape(tf.square(pu), [num_segments, -1]), axis=1)
            if keep_unit_gradients:
                units[id(var)] = (pu, lin)
    norms = tf.sqrt(sq)
    factor = tf.minimum(1.0, l2_clip / tf.maximum(norms, 1e-12))
    per_var: dict[int, tf.Tensor] = {}
    if keep_unit_gradients:
        for k, (pu, lin) in units.items():
            total_k = tf.tensordot(factor, pu, axes=1)
            per_var[k] = lin.apply(total_k) if lin is not None else total_k
    else:
        # Pass 2: the gradient of the clip-weighted loss sum_i c_u(i) L_i, layer by layer from the
        # same output gradients (they do not depend on the weights c), batch contracted directly.
        c_ex = tf.gather(factor, segment_ids)
        for rec, g in zip(records, grads_z):
            scaled = g * tf.reshape(c_ex, [-1] + [1] * (g.shape.rank - 1))
            for var, grad in rec.summed(scaled):
                per_var[id(var)] = grad
    missing = [v.name for v in model.trainable_variables if id(v) not in per_var]
    if missing:
        raise ValueError(f"fast clipping: no per-example rule for {missing}")
    clipped = [per_var[id(v)] for v in model.trainable_variables]
    return clipped, total, norms


__all__ = ["clipped_gradient_sum", "supports_fast_clipping"]
