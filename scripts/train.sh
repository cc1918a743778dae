#!/usr/bin/env bash
# The main job: set up the environment (cached), then train. Arguments are Hydra overrides, e.g.
#   bash scripts/train.sh                         # the CPU default run
#   bash scripts/train.sh model=tiny task=countdown steps=5
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
bash scripts/setup.sh
exec .venv/bin/r1zero-train "$@"
