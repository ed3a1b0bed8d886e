"""``bfdl info``: versions of the stack, execution context and CPU count."""

from __future__ import annotations

import argparse
import json
import os


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("info", help="print versions of Python, TF, TFF, TFP, dp-accounting, Keras; context; CPUs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--no-import",
        action="store_true",
        help="read versions from package metadata only (do not import TensorFlow)",
    )
    p.set_defaults(func=run)


def collect(import_stack: bool = True) -> dict:
    from bfdl_tff.runs import package_versions

    info: dict = {"versions": package_versions(), "cpu_count": os.cpu_count()}
    try:
        info["cpu_affinity"] = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover
        pass
    if import_stack:
        import tensorflow as tf
        import tensorflow_federated as tff

        from bfdl_tff import tff_runtime

        info["imported"] = {
            "tensorflow": tf.__version__,
            "tensorflow_federated": tff.__version__,
            "keras": tf.keras.__version__ if hasattr(tf.keras, "__version__") else "bundled",
        }
        info["gpus"] = [d.name for d in tf.config.list_physical_devices("GPU")]
        info["execution_context"] = {
            "default": "native (tff.backends.native sync local C++ context)",
            "secure_sum": "test (tff.backends.test sync test C++ context; secure intrinsics simulated as plain sums)",
            "installed_now": tff_runtime.current_context() or "none",
        }
    return info


def run(args: argparse.Namespace) -> int:
    info = collect(import_stack=not args.no_import)
    if args.json:
        print(json.dumps(info, indent=2, sort_keys=True))
        return 0
    v = info["versions"]
    print(f"bfdl-tff {v['bfdl-tff']}")
    print(f"Python {v['python']}")
    for name in ("tensorflow", "tensorflow-federated", "tensorflow-privacy", "dp-accounting", "keras",
                 "numpy", "pandas", "scikit-learn", "cryptography", "hvac"):
        print(f"{name:22s} {v[name]}")
    if "imported" in info:
        print(f"{'execution context':22s} {info['execution_context']['default']}")
        print(f"{'secure-sum context':22s} {info['execution_context']['secure_sum']}")
        print(f"{'GPUs':22s} {len(info['gpus'])}")
    print(f"{'CPU count':22s} {info['cpu_count']} (usable: {info.get('cpu_affinity', '?')})")
    return 0
