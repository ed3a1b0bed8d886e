"""``results/expected_results.md``: the README "Expected results" section, filled from
``results/stages.json`` (measured stage runtimes) and the generated files. Nothing typed in."""

from __future__ import annotations

from pathlib import Path

from bfdl_tff.io_utils import atomic_write_text
from paper_figures import results as R


EXPECTED_ITEMS = (
    ("Table 3.3 (paper vs measured; macro AUC with 95 % CIs and paired differences)", "table33.md",
     ("arms", "attacks", "ledger_bench", "statistics", "figures"),
     "bfdl figures --runs runs/ --out results/ --only table33"),
    ("Figure 2: performance comparison", "fig2_performance.png", ("arms", "statistics"),
     "bfdl figures --runs runs/ --out results/ --only fig2_performance"),
    ("Figure 3: privacy leakage", "fig3_privacy.png", ("arms", "attacks"),
     "bfdl figures --runs runs/ --out results/ --only fig3_privacy"),
    ("Figure 4: scalability (K = 3..10)", "fig4_scalability.png", ("scalability",),
     "bfdl figures --runs runs/ --out results/ --only fig4_scalability"),
    ("Figure 5: convergence, with/without ledger", "fig5_convergence.png", ("arms", "ledger_off"),
     "bfdl figures --runs runs/ --out results/ --only fig5_convergence"),
    ("Ledger performance", "ledger_tables.png", ("ledger_bench", "arms"),
     "bfdl figures --runs runs/ --out results/ --only ledger_tables"),
    ("Ledger latency versus throughput", "ledger_latency.png", ("ledger_bench",),
     "bfdl figures --runs runs/ --out results/ --only ledger_latency"),
    ("Communication per arm", "communication.png", ("arms",),
     "bfdl figures --runs runs/ --out results/ --only communication"),
    ("Privacy budget", "privacy_budget.png", ("arms", "client_dp", "privacy_budget"),
     "bfdl figures --runs runs/ --out results/ --only privacy_budget"),
    ("Privacy-utility curve: B-FDL against epsilon", "privacy_utility.png", ("arms", "privacy_utility"),
     "bfdl figures --runs runs/ --out results/ --only privacy_utility"),
)


def build_expected_results(runs_root: str | Path, out_dir: str | Path, *, image_prefix: str = "results/") -> Path:
    """``results/expected_results.md``: the README "Expected results" section, filled from
    ``results/stages.json`` (measured stage runtimes) and the generated files. Nothing typed in:
    a runtime that ``stages.json`` lacks reads "not measured"."""
    out_dir = Path(out_dir)
    st_file = out_dir / "stages.json"
    st = R.read_json(st_file) if st_file.is_file() else {"stages": {}}
    stages = st.get("stages", {})
    profile = st.get("profile", "default")

    def secs(names: tuple[str, ...]) -> str:
        parts = []
        for n in names:
            rec = stages.get(n)
            if rec and rec.get("status") == "done" and rec.get("seconds") is not None:
                parts.append(f"{n} {float(rec['seconds']):.0f} s")
            else:
                parts.append(f"{n} not measured")
        return ", ".join(parts)

    total = [float(r.get("seconds") or 0) for r in stages.values() if r.get("status") == "done"]
    lines = [
        "## Expected results",
        "",
        f"Generated from `results/stages.json` (profile `{profile}`) by `bfdl report`; runtimes are the ones "
        "measured on this machine (`bfdl info` for the hardware). Results on the synthetic profiles are NOT "
        "NIH ChestX-ray14 results.",
        "",
        "```bash",
        "scripts/reproduce_all.sh                 # everything, default profile",
        "scripts/reproduce_all.sh --stage figures --stage report   # redraw from existing runs",
        "```",
        "",
        f"Total measured stage time: {sum(total):.0f} s over {len(total)} finished stages"
        + (f" (not finished: {', '.join(n for n, r in stages.items() if r.get('status') != 'done')})"
           if any(r.get("status") != "done" for r in stages.values()) else "") + ".",
        "",
    ]
    for title, fname, deps, cmd in EXPECTED_ITEMS:
        lines += [f"### {title}", "", f"- command: `{cmd}` (after `scripts/reproduce_all.sh --stage "
                  + " --stage ".join(d for d in deps if d != "figures") + "`)",
                  f"- measured runtime of the stages it needs: {secs(deps)}"]
        p = out_dir / fname
        if not p.is_file():
            lines += [f"- not generated (missing {fname})", ""]
            continue
        if fname.endswith(".png"):
            lines += ["", f"![{title}]({image_prefix}{fname})", ""]
        else:
            lines += [f"- table: `{image_prefix}{fname}`", ""]
    lines += ["Full comparison with the paper, claim by claim: `results/REPORT.md`.", ""]
    path = out_dir / "expected_results.md"
    atomic_write_text(path, "\n".join(lines))
    return path


__all__ = ["EXPECTED_ITEMS", "build_expected_results"]
