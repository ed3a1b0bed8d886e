"""Privacy accounting for the B-FDL arm (paper 3.1 "DP-SGD", 3.5 "epsilon = 1.0").

The paper states epsilon = 1.0 without saying at which level (sample or client), with which
delta, accountant or sampling scheme. This module makes each of those explicit, using Google's
``dp_accounting`` (RDP and PLD accountants):

* **client level** (DP-FedAvg, McMahan et al. 2018): one Gaussian mechanism per round on the
  clipped client updates; each round samples ``clients_per_round`` of ``K`` hospitals. With
  ``q = clients_per_round / K < 1`` the round is modelled as Poisson subsampling with rate ``q``
  (the standard, slightly optimistic model for uniform fixed-size sampling, as in TFF's own
  tutorials); with all hospitals in every round (``q = 1``, the paper's 3 hospitals) there is no
  amplification at all. The neighbouring relation is add/remove one *hospital*.
* **sample level** (DP-SGD inside each hospital, Abadi et al. 2016): each local step takes a
  Poisson sample of the hospital's privacy units with rate ``q_k = batch_size / n_k`` and adds
  Gaussian noise to the sum of the units' clipped gradients. The unit is the **patient**
  (``privacy.unit: patient``, the default: a sampled patient contributes the sum of the gradients
  of its images, clipped as one; neighbouring datasets differ by one patient and all of that
  patient's images) or the single image (``unit: image``). The accounting is the same
  Poisson-subsampled Gaussian for both units (the rate and the number of steps do not depend on
  the unit); only the neighbouring relation, the ``delta < 1 / units`` condition and the DP-SGD
  denominator (expected units per step) differ. Each hospital's noise multiplier is calibrated
  from its own ``n_k`` and steps (:class:`PrivacySchedule` with ``calibrate_per_hospital``), so every
  hospital ends at the target epsilon. The hospitals' datasets are disjoint, so by parallel
  composition the guarantee for any one patient is that of its own hospital; the run reports the
  maximum over hospitals. Secure summation and averaging are post-processing.

``calibrate_noise`` finds the smallest noise multiplier reaching a target epsilon by bisection
(epsilon is monotone decreasing in the noise multiplier); it raises
:class:`PrivacyBudgetError` when the target cannot be reached below ``max_noise_multiplier``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Literal, Mapping, Sequence

import dp_accounting
from dp_accounting.pld import pld_privacy_accountant
from dp_accounting.rdp import rdp_privacy_accountant

from bfdl_tff.errors import BfdlError, ConfigError

Accountant = Literal["rdp", "pld"]

# RDP orders: a dense grid from 1.01 up to 1024 (the usual TF-Privacy choice, extended).
RDP_ORDERS: tuple[float, ...] = tuple(
    [1 + x / 10.0 for x in range(1, 100)] + list(range(11, 64)) + [64, 80, 96, 128, 192, 256, 384, 512, 768, 1024]
)


class PrivacyBudgetError(BfdlError):
    """The requested (epsilon, delta) cannot be met with the configured schedule."""


def _make_accountant(accountant: Accountant) -> dp_accounting.PrivacyAccountant:
    if accountant == "rdp":
        return rdp_privacy_accountant.RdpAccountant(list(RDP_ORDERS))
    if accountant == "pld":
        return pld_privacy_accountant.PLDAccountant(value_discretization_interval=1e-3)
    raise ValueError(f"unknown accountant {accountant!r} (rdp or pld)")


def _gaussian_event(noise_multiplier: float, sampling_probability: float, count: int) -> dp_accounting.DpEvent:
    if noise_multiplier <= 0:
        raise ValueError("noise_multiplier must be > 0 for a finite epsilon")
    event: dp_accounting.DpEvent = dp_accounting.GaussianDpEvent(noise_multiplier)
    if sampling_probability < 1.0:
        event = dp_accounting.PoissonSampledDpEvent(sampling_probability, event)
    return dp_accounting.SelfComposedDpEvent(event, count)


def epsilon_for_event(event: dp_accounting.DpEvent, *, delta: float, accountant: Accountant = "rdp") -> float:
    acc = _make_accountant(accountant)
    acc.compose(event)
    return float(acc.get_epsilon(delta))


def client_level_epsilon(
    *,
    noise_multiplier: float,
    clients_per_round: int,
    num_clients: int,
    rounds: int,
    delta: float,
    accountant: Accountant = "rdp",
) -> float:
    """Epsilon of DP-FedAvg after ``rounds`` rounds (add/remove one hospital).

    ``noise_multiplier`` is the ratio of the Gaussian noise stddev on the *sum* of clipped
    updates to the clip norm (``tff.aggregators.DifferentiallyPrivateFactory.gaussian_fixed``).
    """
    if rounds <= 0:
        return 0.0
    if not 0 < clients_per_round <= num_clients:
        raise ValueError(f"clients_per_round={clients_per_round} must be in 1..{num_clients}")
    q = clients_per_round / num_clients
    return epsilon_for_event(_gaussian_event(noise_multiplier, q, rounds), delta=delta, accountant=accountant)


def dp_sgd_steps(*, num_examples: int, batch_size: int, local_epochs: int, rounds: int) -> int:
    """Number of DP-SGD steps one hospital takes: ``rounds * local_epochs * ceil(n_k / B)``."""
    return rounds * local_epochs * max(1, math.ceil(num_examples / batch_size))


def sample_level_epsilon(
    *,
    noise_multiplier: float,
    batch_size: int,
    num_examples: int,
    steps: int,
    delta: float,
    accountant: Accountant = "rdp",
) -> float:
    """Epsilon of DP-SGD with Poisson sampling (rate ``batch_size / num_examples``) for ``steps``."""
    if steps <= 0:
        return 0.0
    if num_examples <= 0:
        raise ValueError("num_examples must be > 0")
    q = min(1.0, batch_size / num_examples)
    return epsilon_for_event(_gaussian_event(noise_multiplier, q, steps), delta=delta, accountant=accountant)


def federated_sample_level_epsilon(
    *,
    noise_multiplier: float,
    batch_size: int,
    num_examples: Sequence[int],
    local_epochs: int,
    rounds: int,
    delta: float,
    accountant: Accountant = "rdp",
) -> float:
    """Sample-level epsilon of a federation: the maximum over hospitals (parallel composition)."""
    return max(
        sample_level_epsilon(
            noise_multiplier=noise_multiplier,
            batch_size=batch_size,
            num_examples=n,
            steps=dp_sgd_steps(num_examples=n, batch_size=batch_size, local_epochs=local_epochs, rounds=rounds),
            delta=delta,
            accountant=accountant,
        )
        for n in num_examples
    )


def calibrate_noise(
    target_epsilon: float,
    delta: float,
    *,
    epsilon_fn: Callable[[float], float],
    min_noise_multiplier: float = 0.05,
    max_noise_multiplier: float = 100.0,
    tolerance: float = 1e-3,
) -> float:
    """Smallest noise multiplier ``z`` with ``epsilon_fn(z) <= target_epsilon`` (bisection).

    ``epsilon_fn`` maps a noise multiplier to epsilon at ``delta`` (bind the schedule with a
    lambda). Returns ``z`` within relative ``tolerance``, rounded *up* so the target holds.
    Raises :class:`PrivacyBudgetError` if even ``max_noise_multiplier`` does not reach it.
    """
    if target_epsilon <= 0:
        raise PrivacyBudgetError(f"target epsilon must be > 0, got {target_epsilon}")
    hi = max_noise_multiplier
    eps_hi = epsilon_fn(hi)
    if eps_hi > target_epsilon:
        raise PrivacyBudgetError(
            f"epsilon={target_epsilon} (delta={delta}) is unreachable: even noise multiplier {hi:g} "
            f"gives epsilon={eps_hi:.3g}; use fewer rounds/steps, more clients per round, a larger "
            "target epsilon, or raise privacy.max_noise_multiplier"
        )
    lo = min_noise_multiplier
    if epsilon_fn(lo) <= target_epsilon:
        return lo
    while (hi - lo) / hi > tolerance:
        mid = math.sqrt(lo * hi) if hi / lo > 4 else (lo + hi) / 2
        if epsilon_fn(mid) <= target_epsilon:
            hi = mid
        else:
            lo = mid
    return hi


@dataclass(frozen=True)
class HospitalPrivacy:
    """One hospital's sample-level DP-SGD parameters (what it needs to train and to account)."""

    name: str
    num_examples: int  # training images n_k (FedAvg weight; sampling rate q_k = B / n_k)
    num_units: int  # privacy units: patients P_k (unit = patient) or images (unit = image)
    noise_multiplier: float
    sampling_rate: float
    steps: int

    @property
    def expected_units_per_step(self) -> float:
        """The DP-SGD denominator: expected number of sampled units per step, ``q_k * units``."""
        return self.sampling_rate * self.num_units


@dataclass(frozen=True)
class PrivacySchedule:
    """Everything needed to report epsilon after any round of a run.

    Sample mode: hospital ``k`` samples each of its privacy units (patients, or images with
    ``unit = image``) with probability ``q_k = min(1, batch_size / n_k)`` at each of its
    ``rounds * local_epochs * ceil(n_k / batch_size)`` steps, so the expected number of images per
    step is ``batch_size`` (before the per-patient cap) and one local epoch samples every unit once
    in expectation. Its epsilon is that of the Poisson-subsampled Gaussian with its own noise
    multiplier (``noise_multipliers[k]``; calibrated per hospital when ``per_hospital``), with
    respect to adding or removing one unit. The federation's epsilon is the maximum over hospitals
    (parallel composition over disjoint data). ``noise_multiplier`` is then the largest
    per-hospital value (a scalar summary for records that hold one number).
    """

    mode: str  # none | client | sample
    noise_multiplier: float
    delta: float
    accountant: Accountant
    rounds: int
    num_clients: int = 0
    clients_per_round: int = 0
    batch_size: int = 0
    local_epochs: int = 1
    num_examples: tuple[int, ...] = ()
    # Sample mode, per hospital (empty: one shared noise multiplier, images as units).
    unit: str = "image"  # patient | image
    hospitals: tuple[str, ...] = ()
    num_units: tuple[int, ...] = ()
    noise_multipliers: tuple[float, ...] = ()
    calibrate_per_hospital: bool = False
    max_images_per_patient: int = 0

    # --- per hospital -------------------------------------------------------------------------
    def _units(self, k: int) -> int:
        return self.num_units[k] if self.num_units else self.num_examples[k]

    def _z(self, k: int) -> float:
        return self.noise_multipliers[k] if self.noise_multipliers else self.noise_multiplier

    def hospital(self, k: int | str) -> HospitalPrivacy:
        """Hospital ``k`` (index or name) of a sample-mode schedule."""
        if isinstance(k, str):
            k = self.hospitals.index(k)
        n = self.num_examples[k]
        return HospitalPrivacy(
            name=self.hospitals[k] if self.hospitals else str(k),
            num_examples=n,
            num_units=self._units(k),
            noise_multiplier=self._z(k),
            sampling_rate=min(1.0, self.batch_size / n),
            steps=dp_sgd_steps(num_examples=n, batch_size=self.batch_size, local_epochs=self.local_epochs, rounds=self.rounds),
        )

    def dp_sgd_kwargs(self, name: str) -> dict[str, Any]:
        """Keyword arguments of ``dp_sgd.round_dataset`` for hospital ``name`` (hospital-side)."""
        h = self.hospital(name)
        return {"noise_multiplier": h.noise_multiplier, "unit": self.unit,
                "max_images_per_patient": self.max_images_per_patient, "dp_batch_size": self.batch_size}

    def hospital_epsilon(self, k: int, rounds_done: int, *, noise_multiplier: float | None = None) -> float:
        if rounds_done <= 0:
            return 0.0
        n = self.num_examples[k]
        return sample_level_epsilon(
            noise_multiplier=self._z(k) if noise_multiplier is None else noise_multiplier,
            batch_size=self.batch_size,
            num_examples=n,
            steps=dp_sgd_steps(num_examples=n, batch_size=self.batch_size, local_epochs=self.local_epochs, rounds=rounds_done),
            delta=self.delta,
            accountant=self.accountant,
        )

    def epsilons_after(self, rounds_done: int) -> dict[str, float]:
        """Sample mode: each hospital's epsilon after ``rounds_done`` rounds (name -> epsilon)."""
        names = self.hospitals or tuple(str(k) for k in range(len(self.num_examples)))
        return {names[k]: self.hospital_epsilon(k, rounds_done) for k in range(len(self.num_examples))}

    # --- the run --------------------------------------------------------------------------------
    def epsilon_after(self, rounds_done: int, *, noise_multiplier: float | None = None) -> float:
        z = self.noise_multiplier if noise_multiplier is None else noise_multiplier
        if self.mode == "none" or rounds_done <= 0:
            return 0.0 if self.mode != "none" else math.inf
        if self.mode == "client":
            return client_level_epsilon(
                noise_multiplier=z,
                clients_per_round=self.clients_per_round,
                num_clients=self.num_clients,
                rounds=rounds_done,
                delta=self.delta,
                accountant=self.accountant,
            )
        if self.mode == "sample":
            zs = [noise_multiplier] * len(self.num_examples) if noise_multiplier is not None else None
            return max(self.hospital_epsilon(k, rounds_done, noise_multiplier=zs[k] if zs else None)
                       for k in range(len(self.num_examples)))
        raise ValueError(f"unknown privacy mode {self.mode!r}")

    def note(self) -> str:
        """One line on what the epsilon protects (summary.json's ``privacy_note``)."""
        if self.mode == "client":
            return "client-level (add/remove one hospital) DP-FedAvg, unweighted mean of clipped updates"
        if self.mode == "sample":
            who = "one patient (all of the patient's images)" if self.unit == "patient" else "one image"
            return (f"sample-level (add/remove {who}) DP-SGD with Poisson sampling in each hospital, "
                    "noise calibrated per hospital; epsilon = max over hospitals")
        return "no differential privacy"

    def to_record(self) -> dict:
        """What the run directory's ``privacy.json`` holds (read by attacks, audit, report)."""
        rec = dict(self.__dict__)
        for key in ("num_examples", "hospitals", "num_units", "noise_multipliers"):
            rec[key] = list(rec[key])
        rec["epsilon"] = self.epsilon_after(self.rounds) if self.mode != "none" else None
        if self.mode == "sample":
            eps = self.epsilons_after(self.rounds)
            rec["per_hospital"] = [
                {"hospital": h.name, "num_examples": h.num_examples, "units": self.unit, "num_units": h.num_units,
                 "noise_multiplier": h.noise_multiplier, "sampling_rate": h.sampling_rate, "steps": h.steps,
                 "expected_units_per_step": h.expected_units_per_step, "epsilon": eps[h.name], "delta": self.delta}
                for h in (self.hospital(k) for k in range(len(self.num_examples)))
            ]
        rec["note"] = self.note()
        return rec

    def calibrated(self, target_epsilon: float, *, max_noise_multiplier: float = 100.0) -> "PrivacySchedule":
        """The schedule with noise calibrated to ``target_epsilon``: one shared multiplier, or with
        ``calibrate_per_hospital`` (sample mode) each hospital's own, from its own ``n_k`` and steps."""
        if self.mode == "sample" and self.calibrate_per_hospital:
            zs = []
            for k in range(len(self.num_examples)):
                try:
                    zs.append(calibrate_noise(
                        target_epsilon, self.delta,
                        epsilon_fn=lambda z, k=k: self.hospital_epsilon(k, self.rounds, noise_multiplier=z),
                        max_noise_multiplier=max_noise_multiplier,
                    ))
                except PrivacyBudgetError as e:
                    name = self.hospitals[k] if self.hospitals else str(k)
                    raise PrivacyBudgetError(f"hospital {name} ({self.num_examples[k]} images, "
                                             f"{self._units(k)} {self.unit}s): {e}") from None
            return PrivacySchedule(**{**self.__dict__, "noise_multipliers": tuple(zs), "noise_multiplier": max(zs)})
        z = calibrate_noise(
            target_epsilon,
            self.delta,
            epsilon_fn=lambda z: self.epsilon_after(self.rounds, noise_multiplier=z),
            max_noise_multiplier=max_noise_multiplier,
        )
        return PrivacySchedule(**{**self.__dict__, "noise_multiplier": z, "noise_multipliers": ()})


def schedule_for_config(cfg: Any, num_examples: Mapping[str, int], *, source: str,
                        num_patients: Mapping[str, int] | None = None) -> PrivacySchedule:
    """The run's privacy schedule, with the noise multiplier(s) calibrated to the target epsilon.

    ``num_examples``: training images per hospital; ``num_patients``: training patients per
    hospital (needed for ``privacy.unit: patient`` in sample mode). Errors before training: delta
    not below ``1 / units`` of some hospital, an epsilon some hospital cannot reach.
    """
    p = cfg.privacy
    mode = p.mode if cfg.arm == "bfdl" else "none"
    k = len(num_examples)
    cpr = cfg.federated.clients_per_round or k
    names = tuple(num_examples)
    n_k = tuple(int(v) for v in num_examples.values())
    unit = getattr(p, "unit", "image")
    if mode == "sample" and unit == "patient":
        if num_patients is None:
            raise ConfigError(source, "privacy.unit", "patient-level DP-SGD needs the hospitals' patient counts")
        units = tuple(int(num_patients[n]) for n in names)
    else:
        units = n_k
    sched = PrivacySchedule(
        mode=mode,
        noise_multiplier=p.noise_multiplier,
        delta=p.delta,
        accountant=p.accountant,  # type: ignore[arg-type]
        rounds=cfg.federated.rounds,
        num_clients=k,
        clients_per_round=cpr,
        batch_size=(getattr(p, "batch_size", 0) or cfg.federated.batch_size) if mode == "sample" else cfg.federated.batch_size,
        local_epochs=cfg.federated.local_epochs,
        num_examples=n_k,
        unit=unit if mode == "sample" else "image",
        hospitals=names,
        num_units=units,
        calibrate_per_hospital=bool(getattr(p, "per_hospital_noise", True)) and mode == "sample",
        max_images_per_patient=int(getattr(p, "max_images_per_patient", 0)),
    )
    if mode == "none":
        return sched
    _check_delta(p.delta, sched, source=source)
    if p.noise_multiplier > 0:
        return sched
    try:
        return sched.calibrated(p.target_epsilon, max_noise_multiplier=p.max_noise_multiplier)
    except PrivacyBudgetError as e:
        raise PrivacyBudgetError(
            f"{source}: privacy.target_epsilon: {e} (mode={mode}, rounds={cfg.federated.rounds}, "
            f"hospitals={k}, clients_per_round={cpr})"
        ) from None


def _check_delta(delta: float, sched: PrivacySchedule, *, source: str) -> None:
    if sched.mode == "client":
        checks = [("hospitals", sched.num_clients, "the federation")]
    else:
        label = "patients" if sched.unit == "patient" else "images"
        checks = [(label, u, f"hospital {n}") for n, u in zip(sched.hospitals, sched.num_units)]
    for label, units, who in checks:
        if delta >= 1.0 / units:
            raise ConfigError(source, "privacy.delta",
                              f"delta={delta} must be below 1/n = {1.0 / units:.3g} ({units} {label} in {who})")


def noise_table(
    *,
    target_epsilon: float = 1.0,
    delta: float = 1e-5,
    rounds: Sequence[int] = (10, 50, 100),
    num_clients: int = 3,
    examples_per_hospital: int = 30000,
    batch_size: int = 64,
    accountants: Sequence[Accountant] = ("rdp", "pld"),
) -> list[dict]:
    """Noise multiplier needed for ``target_epsilon`` at client and sample level (docs table)."""
    rows = []
    for acc in accountants:
        for r in rounds:
            zc = calibrate_noise(
                target_epsilon,
                delta,
                epsilon_fn=lambda z: client_level_epsilon(
                    noise_multiplier=z, clients_per_round=num_clients, num_clients=num_clients,
                    rounds=r, delta=delta, accountant=acc,
                ),
                max_noise_multiplier=1000.0,
            )
            steps = dp_sgd_steps(num_examples=examples_per_hospital, batch_size=batch_size, local_epochs=1, rounds=r)
            zs = calibrate_noise(
                target_epsilon,
                delta,
                epsilon_fn=lambda z: sample_level_epsilon(
                    noise_multiplier=z, batch_size=batch_size, num_examples=examples_per_hospital,
                    steps=steps, delta=delta, accountant=acc,
                ),
            )
            rows.append(
                {
                    "accountant": acc,
                    "rounds": r,
                    "target_epsilon": target_epsilon,
                    "delta": delta,
                    "client_level_noise_multiplier": zc,
                    "num_clients": num_clients,
                    "sample_level_noise_multiplier": zs,
                    "examples_per_hospital": examples_per_hospital,
                    "batch_size": batch_size,
                    "dp_sgd_steps": steps,
                }
            )
    return rows


__all__ = [
    "HospitalPrivacy",
    "PrivacyBudgetError",
    "PrivacySchedule",
    "calibrate_noise",
    "client_level_epsilon",
    "dp_sgd_steps",
    "epsilon_for_event",
    "federated_sample_level_epsilon",
    "noise_table",
    "sample_level_epsilon",
    "schedule_for_config",
]
