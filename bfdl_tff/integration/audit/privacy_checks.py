"""Audit check ``privacy_per_hospital`` (issue 16.2; paper 3.5): the per-hospital budgets on the
chain are the run's.

Sample-level DP-SGD calibrates each hospital's noise from its own patients and steps, so every
``privacy.record`` carries each hospital's cumulative ``{epsilon, delta, noise_multiplier}``.
The check, when ``privacy.json`` lists ``per_hospital`` budgets: every record carries them; each hospital's epsilon never decreases
over rounds; every round's values equal the run's ``privacy_rounds.csv``; the last round's equal
``privacy.json``'s ``per_hospital`` (the schedule the run trained with), for the same hospitals.
"""

from __future__ import annotations

import json
import math
from typing import Any

from bfdl_tff.federated.privacy_rounds import read_privacy_rounds
from bfdl_tff.integration.audit.context import AuditContext
from bfdl_tff.integration.audit.result import Check

NAME = "privacy_per_hospital"
_KEYS = ("epsilon", "delta", "noise_multiplier")


def _close(a: float, b: float) -> bool:
    return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)


def _differs(got: dict[str, Any], want: dict[str, Any]) -> str | None:
    """The first difference between two ``{hospital: {epsilon, delta, noise_multiplier}}``."""
    if sorted(got) != sorted(want):
        return f"hospitals {sorted(got)} differ from {sorted(want)}"
    for h in sorted(want):
        for k in _KEYS:
            if k in want[h] and not _close(got[h][k], want[h][k]):
                return f"hospital {h}: {k} {got[h][k]} differs from {want[h][k]}"
    return None


def _privacy_json(ctx: AuditContext) -> dict[str, Any] | None:
    path = ctx.run.privacy_file
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def check_privacy_per_hospital(ctx: AuditContext) -> list[Check]:
    rec = _privacy_json(ctx)
    records = {r: v.privacy for r, v in ctx.rounds.items() if v.privacy}
    if rec is None or not rec.get("per_hospital") or not records:
        return [Check(NAME, True, "no per-hospital budgets to check (privacy.json lists none)")]
    prev: dict[str, float] = {}
    for r, p in records.items():
        hosp = p.get("hospitals")
        if not hosp:
            return [Check(NAME, False, f"round {r}: privacy.record has no per-hospital budgets")]
        for h, v in hosp.items():
            if float(v["epsilon"]) < prev.get(h, 0.0) - 1e-12:
                return [Check(NAME, False, f"round {r}: hospital {h} epsilon {v['epsilon']} decreases below {prev[h]}")]
            prev[h] = float(v["epsilon"])
    rounds_file = ctx.run.privacy_rounds_file
    if not rounds_file.is_file():
        return [Check(NAME, False, "missing: the run's per-round budgets", str(rounds_file))]
    local = read_privacy_rounds(rounds_file)
    for r, p in records.items():
        diff = _differs(p["hospitals"], local.get(r, {}))
        if diff:
            return [Check(NAME, False, f"round {r}: chain vs privacy_rounds.csv: {diff}", str(rounds_file))]
    last = max(records)
    want = {h["hospital"]: {k: h[k] for k in _KEYS if k in h} for h in rec.get("per_hospital", [])}
    diff = _differs(records[last]["hospitals"], want)
    if diff:
        return [Check(NAME, False, f"round {last}: chain vs privacy.json: {diff}", str(ctx.run.privacy_file))]
    final = ", ".join(f"{h} {v['epsilon']:.4g}" for h, v in sorted(records[last]["hospitals"].items()))
    return [Check(NAME, True, f"{len(records)} rounds match privacy_rounds.csv and privacy.json; final epsilon per "
                  f"hospital: {final}")]


__all__ = ["check_privacy_per_hospital"]
