"""One shared plotting style and deterministic writers for every figure and table (paper Fig. 2-5).

Determinism (issue 9: "rerunning regenerates identical figures from the same results"):

* the Agg backend, a fixed font (DejaVu Sans, bundled with matplotlib, so no system-font lookup),
  fixed sizes and DPI, ``svg.hashsalt`` fixed;
* PNG written with ``metadata={"Software": None}`` (no matplotlib version string), PDF with
  ``CreationDate``/``ModDate``/``Producer``/``Creator`` removed, so a rerun is byte-identical;
* CSVs written by :func:`write_csv` with a fixed float format, ``\\n`` line endings and the row
  order given by the caller (callers sort).

Everything goes through :mod:`bfdl_tff.io_utils` atomic writes.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Iterable, Sequence

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from bfdl_tff.io_utils import atomic_write_bytes, atomic_write_text  # noqa: E402

# Display names and colours per arm (keys: bfdl_tff.config.ARMS; other arms found in results get
# their own name and EXTRA_COLORS).
ARM_LABELS = {"centralized": "Centralized", "federated": "Federated (no ledger)", "bfdl": "B-FDL"}
ARM_SHORT = {"centralized": "Central", "federated": "FL", "bfdl": "B-FDL"}
ARM_COLORS = {"centralized": "#4C72B0", "federated": "#DD8452", "bfdl": "#55A868"}
EXTRA_COLORS = ("#C44E52", "#8172B3", "#937860", "#DA8BC3", "#8C8C8C")

DPI = 150
FLOAT_FORMAT = "%.6g"

_RC = {
    "font.family": "DejaVu Sans",
    "font.size": 9,
    "axes.titlesize": 10,
    "axes.labelsize": 9,
    "xtick.labelsize": 8,
    "ytick.labelsize": 8,
    "legend.fontsize": 8,
    "figure.dpi": DPI,
    "savefig.dpi": DPI,
    "svg.hashsalt": "bfdl-tff",
    "pdf.fonttype": 42,
    "path.simplify": False,
    "axes.grid": True,
    "grid.alpha": 0.3,
}


def apply_style() -> None:
    """Set the shared seaborn/matplotlib style (idempotent)."""
    sns.set_theme(context="paper", style="whitegrid", palette="deep", rc=_RC)
    matplotlib.rcParams.update(_RC)


def new_figure(ncols: int = 1, nrows: int = 1, *, width: float = 6.4, height: float = 3.6) -> tuple[Any, Any]:
    apply_style()
    fig, axes = plt.subplots(nrows, ncols, figsize=(width, height), squeeze=False)
    return fig, axes


def save_figure(fig: Any, out_base: Path) -> list[Path]:
    """Write ``out_base.png`` and ``out_base.pdf`` deterministically; close the figure."""
    out_base = Path(out_base)
    written = []
    fig.tight_layout()
    for ext, meta in (
        ("png", {"Software": None}),
        ("pdf", {"CreationDate": None, "ModDate": None, "Producer": None, "Creator": None}),
    ):
        buf = io.BytesIO()
        fig.savefig(buf, format=ext, metadata=meta, dpi=DPI)
        path = out_base.with_suffix(f".{ext}")
        atomic_write_bytes(path, buf.getvalue())
        written.append(path)
    plt.close(fig)
    return written


def write_csv(df: pd.DataFrame, path: Path) -> Path:
    """Deterministic CSV (fixed float format, ``\\n`` endings, no index)."""
    text = df.to_csv(index=False, float_format=FLOAT_FORMAT, lineterminator="\n")
    atomic_write_text(path, text)
    return Path(path)


def fmt(value: Any, digits: int = 3) -> str:
    """Format a number for Markdown tables; ``None``/NaN -> ``n/a``."""
    if value is None:
        return "n/a"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if v != v:  # NaN
        return "n/a"
    if v.is_integer() and abs(v) >= 10:
        return str(int(v))
    if abs(v) >= 1e7:
        return f"{v:.{max(digits, 1) + 2}g}"
    if abs(v) >= 1000:
        return f"{v:.0f}"  # e.g. 2655 tx/s, not 2.66e+03
    if v != 0 and abs(v) < 10 ** (-digits):
        return f"{v:.{digits}g}"
    return f"{v:.{digits}f}"


def fmt_mean_sd(mean: Any, sd: Any, n: int, digits: int = 3) -> str:
    if mean is None or n == 0:
        return "n/a"
    if n == 1 or sd is None or sd != sd:
        return f"{fmt(mean, digits)} (n=1)"
    return f"{fmt(mean, digits)} ± {fmt(sd, digits)} (n={n})"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    def cell(x: Any) -> str:
        return str(x).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(cell(x) for x in r) + " |")
    return "\n".join(lines) + "\n"


def arm_color(arm: str, i: int = 0) -> str:
    return ARM_COLORS.get(arm, EXTRA_COLORS[i % len(EXTRA_COLORS)])


def arm_label(arm: str) -> str:
    return ARM_LABELS.get(arm, arm)


def arm_short(arm: str) -> str:
    return ARM_SHORT.get(arm, arm)


def no_data(ax: Any, message: str) -> None:
    """Mark a panel whose result files are missing (never draw made-up data)."""
    ax.text(0.5, 0.5, message, ha="center", va="center", transform=ax.transAxes, fontsize=8, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])
