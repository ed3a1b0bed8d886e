"""Options of the privacy attacks on a run (paper 3.3, 3.5; claim C3), as typed records.

Used by ``bfdl attack`` (built from the command line), by the reproduction (the ``attacks``
section of a profile, ``configs/profiles/*.yaml``, loaded strictly with
:func:`bfdl_tff.config.from_dict`) and by :mod:`bfdl_tff.privacy_eval.run_attacks`. No
TensorFlow import here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: What the observer of a hospital's update sees (``docs/privacy.md``).
TARGETS: tuple[str, ...] = ("plain_update", "secure_sum", "dp_update")


@dataclass
class InversionOptions:
    """The inversion sweep: every (target, batch size, local steps) setting, ``n_updates`` each."""

    n_updates: int = field(default=3, metadata={"min": 1})  # attacked updates per setting
    batch_sizes: list[int] = field(default_factory=lambda: [1, 4])
    local_steps: list[int] = field(default_factory=lambda: [1, 4])
    iterations: int = field(default=150, metadata={"min": 1})  # optimisation steps per restart
    restarts: int = field(default=1, metadata={"min": 1})
    tv_weight: float = field(default=1e-4, metadata={"min": 0.0})
    # oracle: true labels for updates of several images (strongest attacker); joint: label-blind DLG
    label_mode: str = field(default="oracle", metadata={"choices": ("oracle", "joint")})
    # empty: every target that applies to the run (dp_update only with a DP noise multiplier)
    targets: list[str] = field(default_factory=list)
    # DP noise for dp_update; None: the run's own (privacy.json)
    noise_multiplier: float | None = None
    # images per hospital in the re-identification gallery (the target and >= 100 others)
    gallery_size: int = field(default=101, metadata={"min": 101})

    def check(self) -> list[tuple[str, str]]:
        problems = [(k, f"must be positive integers, got {v}") for k, v in
                    (("batch_sizes", self.batch_sizes), ("local_steps", self.local_steps)) if not v or min(v) < 1]
        problems += [("targets", f"unknown target {t!r} (one of {', '.join(TARGETS)})")
                     for t in self.targets if t not in TARGETS]
        return problems


@dataclass
class MembershipOptions:
    """Loss-threshold and LiRA membership inference on the released model."""

    n_shadows: int = field(default=4, metadata={"min": 2})  # LiRA shadow models (even)
    max_per_class: int = field(default=200, metadata={"min": 10})  # members and non-members each
    shadow_epochs: int | None = None  # None: rounds * local_epochs of the run
    online: bool = True  # False: offline LiRA (out-shadows only)

    def check(self) -> list[tuple[str, str]]:
        return [("n_shadows", f"must be even, got {self.n_shadows}")] if self.n_shadows % 2 else []


__all__ = ["InversionOptions", "MembershipOptions", "TARGETS"]
