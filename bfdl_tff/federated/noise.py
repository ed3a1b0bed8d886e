"""Where the DP noise comes from: simulation vs deployment (issue 16.5; paper 3.5).

``privacy.noise_seed: recorded`` (default, simulation): every DP noise draw is a deterministic
function of the run's seeds, which ``summary.json`` and ``environment.json`` record, so a rerun
(or a resumed run) repeats the noise bit for bit. Anyone holding the run directory can then
recompute and subtract the noise: right for a reproducible experiment, wrong for a deployment.

``privacy.noise_seed: system`` (deployment): the noise keys come from the operating system's
CSPRNG (:func:`system_entropy`, ``secrets``) at run time and are never written:

* DP-SGD (``privacy.mode: sample``): each hospital's round generator (Poisson sampling of
  patients and the per-step keys of ``tf.random.stateless_normal``) is seeded with 128 fresh bits
  per (round, hospital) (:func:`dp_sgd_rng`);
* DP-FedAvg (``client``): the aggregator's noise seed is 62 fresh bits (:func:`dp_noise_seed`);
  the server adds this noise, so it knows it by design (central DP protects the released model);
* masked secure aggregation's distributed noise: the ephemeral keyring draws its secret from
  ``secrets`` (:func:`keyring_noise_seed` is ``None``); the ledger keyring derives it from each
  hospital's key-exchange private key (keystore, never in the run directory) in both modes.

Recorded seeds show ``dp_noise: "system"`` (:meth:`bfdl_tff.config.ExperimentConfig.recorded_seeds`).
A resumed deployment-mode run does not repeat the interrupted run's noise. A config that sets
``seeds.dp_noise`` together with ``system`` is refused before training (:func:`check_noise_seed`).
"""

from __future__ import annotations

import secrets

import numpy as np

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.errors import ConfigError


def system_entropy(bits: int) -> int:
    """``bits`` fresh bits from the OS CSPRNG (``secrets.randbits``); never recorded."""
    return secrets.randbits(bits)


def deployment(cfg: ExperimentConfig) -> bool:
    return cfg.privacy.noise_seed == "system"


def check_noise_seed(cfg: ExperimentConfig, *, source: str) -> None:
    """Refuse a deployment-mode run that asks for a recorded DP noise seed (before training)."""
    if deployment(cfg) and cfg.seeds.dp_noise >= 0:
        raise ConfigError(source, "seeds.dp_noise", f"{cfg.seeds.dp_noise} set, but privacy.noise_seed: system draws "
                          "the DP noise from the OS CSPRNG and records no seed; remove seeds.dp_noise or use "
                          "privacy.noise_seed: recorded")


def dp_noise_seed(cfg: ExperimentConfig) -> int:
    """The DP-FedAvg aggregator's noise seed: the recorded ``dp_noise`` seed, or CSPRNG bits."""
    return system_entropy(62) if deployment(cfg) else int(cfg.resolved_seeds()["dp_noise"])


def keyring_noise_seed(cfg: ExperimentConfig) -> int | None:
    """The ephemeral secure-aggregation keyring's noise seed (``None``: its own CSPRNG secret)."""
    return None if deployment(cfg) else int(cfg.resolved_seeds()["dp_noise"])


def dp_sgd_rng(cfg: ExperimentConfig, *, round_num: int, hospital_index: int) -> np.random.Generator:
    """Hospital ``hospital_index``'s DP-SGD generator of round ``round_num`` (sampling + noise keys)."""
    if deployment(cfg):
        return np.random.default_rng(system_entropy(128))
    return np.random.default_rng([cfg.resolved_seeds()["data_shuffle"], round_num, hospital_index])


__all__ = ["check_noise_seed", "deployment", "dp_noise_seed", "dp_sgd_rng", "keyring_noise_seed", "system_entropy"]
