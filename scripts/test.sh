#!/usr/bin/env bash
# The test command: set up the environment (cached), lint, type-check, run the test suite.
#   bash scripts/test.sh            # what CI runs (everything except tests marked slow or gpu)
#   bash scripts/test.sh -m slow    # extra pytest arguments are passed through
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
t0=$(date +%s)
bash scripts/setup.sh
t1=$(date +%s)
PY=.venv/bin/python
echo "[test] ruff"
"$PY" -m ruff check .
"$PY" -m ruff format --check .
echo "[test] mypy"
"$PY" -m mypy r1zero r1zero_bench
t2=$(date +%s)
echo "[test] pytest"
set +e
if [[ $# -gt 0 ]]; then
  "$PY" -m pytest "$@"
else
  "$PY" -m pytest -m "not slow and not gpu" --timeout 900 -p no:cacheprovider
fi
rc=$?
set -e
t3=$(date +%s)
echo "[test] timing: setup $((t1 - t0)) s, lint+types $((t2 - t1)) s, tests $((t3 - t2)) s, total $((t3 - t0)) s"
exit $rc
