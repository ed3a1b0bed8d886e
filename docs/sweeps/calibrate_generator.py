"""Calibration sweeps of the synthetic generator and the default model, plain Keras (no TFF).

Generates images in memory (``synth.generate_arrays``), splits patients into train / val,
trains a registry model on the pooled training images and prints validation AUCs (per finding
and macro) as one JSON line. Used for the tables of docs/sweeps.md ("Generator calibration",
"Centralized model"). Validation data only: the test split is never looked at here.

    PYTHONPATH=$PWD python docs/sweeps/calibrate_generator.py --n 12000 --epochs 20 --width 16

``--calibrate K`` runs K rounds of per-finding gain calibration: train, measure each finding's
validation AUC, move its gain towards the target AUC (:data:`TARGET_AUC`) with a damped update of
the separation ``d' = sqrt(2) * Phi^-1(AUC_visible)``, where ``AUC_visible`` removes the
``INVISIBLE_FRACTION`` of positives whose trace is invisible (scored like negatives, AUC 0.5).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

#: Per-finding test AUCs on NIH ChestX-ray14 (values as recalled from the papers' tables; verify):
#: Wang et al. 2017 (ChestX-ray8, ResNet-50) and Rajpurkar et al. 2017 (CheXNet, DenseNet-121).
WANG_2017 = {"Atelectasis": 0.700, "Cardiomegaly": 0.810, "Effusion": 0.759, "Infiltration": 0.661, "Mass": 0.693,
             "Nodule": 0.669, "Pneumonia": 0.658, "Pneumothorax": 0.799, "Consolidation": 0.703, "Edema": 0.805,
             "Emphysema": 0.833, "Fibrosis": 0.786, "Pleural_Thickening": 0.684, "Hernia": 0.872}
CHEXNET_2017 = {"Atelectasis": 0.809, "Cardiomegaly": 0.925, "Effusion": 0.864, "Infiltration": 0.735, "Mass": 0.868,
                "Nodule": 0.780, "Pneumonia": 0.768, "Pneumothorax": 0.889, "Consolidation": 0.790, "Edema": 0.888,
                "Emphysema": 0.937, "Fibrosis": 0.805, "Pleural_Thickening": 0.806, "Hernia": 0.916}
#: Calibration targets: CheXNet (macro 0.841, the best published NIH result; the default) or the
#: midpoint of the two (macro 0.793).
TARGETS = {"chexnet": dict(CHEXNET_2017), "midpoint": {f: round((WANG_2017[f] + CHEXNET_2017[f]) / 2, 4) for f in WANG_2017}}
TARGET_AUC = dict(TARGETS["chexnet"])


def updated_gains(gains: dict, per: dict, *, invisible: float, damping: float = 0.7) -> dict:
    from scipy.stats import norm

    def dprime(auc: float) -> float:
        vis = (auc - 0.5 * invisible) / (1 - invisible)
        return float(np.sqrt(2) * norm.ppf(np.clip(vis, 0.51, 0.995)))

    out = {}
    for f, g in gains.items():
        ratio = (dprime(TARGET_AUC[f]) / dprime(per[f])) ** damping if f in per else 1.0
        out[f] = round(float(np.clip(g * np.clip(ratio, 0.6, 1.6), 0.2, 1.8)), 3)
    return out


def updated_invisible(invisible: dict, per: dict, *, slope: float = 0.35) -> dict:
    """Move each finding's invisible fraction f towards its target AUC: AUC ~ (1 - f) AUC_visible
    + f AUC_invisible, with AUC_visible - AUC_invisible ~ ``slope`` (measured: ~0.95 vs ~0.6)."""
    return {f: round(float(np.clip(v + (per[f] - TARGET_AUC[f]) / slope, 0.02, 0.75)), 3) if f in per else v
            for f, v in invisible.items()}


def split_patients(cohort, *, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    pats = np.unique(cohort.pat_of_img)
    val_p = rng.choice(pats, size=int(round(val_fraction * len(pats))), replace=False)
    is_val = np.isin(cohort.pat_of_img, val_p)
    return np.flatnonzero(~is_val), np.flatnonzero(is_val)


def macro_auc(y: np.ndarray, p: np.ndarray, findings) -> tuple[float, dict]:
    from sklearn.metrics import roc_auc_score

    per = {}
    for i, f in enumerate(findings):
        if 0 < y[:, i].sum() < len(y):
            per[f] = float(roc_auc_score(y[:, i], p[:, i]))
    return float(np.mean(list(per.values()))), per


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=12000)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--signal", type=float, default=1.0)
    ap.add_argument("--gains", default="", help="JSON finding->gain (default: synth.FINDING_GAINS)")
    ap.add_argument("--min-prevalence", type=float, default=0.02)
    ap.add_argument("--invisible", default="", help="JSON finding->invisible fraction (default: synth's)")
    ap.add_argument("--calibrate-what", default="gains", choices=("gains", "invisible"))
    ap.add_argument("--target", default="chexnet", choices=sorted(TARGETS))
    ap.add_argument("--model", default="small_cnn")
    ap.add_argument("--overrides", default="{}", help="JSON model overrides")
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--opt", default="adam")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--momentum", type=float, default=0.9)
    ap.add_argument("--val-fraction", type=float, default=0.25)
    ap.add_argument("--eval-every", type=int, default=0)
    ap.add_argument("--cosine", action="store_true", help="cosine learning-rate decay to 0")
    ap.add_argument("--calibrate", type=int, default=0, help="rounds of per-finding gain calibration")
    args = ap.parse_args()
    from bfdl_tff.data import synth

    TARGET_AUC.clear()
    TARGET_AUC.update(TARGETS[args.target])
    gains = json.loads(args.gains) if args.gains else dict(synth.FINDING_GAINS)
    invisible = json.loads(args.invisible) if args.invisible else dict(synth.INVISIBLE_FRACTIONS)
    for it in range(max(1, args.calibrate)):
        per = run_once(args, gains, invisible)
        if args.calibrate and args.calibrate_what == "gains":
            gains = updated_gains(gains, per, invisible=float(np.mean(list(invisible.values()))))
            print(json.dumps({"calibration_iter": it, "next_gains": gains}), flush=True)
        elif args.calibrate:
            invisible = updated_invisible(invisible, per)
            print(json.dumps({"calibration_iter": it, "next_invisible": invisible}), flush=True)


def run_once(args: argparse.Namespace, gains: dict, invisible: dict) -> dict:

    import tensorflow as tf

    from bfdl_tff.data import synth
    from bfdl_tff.data.labels import FINDINGS
    from bfdl_tff.models import registry

    t0 = time.perf_counter()
    imgs, cohort = synth.generate_arrays(args.n, size=args.size, seed=args.seed, signal=args.signal,
                                         min_prevalence=args.min_prevalence, gains=gains,
                                         invisible_fraction=invisible)
    t_gen = time.perf_counter() - t0
    x = (imgs.astype(np.float32) / 255.0)[..., None]
    y = cohort.y.astype(np.float32)
    tr, va = split_patients(cohort, val_fraction=args.val_fraction, seed=args.seed + 1)
    mcfg = registry.load_model_config(args.model, input_size=args.size, **json.loads(args.overrides))
    model = registry.build_model(mcfg, seed=args.seed)
    lr = args.lr
    if args.cosine:
        steps = args.epochs * -(-len(tr) // args.batch)
        lr = tf.keras.optimizers.schedules.CosineDecay(args.lr, steps)
    if args.opt == "adam":
        opt = tf.keras.optimizers.Adam(lr)
    else:
        opt = tf.keras.optimizers.SGD(lr, momentum=args.momentum)
    model.compile(opt, tf.keras.losses.BinaryCrossentropy())
    ds = tf.data.Dataset.from_tensor_slices((x[tr], y[tr])).shuffle(len(tr), seed=args.seed).batch(args.batch)
    history = []
    t1 = time.perf_counter()
    every = args.eval_every or args.epochs
    for ep in range(0, args.epochs, every):
        h = model.fit(ds, epochs=ep + every, initial_epoch=ep, verbose=0)
        auc, per = macro_auc(y[va], model.predict(x[va], verbose=0, batch_size=512), FINDINGS)
        history.append({"epoch": ep + every, "train_loss": round(float(h.history["loss"][-1]), 4), "val_macro_auc": round(auc, 4)})
    t_train = time.perf_counter() - t1
    print(json.dumps({
        "args": vars(args), "gains": gains, "invisible": invisible, "target_macro": round(float(np.mean(list(TARGET_AUC.values()))), 4), "params": int(model.count_params()), "n_train": int(len(tr)), "n_val": int(len(va)),
        "val_positives": {f: int(y[va, i].sum()) for i, f in enumerate(FINDINGS)},
        "gen_s": round(t_gen, 1), "train_s": round(t_train, 1), "s_per_epoch": round(t_train / args.epochs, 2),
        "history": history, "val_macro_auc": round(auc, 4), "per_finding": {k: round(v, 3) for k, v in per.items()},
    }), flush=True)
    return per


if __name__ == "__main__":
    main()
