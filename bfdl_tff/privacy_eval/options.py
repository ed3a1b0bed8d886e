"""Options of the privacy attacks on a run (paper 3.3, 3.5; claim C3; issue 16.6), as typed records.

Used by ``bfdl attack`` (built from the command line), by the reproduction (the ``attacks``
section of a profile, ``configs/profiles/*.yaml``, loaded strictly with
:func:`bfdl_tff.config.from_dict`) and by :mod:`bfdl_tff.privacy_eval.run_attacks`. No
TensorFlow import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

#: What the observer of a hospital's update sees (``docs/privacy.md``).
TARGETS: tuple[str, ...] = ("plain_update", "secure_sum", "dp_update")
#: The attacked rounds: the run's initial model (round 1's broadcast) and its released model.
ROUND_LABELS: tuple[str, ...] = ("first", "final")
#: Targets attacked on each arm's run when ``targets`` is empty (``dp_update`` only with a noise
#: multiplier): what that arm's aggregator sees (federated: each plain update; B-FDL: the secure
#: sum of DP updates, attacked as the secure sum without DP and as one DP update), plus the plain
#: update as the reference on runs of the arms in ``plain_arms``.
DEFAULT_TARGETS = {"federated": ("plain_update",), "bfdl": ("plain_update", "secure_sum", "dp_update")}


@dataclass
class InversionOptions:
    """The inversion sweep (``docs/privacy.md``): ``plain_update`` over batch sizes x local steps x
    rounds, ``secure_sum`` / ``dp_update`` at the best plain setting of each round
    (``protected: best_per_round``) or over the whole grid (``protected: grid``); every setting
    attacks at least ``images_per_setting`` target images."""

    images_per_setting: int = field(default=100, metadata={"min": 1})
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4, 16])
    local_steps: list[int] = field(default_factory=lambda: [1, 4])
    rounds: list[str] = field(default_factory=lambda: ["first", "final"])
    protected: Literal["best_per_round", "grid"] = "best_per_round"
    iterations: int = field(default=150, metadata={"min": 1})  # optimisation steps per restart
    restarts: int = field(default=1, metadata={"min": 1})
    tv_weight: float = field(default=1e-4, metadata={"min": 0.0})
    # oracle: true labels for updates of several images (strongest attacker); joint: label-blind DLG
    label_mode: Literal["oracle", "joint"] = "oracle"
    # empty: DEFAULT_TARGETS of the run's arm (dp_update only with a DP noise multiplier)
    targets: list[str] = field(default_factory=list)
    # DP noise for dp_update; None: the run's own (privacy.json)
    noise_multiplier: float | None = None
    # images per hospital in the re-identification gallery (the target and >= 100 others); grown
    # to the largest setting's need so the targets of a setting are distinct images
    gallery_size: int = field(default=101, metadata={"min": 101})
    engine: Literal["auto", "chain", "vmap", "loop"] = "auto"  # problem gradients (inversion.choose_engine)
    # the arms whose runs get the plain_update grid when ``targets`` is empty; on the others
    # secure_sum / dp_update are attacked at batch min(batch_sizes), steps min(local_steps)
    plain_arms: list[str] = field(default_factory=lambda: ["federated", "bfdl"])

    def check(self) -> list[tuple[str, str]]:
        problems = [(k, f"must be positive integers, got {v}") for k, v in
                    (("batch_sizes", self.batch_sizes), ("local_steps", self.local_steps)) if not v or min(v) < 1]
        problems += [("targets", f"unknown target {t!r} (one of {', '.join(TARGETS)})")
                     for t in self.targets if t not in TARGETS]
        problems += [("rounds", f"unknown round {r!r} (first or final)") for r in self.rounds if r not in ROUND_LABELS]
        if not self.rounds:
            problems.append(("rounds", "at least one of first, final"))
        problems += [("plain_arms", f"unknown arm {a!r} (federated or bfdl)") for a in self.plain_arms
                     if a not in DEFAULT_TARGETS]
        return problems


@dataclass
class MembershipOptions:
    """Loss-threshold and LiRA membership inference on the released model, and the DP audit."""

    n_shadows: int = field(default=16, metadata={"min": 2})  # LiRA shadow models (even)
    max_per_class: int = field(default=1000, metadata={"min": 10})  # members and non-members each
    shadow_epochs: int | None = None  # None: rounds * local_epochs of the run
    online: bool = True  # False: offline LiRA (out-shadows only)
    # target_size: each shadow also trains on the run's other (not audited) training images, so its
    # training set has the target's size; audited: on half of the audited population only (faster)
    shadow_data: Literal["target_size", "audited"] = "target_size"

    def check(self) -> list[tuple[str, str]]:
        return [("n_shadows", f"must be even, got {self.n_shadows}")] if self.n_shadows % 2 else []


__all__ = ["DEFAULT_TARGETS", "InversionOptions", "MembershipOptions", "ROUND_LABELS", "TARGETS"]
