"""Helpers of the ``bfdl evaluate`` tests (imported as ``eval_helpers``: pytest puts
``tests/evaluate`` on the path): tiny run directories, tiny NIH-layout datasets written as PNGs of
mixed bit depths, the shared real data, and the one-line CLI error check."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from bfdl_tff.config import DataConfig, ExperimentConfig, ModelRef
from bfdl_tff.data.labels import FINDINGS
from bfdl_tff.data.synth import DATA_ENTRY_HEADER_V2020
from bfdl_tff.runs import RunDir

REPO_ROOT = Path(__file__).resolve().parents[2]
#: small_cnn at 16 px with 4 filters: builds in well under a second.
TINY_MODEL = {"input_size": 16, "width": 4, "conv_layers": 2}
#: Labels that carry a signal in :func:`write_nih_dataset` (brighter images) and one that never occurs.
SIGNAL_LABEL, ABSENT_LABEL = "Effusion", "Hernia"


def shared_dir() -> Path:
    """``$BFDL_SHARED`` if set, else ``<repo>/../shared``."""
    env = os.environ.get("BFDL_SHARED")
    return Path(env) if env else REPO_ROOT.parent / "shared"


def one_error_line(err: str) -> str:
    """The CLI's stderr must be exactly one ``bfdl: error: ...`` line; returns it."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("bfdl: error: "), err
    return lines[0]


def make_run(path: Path, *, model_overrides: dict[str, Any] | None = None, seed: int = 0,
             weights: list[np.ndarray] | None = None, summary: dict[str, Any] | None = None,
             task: dict[str, Any] | None = None) -> RunDir:
    """A run directory as a finished run leaves it, without training: config.yaml, a released
    model (``weights``, else a freshly initialised small_cnn), optionally summary.json and a
    data record with ``task``."""
    from bfdl_tff.models import registry

    overrides = dict(TINY_MODEL if model_overrides is None else model_overrides)
    cfg = ExperimentConfig(name="evaltest", arm="federated", seed=seed,
                           data=DataConfig(source="synthetic", image_size=overrides.get("input_size", 64)),
                           model=ModelRef(config="small_cnn", overrides=overrides))
    run = RunDir.create(path, cfg)
    if weights is None:
        mcfg = registry.load_model_config("small_cnn", **overrides)
        weights = registry.build_model(mcfg, seed=seed).get_weights()
    run.save_model(weights)
    if task is not None:
        run.write_data_record(root=path / "data", manifest_dir=path / "manifests", synthetic=True, task=task)
    if summary is not None:
        run.write_json("summary.json", summary)
    return run


def _png(path: Path, gray: np.ndarray, flavour: str) -> None:
    """Write ``gray`` (float [0, 1]) as an 8-bit gray, 16-bit gray, RGB or RGBA PNG."""
    path.parent.mkdir(parents=True, exist_ok=True)
    g8 = np.clip(np.round(gray * 255), 0, 255).astype(np.uint8)
    if flavour == "gray16":
        img = Image.fromarray(g8.astype(np.uint16) * 257)  # mode I;16
    elif flavour == "rgb":
        img = Image.fromarray(np.stack([g8] * 3, -1))
    elif flavour == "rgba":
        img = Image.fromarray(np.concatenate([np.stack([g8] * 3, -1), np.full(g8.shape + (1,), 200, np.uint8)], -1))
    else:
        img = Image.fromarray(g8)
    img.save(path)


FLAVOURS = ("gray8", "gray16", "rgb", "rgba")


def write_nih_dataset(root: Path, *, n: int = 48, size: int = 24, seed: int = 0) -> dict[str, np.ndarray]:
    """A tiny NIH-layout dataset (v2020 Data_Entry, one image per patient) whose PNGs cycle
    through 8-bit gray, 16-bit gray, RGB and RGBA. :data:`SIGNAL_LABEL` images are brighter (a
    model can learn it in seconds); :data:`ABSENT_LABEL` never occurs; other labels are random.
    Returns ``{"images": names, "y": [n, 14]}``."""
    rng = np.random.default_rng(seed)
    y = (rng.random((n, len(FINDINGS))) < 0.25).astype(np.float32)
    y[:, FINDINGS.index(ABSENT_LABEL)] = 0
    sig = FINDINGS.index(SIGNAL_LABEL)
    y[: n // 2, sig], y[n // 2:, sig] = 1, 0
    names = [f"{i + 1:08d}_000.png" for i in range(n)]
    rows = [DATA_ENTRY_HEADER_V2020]
    for i, name in enumerate(names):
        gray = 0.25 + 0.35 * y[i, sig] + 0.1 * rng.random((size, size))
        _png(root / "images" / name, gray, FLAVOURS[i % len(FLAVOURS)])
        labels = "|".join(f for j, f in enumerate(FINDINGS) if y[i, j]) or "No Finding"
        rows.append(f"{name},{labels},0,{i + 1},40,F,PA,{size},{size},0.1,0.1")
    (root / "Data_Entry_2017.csv").write_text("\n".join(rows) + "\n")
    return {"images": np.array(names), "y": y}


def write_binary_dataset(root: Path, *, n: int = 12, size: int = 16) -> None:
    """A tiny dataset in the task layout with a binary task (``pneumonia``)."""
    (root / "task.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "task.json").write_text(json.dumps({"kind": "binary", "labels": ["pneumonia"]}))
    rows = ["image,patient_id,pneumonia"]
    for i in range(n):
        name = f"img_{i:03d}.png"
        _png(root / "images" / name, np.full((size, size), 0.2 + 0.05 * (i % 5)), "gray8")
        rows.append(f"{name},{i + 1},{i % 2}")
    (root / "image_labels.csv").write_text("\n".join(rows) + "\n")


def files_under(path: Path) -> set[str]:
    return {str(p.relative_to(path)) for p in path.rglob("*")} if path.exists() else set()
