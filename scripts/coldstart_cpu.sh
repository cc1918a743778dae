#!/usr/bin/env bash
# CPU "cold start, then RL" against RL alone at equal wall time (README "Distillation and rejection sampling"):
# the base SmolLM2-135M samples its own answers (experiment=distill/cpu_coldstart_sample), is fine-tuned on the
# correct ones (experiment=distill/cpu_coldstart_sft), then trained by the CPU default RL for as many steps as fit
# in BUDGET seconds (default 464: the plain CPU default run, seed 1, on a quiet 2-core machine).
#
#   bash scripts/coldstart_cpu.sh [OUT] [SEED] [BUDGET]
# Compare OUT/rl/summary.json's held-out accuracy with the plain run's (`bash scripts/train.sh seed=SEED`).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="${1:-runs/coldstart}"
SEED="${2:-1}"
BUDGET="${3:-464}"
BIN=.venv/bin
mkdir -p "$OUT"
T0=$SECONDS
$BIN/r1zero-sample experiment=distill/cpu_coldstart_sample seed="$SEED" out_dir="$OUT/sample"
T1=$SECONDS
$BIN/r1zero-sft experiment=distill/cpu_coldstart_sft seed="$SEED" data_path="$OUT/sample/train.jsonl" run_dir="$OUT/sft"
T2=$SECONDS
# The plain run spends BUDGET on 60 steps, setup and two evaluations included: the same rate for the time left.
STEPS=$(( (BUDGET - (T2 - T0)) * 60 / BUDGET ))
(( STEPS < 1 )) && STEPS=1
echo "[coldstart] sampling $((T1 - T0)) s, SFT $((T2 - T1)) s; RL for $STEPS steps"
$BIN/r1zero-train model.name="$OUT/sft/final_model" seed="$SEED" steps="$STEPS" run_dir="$OUT/rl"
echo "[coldstart] RL $((SECONDS - T2)) s; total $((SECONDS - T0)) s of a $BUDGET s budget"
