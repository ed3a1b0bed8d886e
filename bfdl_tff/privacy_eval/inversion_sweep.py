"""The inversion sweep and its success rule (paper 3.3 "inversion attack rate"; claim C3).

Success (project definition, ``docs/privacy.md``): an attacked image counts as reconstructed iff
its best reconstruction (the restart with the lowest matching loss; reconstructions are assigned
to originals by maximum-SSIM matching) has SSIM >= 0.5 **and** re-identifies it: the true image
is the nearest neighbour (pixel L2) of the reconstruction among the target and >= 100 other
images of the same hospital. The success rate of a (target, batch size, local steps) setting is
reported with a Wilson 95% interval (:class:`SweepRow`, the rows of ``attacks/inversion.json``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Sequence

import numpy as np

from bfdl_tff.privacy_eval import metrics as M
from bfdl_tff.privacy_eval.inversion import AttackConfig, invert
from bfdl_tff.privacy_eval.label_recovery import output_bias_index, recover_label_counts, recover_labels_single
from bfdl_tff.privacy_eval.observation import (ClientSetting, DPSetting, ObservedUpdate, classification_forward,
                                               observed_update)
from bfdl_tff.privacy_eval.options import TARGETS

SSIM_THRESHOLD = 0.5
MIN_GALLERY_OTHERS = 100

Galleries = Sequence[tuple[np.ndarray, np.ndarray]]
Examples = list[tuple[np.ndarray, np.ndarray]]


@dataclass
class ImageScore:
    ssim: float
    psnr: float
    reidentified: bool
    success: bool


def score_reconstruction(recs: np.ndarray, obs: ObservedUpdate, galleries: Galleries) -> tuple[list[ImageScore], np.ndarray]:
    """Score every contributing image; returns scores and the matched reconstruction per image."""
    from scipy.optimize import linear_sum_assignment

    s = M.ssim_matrix(recs, obs.images)  # [n_rec, n_img]
    rows, cols = linear_sum_assignment(-s)
    matched = np.zeros_like(obs.images)
    scores: list[ImageScore | None] = [None] * len(obs.images)
    for r, c in zip(rows, cols):
        rec = np.clip(recs[r], 0.0, 1.0)
        matched[c] = rec
        gallery = galleries[int(obs.hospital_of[c])][0]
        reid = M.reidentifies(rec, int(obs.index_in_hospital[c]), gallery)
        ss = float(s[r, c])
        scores[c] = ImageScore(ssim=ss, psnr=M.psnr(rec, obs.images[c]), reidentified=reid,
                               success=bool(ss >= SSIM_THRESHOLD and reid))
    return [sc for sc in scores if sc is not None], matched


@dataclass
class SweepRow:
    target: str
    batch_size: int
    local_steps: int
    n_targets: int
    n_updates: int
    successes: int
    success_rate: float
    ci_low: float
    ci_high: float
    mean_psnr: float
    mean_ssim: float
    label_recovery_rate: float
    reidentification_rate: float
    mean_matching_loss: float
    seconds: float
    label_mode: str = "idlg"  # idlg (one image: exact sign rule) | oracle | joint

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _UpdateAttack:
    """One attacked update: per-image scores, whether the labels were recovered, the matching loss."""

    n_images: int
    scores: list[ImageScore]
    label_hit: bool
    matching_loss: float
    pairs: Examples


def _check_galleries(galleries: Galleries) -> None:
    for k, (gx, _) in enumerate(galleries):
        if len(gx) < MIN_GALLERY_OTHERS + 1:
            raise ValueError(f"hospital {k} has {len(gx)} images; re-identification needs the target and >= "
                             f"{MIN_GALLERY_OTHERS} others")


def _labels_for(obs: ObservedUpdate, *, bias_idx: int, client: ClientSetting, cfg: AttackConfig,
                mean_pred: np.ndarray) -> tuple[np.ndarray | None, bool]:
    """The labels the reconstruction uses (``None``: optimised jointly) and whether the update's
    labels were recovered (one image: the vector; several: the per-finding counts)."""
    if obs.n_dummies == 1:
        labels = recover_labels_single(obs.update, bias_idx)[None, :]
        return labels, bool(np.array_equal(labels[0], obs.labels[0]))
    counts = recover_label_counts(obs.update, bias_idx, n_images=obs.n_dummies, batch_size=client.batch_size,
                                  client_lr=client.lr, mean_prediction=mean_pred)
    hit = bool(np.array_equal(counts, obs.labels.sum(axis=0).astype(np.int64)))
    if cfg.label_mode == "oracle":
        return obs.labels, hit  # strongest attacker (see bfdl_tff.privacy_eval.inversion)
    if cfg.label_mode == "joint":
        return None, hit
    raise ValueError(f"unknown label_mode {cfg.label_mode!r} (oracle or joint)")


def _attack_update(model: Any, obs: ObservedUpdate, galleries: Galleries, *, bias_idx: int,
                   client: ClientSetting, cfg: AttackConfig, mean_pred: np.ndarray) -> _UpdateAttack:
    labels, hit = _labels_for(obs, bias_idx=bias_idx, client=client, cfg=cfg, mean_pred=mean_pred)
    res = invert(model, obs.update, labels, n_images=obs.n_dummies, cfg=cfg)
    scores, matched = score_reconstruction(res.images, obs, galleries)
    return _UpdateAttack(obs.n_dummies, scores, hit, res.matching_loss, [(obs.images[c], matched[c]) for c in range(len(obs.images))])


def _row(target: str, client: ClientSetting, attacks: list[_UpdateAttack], *, label_mode: str,
         seconds: float) -> SweepRow:
    scores = [s for a in attacks for s in a.scores]
    succ = sum(s.success for s in scores)
    lo, hi = M.wilson_interval(succ, len(scores))
    return SweepRow(
        target=target, batch_size=client.batch_size, local_steps=client.local_steps, n_targets=len(scores),
        n_updates=len(attacks), successes=int(succ), success_rate=succ / len(scores), ci_low=lo, ci_high=hi,
        mean_psnr=float(np.mean([min(s.psnr, 100.0) for s in scores])),
        mean_ssim=float(np.mean([s.ssim for s in scores])),
        label_recovery_rate=sum(a.label_hit for a in attacks) / len(attacks),
        reidentification_rate=float(np.mean([s.reidentified for s in scores])),
        mean_matching_loss=float(np.mean([a.matching_loss for a in attacks])),
        seconds=seconds, label_mode=label_mode,
    )


def attack_setting(
    model: Any,
    galleries: Galleries,
    *,
    target: str,
    client: ClientSetting,
    dp: DPSetting | None,
    n_updates: int,
    cfg: AttackConfig,
    aux_images: np.ndarray | None = None,
    seed: int = 0,
    keep_examples: int = 0,
) -> tuple[SweepRow, Examples]:
    """Attack ``n_updates`` fresh observed updates of one (target, batch, steps) setting.

    Returns the summary row and up to ``keep_examples`` (original, reconstruction) pairs for the
    figure. Label recovery uses the model's mean prediction on ``aux_images`` (default: the
    last hospital's gallery) to estimate the sigmoid sum."""
    import tensorflow as tf

    _check_galleries(galleries)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    bias_idx = output_bias_index(model)
    aux = aux_images if aux_images is not None else galleries[-1][0][:256]
    mean_pred = np.mean(classification_forward(model)(tf.constant(aux, tf.float32)).numpy(), axis=0)
    attacks = []
    for u in range(n_updates):
        obs = observed_update(model, target, galleries, client=client, dp=dp, rng=rng)
        attacks.append(_attack_update(model, obs, galleries, bias_idx=bias_idx, client=client,
                                      cfg=AttackConfig(**{**asdict(cfg), "seed": cfg.seed + u}), mean_pred=mean_pred))
    label_mode = "idlg" if attacks[-1].n_images == 1 else cfg.label_mode
    examples = [p for a in attacks for p in a.pairs][:keep_examples]
    return _row(target, client, attacks, label_mode=label_mode, seconds=time.perf_counter() - t0), examples


def run_sweep(
    model: Any,
    galleries: Galleries,
    *,
    targets: Sequence[str] = TARGETS,
    batch_sizes: Sequence[int] = (1, 4),
    local_steps: Sequence[int] = (1, 4),
    n_updates: int = 8,
    client_lr: float = 0.05,
    dp: DPSetting | None = None,
    cfg: AttackConfig | None = None,
    seed: int = 0,
    keep_examples: int = 4,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[SweepRow], dict[str, Examples]]:
    """Every (target, batch size, local steps) combination; rows plus figure examples per target
    (from the smallest batch/steps setting)."""
    cfg = cfg or AttackConfig()
    dp = dp or DPSetting()
    rows: list[SweepRow] = []
    examples: dict[str, Examples] = {}
    for t in targets:
        for b in batch_sizes:
            for s in local_steps:
                row, ex = attack_setting(
                    model, galleries, target=t, client=ClientSetting(batch_size=b, local_steps=s, lr=client_lr),
                    dp=dp, n_updates=n_updates, cfg=cfg, seed=seed, keep_examples=keep_examples,
                )
                rows.append(row)
                examples.setdefault(t, ex)
                if progress:
                    progress(f"{t} B={b} steps={s}: success {row.successes}/{row.n_targets} "
                             f"ssim {row.mean_ssim:.3f} labels {row.label_recovery_rate:.2f} ({row.seconds:.1f}s)")
    return rows, examples


def save_grid(examples: dict[str, Examples], path: Any) -> None:
    """PNG grid: for each target kind, a row of originals above a row of reconstructions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bfdl_tff.io_utils import atomic_open

    kinds = [k for k, v in examples.items() if v]
    if not kinds:
        return
    cols = max(len(examples[k]) for k in kinds)
    fig, axes = plt.subplots(2 * len(kinds), cols, figsize=(1.6 * cols, 3.3 * len(kinds)), squeeze=False)
    for r, k in enumerate(kinds):
        for c in range(cols):
            for j in (0, 1):
                ax = axes[2 * r + j][c]
                ax.axis("off")
                if c < len(examples[k]):
                    img = examples[k][c][j]
                    ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray", vmin=0, vmax=1)
                    if c == 0:
                        ax.set_title(f"{k}: {'original' if j == 0 else 'reconstruction'}", fontsize=7, loc="left")
    fig.tight_layout()
    with atomic_open(path, "wb") as fh:
        fig.savefig(fh, format="png", dpi=100)
    plt.close(fig)


__all__ = ["ImageScore", "MIN_GALLERY_OTHERS", "SSIM_THRESHOLD", "SweepRow", "attack_setting", "run_sweep",
           "save_grid", "score_reconstruction"]
