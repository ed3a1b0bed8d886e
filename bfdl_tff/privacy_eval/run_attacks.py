"""Run the privacy attacks against a finished run directory (``bfdl attack ...``; claim C3).

Reads ``RUN_DIR/config.yaml`` (the experiment), ``final_model.npz`` (the released global model,
``w0000, w0001, ...`` in ``model.get_weights()`` order), ``summary.json`` (epsilon, delta,
accountant, noise multiplier) and the run's hospital manifests, and writes
``RUN_DIR/attacks/inversion.json`` (+ ``inversion.csv``, ``inversion_grid.png``) and
``RUN_DIR/attacks/membership.json`` with the keys fixed in ``docs/INTERFACES.md``.

Inversion is simulated at the released weights: the attacker is the aggregator of one more
round, broadcasting ``final_model.npz`` and observing the hospitals' answers (one hospital's
update, the secure sum of all, or a DP-noised update with the run's noise multiplier and clip).
The centralized arm has no update channel; its ``inversion.json`` says so (``rows`` empty,
``setting.applicable`` false) instead of inventing a rate.

Membership inference uses the hospitals' training images as members and the held-out test
images as non-members (balanced, at most ``max_per_class`` of each).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bfdl_tff.config import REPO_ROOT, ExperimentConfig
from bfdl_tff.errors import BfdlError, RunDirError
from bfdl_tff.io_utils import atomic_write_json, atomic_write_text
from bfdl_tff.runs import RunDir


class AttackError(BfdlError):
    """An attack cannot run on this run directory (names the file and the problem)."""


# ----------------------------------------------------------------------------------------------
# Loading a run
# ----------------------------------------------------------------------------------------------


def _resolve(p: str) -> Path:
    path = Path(p)
    return path if path.is_absolute() else REPO_ROOT / path


def model_builder(cfg: ExperimentConfig) -> Callable[[], Any]:
    """``() -> fresh Keras model`` for the run's model config (models registry)."""
    from bfdl_tff.models import registry

    mcfg = registry.load_model_config(cfg.model.config, **dict(cfg.model.overrides))
    return lambda: registry.build_model(mcfg)


def load_released_model(run: RunDir) -> Any:
    """The run's model with ``final_model.npz`` loaded."""
    path = run.file("final_model.npz")
    if not path.exists():
        raise RunDirError(f"{path}: no final_model.npz (is the run finished?)")
    model = model_builder(run.config)()
    with np.load(path) as npz:
        keys = sorted(k for k in npz.files if k.startswith("w"))
        weights = [npz[k] for k in keys]
    expected = len(model.get_weights())
    if len(weights) != expected:
        raise RunDirError(f"{path}: {len(weights)} arrays, but the run's model has {expected} weights")
    try:
        model.set_weights(weights)
    except ValueError as e:
        raise RunDirError(f"{path}: weights do not fit the run's model: {e}") from None
    return model


def manifest_dir_of(run: RunDir) -> Path:
    """The run's hospital manifests: ``data.manifests`` if set, else ``RUN_DIR/manifests``."""
    tried = []
    if run.config.data.manifests:
        tried.append(_resolve(run.config.data.manifests))
    tried += [run.file("manifests"), run.file("data", "manifests")]
    for p in tried:
        if p.is_dir() and any(p.glob("hospital_*.csv*")):
            return p
    raise RunDirError(f"{run.path}: no hospital manifests found (tried {', '.join(str(p) for p in tried)})")


def data_root_of(run: RunDir, mdir: Path) -> Path:
    """The dataset root the run trained on: ``partition.json``'s ``root`` beside the manifests,
    else the synthetic cache directory for the run's (data config, partition seed), else
    ``data.root``."""
    pj = mdir / "partition.json"
    if pj.exists():
        try:
            root = json.loads(pj.read_text(encoding="utf-8")).get("root")
        except json.JSONDecodeError as e:
            raise RunDirError(f"{pj}: not valid JSON ({e})") from None
        if root and Path(root).is_dir():
            return Path(root)
    cfg = run.config.data
    if cfg.source == "synthetic":
        try:
            from bfdl_tff.data import prepare

            cand = prepare.synthetic_root(cfg, seed=run.config.resolved_seeds()["partition"])
            if cand.is_dir():
                return cand
        except (ImportError, AttributeError):
            pass
    return _resolve(cfg.root)


def load_run_data(run: RunDir) -> tuple[list[str], dict[str, Any], Any]:
    """``(hospital names, {name: train ImageSet}, test ImageSet)`` at the run's image size."""
    mdir = manifest_dir_of(run)
    root = data_root_of(run, mdir)
    size = run.config.data.image_size
    try:
        from bfdl_tff.data import federation

        fed = federation.load_federation(root, mdir, image_size=size)
        return list(fed.names), dict(fed.train), fed.test
    except ImportError:  # federation module not built yet: read the manifests directly
        from bfdl_tff.data import loader, manifest

        names = manifest.hospital_names(mdir)
        train = {
            n: loader.load_image_set(root, manifest.manifest_path(mdir, n), image_size=size, split="train")
            for n in names
        }
        test = loader.load_image_set(root, manifest.manifest_path(mdir, "test"), image_size=size)
        return names, train, test


def read_summary(run: RunDir) -> dict[str, Any]:
    p = run.file("summary.json")
    if not p.exists():
        return {}
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise RunDirError(f"{p}: not valid JSON ({e})") from None


def run_privacy(run: RunDir) -> dict[str, Any]:
    """Mode, noise multiplier, clip, epsilon, delta and accountant of the run.

    epsilon comes from ``summary.json`` (written by the federated runner from its accountant,
    ``bfdl_tff.federated.accounting``); if the summary lacks it, it is recomputed here with
    ``accounting.PrivacySchedule`` from the config and the hospitals' example counts."""
    s = read_summary(run)
    p = run.config.privacy
    mode = str(s.get("privacy_mode", s.get("mode", p.mode)))
    if run.config.arm == "centralized":
        mode = "none"
    z = s.get("noise_multiplier", p.noise_multiplier)
    z = float(z) if isinstance(z, (int, float)) else 0.0
    if "noise_multiplier" in s and z <= 0:
        mode = "none"  # the runner reports that no noise was added
    out: dict[str, Any] = {
        "mode": mode,
        "noise_multiplier": z,
        "l2_clip": float(s.get("l2_clip") or p.l2_clip),
        "epsilon": None,
        "delta": float(s.get("delta") or p.delta),
        "accountant": s.get("accountant") or p.accountant,
        "epsilon_source": None,
    }
    if mode == "none":
        return out
    if "epsilon" in s:
        eps = s["epsilon"]
        if isinstance(eps, (int, float)) and math.isfinite(eps):
            out["epsilon"], out["epsilon_source"] = float(eps), "summary.json"
    elif z > 0:
        out["epsilon"] = epsilon_from_config(run, z)
        out["epsilon_source"] = "bfdl_tff.federated.accounting (recomputed from config; no summary.json epsilon)"
    return out


def epsilon_from_config(run: RunDir, noise_multiplier: float) -> float:
    from bfdl_tff.federated import accounting
    from bfdl_tff.data import manifest

    cfg = run.config
    counts = []
    mdir = manifest_dir_of(run)
    for n in manifest.hospital_names(mdir):
        df = manifest.read_manifest(manifest.manifest_path(mdir, n))
        counts.append(int((df["split"] == "train").sum()))
    k = len(counts)
    sched = accounting.PrivacySchedule(
        mode=cfg.privacy.mode,
        noise_multiplier=noise_multiplier,
        delta=cfg.privacy.delta,
        accountant=cfg.privacy.accountant,  # type: ignore[arg-type]
        rounds=cfg.federated.rounds,
        num_clients=k,
        clients_per_round=cfg.federated.clients_per_round or k,
        batch_size=cfg.federated.batch_size,
        local_epochs=cfg.federated.local_epochs,
        num_examples=tuple(counts),
    )
    return float(sched.epsilon_after(cfg.federated.rounds))


# ----------------------------------------------------------------------------------------------
# Inversion
# ----------------------------------------------------------------------------------------------


def inversion_on_run(
    run_dir: str | Path,
    *,
    n_updates: int = 3,
    batch_sizes: tuple[int, ...] = (1, 4),
    local_steps: tuple[int, ...] = (1, 4),
    iterations: int = 150,
    restarts: int = 1,
    tv_weight: float = 1e-4,
    label_mode: str = "oracle",
    targets: tuple[str, ...] | None = None,
    noise_multiplier: float | None = None,
    gallery_size: int = 101,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run the inversion sweep on a run directory and write ``attacks/inversion.json``."""
    from bfdl_tff.privacy_eval import inversion as I

    run = RunDir.open(run_dir)
    out_dir = run.file("attacks")
    t0 = time.perf_counter()
    priv = run_privacy(run)
    setting: dict[str, Any] = {
        "arm": run.config.arm,
        "image_size": run.config.data.image_size,
        "model": run.config.model.config,
        "weights": "final_model.npz",
        "n_updates_per_setting": n_updates,
        "batch_sizes": list(batch_sizes),
        "local_steps": list(local_steps),
        "iterations": iterations,
        "restarts": restarts,
        "tv_weight": tv_weight,
        "client_lr": run.config.federated.client_lr,
        "success_rule": "SSIM >= 0.5 and nearest neighbour (pixel L2) among the target and >= 100 "
        "other images of its hospital",
        "label_rule": "1 image: iDLG sign of the findings-bias update; n > 1: per-finding counts "
        "from the bias update; the reconstruction then uses the true labels (label_mode oracle, "
        "strongest attacker) or optimises them (label_mode joint, label-blind DLG)",
        "label_mode": label_mode,
        "privacy": priv,
        "seed": seed,
    }
    if run.config.arm == "centralized":
        setting.update(
            applicable=False,
            reason="centralized training has no update channel: no party other than the data holder "
            "observes gradients or updates, so there is nothing to invert (see docs/privacy.md); "
            "compare arms with membership inference on the released model",
        )
        result = {"rows": [], "setting": setting}
        atomic_write_json(out_dir / "inversion.json", result)
        return result
    z = noise_multiplier if noise_multiplier is not None else priv["noise_multiplier"]
    if targets is None:
        targets = ("plain_update", "secure_sum") + (("dp_update",) if z and z > 0 else ())
    if "dp_update" in targets and not (z and z > 0):
        raise AttackError(
            f"{run.file('summary.json')}: the run has no DP noise multiplier; pass --noise-multiplier "
            "to attack a DP-noised update"
        )
    dp_mode = priv["mode"] if priv["mode"] in ("sample", "client") else "sample"
    dp = I.DPSetting(mode=dp_mode, noise_multiplier=float(z or 0.0), l2_clip=priv["l2_clip"])
    setting.update(applicable=True, dp=asdict(dp), targets=list(targets))

    model = load_released_model(run)
    names, train, _test = load_run_data(run)
    rng = np.random.default_rng(seed)
    galleries = []
    for n in names:
        s = train[n]
        if len(s) < gallery_size:
            raise AttackError(
                f"{manifest_dir_of(run)}: hospital {n} has {len(s)} training images; the success rule "
                f"needs a gallery of the target and >= 100 others ({gallery_size})"
            )
        idx = np.sort(rng.choice(len(s), size=gallery_size, replace=False))
        galleries.append((s.x[idx].astype(np.float32), s.y[idx].astype(np.float32)))
    setting["hospitals"] = names
    setting["gallery_size"] = gallery_size
    cfg = I.AttackConfig(
        iterations=iterations, restarts=restarts, tv_weight=tv_weight, label_mode=label_mode, seed=seed
    )
    rows, examples = I.run_sweep(
        model, galleries, targets=targets, batch_sizes=batch_sizes, local_steps=local_steps,
        n_updates=n_updates, client_lr=run.config.federated.client_lr, dp=dp, cfg=cfg, seed=seed,
        keep_examples=6, progress=progress,
    )
    setting["seconds"] = time.perf_counter() - t0
    result = {"rows": [r.as_dict() for r in rows], "setting": setting}
    atomic_write_json(out_dir / "inversion.json", result)
    atomic_write_text(out_dir / "inversion.csv", rows_to_csv(result["rows"]))
    I.save_grid(examples, out_dir / "inversion_grid.png")
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


def membership_on_run(
    run_dir: str | Path,
    *,
    n_shadows: int = 4,
    max_per_class: int = 200,
    shadow_epochs: int | None = None,
    online: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Loss-threshold and LiRA on the released model; writes ``attacks/membership.json``."""
    from bfdl_tff.privacy_eval import membership as MI

    run = RunDir.open(run_dir)
    t0 = time.perf_counter()
    model = load_released_model(run)
    names, train, test = load_run_data(run)
    rng = np.random.default_rng(seed)
    mx = np.concatenate([train[n].x for n in names])
    my = np.concatenate([train[n].y for n in names])
    k = min(max_per_class, len(mx), len(test))
    if k < 10:
        raise AttackError(f"{manifest_dir_of(run)}: too few members/non-members for membership inference ({k})")
    mi = rng.choice(len(mx), size=k, replace=False)
    ni = rng.choice(len(test), size=k, replace=False)
    members = (mx[mi].astype(np.float32), my[mi].astype(np.float32))
    nonmembers = (test.x[ni].astype(np.float32), test.y[ni].astype(np.float32))
    fc = run.config.federated
    epochs = shadow_epochs or (fc.centralized_epochs or fc.rounds * fc.local_epochs)
    recipe = MI.ShadowRecipe(
        epochs=epochs, batch_size=fc.batch_size, lr=fc.client_lr, optimizer=fc.client_optimizer,
        momentum=fc.client_momentum,
    )
    loss = MI.loss_threshold_attack(model, members, nonmembers)
    lira = MI.lira_attack(
        model, model_builder(run.config), members, nonmembers, n_shadows=n_shadows, recipe=recipe,
        online=online, seed=seed, progress=progress,
    )
    priv = run_privacy(run)
    bound = MI.dp_bound(priv["epsilon"], priv["delta"]) if priv["mode"] != "none" else None
    if bound is not None:
        bound["accountant"] = priv["accountant"]
        bound["epsilon_source"] = priv["epsilon_source"]
    result = {
        "loss_threshold": loss,
        "lira": lira,
        "dp_bound": bound,
        "n_members": int(k),
        "n_nonmembers": int(k),
        "setting": {
            "arm": run.config.arm,
            "members": "hospitals' training images",
            "nonmembers": "held-out test images",
            "shadow_recipe": asdict(recipe),
            "shadow_training": "central Keras fit, same model/loss/optimizer/batch/epochs, no DP",
            "privacy": priv,
            "seed": seed,
            "seconds": time.perf_counter() - t0,
            "note_low_fpr": "TPR at 0.1% FPR needs >= 1000 non-members to be resolved; below that it "
            "is the TPR at zero false positives",
        },
    }
    atomic_write_json(run.file("attacks", "membership.json"), result)
    return result


__all__ = [
    "AttackError",
    "inversion_on_run",
    "load_released_model",
    "load_run_data",
    "manifest_dir_of",
    "membership_on_run",
    "model_builder",
    "run_privacy",
]
