"""Per-example conv kernel gradients, B = 32, the three conv shapes of cnn32 at width 16: nine tap
einsums versus the grouped-convolution Conv2DBackpropFilter (the one models/clipping.py uses), and
the batch weight gradient for reference; checks that both per-example results agree; minimum of
30 runs in ms (docs/sweeps.md, "Fast clipping"; the im2col-concat, vectorized_map and depthwise
variants listed there were timed with an earlier version of this script).

    PYTHONPATH=$PWD python docs/sweeps/per_example_conv_cost.py
"""
import time, statistics, numpy as np, tensorflow as tf
def T(fn, n=30):
    fn(); ts=[]
    for _ in range(n):
        t=time.perf_counter(); fn(); ts.append(time.perf_counter()-t)
    return round(min(ts)*1000, 2)
B=32
for (H, C, O) in [(32, 1, 16), (16, 16, 32), (8, 32, 64)]:
    a = tf.constant(np.random.rand(B, H, H, C).astype(np.float32)); g = tf.constant(np.random.rand(B, H, H, O).astype(np.float32))
    ap = tf.pad(a, [[0,0],[1,1],[1,1],[0,0]])
    @tf.function
    def nine():
        return tf.stack([tf.einsum("bhwc,bhwo->bco", ap[:, dy:dy+H, dx:dx+H, :], g) for dy in range(3) for dx in range(3)], 1)
    @tf.function
    def grouped():
        inp = tf.reshape(tf.transpose(a, [1, 2, 0, 3]), [1, H, H, B*C])
        gb = tf.reshape(tf.transpose(g, [1, 2, 0, 3]), [1, H, H, B*O])
        return tf.raw_ops.Conv2DBackpropFilter(input=inp, filter_sizes=[3,3,C,B*O], out_backprop=gb, strides=[1,1,1,1], padding="SAME")
    @tf.function
    def batch_grad():
        return tf.compat.v1.nn.conv2d_backprop_filter(a, [3,3,C,O], g, [1,1,1,1], "SAME")
    try:
        r = grouped().numpy().reshape(3,3,C,B,O).transpose(3,0,1,2,4).reshape(B,9,C,O)
        ok = np.allclose(nine().numpy().reshape(B,9,C,O), r, atol=1e-3)
    except Exception as e:
        ok = repr(e)[:200]
    print(H, C, O, ok, {f.__name__: T(f) for f in (nine, batch_grad)}, T(grouped) if ok is True else None)
