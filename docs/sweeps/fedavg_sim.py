"""A plain-Keras FedAvg simulator for quick sweeps (no TFF start-up): the hospitals of a run
directory's manifests, each client starting from the global weights with a fresh optimizer (as
TFF's client work does every round), one weighted (n_k) average per round, server SGD step
``w += server_lr * (mean_k w_k - w)``. Scores the global model on the pooled validation images
after every round. The chosen settings are then confirmed with ``bfdl train`` (run_sweep.py).

    PYTHONPATH=$PWD python docs/sweeps/fedavg_sim.py --run RUN_DIR --rounds 8 --client-lr 0.005 --server-lr 2
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True, help="a run directory (data.json + manifests) to take the data from")
    ap.add_argument("--model", default="cnn32")
    ap.add_argument("--overrides", default="{}")
    ap.add_argument("--rounds", type=int, default=8)
    ap.add_argument("--local-epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--client-opt", default="adam")
    ap.add_argument("--client-lr", type=float, default=0.003)
    ap.add_argument("--client-momentum", type=float, default=0.0)
    ap.add_argument("--server-lr", type=float, default=1.0)
    ap.add_argument("--server-momentum", type=float, default=0.0)
    ap.add_argument("--pooled", action="store_true", help="one client holding all training images (centralized)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iid", action="store_true", help="deal the same training images out IID")
    ap.add_argument("--subsample", type=float, default=1.0, help="keep this fraction of each hospital's patients")
    args = ap.parse_args()

    import tensorflow as tf
    from sklearn.metrics import roc_auc_score

    from bfdl_tff.data.federation import load_federation
    from bfdl_tff.models import registry

    rec = json.loads(open(f"{args.run}/data.json").read())
    fed = load_federation(rec["root"], rec["manifest_dir"], image_size=32)
    clients = []
    for k, n in enumerate(fed.names):
        s = fed.train[n]
        if args.subsample < 1.0:
            pats = np.unique(s.patient_ids)
            keep = np.random.default_rng(k).choice(pats, size=int(round(args.subsample * len(pats))), replace=False)
            s = s.subset(np.flatnonzero(np.isin(s.patient_ids, keep)))
        clients.append((s.x, s.y))
    if args.iid:  # the same images, dealt out uniformly at random (same hospital sizes)
        x_all, y_all = np.concatenate([c[0] for c in clients]), np.concatenate([c[1] for c in clients])
        perm = np.random.default_rng(7).permutation(len(x_all))
        cuts = np.cumsum([len(c[0]) for c in clients])[:-1]
        clients = [(x_all[i], y_all[i]) for i in np.split(perm, cuts)]
    if args.pooled:
        clients = [(np.concatenate([c[0] for c in clients]), np.concatenate([c[1] for c in clients]))]
    xv = np.concatenate([fed.val[n].x for n in fed.names])
    yv = np.concatenate([fed.val[n].y for n in fed.names])
    mcfg = registry.load_model_config(args.model, **json.loads(args.overrides))
    model = registry.build_model(mcfg, seed=args.seed)
    w = [v.numpy() for v in model.trainable_variables]
    mom = [np.zeros_like(a) for a in w]
    hist = []
    t0 = time.perf_counter()
    for r in range(args.rounds):
        new, sizes, losses = [], [], []
        for k, (x, y) in enumerate(clients):
            for v, a in zip(model.trainable_variables, w):
                v.assign(a)
            opt = (tf.keras.optimizers.Adam(args.client_lr) if args.client_opt == "adam"
                   else tf.keras.optimizers.SGD(args.client_lr, momentum=args.client_momentum))
            model.compile(opt, tf.keras.losses.BinaryCrossentropy())
            ds = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=1000 * r + k).batch(args.batch)
            h = model.fit(ds, epochs=args.local_epochs, verbose=0)
            losses.append(h.history["loss"][-1])
            new.append([v.numpy() for v in model.trainable_variables])
            sizes.append(len(x))
        frac = np.array(sizes, dtype=np.float64) / sum(sizes)
        avg = [sum(f * nw[i] for f, nw in zip(frac, new)) for i in range(len(w))]
        for i in range(len(w)):
            mom[i] = args.server_momentum * mom[i] + (avg[i] - w[i])
            w[i] = w[i] + args.server_lr * mom[i]
        for v, a in zip(model.trainable_variables, w):
            v.assign(a)
        p = model.predict(xv, verbose=0, batch_size=512)
        aucs = [roc_auc_score(yv[:, i], p[:, i]) for i in range(14) if 0 < yv[:, i].sum() < len(yv)]
        hist.append((round(float(np.dot(frac, losses)), 4), round(float(np.mean(aucs)), 4)))
    print(json.dumps({"args": vars(args), "history": hist, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)


if __name__ == "__main__":
    main()
