#!/usr/bin/env bash
# Run the test suite (sets up .venv first if needed). Extra arguments go to pytest,
# e.g. scripts/test.sh -m slow, scripts/test.sh tests/test_config.py -x.
# Expected runtime: ~10 min on 2 cores. Fails if no test is collected.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
export TF_CPP_MIN_LOG_LEVEL=2
export PYTHONHASHSEED=0
set +e
.venv/bin/python -m pytest -m "not slow" -p no:cacheprovider "$@"
rc=$?
set -e
if [[ $rc == 5 ]]; then
  echo "test.sh: no tests were collected: failing" >&2
  exit 1
fi
exit $rc
