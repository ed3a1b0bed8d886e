"""Reproduction profiles: ``configs/profiles/<name>.yaml`` (one source of configuration, issue 13.3).

A profile names one experiment config (``configs/experiments/<experiment>.yaml``) that is the
config of every run, plus the options of the stages (seeds per stage, attack sizes, benchmark
size, scalability K values, rounds for the privacy-budget table) and a description with the
expected runtime. Nothing of an experiment is rebuilt in Python: a run's config is

    experiment YAML  +  the profile's ``overlay`` (a nested mapping, usually empty)
                     +  what the stage varies (:data:`STAGE_VARIES`)
                     +  the per-run keys ``name``, ``arm``, ``seed``, ``data.root``.

The arm's semantics come from the arm itself: the runner applies DP, the secure sum and the ledger
hook to the ``bfdl`` arm only (paper 3.3: centralized = pooled data, federated = plain FedAvg,
B-FDL = FedAvg + DP + secure sum + PBFT ledger). Profiles are loaded strictly: an unknown key or a
wrong type names the profile file and the key.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bfdl_tff.config import (CONFIG_DIR, Arm, ExperimentConfig, from_dict, load_yaml_mapping,
                             resolve_experiment_config)
from bfdl_tff.errors import ConfigError
from bfdl_tff.privacy_eval.options import InversionOptions, MembershipOptions

PROFILE_DIR = CONFIG_DIR / "profiles"

#: What a stage changes in the experiment besides the per-run keys (the stage's meaning).
STAGE_VARIES: dict[str, dict[str, Any]] = {
    "ledger_off": {"ledger": {"enabled": False}},  # Fig. 5 with/without the ledger (C4)
    "client_dp": {"privacy": {"mode": "client"}},  # client-level DP at the same epsilon (CLAIMS note 2)
    # the privacy-utility curve (issue 14.3): the ledger does not change what is trained; off saves time
    "privacy_utility": {"ledger": {"enabled": False}},
}

#: ``privacy.noise_multiplier`` of the curve's no-noise point: DP-SGD with clipping and the privacy
#: unit but (practically) no noise (``0`` in the config means "calibrate from target_epsilon").
NO_NOISE_MULTIPLIER = 1e-7
#: The stage names a profile's ``stages`` may list (``stages.STAGE_NAMES``, in order; kept here so
#: profiles do not import the stages module, which imports this one; a test checks they agree).
KNOWN_STAGES: tuple[str, ...] = ("data", "arms", "ledger_off", "client_dp", "attacks", "ledger_bench", "scalability",
                                 "privacy_utility", "audit", "privacy_budget", "statistics", "figures", "report",
                                 "real_data")


@dataclass
class SeedsStage:
    seeds: list[int] = field(default_factory=lambda: [0])


@dataclass
class ScalabilityStage:
    """B-FDL with K hospitals for each K (Fig. 4, C10), a few rounds each."""

    ks: list[int] = field(default_factory=lambda: [3, 4])
    rounds: int = field(default=2, metadata={"min": 1})


@dataclass
class PrivacyUtilityStage:
    """The B-FDL arm at each target epsilon (privacy-utility curve, issue 14.3).

    Each point runs ``seeds``, or ``seeds_by_epsilon[eps]`` where given (YAML keys are the
    epsilons, e.g. ``{1: [0, 1, 2]}``). A point at the experiment's own ``privacy.target_epsilon``
    whose seed is one of the arms' seeds reuses that ``arms/bfdl-s<seed>`` run (same config apart
    from the ledger, which does not change training). ``no_noise`` adds DP-SGD with clipping only
    (:data:`NO_NOISE_MULTIPLIER`), run with ``seeds``."""

    epsilons: list[float] = field(default_factory=list)  # empty: the stage runs nothing
    no_noise: bool = False
    seeds: list[int] = field(default_factory=lambda: [0])
    seeds_by_epsilon: dict = field(default_factory=dict)

    def check(self) -> list[tuple[str, str]]:
        bad = [e for e in self.epsilons if not e > 0]
        if bad:
            return [("epsilons", f"every epsilon must be > 0, got {bad}")]
        if len(set(self.epsilons)) != len(self.epsilons):
            return [("epsilons", f"repeated values in {self.epsilons}")]
        for k, v in self.seeds_by_epsilon.items():
            if not isinstance(k, (int, float)) or isinstance(k, bool) or float(k) not in self.epsilons:
                return [(f"seeds_by_epsilon.{k}", f"not one of epsilons {self.epsilons}")]
            if not isinstance(v, list) or not v or not all(isinstance(x, int) and not isinstance(x, bool) for x in v):
                return [(f"seeds_by_epsilon.{k}", f"expected a non-empty list of integer seeds, got {v!r}")]
        return []

    def points(self) -> list[tuple[float | None, list[int]]]:
        """``(epsilon, seeds)`` per point, ``epsilon None`` = the no-noise point."""
        by = {float(k): list(v) for k, v in self.seeds_by_epsilon.items()}
        pts: list[tuple[float | None, list[int]]] = [(float(e), by.get(float(e), list(self.seeds)))
                                                     for e in sorted(self.epsilons)]
        return pts + ([(None, list(self.seeds))] if self.no_noise else [])


@dataclass
class AttacksStage:
    seeds: list[int] = field(default_factory=lambda: [0])  # attack the arms' runs of these seeds
    inversion: InversionOptions = field(default_factory=InversionOptions)
    membership: MembershipOptions = field(default_factory=MembershipOptions)


@dataclass
class LedgerBenchStage:
    """Options of ``ledger.bench.run_bench`` (``bfdl ledger bench``)."""

    transactions: int = field(default=2000, metadata={"min": 1})
    sweep: bool = False  # also the latency/throughput curve
    replicas: int = field(default=4, metadata={"min": 1})
    transport: str = "inproc"  # validated by ledger.bench


@dataclass
class PrivacyBudgetStage:
    """Noise for the target epsilon at client and sample level (C9)."""

    rounds: list[int] = field(default_factory=lambda: [10, 50])
    # hospital size of the NIH-like sample-level rows (an assumption, stated in the row name)
    nih_examples_per_hospital: int = field(default=30000, metadata={"min": 1})


@dataclass
class Profile:
    """One ``configs/profiles/<name>.yaml`` (``name`` is the file's stem)."""

    description: str = ""
    expected_runtime: str = ""
    experiment: str = ""  # a name under configs/experiments/ or a path
    overlay: dict = field(default_factory=dict)  # applied on top of the experiment for every run
    arms: SeedsStage = field(default_factory=SeedsStage)
    ledger_off: SeedsStage = field(default_factory=SeedsStage)
    client_dp: SeedsStage = field(default_factory=SeedsStage)
    scalability: ScalabilityStage = field(default_factory=ScalabilityStage)
    attacks: AttacksStage = field(default_factory=AttacksStage)
    ledger_bench: LedgerBenchStage = field(default_factory=LedgerBenchStage)
    privacy_budget: PrivacyBudgetStage = field(default_factory=PrivacyBudgetStage)
    privacy_utility: PrivacyUtilityStage = field(default_factory=PrivacyUtilityStage)
    # Real-data profiles (issue 15): the stages this profile runs (empty: every stage), its default
    # dataset root (--data-root overrides; for source medmnist: the .npz), its own runs / results
    # folders (relative to the repository root; --runs / --out override) and the label the report
    # gives its numbers (e.g. "real NIH images, 621-image sample").
    stages: list[str] = field(default_factory=list)
    data_root: str = ""
    runs: str = ""
    results: str = ""
    label: str = ""
    name: str = ""
    source: str = ""

    def check(self) -> list[tuple[str, str]]:
        problems = [(k, "required (a non-empty string)") for k in ("description", "expected_runtime", "experiment")
                    if not getattr(self, k).strip()]
        bad = [s for s in self.stages if s not in KNOWN_STAGES]
        if bad:
            problems.append(("stages", f"unknown stage(s) {bad} (known: {', '.join(KNOWN_STAGES)})"))
        return problems

    def experiment_file(self) -> Path:
        return resolve_experiment_config(self.experiment)

    def experiment_dict(self) -> dict[str, Any]:
        """The experiment YAML with the profile's overlay applied (the runs' shared config)."""
        return merge(load_yaml_mapping(self.experiment_file()), self.overlay)

    def base_config(self) -> ExperimentConfig:
        """The shared config, validated (the per-run keys at the experiment's values)."""
        return from_dict(ExperimentConfig, self.experiment_dict(), source=self._where())

    @property
    def synthetic(self) -> bool:
        return self.base_config().data.source == "synthetic"

    def run_config(self, arm: Arm, seed: int, *, name: str, data_root: Path, stage: str = "arms",
                   extra: dict[str, Any] | None = None) -> ExperimentConfig:
        """One run's config: experiment + overlay + what ``stage`` varies + ``extra`` + per-run keys."""
        d = merge(self.experiment_dict(), STAGE_VARIES.get(stage, {}))
        d = merge(d, extra or {})
        d = merge(d, {"name": name, "arm": arm, "seed": seed, "data": self.data_keys(data_root)})
        return from_dict(ExperimentConfig, d, source=self._where())

    def data_keys(self, data_root: Path) -> dict[str, str]:
        """What the dataset root sets: ``data.root``, or for a MedMNIST source ``data.npz`` when the
        root is a ``.npz`` file (the export directory then stays the experiment's ``data.root``)."""
        if self.base_config().data.source in ("medmnist", "chestmnist") and Path(data_root).suffix == ".npz":
            return {"npz": str(data_root)}
        return {"root": str(data_root)}

    def _where(self) -> str:
        return f"{self.experiment_file()} (profile {self.source or self.name})"


def merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``a`` updated recursively with ``b`` (mappings merged, everything else replaced)."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def profile_names() -> list[str]:
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def load_profile(name_or_path: str | Path) -> Profile:
    """``default`` -> ``configs/profiles/default.yaml``; a path is read as given."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = PROFILE_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(str(path), "", f"no such profile (known: {', '.join(profile_names())})")
    data = load_yaml_mapping(path)
    for key in ("name", "source"):
        if key in data:
            raise ConfigError(str(path), key, "set from the file name, not in the file")
    prof = from_dict(Profile, data, source=str(path))
    prof.name, prof.source = path.stem, str(path)
    try:
        prof.base_config()
    except ConfigError as e:
        raise ConfigError(str(path), "experiment", f"{e}") from None
    return prof


__all__ = ["KNOWN_STAGES", "NO_NOISE_MULTIPLIER", "PROFILE_DIR", "STAGE_VARIES", "AttacksStage", "LedgerBenchStage",
           "PrivacyBudgetStage", "PrivacyUtilityStage", "Profile",
           "ScalabilityStage", "SeedsStage", "load_profile", "merge", "profile_names"]
