"""The closing run record that binds a run's results to its chain (issue 17.3; paper 1.2
objective 6 "prevent unauthorised modifications", 3.4).

After the runner has written ``summary.json`` and ``final_model.npz``, the round hook's
``on_end`` submits one ``run.finalize`` transaction signed by the aggregator::

    {"rounds": N, "files": {"metrics.csv": sha256, "summary.json": sha256,
                            "config.yaml": sha256, "final_model.npz": sha256}}

The contract accepts it once, only when no round is open, and no round may open after it.
``bfdl audit verify`` re-hashes the four files and compares them (and ``N``) with this record.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from ledger.txkinds import RUN_FILES

from bfdl_tff.runs import RunDir

#: The run files bound by ``run.finalize`` (the contract's list), in the order the audit reports them.
RESULT_FILES: tuple[str, ...] = tuple(RUN_FILES)


def result_files(run: RunDir) -> dict[str, Path]:
    """The bound files of ``run`` by their name in the finalize record."""
    paths = {"metrics.csv": run.metrics_file, "summary.json": run.summary_file,
             "config.yaml": run.config_file, "final_model.npz": run.final_model_file}
    return {name: paths[name] for name in RESULT_FILES}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def finalize_payload(run: RunDir, *, rounds: int) -> dict[str, object]:
    """The ``run.finalize`` payload for ``run`` (raises ``FileNotFoundError`` naming a missing file)."""
    files = {}
    for name, path in result_files(run).items():
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; the runner writes it before the hook's on_end")
        files[name] = sha256_file(path)
    return {"rounds": int(rounds), "files": files}


__all__ = ["RESULT_FILES", "finalize_payload", "result_files", "sha256_file"]
