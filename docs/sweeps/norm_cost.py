"""Throughput of the 3-conv CNN (width 8, 32 px, batch 64, SGD) with each normalisation, plain Keras
fit, 2 epochs of 4,096 random images (docs/sweeps.md, "Normalisation"): none, keras
GroupNormalization (4 or 1 groups), a hand-written group norm (fgn), LayerNormalization.

    PYTHONPATH=$PWD python docs/sweeps/norm_cost.py
"""
import time, json
import numpy as np, tensorflow as tf
L = tf.keras.layers
class FastGN(L.Layer):
    def __init__(self, groups, **kw):
        super().__init__(**kw); self.groups = groups
    def build(self, s):
        c = s[-1]; self.gamma = self.add_weight("gamma", (c,), initializer="ones"); self.beta = self.add_weight("beta", (c,), initializer="zeros")
    def call(self, x):
        s = tf.shape(x); c = x.shape[-1]; g = self.groups
        xr = tf.reshape(x, [s[0], -1, g, c // g])
        mean = tf.reduce_mean(xr, axis=[1, 3], keepdims=True)
        xc = xr - mean
        var = tf.reduce_mean(tf.square(xc), axis=[1, 3], keepdims=True)
        xn = tf.reshape(xc * tf.math.rsqrt(var + 1e-3), s)
        return xn * self.gamma + self.beta
def build(norm, width=8, groups=4):
    inp = L.Input((32, 32, 1)); x = inp
    for i in range(3):
        x = L.Conv2D(width * 2**i, 3, padding="same", use_bias=norm == "none")(x)
        if norm == "kgn": x = L.GroupNormalization(groups)(x)
        if norm == "fgn": x = FastGN(groups)(x)
        if norm == "ln": x = L.LayerNormalization(axis=[1, 2, 3])(x)
        x = L.ReLU()(x); x = L.MaxPooling2D()(x)
    x = L.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inp, L.Dense(14, activation="sigmoid")(x))
x = np.random.rand(4096, 32, 32, 1).astype(np.float32); y = (np.random.rand(4096, 14) < 0.1).astype(np.float32)
ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64).cache()
for norm, g in [("none", 1), ("kgn", 4), ("kgn", 1), ("fgn", 4), ("fgn", 1), ("ln", 1)]:
    m = build(norm, groups=g); m.compile(tf.keras.optimizers.SGD(0.05), "binary_crossentropy")
    m.fit(ds, epochs=1, verbose=0)
    t = time.perf_counter(); m.fit(ds, epochs=2, verbose=0); dt = time.perf_counter() - t
    print(norm, g, round(2 * 4096 / dt), flush=True)
