"""``bfdl data ...``: synthesise, check, partition and summarise datasets (paper 3.1).

- ``bfdl data synth --out DIR --images N --size S --seed X [--sites K] [--no-site-shift]``
- ``bfdl data check --root DIR [--decode]`` or ``bfdl data check --npz FILE [--task KIND]``
- ``bfdl data export-medmnist --npz FILE --out DIR [--task KIND]`` (MedMNIST -> task layout)
- ``bfdl data partition --root DIR --hospitals K --scheme NAME --seed X --out DIR [--alpha A]
  [--stratify-test]``
- ``bfdl data summary --manifests DIR [--root DIR] [--json]``
- ``bfdl data nih-manifests [--check] [--k K ...] [--import-metadata]`` (the checked-in
  ``data_manifests/nih_cxr14`` manifests: ``k3/`` ... ``k10/`` and ``view_k3/``)

Errors are :class:`bfdl_tff.errors.DataError` (one line naming the file, exit code 2).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# Literal copies (importing bfdl_tff.data here would load pandas for every bfdl command);
# tests/data/test_data_cli.py checks them against partition.SCHEMES / tasks.TASK_KINDS.
SCHEMES = ("iid", "dirichlet", "quantity", "site", "view")
TASK_CHOICES = ("multilabel", "binary", "multiclass")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="synthesise, check, partition and summarise datasets")
    s = p.add_subparsers(dest="data_cmd", metavar="ACTION", required=True)

    sy = s.add_parser("synth", help="write a synthetic dataset in the NIH layout (NOT NIH data)")
    sy.add_argument("--out", required=True, help="output directory")
    sy.add_argument("--images", type=int, required=True)
    sy.add_argument("--size", type=int, default=64)
    sy.add_argument("--seed", type=int, default=0)
    sy.add_argument("--sites", type=int, default=3, help="acquisition sites (default 3)")
    sy.add_argument("--no-site-shift", action="store_true", help="all sites acquire identically")
    sy.add_argument("--layout", choices=("2017", "v2020"), default="2017", help="Data_Entry_2017.csv column layout")
    sy.add_argument("--no-masks", action="store_true", help="do not write masks/")
    sy.add_argument("--overwrite", action="store_true")
    sy.set_defaults(func=_synth)

    c = s.add_parser("check", help="validate a dataset directory (or a MedMNIST .npz) and print counts")
    src = c.add_mutually_exclusive_group(required=True)
    src.add_argument("--root", help="dataset directory (NIH layout or task layout)")
    src.add_argument("--npz", help="a MedMNIST .npz: arrays, inferred task, counts and positives per split")
    c.add_argument("--task", choices=TASK_CHOICES, default=None, help="with --npz: task kind instead of the inferred one")
    c.add_argument("--decode", action="store_true", help="decode every PNG with TensorFlow (slow for NIH)")
    c.set_defaults(func=_check)

    ex = s.add_parser("export-medmnist", help="write a MedMNIST .npz as PNGs + image_labels.csv + task.json")
    ex.add_argument("--npz", required=True)
    ex.add_argument("--out", required=True, help="output directory (must not exist)")
    ex.add_argument("--task", choices=TASK_CHOICES, default=None, help="task kind instead of the inferred one")
    ex.set_defaults(func=_export_medmnist)

    pa = s.add_parser("partition", help="write hospital manifests (hospital_a.csv ... + test.csv)")
    pa.add_argument("--root", required=True)
    pa.add_argument("--hospitals", type=int, required=True)
    pa.add_argument("--scheme", required=True, choices=SCHEMES)
    pa.add_argument("--seed", type=int, required=True)
    pa.add_argument("--out", required=True)
    pa.add_argument("--alpha", type=float, default=0.5, help="Dirichlet concentration (dirichlet, quantity)")
    pa.add_argument("--test-fraction", type=float, default=0.2)
    pa.add_argument("--val-fraction", type=float, default=0.1)
    pa.add_argument("--test-list", default="", help="file of test image names (e.g. NIH test_list.txt)")
    pa.add_argument("--stratify-test", action="store_true",
                    help="take --test-fraction within each primary class (rare labels keep test positives)")
    pa.add_argument("--gzip", action="store_true", help="write .csv.gz")
    pa.set_defaults(func=_partition)

    su = s.add_parser("summary", help="per-hospital counts, patients, label prevalence, non-IID-ness")
    su.add_argument("--manifests", required=True)
    su.add_argument("--root", default="", help="dataset root (adds per-site counts for synthetic data)")
    su.add_argument("--json", action="store_true")
    su.set_defaults(func=_summary)

    n = s.add_parser("nih-manifests", help="regenerate (or --check) data_manifests/nih_cxr14 (k3..k10, view_k3)")
    n.add_argument("--check", action="store_true", help="verify byte-identical regeneration, write nothing")
    n.add_argument("--k", type=int, action="append", help="only these K (default 3..10)")
    n.add_argument("--import-metadata", action="store_true", help="first re-copy metadata from ../shared/nih_cxr14")
    n.set_defaults(func=_nih)


def _synth(args: argparse.Namespace) -> int:
    from bfdl_tff.data import synth

    info = synth.synthesize(args.out, n_images=args.images, size=args.size, seed=args.seed, n_sites=args.sites,
                            site_shift=not args.no_site_shift, layout=args.layout, write_masks=not args.no_masks,
                            overwrite=args.overwrite)
    print(f"{args.out}: {info['n_images']} images, {info['n_patients']} patients, {info['n_sites']} site(s) "
          f"(shift {'on' if info['site_shift'] else 'off'}), {info['size']} px, {info['bbox_rows']} boxes, "
          f"{info['seconds']:.1f} s")
    print("SYNTHETIC data: results on it are not NIH ChestX-ray14 results.")
    return 0


def _png_ok(path: str) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(8)
        if head != b"\x89PNG\r\n\x1a\n":
            return "not a PNG (bad signature)"
        fh.seek(0, 2)
        if fh.tell() < 20:
            return "truncated"
        fh.seek(-12, 2)
        tail = fh.read(12)
    if tail[4:8] != b"IEND":
        return "truncated (no IEND chunk)"
    return None


def check_dataset(root: Path, *, decode: bool = False) -> dict:
    """Validate metadata, image files (present, PNG, complete, all listed in the metadata) and
    optional files; return counts."""
    from bfdl_tff.data import external, loader, synth
    from bfdl_tff.errors import DataError

    meta = loader.read_metadata(root)
    task = loader.metadata_task(meta)
    src = meta.attrs.get("source", str(root))
    images = meta["image"].tolist()
    paths = loader.resolve_image_paths(root, images, source=src)
    for p in paths:
        bad = _png_ok(p)
        if bad:
            raise DataError(f"{p}: {bad}")
    unlisted = external.unlisted_image_files(root, meta)
    if unlisted:
        raise DataError(f"{root}: {len(unlisted)} image file(s) not in the metadata {src}, first: {', '.join(unlisted[:5])}")
    if decode:
        loader.decode_images(paths, image_size=32)
    idx = loader.index_images(root)
    boxes = loader.read_bboxes(root)
    known = set(images)
    unknown_boxes = [n for n in boxes if n not in known]
    if unknown_boxes:
        raise DataError(f"{root / loader.BBOX_NAME}: {len(unknown_boxes)} boxed image(s) not in {src}, first: {', '.join(unknown_boxes[:5])}")
    masks = root / "masks"
    y = meta[list(task.labels)].to_numpy()
    out = {
        "root": str(root),
        "metadata": src,
        "task": task.to_record(),
        "images": len(images),
        "patients": int(meta["patient_id"].nunique()),
        "files": len(idx),
        "no_finding": int((y.sum(axis=1) == 0).sum()),
        "per_finding": {f: int(v) for f, v in zip(task.labels, y.sum(axis=0))},
        "boxed_images": len(boxes),
        "masks": len(list(masks.glob("*.png"))) if masks.is_dir() else 0,
        "synthetic": synth.is_complete(root),
        "decoded": decode,
    }
    if "site" in meta:
        out["images_per_site"] = {str(k): int(v) for k, v in meta["site"].value_counts().sort_index().items()}
    if "view" in meta:
        out["views"] = {str(k): int(v) for k, v in meta["view"].value_counts().sort_index().items()}
    if "split" in meta:
        out["official_splits"] = {str(k): int(v) for k, v in meta["split"].value_counts().sort_index().items()}
    return out


def _check_npz(args: argparse.Namespace) -> int:
    from bfdl_tff.data import medmnist
    from bfdl_tff.data.tasks import encode_labels

    data = medmnist.read_npz(args.npz)
    task = medmnist.npz_task(data, path=args.npz, kind=args.task)
    x = data["train_images"]
    print(f"{args.npz}: OK, MedMNIST .npz ({medmnist.dataset_name(args.npz)}), {x.shape[1]} px, "
          f"{1 if x.ndim == 3 else x.shape[3]} channel(s)")
    print(f"  task: {task.describe()}: {', '.join(task.labels)}")
    for s in medmnist.SPLITS:
        y = encode_labels(data[f"{s}_labels"], task, source=f"{args.npz}: {s}_labels")
        pos = ", ".join(f"{lab} {int(v)}" for lab, v in zip(task.labels, y.sum(axis=0)))
        print(f"  {s}: {len(y)} images; positives: {pos}")
    print("  patients: none in MedMNIST (each image is its own pseudo-patient)")
    return 0


def _check(args: argparse.Namespace) -> int:
    if args.npz:
        return _check_npz(args)
    from bfdl_tff.data.tasks import Task

    rep = check_dataset(Path(args.root), decode=args.decode)
    task = Task.from_record(rep["task"])
    print(f"{rep['root']}: OK{' (SYNTHETIC, not NIH data)' if rep['synthetic'] else ''}")
    print(f"  metadata: {rep['metadata']}")
    print(f"  task: {task.describe()}")
    print(f"  images: {rep['images']} ({rep['files']} PNG files, all in the metadata), "
          f"patients: {rep['patients']}, {'no finding' if len(task.labels) == 14 else 'no positive label'}: {rep['no_finding']}")
    print("  per finding: " + ", ".join(f"{k} {v}" for k, v in rep["per_finding"].items()))
    print(f"  boxed images: {rep['boxed_images']}, masks: {rep['masks']}, decoded: {'all' if rep['decoded'] else 'no (header/trailer checked)'}")
    for key, what in (("images_per_site", "images per site"), ("views", "views"), ("official_splits", "official splits")):
        if key in rep:
            print(f"  {what}: " + ", ".join(f"{k}: {v}" for k, v in rep[key].items()))
    return 0


def _export_medmnist(args: argparse.Namespace) -> int:
    from bfdl_tff.data import medmnist
    from bfdl_tff.errors import DataError

    out = Path(args.out)
    if out.exists():
        raise DataError(f"{out}: already exists (choose a new directory)")
    medmnist.read_npz(args.npz)  # fail before creating anything
    tmp = out.with_name(f".{out.name}.partial")
    try:
        info = medmnist.export_medmnist(args.npz, tmp, kind=args.task)
        tmp.rename(out)
    finally:
        if tmp.exists():
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{out}: {sum(info['counts'].values())} images ({', '.join(f'{k} {v}' for k, v in info['counts'].items())}), "
          f"task {info['task']['kind']}: {', '.join(info['task']['labels'])}; pseudo-patients (no patient IDs)")
    return 0


def _partition(args: argparse.Namespace) -> int:
    from bfdl_tff.data import partition
    from bfdl_tff.data.prepare import make_manifests

    summary = make_manifests(Path(args.root), Path(args.out), hospitals=args.hospitals, scheme=args.scheme,
                             seed=args.seed, alpha=args.alpha, test_fraction=args.test_fraction,
                             val_fraction=args.val_fraction, test_list=Path(args.test_list) if args.test_list else None,
                             gzip_output=args.gzip, stratify_test=args.stratify_test)
    print(f"{args.out}: {args.hospitals} hospital manifest(s) + test ({args.scheme}, seed {args.seed})")
    print(partition.format_summary(summary))
    return 0


def _summary(args: argparse.Namespace) -> int:
    from bfdl_tff.data import loader, partition
    from bfdl_tff.data.manifest import manifest_task, read_manifest_dir

    frames = read_manifest_dir(args.manifests)
    meta = loader.read_metadata(args.root) if args.root else None
    summary = partition.summarize(frames, meta=meta, task=manifest_task(args.manifests))
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(partition.format_summary(summary))
    return 0


def _nih(args: argparse.Namespace) -> int:
    from bfdl_tff.data import nih

    if args.import_metadata:
        nih.import_metadata()
    ks = tuple(sorted(set(args.k))) if args.k else nih.KS
    rep = nih.regenerate(check=args.check, ks=ks)
    if args.check:
        print(f"{nih.NIH_DIR}: {rep['checked']} file(s) identical to a fresh regeneration (K = {', '.join(map(str, ks))}; "
              f"view scheme K = {', '.join(map(str, nih.VIEW_KS))})")
    else:
        print(f"{nih.NIH_DIR}: wrote {rep['written']} file(s) for K = {', '.join(map(str, ks))}, view scheme K = "
              f"{', '.join(map(str, nih.VIEW_KS))}, and SHA256SUMS")
    return 0
