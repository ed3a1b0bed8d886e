"""Data benchmarks (issues 3, 15): synthesis time and loader throughput; prints numbers only.

    .venv/bin/python benchmarks/bench_data.py [--quick] [--real-only]

1. time to synthesise 10,000 images at 64 px (``bfdl data synth``, incl. masks and PNG writes);
2. loader images/second from PNG (``load_image_set``: read, decode, gray, resize, normalise) at
   64, 128 and 224 px from PNGs of that size, and 1024 px PNGs (NIH's native size) -> 224 px;
3. ``make_dataset`` (in-memory tf.data, batch 16) images/second at 64 px;
4. for comparison, the time of one training step (batch 16, 64 px) of a small 4-block Keras CNN
   (not the project's model registry; just a yardstick for "is the loader the bottleneck");
5. real data from the shared folder (``../shared`` or ``$BFDL_SHARED``; skipped if absent):
   reading the complete 112,120-row NIH Data_Entry table (.csv.gz) and partitioning it with the
   ``view`` scheme; loading the 621-image NIH sample at 64 and 224 px; exporting PneumoniaMNIST
   (5,030 images) to the task layout and loading its 3-hospital federation at 28 px.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _manifest(root: Path):
    from bfdl_tff.data import loader
    from bfdl_tff.data.labels import FINDINGS

    meta = loader.read_metadata(root)
    df = meta[["image", "patient_id"]].assign(split="train")
    for f in FINDINGS:
        df[f] = meta[f].to_numpy()
    return df


def _shared() -> Path:
    from bfdl_tff.config import REPO_ROOT

    return Path(os.environ.get("BFDL_SHARED") or REPO_ROOT.parent / "shared")


def bench_real(tmp: Path) -> None:
    """Item 5 of the module docstring."""
    from bfdl_tff.config import DataConfig
    from bfdl_tff.data import external, federation, loader, nih, partition, prepare

    sh = _shared()
    full = sh / "nih_cxr14" / "full_metadata" / "Data_Entry_2017_v2020.csv.gz"
    if full.is_file():
        t = time.perf_counter()
        meta = loader.read_data_entry(full)
        dt = time.perf_counter() - t
        print(f"read complete NIH Data_Entry table ({len(meta)} rows, .csv.gz): {dt:.2f} s")
        t = time.perf_counter()
        partition.partition(meta, hospitals=3, scheme="view", seed=0, test_images=nih.official_test_images())
        print(f"partition 112,120 images, scheme view, K=3: {time.perf_counter() - t:.2f} s")
    else:
        print(f"skipped: {full} not present")
    sample = sh / "nih_cxr14" / "real_sample_256"
    if sample.is_dir():
        for size in (64, 224):
            best = 0.0
            for _ in range(2):
                loader._index_cached.cache_clear()
                t = time.perf_counter()
                s = external.load_external(sample, image_size=size).images  # every image with metadata
                best = max(best, len(s) / (time.perf_counter() - t))
            print(f"loader, real NIH sample (256 px PNG) -> {size} px: {best:.0f} images/s ({len(s)} images, best of 2)")
    else:
        print(f"skipped: {sample} not present")
    npz = sh / "pneumoniamnist" / "pneumoniamnist.npz"
    if npz.is_file():
        cfg = DataConfig(source="medmnist", npz=str(npz), root=str(tmp / "mm"), hospitals=3, image_size=28)
        t = time.perf_counter()
        p = prepare.prepare_data(cfg, seed=0, manifest_dir=tmp / "mm-m")
        dt = time.perf_counter() - t
        t = time.perf_counter()
        fed = federation.load_federation(p.root, p.manifest_dir, image_size=28)
        dl = time.perf_counter() - t
        n = sum(len(fed.train[k]) + len(fed.val[k]) for k in fed.names) + len(fed.test)
        print(f"PneumoniaMNIST: export + partition {dt:.2f} s; load federation ({n} images, 28 px) {dl:.2f} s")
    else:
        print(f"skipped: {npz} not present")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true", help="smaller counts")
    ap.add_argument("--real-only", action="store_true", help="only item 5 (shared real data)")
    args = ap.parse_args()
    from bfdl_tff.data import loader, synth

    if args.real_only:
        tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
        try:
            bench_real(tmp)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    q = args.quick
    tmp = Path(tempfile.mkdtemp(prefix="bench_data_"))
    try:
        n_synth = 2000 if q else 10000
        t = time.perf_counter()
        synth.synthesize(tmp / "s64", n_images=n_synth, size=64, seed=0)
        dt = time.perf_counter() - t
        print(f"synthesise {n_synth} images at 64 px (PNG + mask + CSVs): {dt:.2f} s ({n_synth / dt:.0f} images/s)")

        import tensorflow as tf  # noqa: F401  (import cost excluded from the loader timings)

        loader.load_image_set(tmp / "s64", _manifest(tmp / "s64").iloc[:64], image_size=64)  # warm-up
        cases = [(64, 64, n_synth), (128, 128, 600 if q else 2000), (224, 224, 300 if q else 1000), (1024, 224, 40 if q else 150)]
        for src, dst, n in cases:
            root = tmp / "s64" if src == 64 else tmp / f"s{src}"
            if src != 64:
                synth.synthesize(root, n_images=n, size=src, seed=0, write_masks=False)
            df = _manifest(root).iloc[:n]
            best = 0.0
            for _ in range(2):
                loader._index_cached.cache_clear()
                t = time.perf_counter()
                s = loader.load_image_set(root, df, image_size=dst)
                dt = time.perf_counter() - t
                best = max(best, len(s) / dt)
            print(f"loader from {src} px PNG -> {dst} px: {best:.0f} images/s ({len(df)} images, best of 2)")

        s = loader.load_image_set(tmp / "s64", _manifest(tmp / "s64").iloc[:2000], image_size=64)
        for _ in loader.make_dataset(s, batch_size=16, shuffle_seed=0):
            pass
        t = time.perf_counter()
        for _ in loader.make_dataset(s, batch_size=16, shuffle_seed=0, epochs=3):
            pass
        dt = time.perf_counter() - t
        print(f"make_dataset (in memory, batch 16, 64 px): {3 * len(s) / dt:.0f} images/s")

        import numpy as np
        import tensorflow as tf

        L = tf.keras.layers

        def blk(f):
            return [L.Conv2D(f, 3, padding="same", use_bias=False), L.BatchNormalization(), L.ReLU(), L.MaxPool2D()]

        m = tf.keras.Sequential([L.Input((64, 64, 1))] + blk(16) + blk(32) + blk(64) + blk(64)
                                + [L.GlobalAveragePooling2D(), L.Dense(14, activation="sigmoid")])
        m.compile(tf.keras.optimizers.Adam(1e-3), "binary_crossentropy")
        x, y = s.x[:16], s.y[:16]
        for _ in range(5):
            m.train_on_batch(x, y)
        reps = 30
        t = time.perf_counter()
        for _ in range(reps):
            m.train_on_batch(x, y)
        dt = (time.perf_counter() - t) / reps
        print(f"reference: one train step of a small 4-block CNN, batch 16, 64 px: {dt * 1000:.1f} ms "
              f"({16 / dt:.0f} images/s)")
        del np
        bench_real(tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
