"""``bfdl evaluate RUN_DIR --data-root DIR``: external validation of a run's released model on
another dataset in the NIH layout (issue 15.4; paper 3.3's test evaluation applied to someone
else's images). The logic lives in :mod:`bfdl_tff.evaluate`; TensorFlow is imported only when the
command runs, so ``bfdl --help`` stays fast.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="evaluate a run's released model on another dataset (NIH layout): AUC with bootstrap CIs, accuracy",
        description="Evaluate RUN_DIR's final_model.npz on every image with metadata under --data-root "
        "(or a manifest's rows), resized to the model's input size. Writes JSON (default "
        "RUN_DIR/evaluations/<data root name>.json) and prints a table.",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="run directory (config.yaml, final_model.npz)")
    p.add_argument("--data-root", required=True, metavar="DIR",
                   help="dataset root: Data_Entry_2017.csv[.gz] (or task.json + image_labels.csv) and images/")
    p.add_argument("--manifest", default=None, metavar="FILE", help="evaluate only the rows of this manifest file")
    p.add_argument("--out", default=None, metavar="FILE.json",
                   help="result file (default RUN_DIR/evaluations/<data root name>[-<manifest>].json)")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N", help="bootstrap resamples (default 1000)")
    p.add_argument("--seed", type=int, default=0, metavar="S", help="bootstrap seed (default 0)")
    p.add_argument("--batch-size", type=int, default=64, metavar="B", help="prediction batch size (default 64)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from bfdl_tff.evaluate import evaluate_external, format_table

    record, path = evaluate_external(args.run_dir, data_root=args.data_root, manifest=args.manifest, out=args.out,
                                     n_boot=args.bootstrap, seed=args.seed, batch_size=args.batch_size)
    print(format_table(record))
    print(f"wrote {path}")
    return 0
