#!/usr/bin/env bash
# One-command setup of the bfdl-tff stack into ./.venv (idempotent; a second run takes seconds).
#   scripts/setup.sh            create/update .venv from requirements/lock.txt
#   scripts/setup.sh --force    reinstall everything
# Expected runtime: ~1-5 min cold (downloads ~1 GB of wheels), ~1 s warm.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
VENV="$ROOT/.venv"
LOCK="$ROOT/requirements/lock.txt"
TFF="$ROOT/requirements/tff-nodeps.txt"
STAMP="$VENV/.bfdl-setup-stamp"
FORCE=0
[[ "${1:-}" == "--force" ]] && FORCE=1

want_stamp() {
  # The stamp changes whenever the lock, the TFF pin or the package metadata change.
  cat "$LOCK" "$TFF" setup.cfg pyproject.toml | sha256sum | cut -d' ' -f1
}

if [[ $FORCE == 0 && -f "$STAMP" && "$(cat "$STAMP")" == "$(want_stamp)" && -x "$VENV/bin/bfdl" ]]; then
  echo "setup: .venv is up to date ($VENV)"
  exit 0
fi

PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  for cand in python3.11 python3 python; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2]==(3,11) else 1)' 2>/dev/null; then
      PY=$(command -v "$cand"); break
    fi
  done
fi
if [[ -z "$PY" ]]; then
  echo "setup: Python 3.11 is required (TensorFlow 2.14 / TFF 0.87 support 3.9-3.11; this project pins 3.11)." >&2
  echo "setup: install it, e.g. 'apt-get install python3.11 python3.11-venv' or 'pyenv install 3.11', or set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

echo "setup: using $PY ($("$PY" --version 2>&1))"
if [[ ! -x "$VENV/bin/python" ]]; then
  "$PY" -m venv "$VENV"
fi
export PIP_DISABLE_PIP_VERSION_CHECK=1
"$VENV/bin/python" -m pip install -q "pip==23.2.1" "setuptools==69.5.1" "wheel==0.43.0"
# Every transitive version is pinned in the lock, so no resolver runs: --no-deps.
"$VENV/bin/python" -m pip install -q --no-deps -r "$LOCK"
# TFF pins jaxlib==0.4.14, which the registry lacks; its other requirements are in the lock
# (with jaxlib 0.4.13), so install TFF itself without dependencies.
"$VENV/bin/python" -m pip install -q --no-deps -r "$TFF"
"$VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$ROOT"
# Sanity: the stack imports (TFF import is ~10 s).
"$VENV/bin/python" - <<'PYEOF'
import importlib
for m in ("tensorflow", "tensorflow_federated", "tensorflow_privacy", "dp_accounting", "hvac", "bfdl_tff", "ledger"):
    importlib.import_module(m)
print("setup: stack imports OK")
PYEOF
want_stamp > "$STAMP"
echo "setup: done ($VENV). Activate with: source .venv/bin/activate"
