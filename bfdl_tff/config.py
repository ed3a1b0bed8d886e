"""Experiment configuration: YAML files under ``configs/`` loaded into typed dataclasses.

Validation is strict and every error names the file and the dotted key:
unknown keys, wrong types and impossible values raise :class:`bfdl_tff.errors.ConfigError`
(``bfdl`` prints it on one line and exits with code 2). Every number read into a ``float`` field
must be finite: NaN and infinities (YAML ``.nan``, ``.inf``) are refused for all of them, in every
section and in any file loaded with :func:`from_dict` (model configs too).

Field constraints live in ``dataclasses.field(metadata=...)``:
``choices`` (allowed values), ``min`` / ``max`` (inclusive), ``gt`` (exclusive lower bound).
Cross-field checks go in a ``check(self) -> list[tuple[str, str]]`` method returning
``(key, message)`` pairs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, Union, get_args, get_origin, get_type_hints

import yaml

from bfdl_tff.errors import ConfigError

T = TypeVar("T")

#: The three arms of the paper's comparison (3.3): pooled Keras training, plain FedAvg, B-FDL.
#: The single definition of the arm set; everything else derives from it.
Arm = Literal["centralized", "federated", "bfdl"]
ARMS: tuple[Arm, ...] = get_args(Arm)

REPO_ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = REPO_ROOT / "configs"


def _c(default: Any, **meta: Any) -> Any:
    """Shorthand for a field with a default and validation metadata."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=meta)
    return field(default=default, metadata=meta)


# --------------------------------------------------------------------------------------------
# Sections. Ownership: data -> DataConfig, models -> ModelRef, federated core -> FederatedConfig,
# PrivacyConfig, EvalConfig; ledger/integration -> LedgerConfig, KeysConfig.
# --------------------------------------------------------------------------------------------


@dataclass
class DataConfig:
    """Where the images come from and how they are split into hospitals (paper 3.1)."""

    # medmnist: any MedMNIST 2D .npz (`npz`); chestmnist: the same with the NIH 14-finding task.
    source: str = _c("synthetic", choices=("synthetic", "nih", "medmnist", "chestmnist"))
    # Dataset root in the NIH layout (Data_Entry_2017.csv[.gz] + images/); for `synthetic` it is
    # generated there if missing; for `medmnist` the .npz is exported (PNGs) under it once.
    # Relative paths are resolved against the repository root.
    root: str = "data/synthetic"
    # Directory with hospital_a.csv ... and test.csv. Empty: partition at run time into the run dir.
    manifests: str = ""
    image_size: int = _c(64, min=16, max=1024)
    hospitals: int = _c(3, min=1, max=10)
    scheme: str = _c("dirichlet", choices=("iid", "dirichlet", "quantity", "site", "view"))
    alpha: float = _c(0.5, gt=0.0)
    test_fraction: float = _c(0.2, gt=0.0, max=0.9)
    val_fraction: float = _c(0.1, min=0.0, max=0.9)
    # Synthetic generator settings (used only when source == synthetic).
    synth_images: int = _c(1500, min=10)
    synth_site_shift: bool = True
    # Acquisition sites of the synthetic source; 0 = one site per hospital.
    synth_sites: int = _c(0, min=0, max=26)
    # Global factor on the generator's calibrated per-finding signal (synth.FINDING_GAINS; 1 = the
    # calibration of docs/sweeps.md) and the enrichment of rare findings (0 = real prevalence).
    synth_signal: float = _c(1.0, gt=0.0, max=5.0)
    synth_min_prevalence: float = _c(0.0, min=0.0, max=0.05)
    # Optional held-out test list (one image name per line, first token used; e.g. the official
    # NIH test_list.txt). Empty: a seeded patient-level test_fraction.
    test_list: str = ""
    # MedMNIST .npz path (source == medmnist / chestmnist).
    npz: str = ""
    # medmnist: the task kind ("" = inferred from the labels: one 0/1 column -> binary, class
    # indices -> multiclass, C 0/1 columns -> multilabel) and label names ([] = MedMNIST's names
    # for known datasets, else generic).
    task: str = _c("", choices=("", "multilabel", "binary", "multiclass"))
    label_names: list[str] = _c([])
    # Seeded test_fraction taken within each primary class (every label keeps ~test_fraction of
    # its positives in test); for small datasets such as the 621-image NIH sample.
    stratify_test: bool = False

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if (self.task or self.label_names) and self.source != "medmnist":
            problems.append(("task" if self.task else "label_names", f"applies to source medmnist, not {self.source!r}"))
        return problems


@dataclass
class ModelRef:
    """Which Keras model: a registry config name or a path to a model config file."""

    config: str = "small_cnn"
    # Optional overrides applied on top of the model config (e.g. {dropout: 0.2}).
    overrides: dict = _c({})


@dataclass
class FederatedConfig:
    """FedAvg schedule (paper 2.1: w_{t+1} = sum_k n_k/n w_t^k)."""

    rounds: int = _c(10, min=1)
    local_epochs: int = _c(1, min=1)
    batch_size: int = _c(16, min=1)
    clients_per_round: int = _c(0, min=0)  # 0 = all hospitals take part every round
    client_optimizer: str = _c("sgd", choices=("sgd", "adam"))
    client_lr: float = _c(0.05, gt=0.0)
    client_momentum: float = _c(0.9, min=0.0, max=1.0)
    server_optimizer: str = _c("sgd", choices=("sgd", "adam"))
    server_lr: float = _c(1.0, gt=0.0)
    server_momentum: float = _c(0.0, min=0.0, max=1.0)
    # Centralized arm: epochs over the pooled data = rounds * local_epochs by default.
    centralized_epochs: int = _c(0, min=0)
    # Round checkpoints kept in RUN_DIR/checkpoints (0 = keep all).
    keep_checkpoints: int = _c(2, min=0)


@dataclass
class PrivacyConfig:
    """Differential privacy and secure aggregation (paper 3.1, 3.5)."""

    mode: str = _c("sample", choices=("none", "client", "sample"))
    target_epsilon: float = _c(1.0, gt=0.0)
    delta: float = _c(1e-5, gt=0.0, max=0.1)
    # Set explicitly to skip calibration; 0 = calibrate from target_epsilon.
    noise_multiplier: float = _c(0.0, min=0.0)
    l2_clip: float = _c(1.0, gt=0.0)
    adaptive_clipping: bool = False
    accountant: str = _c("rdp", choices=("rdp", "pld"))
    # Secure aggregation of the bfdl arm (issue 18; docs/secagg.md): "masked" = the cryptographic
    # protocol (bfdl_tff.secagg: pairwise + self masks, Shamir dropout recovery, transcript on the
    # ledger), "tff_secure_sum" = TFF's SecureSumFactory (semantics only, no cryptography), "none".
    # "" = the default: masked, unless an old file sets secure_sum.
    secure_aggregation: str = _c("", choices=("", "masked", "tff_secure_sum", "none"))
    # Deprecated (files written before issue 18): true = tff_secure_sum, false = none.
    secure_sum: bool | None = None
    # Masked protocol: ring Z_2^b (TFF sums int64, so b <= 32), per-coordinate range R of each
    # hospital's weighted update (clipped to [-R, R], counted), Shamir threshold t (0 = majority of
    # the share holders), SecAgg+ neighbours k (0 = every pair), survivor-list consistency check.
    secagg_bits: int = _c(32, min=8, max=32)
    secagg_clip: float = _c(1.0, gt=0.0)
    secagg_threshold: int = _c(0, min=0)
    secagg_neighbours: int = _c(0, min=0)
    secagg_consistency_check: bool = True
    # Calibration gives up (error before training) if epsilon needs a larger noise multiplier.
    max_noise_multiplier: float = _c(100.0, gt=0.0)
    # Adaptive clipping (client mode): quantile target, learning rate, clipped-count noise
    # (0 = max(0.05 * clients_per_round, noise_multiplier)).
    target_unclipped_quantile: float = _c(0.5, gt=0.0, max=1.0)
    clip_learning_rate: float = _c(0.2, gt=0.0)
    clipped_count_stddev: float = _c(0.0, min=0.0)
    # Sample mode (DP-SGD): the privacy unit. patient: each sampled patient contributes the sum of
    # its images' gradients, clipped as one (guarantee per patient); image: per image.
    unit: str = _c("patient", choices=("patient", "image"))
    # Images of a sampled patient used per step (drawn without replacement, seeded); 0 = all. Not a
    # privacy bound (the patient's summed gradient is clipped whatever its size): it bounds work.
    max_images_per_patient: int = _c(0, min=0)
    # Where the DP noise comes from (issue 16.5; docs/privacy.md): "recorded" = derived from the
    # run's seeds (written to summary.json / environment.json: exact reruns, simulation only);
    # "system" = deployment: drawn from the OS CSPRNG at run time, no noise seed written anywhere
    # (seeds.dp_noise must then be left unset).
    noise_seed: str = _c("recorded", choices=("recorded", "system"))
    # Calibrate each hospital's noise multiplier from its own n_k and steps (else one shared).
    per_hospital_noise: bool = True
    # Expected images per DP-SGD step (q_k = batch_size / n_k); 0 = federated.batch_size.
    batch_size: int = _c(0, min=0)
    # Optimiser of the private arm's clients and server when they differ from federated.*:
    # "" / 0 / -1 = inherit client_optimizer / client_lr / client_momentum / server_lr / server_momentum.
    client_optimizer: str = _c("", choices=("", "sgd", "adam"))
    client_lr: float = _c(0.0, min=0.0)
    client_momentum: float = _c(-1.0, min=-1.0, max=1.0)
    server_lr: float = _c(0.0, min=0.0)
    server_momentum: float = _c(-1.0, min=-1.0, max=1.0)

    @property
    def aggregation(self) -> str:
        """The secure aggregation in effect: ``masked``, ``tff_secure_sum`` or ``none``."""
        if self.secure_aggregation:
            return self.secure_aggregation
        if self.secure_sum is not None:
            return "tff_secure_sum" if self.secure_sum else "none"
        return "masked"

    def check(self) -> list[tuple[str, str]]:
        if self.secure_aggregation and self.secure_sum is not None:
            return [("secure_sum", "replaced by privacy.secure_aggregation (masked | tff_secure_sum | none); "
                     "remove secure_sum (true = tff_secure_sum, false = none)")]
        if self.mode == "client" and self.adaptive_clipping and self.aggregation != "none":
            return [("adaptive_clipping", f"cannot be combined with secure_aggregation: {self.aggregation} (the "
                     "clipped-count query runs inside TFF's aggregator); set privacy.secure_aggregation: none")]
        return []


@dataclass
class EvalConfig:
    every: int = _c(1, min=1)
    threshold_rule: str = _c("youden_val", choices=("youden_val", "f1_val", "fixed"))
    fixed_threshold: float = _c(0.5, gt=0.0, max=1.0)


@dataclass
class LedgerConfig:
    """The PBFT ledger behind the B-FDL round hook (paper 3.4)."""

    enabled: bool = True
    replicas: int = _c(4, min=1, max=31)
    # inproc: one-thread simulated network (deterministic); threads: each replica in a thread of
    # this process (ledger.threadnet); tcp: replica processes on loopback.
    transport: str = _c("inproc", choices=("inproc", "threads", "tcp"))
    checkpoint_interval: int = _c(10, min=1)
    batch_size: int = _c(64, min=1)
    epsilon_cap: float = _c(0.0, min=0.0)  # 0 = use privacy.target_epsilon
    # B-FDL hook: wait for every round's PBFT commit before training continues (measurement only;
    # by default rounds are committed in the background and the run waits at its end).
    wait_for_commit: bool = False


@dataclass
class KeysConfig:
    """Institution signing keys (paper 3.1, 3.4); never inside a run directory (issue 17.4)."""

    backend: str = _c("local", choices=("local", "vault"))
    # Local keystore directory (also holds the ledger's replica keys under ledger/<chain id>/);
    # empty = $BFDL_KEYSTORE, else ~/.local/share/bfdl-tff/keystore. Must be outside the run dir.
    path: str = ""
    vault_url: str = "http://127.0.0.1:8200"
    vault_mount: str = "transit"
    # The token is read from this environment variable, never from a file in the repository.
    vault_token_env: str = "VAULT_TOKEN"
    # Create missing institution keys at the start of a run (false: a missing key is an error).
    create_missing: bool = True


@dataclass
class SeedConfig:
    """Seeds for every random choice (derived from ``seed`` when left at -1)."""

    partition: int = -1
    model_init: int = -1
    client_sampling: int = -1
    dp_noise: int = -1
    data_shuffle: int = -1


@dataclass
class ExperimentConfig:
    name: str = "experiment"
    arm: Arm = "bfdl"
    seed: int = _c(0, min=0)
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelRef = field(default_factory=ModelRef)
    federated: FederatedConfig = field(default_factory=FederatedConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    seeds: SeedConfig = field(default_factory=SeedConfig)

    def check(self) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        if self.federated.clients_per_round > self.data.hospitals:
            problems.append(
                (
                    "federated.clients_per_round",
                    f"{self.federated.clients_per_round} exceeds data.hospitals={self.data.hospitals}",
                )
            )
        if self.ledger.replicas > 1 and (self.ledger.replicas - 1) % 3 != 0:
            problems.append(("ledger.replicas", f"must be 3f+1 (1, 4, 7, 10, ...), got {self.ledger.replicas}"))
        if self.privacy.noise_seed == "system" and self.seeds.dp_noise >= 0:
            problems.append(("seeds.dp_noise", f"{self.seeds.dp_noise} set, but privacy.noise_seed: system draws the DP "
                             "noise from the OS CSPRNG and records no seed; remove seeds.dp_noise or use "
                             "privacy.noise_seed: recorded"))
        return problems

    def resolved_seeds(self) -> dict[str, int]:
        """Every seed the run uses, with unset ones derived deterministically from ``seed``."""
        out = {}
        for i, f in enumerate(dataclasses.fields(SeedConfig)):
            v = getattr(self.seeds, f.name)
            out[f.name] = v if v >= 0 else self.seed * 1000 + i + 1
        out["seed"] = self.seed
        return out

    def recorded_seeds(self) -> dict[str, int | str]:
        """The seeds a run writes down (``summary.json``, ``environment.json``): the resolved
        seeds, with ``dp_noise`` = ``"system"`` under ``privacy.noise_seed: system`` (issue 16.5)."""
        out: dict[str, int | str] = dict(self.resolved_seeds())
        if self.privacy.noise_seed == "system":
            out["dp_noise"] = "system"
        return out


# --------------------------------------------------------------------------------------------
# Generic loader
# --------------------------------------------------------------------------------------------


def _type_name(tp: Any) -> str:
    if isinstance(tp, type):
        return tp.__name__
    return str(tp).replace("typing.", "")


def _convert(value: Any, tp: Any, *, source: str, key: str) -> Any:
    origin = get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _convert(value, a, source=source, key=key)
            except ConfigError as e:
                errors.append(e.message)
        raise ConfigError(source, key, f"expected {_type_name(tp)}, got {type(value).__name__} {value!r}")
    if origin is Literal:
        if value not in get_args(tp):
            raise ConfigError(source, key, f"must be one of {list(get_args(tp))}, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping (section), got {type(value).__name__}")
        return from_dict(tp, value, source=source, prefix=key)
    if origin in (list, tuple) or tp in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(source, key, f"expected a list, got {type(value).__name__} {value!r}")
        (item_tp,) = get_args(tp)[:1] or (Any,)
        return [
            _convert(v, item_tp, source=source, key=f"{key}[{i}]") for i, v in enumerate(value)
        ]
    if origin is dict or tp is dict:
        if not isinstance(value, dict):
            raise ConfigError(source, key, f"expected a mapping, got {type(value).__name__} {value!r}")
        return dict(value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(source, key, f"expected true/false, got {type(value).__name__} {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(source, key, f"expected an integer, got {type(value).__name__} {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(source, key, f"expected a number, got {type(value).__name__} {value!r}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise ConfigError(source, key, f"must be a finite number, got {value!r:.40}")
        return number
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(source, key, f"expected a string, got {type(value).__name__} {value!r}")
        return value
    raise ConfigError(source, key, f"unsupported field type {_type_name(tp)}")


def _check_meta(value: Any, meta: typing.Mapping[str, Any], *, source: str, key: str) -> None:
    if value is None:
        return
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(source, key, f"must be one of {list(meta['choices'])}, got {value!r}")
    if "min" in meta and value < meta["min"]:
        raise ConfigError(source, key, f"must be >= {meta['min']}, got {value!r}")
    if "max" in meta and value > meta["max"]:
        raise ConfigError(source, key, f"must be <= {meta['max']}, got {value!r}")
    if "gt" in meta and not value > meta["gt"]:
        raise ConfigError(source, key, f"must be > {meta['gt']}, got {value!r}")


def from_dict(cls: type[T], data: dict[str, Any], *, source: str = "<dict>", prefix: str = "") -> T:
    """Build dataclass ``cls`` from ``data``, strictly: unknown keys and wrong types fail."""
    if not isinstance(data, dict):
        raise ConfigError(source, prefix, f"expected a mapping, got {type(data).__name__}")
    hints = get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}.{k}" if prefix else str(k)
        if k not in fields:
            known = ", ".join(sorted(fields))
            raise ConfigError(source, key, f"unknown key (known keys: {known})")
        f = fields[k]
        converted = _convert(v, hints[k], source=source, key=key)
        _check_meta(converted, f.metadata, source=source, key=key)
        kwargs[k] = converted
    obj = cls(**kwargs)
    check = getattr(obj, "check", None)
    if callable(check):
        for key, msg in check():
            raise ConfigError(source, f"{prefix}.{key}" if prefix else key, msg)
    return obj


def to_dict(obj: Any) -> dict[str, Any]:
    return dataclasses.asdict(obj)


def load_yaml_mapping(path: str | Path) -> dict[str, Any]:
    """Read a YAML (or, for ``.json`` files, JSON) file whose top level is a mapping."""
    path = Path(path)
    source = str(path)
    if not path.is_file():
        raise ConfigError(source, "", "file not found")
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except json.JSONDecodeError as e:
        raise ConfigError(source, f"line {e.lineno}", f"not valid JSON: {e.msg}") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(source, where, f"not valid YAML: {getattr(e, 'problem', e)}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, "", f"top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(path: str | Path, cls: type[T] = ExperimentConfig, *, overrides: dict[str, Any] | None = None) -> T:  # type: ignore[assignment]
    """Load a YAML config file into ``cls``; ``overrides`` is a dotted-key mapping applied first."""
    data = load_yaml_mapping(path)
    for dotted, value in (overrides or {}).items():
        cur = data
        parts = dotted.split(".")
        for p in parts[:-1]:
            cur = cur.setdefault(p, {})
            if not isinstance(cur, dict):
                raise ConfigError(str(path), dotted, "override path crosses a non-mapping value")
        cur[parts[-1]] = value
    return from_dict(cls, data, source=str(path))


def resolve_experiment_config(name_or_path: str) -> Path:
    """``smoke`` -> configs/experiments/smoke.yaml; a path is returned as is."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        return p
    cand = CONFIG_DIR / "experiments" / f"{name_or_path}.yaml"
    if not cand.exists():
        raise ConfigError(str(cand), "", "no such experiment config")
    return cand


def dump_yaml(obj: Any) -> str:
    return yaml.safe_dump(to_dict(obj) if dataclasses.is_dataclass(obj) else obj, sort_keys=False)
