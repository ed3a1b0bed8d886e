"""Empirical DP audit of a run: does any membership test beat the run's (epsilon, delta)?
(paper 3.1 / 3.5 "differential privacy"; claim C3; issue 16.6 "DP audit").

Against an (epsilon, delta)-DP training algorithm every membership test satisfies
``TPR <= e^eps * FPR + delta`` (and ``TPR <= 1 - e^-eps * (1 - delta - FPR)``; Kairouz, Oh &
Viswanath 2015; :func:`bfdl_tff.privacy_eval.metrics.dp_tpr_bound`). For each low FPR level
(0.1 %, 1 %) and each attack of ``attacks/membership.json`` (loss threshold, LiRA), the audit
takes the attack's threshold at that level (:func:`bfdl_tff.privacy_eval.metrics.low_fpr_point`:
``tp`` of ``n_members`` members and ``fp`` of ``n_nonmembers`` non-members above it) and reports
a **violation** iff the exact lower confidence bound of the TPR exceeds the bound evaluated at
the exact upper confidence bound of the FPR::

    violated  <=>  CP_low(tp, n_members) > dp_tpr_bound(eps, delta, CP_high(fp, n_nonmembers))

The threshold is an order statistic of the non-member scores, so the FPR at it is only known up
to its interval (with 1000 non-members, the 0.1 % point has 1 allowed false positive and an FPR
that may be several times 0.1 %); using the FPR's upper bound keeps a correctly private run from
being flagged because the FPR was underestimated. The 4 tests (2 levels x 2 attacks) share a
family-wise error of 5 % (Bonferroni: each one-sided bound at 1 - 0.05 / 8). ``bound`` in each
entry is ``dp_tpr_bound`` at the nominal level (the line Figure 3 draws).

Validity of the comparison: members are training images, non-members held-out test images of
other patients (the manifests are patient-disjoint). The DP inequality is about one example being
in or out; comparing different examples is a valid average of it when members and non-members are
exchangeable (a random train/test split of one population, as for the synthetic data). For
``privacy.unit: patient`` the neighbouring relation is one patient in or out, which is exactly
what a held-out patient's image vs a training patient's image tests. For client-level DP
(``mode: client``) the accountant's neighbour is a whole hospital; one image in or out changes one
hospital's data (remove it and add it back changed), so the image-level guarantee is group
privacy of size 2: ``(2 eps, 2 e^eps delta)``, which the audit uses.

No TensorFlow here: :func:`dp_audit_check` is what ``bfdl audit verify`` calls.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from bfdl_tff.privacy_eval import metrics as M

ATTACKS = ("lira", "loss_threshold")
FAMILY_ALPHA = 0.05


def image_level_privacy(mode: str, epsilon: float, delta: float) -> tuple[float, float, str]:
    """``(epsilon, delta, how)`` bounding a membership test on one image of a run of ``mode``."""
    if mode == "client":
        return 2.0 * epsilon, 2.0 * math.exp(epsilon) * delta, "group privacy (2 eps, 2 e^eps delta) of hospital-level DP"
    return epsilon, delta, "the accountant's (epsilon, delta)"


def audit_point(point: dict[str, Any], epsilon: float, delta: float, *, confidence: float) -> dict[str, Any]:
    """One test: a low-FPR point's counts against the bound (see the module docstring)."""
    two_sided = 1.0 - 2.0 * (1.0 - confidence)
    tpr_low, _ = M.clopper_pearson(int(point["tp"]), int(point["n_members"]), confidence=two_sided)
    _, fpr_high = M.clopper_pearson(int(point["fp"]), int(point["n_nonmembers"]), confidence=two_sided)
    bound_high = M.dp_tpr_bound(epsilon, delta, fpr_high)
    return {"tp": int(point["tp"]), "n_members": int(point["n_members"]), "fp": int(point["fp"]),
            "n_nonmembers": int(point["n_nonmembers"]), "tpr": float(point["tp"]) / int(point["n_members"]),
            "tpr_low": tpr_low, "fpr_high": fpr_high, "bound": M.dp_tpr_bound(epsilon, delta, float(point["level"])),
            "bound_at_fpr_high": bound_high, "violated": bool(tpr_low > bound_high)}


def audit(result: dict[str, Any], *, mode: str, epsilon: float, delta: float,
          family_alpha: float = FAMILY_ALPHA) -> dict[str, Any]:
    """``dp_audit`` of ``membership.json``: ``{level: {tpr_low, bound, violated, attack, ...,
    attacks: {attack: test}}}`` per low FPR level (the entry's own keys are those of the test
    with the largest ``tpr_low - bound_at_fpr_high``)."""
    eps, dlt, how = image_level_privacy(mode, epsilon, delta)
    levels = [f"{lv:g}" for lv in M.LOW_FPRS]
    tests = [(lv, a) for lv in levels for a in ATTACKS if isinstance(result.get(a), dict)
             and lv in (result[a].get("low_fpr") or {})]
    if not tests:
        raise ValueError("membership result has no low_fpr counts to audit")
    confidence = 1.0 - family_alpha / (2 * len(tests))  # each one-sided bound
    out: dict[str, Any] = {}
    for lv in levels:
        per = {a: audit_point(result[a]["low_fpr"][lv], eps, dlt, confidence=confidence)
               for (lv2, a) in tests if lv2 == lv}
        if not per:
            continue
        worst = max(per, key=lambda a: per[a]["tpr_low"] - per[a]["bound_at_fpr_high"])
        out[lv] = {**per[worst], "attack": worst, "attacks": per, "epsilon": eps, "delta": dlt,
                   "guarantee": how, "one_sided_confidence": confidence, "family_alpha": family_alpha,
                   "tests": len(tests)}
    return out


def violations(dp_audit: dict[str, Any]) -> list[str]:
    """One line per violated level (empty: no violation)."""
    out = []
    for lv, e in sorted(dp_audit.items()):
        if e.get("violated"):
            out.append(f"{e['attack']} TPR at FPR {float(lv) * 100:g}% is {e['tpr']:.4f} ({e['tp']}/{e['n_members']}; "
                       f"lower bound {e['tpr_low']:.4f}) above the DP bound {e['bound_at_fpr_high']:.4f} "
                       f"(epsilon {e['epsilon']:.3g}, delta {e['delta']:.2g}, at FPR <= {e['fpr_high']:.4f})")
    return out


def dp_audit_check(run_dir: str | Path) -> tuple[bool, str]:
    """The DP audit of a run for ``bfdl audit verify``: ``(ok, one-line message)``.

    Recomputes the verdict from ``attacks/membership.json``'s counts and the run's own
    ``privacy.json`` (never from a stored verdict). Runs without DP, or without a membership
    attack yet, pass with a message saying so."""
    from bfdl_tff.runs import RunDir

    run = RunDir.open(run_dir)
    if not run.privacy_file.is_file():
        return True, f"dp audit: {run.privacy_file} missing (no privacy schedule recorded); not audited"
    rec = run.privacy()
    mode = str(rec.get("mode", "none"))
    if mode == "none" or rec.get("epsilon") is None:
        return True, "dp audit: the run has no DP guarantee (privacy.json mode none); nothing to audit"
    path = run.attacks_dir / "membership.json"
    if not path.is_file():
        return True, f"dp audit: {path} missing (run `bfdl attack membership`); not audited"
    try:
        result = json.loads(path.read_text())
        checked = audit(result, mode=mode, epsilon=float(rec["epsilon"]), delta=float(rec["delta"]))
    except (ValueError, KeyError, TypeError) as e:
        return False, f"dp audit: {path}: unreadable membership result ({e})"
    bad = violations(checked)
    if bad:
        return False, f"dp audit: {path}: {bad[0]}"
    parts = [f"{e['attack']} TPR@{float(lv) * 100:g}%FPR low {e['tpr_low']:.4f} <= {e['bound_at_fpr_high']:.4f}"
             for lv, e in sorted(checked.items())]
    return True, f"dp audit: no violation of epsilon {float(rec['epsilon']):.3g} ({'; '.join(parts)})"


__all__ = ["ATTACKS", "FAMILY_ALPHA", "audit", "audit_point", "dp_audit_check", "image_level_privacy", "violations"]
