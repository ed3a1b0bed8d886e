"""Run the privacy attacks against a finished run directory (``bfdl attack ...``; claim C3).

Everything is read through :class:`bfdl_tff.runs.RunDir`: the experiment (``config.yaml``), the
released global model (``load_model()``), the dataset root and the manifests the run trained on
(``data.json``) and its privacy schedule (``privacy.json``: mode, noise multiplier, epsilon,
delta, accountant, as the federated runner's accountant computed them). Results go to
``RUN_DIR/attacks/inversion.json`` (+ ``inversion.csv``, ``inversion_grid.png``) and
``RUN_DIR/attacks/membership.json`` with the keys fixed in ``docs/INTERFACES.md``.

Inversion is simulated at the released weights: the attacker is the aggregator of one more
round, broadcasting the released model and observing the hospitals' answers (one hospital's
update, the secure sum of all, or a DP-noised update with the run's noise multiplier and clip).
The centralized arm has no update channel; its ``inversion.json`` says so (``rows`` empty,
``setting.applicable`` false) instead of inventing a rate.

Membership inference uses the hospitals' training images as members and the held-out test
images as non-members (balanced, at most ``max_per_class`` of each).
"""

from __future__ import annotations

import csv
import io
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.errors import BfdlError, RunDirError
from bfdl_tff.io_utils import atomic_write_json, atomic_write_text
from bfdl_tff.privacy_eval.options import InversionOptions, MembershipOptions
from bfdl_tff.runs import RunDir

Progress = Callable[[str], None] | None

SUCCESS_RULE = ("SSIM >= 0.5 and nearest neighbour (pixel L2) among the target and >= 100 other images of its "
                "hospital")
LABEL_RULE = ("1 image: iDLG sign of the findings-bias update; n > 1: per-finding counts from the bias update; the "
              "reconstruction then uses the true labels (label_mode oracle, strongest attacker) or optimises them "
              "(label_mode joint, label-blind DLG)")
NO_UPDATE_CHANNEL = ("centralized training has no update channel: no party other than the data holder observes "
                     "gradients or updates, so there is nothing to invert (see docs/privacy.md); compare arms with "
                     "membership inference on the released model")


class AttackError(BfdlError):
    """An attack cannot run on this run directory (names the file and the problem)."""


def result_file(run: RunDir, attack: str) -> Path:
    """``attacks/<attack>.json`` of a run (``inversion`` or ``membership``)."""
    return run.attacks_dir / f"{attack}.json"


# ----------------------------------------------------------------------------------------------
# Reading a run
# ----------------------------------------------------------------------------------------------


def model_builder(cfg: ExperimentConfig) -> Callable[[], Any]:
    """``() -> fresh Keras model`` for the run's model config (models registry)."""
    from bfdl_tff.models import registry

    mcfg = registry.load_model_config(cfg.model.config, **dict(cfg.model.overrides))
    return lambda: registry.build_model(mcfg)


def load_released_model(run: RunDir) -> Any:
    """The run's model with the released weights loaded."""
    weights = run.load_model()
    model = model_builder(run.config)()
    expected = len(model.get_weights())
    if len(weights) != expected:
        raise RunDirError(f"{run.final_model_file}: {len(weights)} arrays, but the run's model has {expected} weights")
    try:
        model.set_weights(weights)
    except ValueError as e:
        raise RunDirError(f"{run.final_model_file}: weights do not fit the run's model: {e}") from None
    return model


def load_run_data(run: RunDir) -> tuple[list[str], dict[str, Any], Any]:
    """``(hospital names, {name: train ImageSet}, test ImageSet)`` the run trained and was tested on."""
    from bfdl_tff.data import federation

    root = Path(run.data_record()["root"])
    fed = federation.load_federation(root, run.manifest_dir(), image_size=run.config.data.image_size)
    return list(fed.names), dict(fed.train), fed.test


def run_privacy(run: RunDir) -> dict[str, Any]:
    """Mode, noise multiplier, clip, epsilon, delta and accountant of the run (``privacy.json``,
    written by the federated runner from its accountant; ``l2_clip`` from the config)."""
    rec = run.privacy()
    mode = str(rec["mode"])
    z = float(rec.get("noise_multiplier") or 0.0) if mode != "none" else 0.0
    eps = rec.get("epsilon")
    return {"mode": mode, "noise_multiplier": z, "l2_clip": float(run.config.privacy.l2_clip),
            "epsilon": float(eps) if mode != "none" and eps is not None else None,
            "delta": float(rec["delta"]), "accountant": rec.get("accountant"),
            "epsilon_source": run.privacy_file.name if mode != "none" else None}


# ----------------------------------------------------------------------------------------------
# Inversion
# ----------------------------------------------------------------------------------------------


def _inversion_setting(run: RunDir, opts: InversionOptions, priv: dict[str, Any], seed: int) -> dict[str, Any]:
    cfg = run.config
    return {"arm": cfg.arm, "image_size": cfg.data.image_size, "model": cfg.model.config,
            "weights": run.final_model_file.name, "n_updates_per_setting": opts.n_updates,
            "batch_sizes": list(opts.batch_sizes), "local_steps": list(opts.local_steps),
            "iterations": opts.iterations, "restarts": opts.restarts, "tv_weight": opts.tv_weight,
            "client_lr": cfg.federated.client_lr, "success_rule": SUCCESS_RULE, "label_rule": LABEL_RULE,
            "label_mode": opts.label_mode, "privacy": priv, "seed": seed}


def _dp_targets(run: RunDir, opts: InversionOptions, priv: dict[str, Any]) -> tuple[Any, tuple[str, ...]]:
    """The DP setting of ``dp_update`` and the targets to attack (``dp_update`` needs noise)."""
    from bfdl_tff.privacy_eval.observation import DPSetting

    z = opts.noise_multiplier if opts.noise_multiplier is not None else priv["noise_multiplier"]
    targets = tuple(opts.targets) or (("plain_update", "secure_sum") + (("dp_update",) if z and z > 0 else ()))
    if "dp_update" in targets and not (z and z > 0):
        raise AttackError(f"{run.privacy_file}: the run has no DP noise multiplier; pass --noise-multiplier "
                          "to attack a DP-noised update")
    mode = priv["mode"] if priv["mode"] in ("sample", "client") else "sample"
    return DPSetting(mode=mode, noise_multiplier=float(z or 0.0), l2_clip=priv["l2_clip"]), targets


def _galleries(run: RunDir, names: list[str], train: dict[str, Any], *, size: int,
               rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``size`` training images of every hospital (the target and >= 100 others to re-identify among)."""
    out = []
    for n in names:
        s = train[n]
        if len(s) < size:
            raise AttackError(f"{run.manifest_dir()}: hospital {n} has {len(s)} training images; the success rule "
                              f"needs a gallery of the target and >= 100 others ({size})")
        idx = np.sort(rng.choice(len(s), size=size, replace=False))
        out.append((s.x[idx].astype(np.float32), s.y[idx].astype(np.float32)))
    return out


def inversion_on_run(run_dir: str | Path, opts: InversionOptions | None = None, *, seed: int = 0,
                     progress: Progress = None) -> dict[str, Any]:
    """Run the inversion sweep on a run directory and write ``attacks/inversion.json``."""
    from bfdl_tff.privacy_eval.inversion import AttackConfig
    from bfdl_tff.privacy_eval.inversion_sweep import run_sweep, save_grid

    opts = opts or InversionOptions()
    run = RunDir.open(run_dir)
    t0 = time.perf_counter()
    priv = run_privacy(run)
    setting = _inversion_setting(run, opts, priv, seed)
    if run.config.arm == "centralized":
        setting.update(applicable=False, reason=NO_UPDATE_CHANNEL)
        result = {"rows": [], "setting": setting}
        atomic_write_json(result_file(run, "inversion"), result)
        return result
    dp, targets = _dp_targets(run, opts, priv)
    setting.update(applicable=True, dp=asdict(dp), targets=list(targets))
    model = load_released_model(run)
    names, train, _test = load_run_data(run)
    galleries = _galleries(run, names, train, size=opts.gallery_size, rng=np.random.default_rng(seed))
    setting.update(hospitals=names, gallery_size=opts.gallery_size)
    cfg = AttackConfig(iterations=opts.iterations, restarts=opts.restarts, tv_weight=opts.tv_weight,
                       label_mode=opts.label_mode, seed=seed)
    rows, examples = run_sweep(model, galleries, targets=targets, batch_sizes=opts.batch_sizes,
                               local_steps=opts.local_steps, n_updates=opts.n_updates,
                               client_lr=run.config.federated.client_lr, dp=dp, cfg=cfg, seed=seed,
                               keep_examples=6, progress=progress)
    setting["seconds"] = time.perf_counter() - t0
    result = {"rows": [r.as_dict() for r in rows], "setting": setting}
    atomic_write_json(result_file(run, "inversion"), result)
    atomic_write_text(run.attacks_dir / "inversion.csv", rows_to_csv(result["rows"]))
    save_grid(examples, run.attacks_dir / "inversion_grid.png")
    return result


def rows_to_csv(rows: list[dict[str, Any]]) -> str:
    if not rows:
        return ""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------
# Membership inference
# ----------------------------------------------------------------------------------------------


def _members_and_nonmembers(run: RunDir, *, max_per_class: int, rng: np.random.Generator) -> tuple[tuple, tuple]:
    names, train, test = load_run_data(run)
    mx = np.concatenate([train[n].x for n in names])
    my = np.concatenate([train[n].y for n in names])
    k = min(max_per_class, len(mx), len(test))
    if k < 10:
        raise AttackError(f"{run.manifest_dir()}: too few members/non-members for membership inference ({k})")
    mi = rng.choice(len(mx), size=k, replace=False)
    ni = rng.choice(len(test), size=k, replace=False)
    return ((mx[mi].astype(np.float32), my[mi].astype(np.float32)),
            (test.x[ni].astype(np.float32), test.y[ni].astype(np.float32)))


def membership_on_run(run_dir: str | Path, opts: MembershipOptions | None = None, *, seed: int = 0,
                      progress: Progress = None) -> dict[str, Any]:
    """Loss-threshold and LiRA on the released model; writes ``attacks/membership.json``."""
    from bfdl_tff.privacy_eval import membership as MI

    opts = opts or MembershipOptions()
    run = RunDir.open(run_dir)
    t0 = time.perf_counter()
    model = load_released_model(run)
    members, nonmembers = _members_and_nonmembers(run, max_per_class=opts.max_per_class,
                                                  rng=np.random.default_rng(seed))
    fc = run.config.federated
    recipe = MI.ShadowRecipe(epochs=opts.shadow_epochs or (fc.centralized_epochs or fc.rounds * fc.local_epochs),
                             batch_size=fc.batch_size, lr=fc.client_lr, optimizer=fc.client_optimizer,
                             momentum=fc.client_momentum)
    loss = MI.loss_threshold_attack(model, members, nonmembers)
    lira = MI.lira_attack(model, model_builder(run.config), members, nonmembers, n_shadows=opts.n_shadows,
                          recipe=recipe, online=opts.online, seed=seed, progress=progress)
    priv = run_privacy(run)
    bound = MI.dp_bound(priv["epsilon"], priv["delta"]) if priv["mode"] != "none" else None
    if bound is not None:
        bound.update(accountant=priv["accountant"], epsilon_source=priv["epsilon_source"])
    k = len(members[0])
    result = {
        "loss_threshold": loss, "lira": lira, "dp_bound": bound, "n_members": int(k), "n_nonmembers": int(k),
        "setting": {"arm": run.config.arm, "members": "hospitals' training images",
                    "nonmembers": "held-out test images", "shadow_recipe": asdict(recipe),
                    "shadow_training": "central Keras fit, same model/loss/optimizer/batch/epochs, no DP",
                    "privacy": priv, "seed": seed, "seconds": time.perf_counter() - t0,
                    "note_low_fpr": "TPR at 0.1% FPR needs >= 1000 non-members to be resolved; below that it "
                                    "is the TPR at zero false positives"},
    }
    atomic_write_json(result_file(run, "membership"), result)
    return result


__all__ = ["AttackError", "inversion_on_run", "load_released_model", "load_run_data", "membership_on_run",
           "model_builder", "result_file", "rows_to_csv", "run_privacy"]
