"""Small in-memory images and models for the attack tests and benchmarks.

These are *not* results: they exercise the attacks at CPU cost (16-32 px, a few thousand
parameters) independently of the data and model packages. ``toy_images`` draws chest-X-ray-like
grey images (two dark lung fields in a bright body, ribs, random opacities, smooth noise) so
that SSIM and nearest-neighbour re-identification behave as they do on real images; labels are
14 random findings loosely tied to the opacities.
"""

from __future__ import annotations

from typing import Any

import numpy as np


def toy_images(n: int, size: int, *, seed: int, num_labels: int = 14) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images ``[n, size, size, 1]`` in [0, 1] and multi-hot labels ``[n, 14]``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / (size - 1)
    out = np.zeros((n, size, size, 1), np.float32)
    labels = (rng.uniform(size=(n, num_labels)) < 0.15).astype(np.float32)
    for i in range(n):
        img = 0.55 + 0.25 * rng.uniform() * (1 - yy) + 0.1 * rng.normal()
        for side in (-1, 1):  # lungs
            cx = 0.5 + side * rng.uniform(0.15, 0.27)
            cy = rng.uniform(0.4, 0.6)
            rx, ry = rng.uniform(0.1, 0.2), rng.uniform(0.2, 0.33)
            lung = ((xx - cx) / rx) ** 2 + ((yy - cy) / ry) ** 2 < 1
            img = img - lung * rng.uniform(0.25, 0.45)
        freq = rng.uniform(8, 14)  # ribs
        img = img + 0.05 * np.sin(2 * np.pi * freq * yy + rng.uniform(0, 6.3))
        for _ in range(int(1 + labels[i].sum())):  # opacities
            cx, cy, r = rng.uniform(0.2, 0.8), rng.uniform(0.2, 0.8), rng.uniform(0.04, 0.14)
            img = img + rng.uniform(0.15, 0.4) * np.exp(-(((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r * r)))
        noise = rng.normal(0, 0.04, (size, size))
        k = np.array([0.25, 0.5, 0.25])
        noise = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), 0, noise)
        noise = np.apply_along_axis(lambda v: np.convolve(v, k, mode="same"), 1, noise)
        out[i, :, :, 0] = np.clip(img + noise, 0.0, 1.0)
    return out, labels


def tiny_model(size: int, *, seed: int = 0, filters: int = 4, num_labels: int = 14) -> Any:
    """Conv(3x3, ``filters``, stride 2, sigmoid) -> Dense(14, sigmoid, name ``findings``).

    Smooth activations, as in DLG's LeNet (second derivatives of ReLU vanish)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((size, size, 1))
    h = tf.keras.layers.Conv2D(filters, 3, strides=2, padding="same", activation="sigmoid")(inp)
    h = tf.keras.layers.Flatten()(h)
    out = tf.keras.layers.Dense(num_labels, activation="sigmoid", name="findings")(h)
    return tf.keras.Model(inp, out)


def mlp_model(size: int, *, seed: int = 0, hidden: int = 64, num_labels: int = 14) -> Any:
    """Flatten -> Dense(hidden, relu) -> Dense(14, sigmoid): easy to overfit (membership tests)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(seed)
    inp = tf.keras.Input((size, size, 1))
    h = tf.keras.layers.Flatten()(inp)
    h = tf.keras.layers.Dense(hidden, activation="relu")(h)
    out = tf.keras.layers.Dense(num_labels, activation="sigmoid", name="findings")(h)
    return tf.keras.Model(inp, out)


__all__ = ["mlp_model", "tiny_model", "toy_images"]
