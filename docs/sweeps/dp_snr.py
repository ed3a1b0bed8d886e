"""Signal-to-noise arithmetic of patient-level DP-SGD on a run's data (docs/dp.md table).

For each hospital of the run: the mean clipped per-patient gradient ``g`` of the initial model over
all of the hospital's patients, and for each epsilon / batch the calibrated noise multiplier ``z``,
the number of steps ``T`` and ``SNR = sqrt(T) |g| q P / (z C sqrt(d))`` (the whole run's best case:
the gradient direction held fixed).

    PYTHONPATH=$PWD python docs/sweeps/dp_snr.py --run RUN_DIR [--rounds 8] [--hospital hospital_a]
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--hospital", default="")
    ap.add_argument("--model", default="cnn32")
    ap.add_argument("--delta", type=float, default=1e-5)
    args = ap.parse_args()

    import tensorflow as tf

    from bfdl_tff.data.federation import load_federation
    from bfdl_tff.federated import accounting as A
    from bfdl_tff.federated import model_bridge
    from bfdl_tff.models import clipping, registry

    rec = json.loads(open(f"{args.run}/data.json").read())
    fed = load_federation(rec["root"], rec["manifest_dir"], image_size=32)
    bundle = model_bridge.build_bundle(registry.load_model_config(args.model))
    model = bundle.keras(seed=1002)
    d = sum(int(np.prod(v.shape)) for v in model.trainable_variables)
    for name in [args.hospital] if args.hospital else fed.names:
        s = fed.train[name]
        _, inv = np.unique(s.patient_ids, return_inverse=True)
        p = int(inv.max()) + 1
        for clip in (1.0, 0.1):
            g, _, norms = clipping.clipped_gradient_sum(
                model, tf.constant(s.x), tf.constant(s.y), bundle.per_example_loss,
                segment_ids=tf.constant(inv, tf.int32), num_segments=tf.constant(p, tf.int32), l2_clip=clip)
            gbar = float(np.sqrt(sum(float(np.sum(t.numpy() ** 2)) for t in g))) / p
            for eps in (1.0, 8.0, 64.0):
                for b in (32, 256):
                    n = len(s)
                    q = b / n
                    t = A.dp_sgd_steps(num_examples=n, batch_size=b, local_epochs=1, rounds=args.rounds)
                    z = A.calibrate_noise(eps, args.delta, epsilon_fn=lambda z: A.sample_level_epsilon(
                        noise_multiplier=z, batch_size=b, num_examples=n, steps=t, delta=args.delta))
                    noise = z * clip * np.sqrt(d) / (q * p)
                    print(json.dumps({"hospital": name, "patients": p, "images": n, "d": d, "clip": clip,
                                      "mean_clipped_grad_norm": round(gbar, 4),
                                      "median_patient_grad_norm": round(float(np.median(norms.numpy())), 4),
                                      "epsilon": eps, "batch": b, "z": round(z, 3), "steps": t,
                                      "snr_per_step": round(gbar / noise, 4),
                                      "snr_run": round(float(np.sqrt(t) * gbar / noise), 3)}), flush=True)


if __name__ == "__main__":
    main()
