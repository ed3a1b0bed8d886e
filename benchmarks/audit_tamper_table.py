"""Print the tamper table of issue 17 (case, detected, first failing check) measured with
``bfdl audit verify``'s ``verify_run`` on a 4-round ledger run (no training: the integration
tests' synthetic rounds), reusing the tamper cases of tests/integration. Prints only.

    BFDL_KEYSTORE=$(mktemp -d) .venv/bin/python benchmarks/audit_tamper_table.py
"""
import shutil, sys, tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration")); sys.path.insert(0, str(REPO))
import test_integration_audit_binds as ab
import test_integration_rewritten_history as rh
from bfdl_tff.integration.audit import verify_run
from bfdl_tff.integration.simulate import run_synthetic, synthetic_run_dir

tmp = Path(tempfile.mkdtemp())
run = synthetic_run_dir(tmp / "pristine-bfdl")
run_synthetic(ab._hook(run), run, hospitals=ab.H, rounds=4)
rows = []
r = verify_run(run.path, write=False); rows.append(("pristine run (no edit)", not r.ok, r.first_failure or "all checks OK"))
for i, (case, edit, _check, _text) in enumerate(ab.TAMPER_CASES):
    d = Path(shutil.copytree(run.path, tmp / f"c{i}" / run.path.name)); edit(d)
    r = verify_run(d, write=False); rows.append((case, not r.ok, r.first_failure))
d = Path(shutil.copytree(run.path, tmp / "del" / run.path.name)); (d / "metrics.csv").unlink()
r = verify_run(d, write=False); rows.append(("metrics.csv deleted", not r.ok, r.first_failure))
for fin in (False, True):
    g = ab._gapped_run(tmp / f"gap{fin}", finalize=fin)
    r = verify_run(g.path, write=False)
    rows.append((f"round 3 missing from chain, openings/ removed, finalize={'yes' if fin else 'no'}", not r.ok, r.first_failure))
# rewritten history (no replica key)
p, files = rh._copy(run.path, tmp / "rh1")
orig = rh._original(files)
rh._rebuild_all(files, files.load_genesis(), rh._drop_round(2)(orig))
r = verify_run(p, write=False); rows.append(("all 4 replica DBs rebuilt without round 2 (original certificates kept)", not r.ok, r.first_failure))
p, files = rh._copy(run.path, tmp / "rh2")
orig = rh._original(files)
rh._rebuild_all(files, files.load_genesis(), [(t, None, ts) for t, _c, ts in orig])
r = verify_run(p, write=False); rows.append(("all 4 replica DBs rebuilt without certificates", not r.ok, r.first_failure))
p, files = rh._copy(run.path, tmp / "rh3")
orig = rh._original(files)
rh._rebuild_all(files, files.load_genesis(), rh._demote_commitment(3)(orig))
r = verify_run(p, write=False); rows.append(("round 3 commitment of a hospital demoted, DBs rebuilt", not r.ok, r.first_failure))
print("| case | detected | first failing check (message) |\n|---|---|---|")
for c, det, msg in rows:
    print(f"| {c} | {'yes' if det else ('no' if det is False else '?')} | {str(msg).replace('|', '/')[:300]} |")
