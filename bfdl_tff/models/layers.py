"""Custom Keras layers of the registry's models (registered serialisable; no ``Lambda``).

Both are per-example operations, so they are compatible with FedAvg (no running statistics that
FedAvg would fail to average, unlike BatchNormalization) and with per-example DP-SGD (no
example's output depends on another example of the batch):

- :class:`ImageStandardization`: per-image standardisation of the input,
  ``(x - mean(x)) / sqrt(var(x) + eps)`` over the image's pixels and channels. No weights. It
  removes each image's global gain and offset (the synthetic sites differ mostly in those).
- :class:`WSConv2D`: a ``Conv2D`` with *scaled weight standardisation* (Qiao et al. 2019;
  Brock et al. 2021, NF-ResNets): the kernel used is ``(w - mean(w)) / (std(w) * sqrt(fan_in))``
  per output channel (mean and std over the fan-in), so every output channel has unit-norm,
  zero-mean weights and activations keep their scale without activation normalisation. The
  gradient of the raw kernel is the standardisation's Jacobian applied to the gradient of the
  standardised kernel (:func:`ws_kernel_vjp`, used by the fast per-example clipping).
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

_PKG = "bfdl_tff"
WS_EPS = 1e-4


@tf.keras.utils.register_keras_serializable(package=_PKG)
class ImageStandardization(tf.keras.layers.Layer):
    """``(x - mean) / sqrt(var + eps)`` over each example's pixels and channels."""

    def __init__(self, epsilon: float = 1e-3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.epsilon = float(epsilon)

    def call(self, inputs: tf.Tensor) -> tf.Tensor:
        axes = list(range(1, inputs.shape.rank))
        mean = tf.reduce_mean(inputs, axis=axes, keepdims=True)
        centred = inputs - mean
        var = tf.reduce_mean(tf.square(centred), axis=axes, keepdims=True)
        return centred * tf.math.rsqrt(var + self.epsilon)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "epsilon": self.epsilon}


def standardize_kernel(kernel: tf.Tensor, *, eps: float = WS_EPS) -> tf.Tensor:
    """Scaled weight standardisation of a conv kernel ``[kh, kw, c_in, c_out]`` (see module doc)."""
    fan_in = float(kernel.shape[0] * kernel.shape[1] * kernel.shape[2])
    mean = tf.reduce_mean(kernel, axis=[0, 1, 2], keepdims=True)
    centred = kernel - mean
    var = tf.reduce_mean(tf.square(centred), axis=[0, 1, 2], keepdims=True)
    return centred * tf.math.rsqrt((var + eps) * fan_in)


def ws_kernel_vjp(kernel: tf.Tensor, grad_std: tf.Tensor, *, eps: float = WS_EPS) -> tf.Tensor:
    """Gradient w.r.t. the raw kernel from gradients w.r.t. the standardised kernel.

    ``grad_std`` may carry leading batch axes (``[..., kh, kw, c_in, c_out]``); the Jacobian of
    :func:`standardize_kernel` (a normalisation over the fan-in of each output channel) is applied
    to each: ``dw = (g - mean(g) - w_hat * mean(g * w_hat)) / sqrt((var + eps) * fan_in)`` with
    ``w_hat = (w - mean) / sqrt(var + eps)`` and means over the fan-in.
    """
    fan_in = float(kernel.shape[0] * kernel.shape[1] * kernel.shape[2])
    mean = tf.reduce_mean(kernel, axis=[0, 1, 2], keepdims=True)
    centred = kernel - mean
    var = tf.reduce_mean(tf.square(centred), axis=[0, 1, 2], keepdims=True)
    inv = tf.math.rsqrt(var + eps)
    w_hat = centred * inv
    axes = [-4, -3, -2]
    g_mean = tf.reduce_mean(grad_std, axis=axes, keepdims=True)
    gw_mean = tf.reduce_mean(grad_std * w_hat, axis=axes, keepdims=True)
    return (grad_std - g_mean - w_hat * gw_mean) * inv / fan_in**0.5


@tf.keras.utils.register_keras_serializable(package=_PKG)
class WSConv2D(tf.keras.layers.Conv2D):
    """``Conv2D`` whose kernel is used in scaled-standardised form (:func:`standardize_kernel`)."""

    def convolution_op(self, inputs: tf.Tensor, kernel: tf.Tensor) -> tf.Tensor:
        return super().convolution_op(inputs, standardize_kernel(kernel))


CUSTOM_OBJECTS = {"ImageStandardization": ImageStandardization, "WSConv2D": WSConv2D}

__all__ = ["CUSTOM_OBJECTS", "ImageStandardization", "WSConv2D", "standardize_kernel", "ws_kernel_vjp"]
