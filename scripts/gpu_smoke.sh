#!/usr/bin/env bash
# Check a GPU box before a long run (a few minutes): the 3B Countdown recipe's settings on the random `small` model
# under ZeRO-2 (then resumed) and ZeRO-3, then the learner check; JSON summary in gpu_smoke.json.
#   bash scripts/gpu_smoke.sh            # rollout=vllm when vLLM imports, else rollout=hf
#   bash scripts/gpu_smoke.sh --quick    # the same steps shrunk to run on a CPU
# Python: $PYTHON, else the project's .venv (scripts/setup.sh), else python3 with the project installed.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-}"
if [[ -z "$PY" ]]; then
  if [[ -x .venv/bin/python ]]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec "$PY" scripts/gpu_smoke.py "$@"
