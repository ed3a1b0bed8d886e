"""Run the privacy attacks against a finished run directory (``bfdl attack ...``; claim C3).

Everything is read through :class:`bfdl_tff.runs.RunDir`: the experiment (``config.yaml``), the
released global model (``load_model()``), the dataset root and the manifests the run trained on
(``data.json``) and its privacy schedule (``privacy.json``: mode, noise multiplier, epsilon,
delta, accountant, as the federated runner's accountant computed them). Results go to
``RUN_DIR/attacks/inversion.json`` (+ ``inversion.csv``, ``inversion_grid.png``) and
``RUN_DIR/attacks/membership.json`` with the keys fixed in ``docs/INTERFACES.md``.

Inversion is simulated at two points of the run: the **first** round (the initial model the
server broadcasts, rebuilt from the run's config and ``model_init`` seed exactly as the runner
builds it) and the **final** one (the released weights: the attacker is the aggregator of one
more round). It observes the hospitals' answers (one hospital's update with the run's client
optimizer, the secure sum of all, or a DP-noised update with the run's noise multiplier and clip)
and attacks at least ``images_per_setting`` images per setting. The centralized arm has no update
channel; its ``inversion.json`` says so (``rows`` empty, ``setting.applicable`` false) instead of
inventing a rate.

Membership inference uses the hospitals' training images as members and the held-out test
images as non-members (balanced, at most ``max_per_class`` of each); for DP runs the result
carries the DP audit (:mod:`bfdl_tff.privacy_eval.dp_audit`).
"""

from __future__ import annotations

import csv
import io
import math
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable

import numpy as np

from bfdl_tff.config import ExperimentConfig
from bfdl_tff.errors import BfdlError, RunDirError
from bfdl_tff.io_utils import atomic_write_json, atomic_write_text
from bfdl_tff.privacy_eval.options import DEFAULT_TARGETS, TARGETS, InversionOptions, MembershipOptions
from bfdl_tff.runs import RunDir

Progress = Callable[[str], None] | None

SUCCESS_RULE = ("SSIM >= 0.5 and nearest neighbour (pixel L2) among the target and >= 100 other images of its "
                "hospital")
LABEL_RULE = ("1 image: iDLG sign of the findings-bias update; n > 1: per-finding counts from the bias update; the "
              "reconstruction then uses the true labels (label_mode oracle, strongest attacker) or optimises them "
              "(label_mode joint, label-blind DLG)")
SHADOW_TRAINING = {
    "target_size": "central Keras fit, same model/loss/optimizer/batch/epochs as federated.*, no DP; each shadow "
                   "trains on a random half of the audited population plus the run's other training images (the "
                   "target's training-set size)",
    "audited": "central Keras fit, same model/loss/optimizer/batch/epochs as federated.*, no DP; each shadow trains "
               "on a random half of the audited population only (smaller than the target's training set)",
}
NO_UPDATE_CHANNEL = ("centralized training has no update channel: no party other than the data holder observes "
                     "gradients or updates, so there is nothing to invert (see docs/privacy.md); compare arms with "
                     "membership inference on the released model")


class AttackError(BfdlError):
    """An attack cannot run on this run directory (names the file and the problem)."""


class DPAuditViolation(BfdlError):
    """A membership attack beat the run's DP bound (``membership.json`` is written first)."""

    exit_code = 3


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


def initial_model(run: RunDir) -> Any:
    """The run's initial global model: the model config built with the run's ``model_init`` seed,
    as the runner builds the model it broadcasts in round 1 (``federated.runner``)."""
    from bfdl_tff.models import registry

    cfg = run.config
    mcfg = registry.load_model_config(cfg.model.config, **dict(cfg.model.overrides))
    return registry.build_model(mcfg, seed=cfg.resolved_seeds()["model_init"])


def run_privacy(run: RunDir) -> dict[str, Any]:
    """Mode, noise multiplier, clip, epsilon, delta and accountant of the run (``privacy.json``,
    written by the federated runner from its accountant; ``l2_clip`` from the config). With
    per-hospital calibration ``per_hospital`` lists each hospital's noise multiplier and epsilon;
    ``epsilon`` is the maximum over hospitals (the guarantee any one patient gets)."""
    rec = run.privacy()
    mode = str(rec["mode"])
    z = float(rec.get("noise_multiplier") or 0.0) if mode != "none" else 0.0
    eps = rec.get("epsilon")
    per = [{"hospital": h.get("hospital"), "noise_multiplier": h.get("noise_multiplier"), "epsilon": h.get("epsilon")}
           for h in rec.get("per_hospital") or []]
    return {"mode": mode, "noise_multiplier": z, "l2_clip": float(run.config.privacy.l2_clip),
            "epsilon": float(eps) if mode != "none" and eps is not None else None,
            "delta": float(rec["delta"]), "accountant": rec.get("accountant"),
            "unit": rec.get("unit", "image") if mode == "sample" else ("hospital" if mode == "client" else None),
            "per_hospital": per, "epsilon_source": run.privacy_file.name if mode != "none" else None}


def client_protocol(cfg: ExperimentConfig) -> dict[str, Any]:
    """The hospitals' local optimizer (``federated.client_*``; the private arm's ``privacy.client_*``
    where set): what the attacker assumes is public protocol."""
    fc, pc = cfg.federated, cfg.privacy
    opt, lr, mom = fc.client_optimizer, float(fc.client_lr), float(fc.client_momentum)
    if cfg.arm == "bfdl":
        opt = getattr(pc, "client_optimizer", "") or opt
        lr = float(getattr(pc, "client_lr", 0.0) or lr)
        m = float(getattr(pc, "client_momentum", -1.0))
        mom = m if m >= 0 else mom
    return {"optimizer": opt, "lr": lr, "momentum": mom}


# ----------------------------------------------------------------------------------------------
# Inversion
# ----------------------------------------------------------------------------------------------


def _inversion_setting(run: RunDir, opts: InversionOptions, priv: dict[str, Any], seed: int) -> dict[str, Any]:
    cfg = run.config
    return {"arm": cfg.arm, "image_size": cfg.data.image_size, "model": cfg.model.config,
            "weights": {"first": "initial model (model config + model_init seed)", "final": run.final_model_file.name},
            "rounds": list(opts.rounds), "images_per_setting": opts.images_per_setting,
            "batch_sizes": list(opts.batch_sizes), "local_steps": list(opts.local_steps), "protected": opts.protected,
            "iterations": opts.iterations, "restarts": opts.restarts, "tv_weight": opts.tv_weight,
            "client": client_protocol(cfg), "client_lr": client_protocol(cfg)["lr"],
            "matching": "soft sign g / (|g| + 0.2 mean|g|) (Adam clients)" if client_protocol(cfg)["optimizer"] == "adam"
            else "gradient (SGD clients)", "success_rule": SUCCESS_RULE,
            "label_rule": LABEL_RULE, "label_mode": opts.label_mode, "privacy": priv, "seed": seed}


def _dp_targets(run: RunDir, opts: InversionOptions, priv: dict[str, Any], attacked: str) -> tuple[Any, tuple[str, ...]]:
    """The DP setting of ``dp_update`` (the attacked hospital's noise multiplier) and the targets."""
    from bfdl_tff.privacy_eval.observation import DPSetting

    z = opts.noise_multiplier
    if z is None:
        own = [h["noise_multiplier"] for h in priv["per_hospital"] if h["hospital"] == attacked]
        z = float(own[0]) if own and own[0] is not None else priv["noise_multiplier"]
    default = tuple(t for t in DEFAULT_TARGETS.get(run.config.arm, TARGETS)
                    if t != "plain_update" or run.config.arm in opts.plain_arms)
    targets = tuple(opts.targets) or tuple(t for t in default if t != "dp_update" or (z and z > 0))
    if "dp_update" in targets and not (z and z > 0):
        raise AttackError(f"{run.privacy_file}: the run has no DP noise multiplier; pass --noise-multiplier "
                          "to attack a DP-noised update")
    mode = priv["mode"] if priv["mode"] in ("sample", "client") else "sample"
    return DPSetting(mode=mode, noise_multiplier=float(z or 0.0), l2_clip=priv["l2_clip"]), targets


def gallery_need(opts: InversionOptions) -> int:
    """Images per hospital so that every setting's targets are distinct images."""
    need = [math.ceil(opts.images_per_setting / (b * s)) * b * s for b in opts.batch_sizes for s in opts.local_steps]
    return max([opts.gallery_size, *need])


def _galleries(run: RunDir, names: list[str], train: dict[str, Any], *, size: int,
               rng: np.random.Generator) -> list[tuple[np.ndarray, np.ndarray]]:
    """``size`` training images of every hospital (the target and >= 100 others to re-identify among)."""
    out = []
    for n in names:
        s = train[n]
        if len(s) < size:
            raise AttackError(f"{run.manifest_dir()}: hospital {n} has {len(s)} training images; the attack needs "
                              f"{size} (targets of a setting distinct, and the target and >= 100 others to "
                              f"re-identify among)")
        idx = np.sort(rng.choice(len(s), size=size, replace=False))
        out.append((s.x[idx].astype(np.float32), s.y[idx].astype(np.float32)))
    return out


def _write_inversion(run: RunDir, result: dict[str, Any], examples: dict[str, Any]) -> None:
    from bfdl_tff.privacy_eval.inversion_sweep import save_grid

    atomic_write_json(result_file(run, "inversion"), result)
    atomic_write_text(run.attacks_dir / "inversion.csv", rows_to_csv(result["rows"]))
    grids = run.attacks_dir / "inversion_grids"
    grids.mkdir(parents=True, exist_ok=True)
    for key, ex in examples.items():
        save_grid({key: ex}, grids / f"{key}.png", cols=8)
    overview = {k: v[:6] for k, v in examples.items() if not k.startswith("plain_update") or "_B1_s1_" in k}
    save_grid(overview or dict(list(examples.items())[:4]), run.attacks_dir / "inversion_grid.png")


def inversion_on_run(run_dir: str | Path, opts: InversionOptions | None = None, *, seed: int = 0,
                     progress: Progress = None) -> dict[str, Any]:
    """Run the inversion sweep on a run directory and write ``attacks/inversion.json`` (+ CSV,
    ``inversion_grid.png`` and one grid per setting under ``inversion_grids/``)."""
    from bfdl_tff.hashing import weights_digest
    from bfdl_tff.privacy_eval import inversion_sweep as S
    from bfdl_tff.privacy_eval.inversion import AttackConfig
    from bfdl_tff.privacy_eval.observation import ClientSetting

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
    names, train, test = load_run_data(run)
    dp, targets = _dp_targets(run, opts, priv, names[0])
    final = load_released_model(run)
    first = initial_model(run)
    gallery = gallery_need(opts)
    galleries = _galleries(run, names, train, size=gallery, rng=np.random.default_rng(seed))
    models = {"first": (first, 1), "final": (final, int(run.config.federated.rounds))}
    setting.update(applicable=True, dp=asdict(dp), targets=list(targets), hospitals=names, gallery_size=gallery,
                   attacked_hospital=names[0], initial_model_digest=weights_digest(first.get_weights()),
                   intensity="standardised" if S.input_standardised(final) else "raw",
                   auxiliary_data="held-out test images (label-count estimate)")
    proto = client_protocol(run.config)
    cfg = AttackConfig(iterations=opts.iterations, restarts=opts.restarts, tv_weight=opts.tv_weight,
                       label_mode=opts.label_mode, seed=seed, engine=opts.engine,
                       match="adam" if proto["optimizer"] == "adam" else "gradient")
    client = ClientSetting(lr=proto["lr"], optimizer=proto["optimizer"], momentum=proto["momentum"])
    common = dict(n_images=opts.images_per_setting, client=client, dp=dp, cfg=cfg,
                  aux_images=test.x[:256].astype(np.float32), keep_examples=8, progress=progress)
    settings = S.plan(targets, batch_sizes=opts.batch_sizes, local_steps=opts.local_steps, rounds=opts.rounds,
                      protected=opts.protected)
    rows, examples = S.run_settings(models, galleries, settings, seed=seed, **common)
    if opts.protected == "best_per_round":
        more = S.protected_settings(rows, targets, opts.rounds, fallback=(min(opts.batch_sizes), min(opts.local_steps)))
        rows2, ex2 = S.run_settings(models, galleries, more, seed=seed + 1, **common)
        rows, examples = rows + rows2, {**examples, **ex2}
    setting["seconds"] = time.perf_counter() - t0
    result = {"rows": [r.as_dict() for r in rows], "setting": setting}
    _write_inversion(run, result, examples)
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


def _members_and_nonmembers(run: RunDir, *, max_per_class: int,
                            rng: np.random.Generator) -> tuple[tuple, tuple, tuple, dict[str, Any]]:
    """Audited members and non-members (balanced), the run's other training images (shadows'
    always-in data) and facts about the split (patient overlap)."""
    names, train, test = load_run_data(run)
    mx = np.concatenate([train[n].x for n in names])
    my = np.concatenate([train[n].y for n in names])
    mp = np.concatenate([train[n].patient_ids for n in names])
    k = min(max_per_class, len(mx), len(test))
    if k < 10:
        raise AttackError(f"{run.manifest_dir()}: too few members/non-members for membership inference ({k})")
    mi = rng.choice(len(mx), size=k, replace=False)
    ni = rng.choice(len(test), size=k, replace=False)
    rest = np.setdiff1d(np.arange(len(mx)), mi)
    facts = {"training_images": int(len(mx)), "test_images": int(len(test)),
             "nonmember_images_of_training_patients": int(np.isin(test.patient_ids[ni], mp).sum())}
    return ((mx[mi].astype(np.float32), my[mi].astype(np.float32)),
            (test.x[ni].astype(np.float32), test.y[ni].astype(np.float32)),
            (mx[rest].astype(np.float32), my[rest].astype(np.float32)), facts)


def _recipe(run: RunDir, opts: MembershipOptions) -> Any:
    from bfdl_tff.privacy_eval import membership as MI

    fc = run.config.federated
    return MI.ShadowRecipe(epochs=opts.shadow_epochs or (fc.centralized_epochs or fc.rounds * fc.local_epochs),
                           batch_size=fc.batch_size, lr=fc.client_lr, optimizer=fc.client_optimizer,
                           momentum=fc.client_momentum)


def membership_on_run(run_dir: str | Path, opts: MembershipOptions | None = None, *, seed: int = 0,
                      progress: Progress = None) -> dict[str, Any]:
    """Loss-threshold and LiRA on the released model; writes ``attacks/membership.json`` (with the
    DP audit for DP runs) and raises :class:`DPAuditViolation` after writing if the audit fails."""
    from bfdl_tff.privacy_eval import dp_audit
    from bfdl_tff.privacy_eval import membership as MI

    opts = opts or MembershipOptions()
    run = RunDir.open(run_dir)
    t0 = time.perf_counter()
    model = load_released_model(run)
    members, nonmembers, rest, facts = _members_and_nonmembers(run, max_per_class=opts.max_per_class,
                                                               rng=np.random.default_rng(seed))
    recipe = _recipe(run, opts)
    always_in = rest if opts.shadow_data == "target_size" else None
    key = MI.digest(members[0], members[1], nonmembers[0], nonmembers[1],
                     *(always_in if always_in is not None else ()), run.config.model, asdict(recipe),
                     opts.n_shadows, seed)
    loss = MI.loss_threshold_attack(model, members, nonmembers)
    lira = MI.lira_attack(model, model_builder(run.config), members, nonmembers, n_shadows=opts.n_shadows,
                          recipe=recipe, online=opts.online, seed=seed, always_in=always_in, cache_key=key,
                          progress=progress)
    priv = run_privacy(run)
    bound = MI.dp_bound(priv["epsilon"], priv["delta"]) if priv["mode"] != "none" else None
    if bound is not None:
        bound.update(accountant=priv["accountant"], epsilon_source=priv["epsilon_source"], unit=priv["unit"],
                     per_hospital=priv["per_hospital"])
    k = len(members[0])
    result = {
        "loss_threshold": loss, "lira": lira, "dp_bound": bound, "n_members": int(k), "n_nonmembers": int(k),
        "setting": {"arm": run.config.arm, "members": "hospitals' training images",
                    "nonmembers": "held-out test images", "shadow_recipe": asdict(recipe),
                    "shadow_training": SHADOW_TRAINING[opts.shadow_data], "shadow_data": opts.shadow_data,
                    "privacy": priv, "seed": seed, **facts,
                    "note_low_fpr": "TPR at 0.1% FPR needs >= 1000 non-members to be resolved; below that it "
                                    "is the TPR at zero false positives"},
    }
    result["dp_audit"] = (dp_audit.audit(result, mode=priv["mode"], epsilon=priv["epsilon"], delta=priv["delta"])
                          if bound is not None else None)
    result["setting"]["seconds"] = time.perf_counter() - t0
    atomic_write_json(result_file(run, "membership"), result)
    bad = dp_audit.violations(result["dp_audit"] or {})
    if bad:
        raise DPAuditViolation(f"{result_file(run, 'membership')}: DP audit violated: {bad[0]}")
    return result


__all__ = ["AttackError", "DPAuditViolation", "client_protocol", "gallery_need", "initial_model", "inversion_on_run", "load_released_model", "load_run_data", "membership_on_run",
           "model_builder", "result_file", "rows_to_csv", "run_privacy"]
