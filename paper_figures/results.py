"""Read-only access to result files, with provenance (every number knows the file it came from).

The figures and the report read **only** these files (``docs/INTERFACES.md``, "Result files"):

* per run ``<run>/summary.json``, ``<run>/metrics.csv``, ``<run>/config.yaml``,
  ``<run>/environment.json``, ``<run>/ledger/ledger_summary.json``, ``<run>/audit/verify.json``,
  ``<run>/attacks/{inversion,membership}.json``;
* ``ledger_bench/bench.json`` (``bfdl ledger bench --json``);
* ``privacy_budget/noise_for_eps1.json`` (written by the reproduction's privacy-budget stage).

Layout of the runs root written by :mod:`bfdl_tff.reproduce` (``docs/reproduction.md``)::

    runs/arms/<arm>-s<seed>/        the three arms, >= 3 seeds (Table 3.3, Fig. 2, 3, 5)
    runs/ledger_off/bfdl-s<seed>/   B-FDL with the ledger hook disabled (Fig. 5, claim C4)
    runs/client_dp/bfdl-s<seed>/    client-level DP at epsilon = 1 (CLAIMS note 2)
    runs/scalability/k<K>/          B-FDL with K = 3..10 hospitals (Fig. 4, claim C10)
    runs/ledger_bench/bench.json    ledger benchmark (claims C4, C6)
    runs/privacy_budget/noise_for_eps1.json

Run files are named by :class:`bfdl_tff.runs.RunDir`; the arm of a run is read from its
``summary.json`` (``arm``), falling back to ``config.yaml``.

``summary.json`` key names are resolved through :data:`ALIASES` (one place to adapt if the
federated core names a key differently); per-finding AUC, epsilon per round and communication
totals fall back to the documented ``metrics.csv`` columns.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

import pandas as pd

from bfdl_tff.config import ARMS, to_dict
from bfdl_tff.runs import RunDir

FINDINGS: tuple[str, ...] = (
    "Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
    "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia",
)

ARMS_DIR = "arms"
LEDGER_OFF_DIR = "ledger_off"
CLIENT_DP_DIR = "client_dp"
SCALABILITY_DIR = "scalability"
LEDGER_BENCH_FILE = "ledger_bench/bench.json"
PRIVACY_BUDGET_FILE = "privacy_budget/noise_for_eps1.json"

# Logical name -> candidate keys in summary.json (dotted paths; tried as given and under the
# containers in _CONTAINERS).
ALIASES: dict[str, tuple[str, ...]] = {
    "macro_auc": ("macro_auc", "test_macro_auc", "final_macro_auc", "auc.macro", "auc_macro"),
    "micro_auc": ("micro_auc", "test_micro_auc", "final_micro_auc", "auc.micro", "auc_micro"),
    "per_finding_auc": ("per_finding_auc", "auc_per_finding", "finding_auc", "auc.per_finding"),
    "precision_macro": ("precision_macro", "macro_precision", "precision.macro"),
    "precision_micro": ("precision_micro", "micro_precision", "precision.micro"),
    "recall_macro": ("recall_macro", "macro_recall", "recall.macro"),
    "recall_micro": ("recall_micro", "micro_recall", "recall.micro"),
    "f1_macro": ("f1_macro", "macro_f1", "f1.macro"),
    "f1_micro": ("f1_micro", "micro_f1", "f1.micro"),
    "threshold_rule": ("threshold_rule", "thresholds.rule", "threshold.rule"),
    "per_label_accuracy": ("per_label_accuracy", "label_accuracy", "accuracy.per_label", "accuracy_per_label"),
    "mean_label_accuracy": ("mean_per_label_accuracy", "mean_label_accuracy", "accuracy.mean", "per_label_accuracy_mean"),
    "all_negative_accuracy": (
        "all_negative_accuracy", "all_negative_baseline_accuracy", "all_negative_baseline",
        "baseline_all_negative_accuracy", "accuracy.all_negative",
    ),
    "epsilon": ("epsilon", "privacy.epsilon", "final_epsilon"),
    "delta": ("delta", "privacy.delta"),
    "accountant": ("accountant", "privacy.accountant"),
    "noise_multiplier": ("noise_multiplier", "privacy.noise_multiplier"),
    "privacy_mode": ("privacy_mode", "privacy.mode", "dp_mode"),
    "bytes_total": ("bytes_total", "total_bytes", "communication.total_bytes", "communication.bytes_total", "cum_bytes", "communication.total"),
    "bytes_broadcast": ("bytes_broadcast", "communication.bytes_broadcast", "communication.broadcast"),
    "bytes_uploaded": ("bytes_uploaded", "communication.bytes_uploaded", "communication.uploaded"),
    "wall_s": ("wall_s", "wall_seconds", "total_wall_s", "wall_time_s", "runtime_s", "wall_time"),
    "rounds": ("rounds", "num_rounds"),
    "synthetic": ("synthetic", "data.synthetic"),
    "arm": ("arm",),
    "seed": ("seed",),
}
_CONTAINERS = ("", "final.", "test.", "metrics.", "eval.", "evaluation.")


def _dig(obj: Any, dotted: str) -> Any:
    cur = obj
    for part in dotted.split("."):
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        else:
            return None
    return cur


def lookup(summary: dict, name: str) -> Any:
    """Value of logical key ``name`` in a summary dict (``None`` when absent)."""
    for cand in ALIASES.get(name, (name,)):
        for c in _CONTAINERS:
            v = _dig(summary, c + cand)
            if v is not None:
                return v
    return None


def as_float(v: Any) -> float | None:
    """A scalar, or the mean of a per-label dict/list; ``None`` when not numeric."""
    if v is None or isinstance(v, bool):
        return None
    if isinstance(v, dict):
        vals = [as_float(x) for x in v.values()]
        vals = [x for x in vals if x is not None]
        return sum(vals) / len(vals) if vals else None
    if isinstance(v, (list, tuple)):
        vals = [as_float(x) for x in v]
        vals = [x for x in vals if x is not None]
        return sum(vals) / len(vals) if vals else None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(f) else f


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


# --------------------------------------------------------------------------------------------
@dataclass
class Measured:
    """A quantity measured over runs/seeds, with the files it was read from."""

    values: list[float] = field(default_factory=list)
    sources: list[Path] = field(default_factory=list)

    def add(self, value: float | None, source: Path) -> None:
        if value is None:
            return
        self.values.append(float(value))
        self.sources.append(Path(source))

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float | None:
        return sum(self.values) / len(self.values) if self.values else None

    @property
    def sd(self) -> float | None:
        """Sample standard deviation (ddof = 1); ``None`` for fewer than two values."""
        if len(self.values) < 2:
            return None
        m = self.mean
        return math.sqrt(sum((x - m) ** 2 for x in self.values) / (len(self.values) - 1))


@dataclass
class Run:
    """One run directory (``runs/<group>/<name>/``) and its result files, named by
    :class:`bfdl_tff.runs.RunDir` (the owner of the run layout)."""

    run_dir: RunDir
    summary: dict
    config: dict  # the resolved config.yaml as a mapping

    @property
    def path(self) -> Path:
        return self.run_dir.path

    @property
    def name(self) -> str:
        return self.run_dir.name

    @property
    def summary_file(self) -> Path:
        return self.run_dir.summary_file

    @property
    def metrics_file(self) -> Path:
        return self.run_dir.metrics_file

    @property
    def environment_file(self) -> Path:
        return self.run_dir.environment_file

    @property
    def config_file(self) -> Path:
        return self.run_dir.config_file

    @property
    def ledger_summary_file(self) -> Path:
        return self.run_dir.ledger_dir / "ledger_summary.json"

    @property
    def verify_file(self) -> Path:
        return self.run_dir.audit_dir / "verify.json"

    @property
    def arm(self) -> str:
        return str(lookup(self.summary, "arm") or self.config.get("arm") or "unknown")

    @property
    def seed(self) -> int:
        s = lookup(self.summary, "seed")
        if s is None:
            s = self.config.get("seed", -1)
        return int(s)

    def get(self, name: str) -> Any:
        return lookup(self.summary, name)

    def metrics(self) -> pd.DataFrame | None:
        if not self.metrics_file.is_file():
            return None
        df = pd.read_csv(self.metrics_file)
        return df if len(df) else None

    def ledger_summary(self) -> dict | None:
        p = self.ledger_summary_file
        return read_json(p) if p.is_file() else None

    def per_finding_auc(self) -> tuple[dict[str, float], Path] | None:
        v = self.get("per_finding_auc")
        if isinstance(v, dict) and v:
            return {k: float(x) for k, x in v.items() if as_float(x) is not None}, self.summary_file
        if isinstance(v, list) and len(v) == len(FINDINGS):
            return {f: float(x) for f, x in zip(FINDINGS, v) if as_float(x) is not None}, self.summary_file
        df = self.metrics()
        if df is not None:
            cols = [c for c in df.columns if c.startswith("auc_")]
            if cols:
                last = df.iloc[-1]
                out = {c[4:]: float(last[c]) for c in cols if not pd.isna(last[c])}
                return out, self.metrics_file
        return None

    def communication_bytes(self) -> tuple[float, Path] | None:
        v = as_float(self.get("bytes_total"))
        if v is None:
            b, u = as_float(self.get("bytes_broadcast")), as_float(self.get("bytes_uploaded"))
            if b is not None and u is not None:
                v = b + u
        if v is not None:
            return v, self.summary_file
        df = self.metrics()
        if df is not None and "cum_bytes" in df.columns:
            return float(df["cum_bytes"].iloc[-1]), self.metrics_file
        return None

    def wall_seconds(self) -> tuple[float, Path] | None:
        v = as_float(self.get("wall_s"))
        if v is not None:
            return v, self.summary_file
        df = self.metrics()
        if df is not None and "wall_s" in df.columns:
            return float(df["wall_s"].sum()), self.metrics_file
        return None

    def attack_file(self, name: str) -> Path:
        return self.run_dir.attacks_dir / name


def load_run(path: Path) -> Run | None:
    """A finished run (with ``summary.json``); ``None`` for an unfinished or foreign directory.
    A run whose ``config.yaml`` does not load is an error naming the file."""
    path = Path(path)
    if not (path / "config.yaml").is_file():
        return None
    rd = RunDir.open(path)
    if not rd.summary_file.is_file():
        return None
    return Run(run_dir=rd, summary=rd.summary(), config=to_dict(rd.config))


def _natural_key(p: Path) -> list[Any]:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", p.name)]


def load_group(runs_root: Path, group: str) -> list[Run]:
    """Finished runs under ``runs_root/group/`` (sorted by name, naturally)."""
    d = Path(runs_root) / group
    if not d.is_dir():
        return []
    out = []
    for p in sorted((x for x in d.iterdir() if x.is_dir() and ".old-" not in x.name), key=_natural_key):
        r = load_run(p)
        if r is not None:
            out.append(r)
    return out


def by_arm(runs: Iterable[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for r in runs:
        out.setdefault(r.arm, []).append(r)
    for v in out.values():
        v.sort(key=lambda r: r.seed)
    return out


def ordered_arms(arms: Iterable[str]) -> list[str]:
    """The paper's arms in :data:`bfdl_tff.config.ARMS` order, then any other arm found in the results."""
    arms = list(arms)
    return [a for a in ARMS if a in arms] + sorted(a for a in arms if a not in ARMS)


def measure(runs: Sequence[Run], name: str) -> Measured:
    """Logical summary key ``name`` over ``runs`` (dict/list values are averaged per run)."""
    m = Measured()
    for r in runs:
        m.add(as_float(r.get(name)), r.summary_file)
    return m


def describe_sources(paths: Sequence[Path], root: Path | None = None) -> str:
    """Compact file list: ``runs/arms/bfdl-s{0,1,2}/summary.json``."""
    if not paths:
        return ""
    rel = []
    for p in dict.fromkeys(Path(x) for x in paths):
        try:
            rel.append(str(p.relative_to(root)) if root else str(p))
        except ValueError:
            rel.append(str(p))
    if len(rel) == 1:
        return rel[0]
    # group by the pattern with the run-name digits wildcarded
    groups: dict[tuple[str, str], list[str]] = {}
    order: list[tuple[str, str]] = []
    for s in rel:
        m = re.match(r"^(.*?-s)(\d+)(/.*)$", s)
        key = (m.group(1), m.group(3)) if m else (s, "")
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(m.group(2) if m else "")
    parts = []
    for key in order:
        if key[1] == "" and groups[key] == [""]:
            parts.append(key[0])
        elif len(groups[key]) == 1:
            parts.append(f"{key[0]}{groups[key][0]}{key[1]}")
        else:
            parts.append(f"{key[0]}{{{','.join(groups[key])}}}{key[1]}")
    return ", ".join(parts)


def wilson_interval(successes: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95 % by default)."""
    if n <= 0:
        return (float("nan"), float("nan"))
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes <= 0 else max(0.0, centre - half)
    hi = 1.0 if successes >= n else min(1.0, centre + half)
    return (lo, hi)
