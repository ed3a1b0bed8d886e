"""The inversion sweep and its success rule (paper 3.3 "inversion attack rate"; claim C3; issue 16.6).

Settings: ``(target, batch size, local steps, round)`` with ``round`` ``first`` (the run's initial
model: what the aggregator broadcasts in round 1) or ``final`` (the released model: one more
round). Each setting attacks at least ``n_images`` target images: ``ceil(n_images / m)`` observed
updates of ``m`` images each (``m = batch size * local steps``, times the number of hospitals for
the secure sum), all inverted in one batched optimisation (:func:`bfdl_tff.privacy_eval.inversion.invert_batch`).

Success (project definition, ``docs/privacy.md``): an attacked image counts as reconstructed iff
its best reconstruction (the restart with the lowest matching loss; reconstructions are assigned
to originals by maximum-SSIM matching) has SSIM >= 0.5 **and** re-identifies it: the true image
is the nearest neighbour (pixel L2) of the reconstruction among the target and >= 100 other
images of the same hospital. For a model that standardises its input image (``intensity:
standardised``) the update says nothing about an image's brightness and contrast, so SSIM / PSNR
are taken after mapping the reconstruction to the original's mean and standard deviation (two
numbers per image), and re-identification compares standardised images (no knowledge of the
original). The success rate of a setting is reported with a Wilson 95% interval
(:class:`SweepRow`, the rows of ``attacks/inversion.json``).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np

from bfdl_tff.privacy_eval import metrics as M
from bfdl_tff.privacy_eval.inversion import AttackConfig, invert_batch
from bfdl_tff.privacy_eval.label_recovery import output_bias_index, recover_label_counts, recover_labels_single
from bfdl_tff.privacy_eval.observation import ClientSetting, DPSetting, ObservedBatch, classification_forward, observe

SSIM_THRESHOLD = 0.5
MIN_GALLERY_OTHERS = 100
ROUNDS = ("first", "final")

Galleries = Sequence[tuple[np.ndarray, np.ndarray]]
Examples = list[tuple[np.ndarray, np.ndarray]]


def input_standardised(model: Any) -> bool:
    """True if the model standardises each input image (``ImageStandardization`` layer)."""
    return any(type(layer).__name__ == "ImageStandardization" for layer in model.layers)


@dataclass
class ImageScore:
    ssim: float
    psnr: float
    reidentified: bool
    success: bool


def _pair_ssim(recs: np.ndarray, images: np.ndarray, standardised: bool, *, max_pairs: int = 8192) -> np.ndarray:
    """``[P, m, m]`` SSIM of every reconstruction (rows) against every original of its problem
    (problems in chunks of at most ``max_pairs`` image pairs)."""
    p, m = images.shape[:2]
    step = max(1, max_pairs // (m * m))
    out = []
    for i in range(0, p, step):
        r, o = recs[i : i + step], images[i : i + step]
        q = len(r)
        a = np.repeat(r, m, axis=1).reshape(q * m * m, *recs.shape[2:])  # rec j against each original
        b = np.tile(o, (1, m, 1, 1, 1)).reshape(q * m * m, *images.shape[2:])
        a = M.calibrate(a, b) if standardised else np.clip(a, 0.0, 1.0)
        out.append(M.ssim_pairs(a, b).reshape(q, m, m))
    return np.concatenate(out)


def score_batch(recs: np.ndarray, obs: ObservedBatch, galleries: Galleries, *,
                standardised: bool) -> tuple[list[list[ImageScore]], np.ndarray]:
    """Score every contributing image of every problem; returns the scores and, per original, its
    matched (and, when ``standardised``, calibrated) reconstruction ``[P, m, ...]``."""
    from scipy.optimize import linear_sum_assignment

    sims = _pair_ssim(recs, obs.images, standardised)
    ref = [M.standardise(g[0]) if standardised else g[0] for g in galleries]
    matched = np.zeros_like(obs.images)
    out: list[list[ImageScore]] = []
    for p in range(len(recs)):
        rows, cols = linear_sum_assignment(-sims[p])
        scores: list[ImageScore | None] = [None] * obs.n_dummies
        for r, c in zip(rows, cols):
            orig = obs.images[p, c]
            rec = M.calibrate(recs[p, r], orig) if standardised else np.clip(recs[p, r], 0.0, 1.0)
            matched[p, c] = rec
            probe = M.standardise(recs[p, r]) if standardised else rec
            reid = M.reidentifies(probe, int(obs.index_in_hospital[p, c]), ref[int(obs.hospital_of[p, c])])
            ss = float(sims[p, r, c])
            scores[c] = ImageScore(ssim=ss, psnr=M.psnr(rec, orig), reidentified=reid,
                                   success=bool(ss >= SSIM_THRESHOLD and reid))
        out.append([sc for sc in scores if sc is not None])
    return out, matched


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
    round: str = "final"  # first (the initial model) | final (the released model)
    round_num: int = 0  # the training round the attacked update belongs to
    images_per_update: int = 1
    seconds_per_image: float = 0.0
    client_optimizer: str = "sgd"
    intensity: str = "raw"  # raw | standardised (see the module docstring)
    median_ssim: float = 0.0
    selected_by: str = "grid"  # grid | best plain setting of the round (protected targets)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check_galleries(galleries: Galleries) -> None:
    for k, (gx, _) in enumerate(galleries):
        if len(gx) < MIN_GALLERY_OTHERS + 1:
            raise ValueError(f"hospital {k} has {len(gx)} images; re-identification needs the target and >= "
                             f"{MIN_GALLERY_OTHERS} others")


def _labels(obs: ObservedBatch, *, bias_idx: int, client: ClientSetting, cfg: AttackConfig,
            mean_pred: np.ndarray) -> tuple[np.ndarray | None, list[bool]]:
    """The labels the reconstruction uses (``None``: optimised jointly) and, per update, whether
    its labels were recovered (one image: the vector; several: the per-finding counts)."""
    if obs.n_dummies == 1:
        labels = np.stack([recover_labels_single(u, bias_idx)[None, :] for u in obs.updates])
        return labels, [bool(np.array_equal(labels[p, 0], obs.labels[p, 0])) for p in range(len(labels))]
    hits = []
    for p, u in enumerate(obs.updates):
        counts = recover_label_counts(u, bias_idx, n_images=obs.n_dummies, batch_size=client.batch_size,
                                      client_lr=client.lr, mean_prediction=mean_pred)
        hits.append(bool(np.array_equal(counts, obs.labels[p].sum(axis=0).astype(np.int64))))
    if cfg.label_mode == "oracle":
        return obs.labels, hits  # strongest attacker (see bfdl_tff.privacy_eval.inversion)
    if cfg.label_mode == "joint":
        return None, hits
    raise ValueError(f"unknown label_mode {cfg.label_mode!r} (oracle or joint)")


def _row(target: str, client: ClientSetting, scores: list[list[ImageScore]], hits: list[bool], losses: np.ndarray, *,
         label_mode: str, seconds: float, round_label: str, round_num: int, standardised: bool) -> SweepRow:
    flat = [s for per in scores for s in per]
    succ = sum(s.success for s in flat)
    lo, hi = M.wilson_interval(succ, len(flat))
    ssims = [s.ssim for s in flat]
    return SweepRow(
        target=target, batch_size=client.batch_size, local_steps=client.local_steps, n_targets=len(flat),
        n_updates=len(scores), successes=int(succ), success_rate=succ / len(flat), ci_low=lo, ci_high=hi,
        mean_psnr=float(np.mean([min(s.psnr, 100.0) for s in flat])), mean_ssim=float(np.mean(ssims)),
        label_recovery_rate=sum(hits) / len(hits), reidentification_rate=float(np.mean([s.reidentified for s in flat])),
        mean_matching_loss=float(np.mean(losses)), seconds=seconds, label_mode=label_mode, round=round_label,
        round_num=round_num, images_per_update=len(scores[0]), seconds_per_image=seconds / len(flat),
        client_optimizer=client.optimizer, intensity="standardised" if standardised else "raw",
        median_ssim=float(np.median(ssims)),
    )


def attack_setting(
    model: Any,
    galleries: Galleries,
    *,
    target: str,
    client: ClientSetting,
    dp: DPSetting | None,
    n_images: int,
    cfg: AttackConfig,
    round_label: str = "final",
    round_num: int = 0,
    aux_images: np.ndarray | None = None,
    seed: int = 0,
    keep_examples: int = 0,
) -> tuple[SweepRow, Examples]:
    """Attack one (target, batch, steps, round) setting on at least ``n_images`` target images.

    Returns the summary row and up to ``keep_examples`` (original, reconstruction) pairs for the
    grids. Label recovery uses the model's mean prediction on ``aux_images`` (the attacker's
    auxiliary data; default: the last hospital's gallery) to estimate the sigmoid sum."""
    import tensorflow as tf

    _check_galleries(galleries)
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed)
    per_update = client.batch_size * client.local_steps * (len(galleries) if target == "secure_sum" else 1)
    problems = max(1, math.ceil(n_images / per_update))
    aux = aux_images if aux_images is not None else galleries[-1][0][:256]
    mean_pred = np.mean(classification_forward(model)(tf.constant(aux, tf.float32)).numpy(), axis=0)
    obs = observe(model, target, galleries, problems=problems, client=client, dp=dp, rng=rng)
    labels, hits = _labels(obs, bias_idx=output_bias_index(model), client=client, cfg=cfg, mean_pred=mean_pred)
    seeds = [cfg.seed * 1_000_003 + seed * 1009 + p for p in range(problems)]
    res = invert_batch(model, obs.updates, labels, cfg=cfg, n_images=obs.n_dummies, seeds=seeds)
    standardised = input_standardised(model)
    scores, matched = score_batch(res.images, obs, galleries, standardised=standardised)
    label_mode = "idlg" if obs.n_dummies == 1 else cfg.label_mode
    pairs = [(obs.images[p, c], matched[p, c]) for p in range(problems) for c in range(obs.n_dummies)]
    row = _row(target, client, scores, hits, res.matching_loss, label_mode=label_mode,
               seconds=time.perf_counter() - t0, round_label=round_label, round_num=round_num,
               standardised=standardised)
    return row, pairs[:keep_examples]


@dataclass
class Setting:
    target: str
    batch_size: int
    local_steps: int
    round: str
    selected_by: str = "grid"

    @property
    def key(self) -> str:
        return f"{self.target}_B{self.batch_size}_s{self.local_steps}_{self.round}"


def best_plain(rows: Sequence[SweepRow], round_label: str) -> SweepRow | None:
    """The plain-update setting of a round where inversion worked best (success rate, then mean SSIM)."""
    cands = [r for r in rows if r.target == "plain_update" and r.round == round_label]
    return max(cands, key=lambda r: (r.success_rate, r.mean_ssim, -r.batch_size * r.local_steps), default=None)


def plan(targets: Sequence[str], *, batch_sizes: Sequence[int], local_steps: Sequence[int], rounds: Sequence[str],
         protected: str) -> list[Setting]:
    """The grid settings: ``plain_update`` over batch x steps x round; ``secure_sum`` and
    ``dp_update`` over the grid too when ``protected == "grid"`` (with ``best_per_round`` they are
    added after the plain rows, :func:`protected_settings`)."""
    if protected not in ("grid", "best_per_round"):
        raise ValueError(f"unknown protected placement {protected!r} (grid or best_per_round)")
    grid_targets = [t for t in targets if t == "plain_update" or protected == "grid"]
    return [Setting(t, b, s, r) for t in grid_targets for r in rounds for b in batch_sizes for s in local_steps]


def protected_settings(rows: Sequence[SweepRow], targets: Sequence[str], rounds: Sequence[str],
                       fallback: tuple[int, int]) -> list[Setting]:
    """``secure_sum`` / ``dp_update`` at the best plain setting of each round (``fallback`` batch
    and steps when the run has no plain rows)."""
    out = []
    for r in rounds:
        best = best_plain(rows, r)
        b, s = (best.batch_size, best.local_steps) if best else fallback
        how = f"best plain_update of round {r}" if best else "smallest batch and steps (no plain_update rows)"
        out += [Setting(t, b, s, r, how) for t in targets if t != "plain_update"]
    return out


def run_settings(
    models: dict[str, tuple[Any, int]],
    galleries: Galleries,
    settings: Sequence[Setting],
    *,
    n_images: int,
    client: ClientSetting,
    dp: DPSetting | None,
    cfg: AttackConfig,
    aux_images: np.ndarray | None = None,
    seed: int = 0,
    keep_examples: int = 8,
    progress: Callable[[str], None] | None = None,
) -> tuple[list[SweepRow], dict[str, Examples]]:
    """Attack every setting with the model of its round (``models[round] = (model, round number)``)."""
    rows: list[SweepRow] = []
    examples: dict[str, Examples] = {}
    for i, st in enumerate(settings):
        model, round_num = models[st.round]
        row, ex = attack_setting(
            model, galleries, target=st.target, client=replace(client, batch_size=st.batch_size,
                                                                local_steps=st.local_steps),
            dp=dp, n_images=n_images, cfg=cfg, round_label=st.round, round_num=round_num, aux_images=aux_images,
            seed=seed * 7919 + i, keep_examples=keep_examples)
        row.selected_by = st.selected_by
        rows.append(row)
        examples[st.key] = ex
        if progress:
            progress(f"{st.target} B={st.batch_size} steps={st.local_steps} round={st.round}: success "
                     f"{row.successes}/{row.n_targets} [{row.ci_low:.3f}, {row.ci_high:.3f}] ssim {row.mean_ssim:.3f} "
                     f"labels {row.label_recovery_rate:.2f} ({row.seconds:.1f}s)")
    return rows, examples


def save_grid(examples: dict[str, Examples], path: Any, *, cols: int | None = None) -> None:
    """PNG grid: for each setting (or target kind), originals above reconstructions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bfdl_tff.io_utils import atomic_open

    kinds = [k for k, v in examples.items() if v]
    if not kinds:
        return
    cols = cols or max(len(examples[k]) for k in kinds)
    fig, axes = plt.subplots(2 * len(kinds), cols, figsize=(1.2 * cols, 2.6 * len(kinds)), squeeze=False)
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


__all__ = ["ImageScore", "MIN_GALLERY_OTHERS", "ROUNDS", "SSIM_THRESHOLD", "Setting", "SweepRow", "attack_setting",
           "best_plain", "input_standardised", "plan", "protected_settings", "run_settings", "save_grid",
           "score_batch"]
