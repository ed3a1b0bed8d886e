"""The noise multiplier needed for the target epsilon (paper 3.5 "epsilon = 1.0"; claim C9,
CLAIMS note 2): client level (DP-FedAvg over K hospitals), sample level for this run's own
hospitals, and sample level for an NIH-sized hospital, calibrated with
:mod:`bfdl_tff.federated.accounting` (dp_accounting, Poisson sampling)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.reproduce.profiles import PrivacyBudgetStage
from bfdl_tff.runs import RunDir

#: Batch size of the NIH-like rows (the paper profile's).
NIH_BATCH = 64


class _Calibrator:
    """Collects one settings row per calibration (an unreachable epsilon is a row with its error)."""

    def __init__(self, cfg: ExperimentConfig, log: Callable[[str], None]) -> None:
        from bfdl_tff.federated import accounting

        self.A, self.log, self.rows = accounting, log, []
        self.target, self.delta = cfg.privacy.target_epsilon, cfg.privacy.delta
        self.accountant = cfg.privacy.accountant

    def add(self, name: str, level: str, *, rounds: int, q: float, steps: int,
            fn: Callable[[float], float], **extra: Any) -> None:
        self.log(f"calibrating {name}")
        row = {"name": name, "level": level, "rounds": rounds, "sampling_rate": q, "steps": steps}
        try:
            z = self.A.calibrate_noise(self.target, self.delta, epsilon_fn=fn, max_noise_multiplier=1000.0)
            row.update(noise_multiplier=z, epsilon_at_noise=fn(z))
        except self.A.PrivacyBudgetError as e:
            row.update(noise_multiplier=None, error=str(e))
        self.rows.append({**row, **extra})

    def sample_level(self, name: str, *, n: int, batch: int, rounds: int, **extra: Any) -> None:
        steps = self.A.dp_sgd_steps(num_examples=n, batch_size=batch, local_epochs=1, rounds=rounds)
        self.add(name, "sample", rounds=rounds, q=min(1.0, batch / n), steps=steps,
                 fn=lambda z: self.A.sample_level_epsilon(noise_multiplier=z, batch_size=batch, num_examples=n,
                                                          steps=steps, delta=self.delta, accountant=self.accountant),
                 examples_per_hospital=n, batch_size=batch, **extra)


def _hospital_sizes(runs: list[Path]) -> tuple[list[int], Path | None]:
    """Training examples per hospital of the first finished run (its ``privacy.json``)."""
    for path in runs:
        if (path / "config.yaml").is_file():
            run = RunDir.open(path)
            if run.privacy_file.is_file():
                return [int(v) for v in run.privacy().get("num_examples") or []], run.privacy_file
    return [], None


def privacy_budget_settings(cfg: ExperimentConfig, opts: PrivacyBudgetStage, *, runs: list[Path],
                            log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Every calibrated setting (rows of ``noise_for_eps1.json``)."""
    cal = _Calibrator(cfg, log)
    k = cfg.data.hospitals
    for rounds in opts.rounds:
        cal.add(f"client_level_{k}_hospitals_{rounds}_rounds", "client", rounds=rounds, q=1.0, steps=rounds,
                fn=lambda z, r=rounds: cal.A.client_level_epsilon(
                    noise_multiplier=z, clients_per_round=k, num_clients=k, rounds=r, delta=cal.delta,
                    accountant=cal.accountant), hospitals=k)
    sizes, source = _hospital_sizes(runs)
    if sizes:
        n, batch, rounds = min(sizes), cfg.federated.batch_size, cfg.federated.rounds
        cal.sample_level(f"sample_level_this_run_{rounds}_rounds_batch{batch}_n{n}", n=n, batch=batch, rounds=rounds,
                         source=str(source))
    n = opts.nih_examples_per_hospital
    for rounds in (r for r in opts.rounds if r >= 50):
        cal.sample_level(f"sample_level_nih_like_{n}_per_hospital_{rounds}_rounds_batch{NIH_BATCH}", n=n,
                         batch=NIH_BATCH, rounds=rounds)
    return cal.rows


__all__ = ["privacy_budget_settings"]
