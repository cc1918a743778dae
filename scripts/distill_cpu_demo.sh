#!/usr/bin/env bash
# The CPU distillation demo: rejection sampling -> SFT -> held-out evaluation, on the CPU default task
# (two-term sums, SmolLM2-135M-Instruct, chat template with one worked example).
#
#   bash scripts/distill_cpu_demo.sh [TEACHER] [OUT]
#     TEACHER  the teacher: a CPU default run directory (runs/arithmetic-smollm2-135m-seed0 after `r1zero-train`),
#              a model folder, or smollm2-135m (default: the base model samples for itself, i.e. rejection-sampling
#              fine-tuning / self-distillation on its own correct traces)
#     OUT      output folder (default runs/distill-cpu)
# The student is always the base SmolLM2-135M. Stages: r1zero-eval of the base and the teacher, r1zero-sample,
# r1zero-sft, r1zero-eval of the student. Compare OUT/eval_*/results.json (eval/accuracy, eval/length_mean,
# eval/reflection_frac). Measured numbers: README "Distillation and rejection sampling".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TEACHER="${1:-smollm2-135m}"
OUT="${2:-runs/distill-cpu}"
BIN=.venv/bin
TASK=(task=arithmetic_chat seed=0)
EVAL=(temperature=0 n=1 "k=[1]" max_new_tokens=32)
mkdir -p "$OUT"
$BIN/r1zero-eval model.name=smollm2-135m "${TASK[@]}" "${EVAL[@]}" out_dir="$OUT/eval_base"
if [[ "$TEACHER" != smollm2-135m ]]; then
  $BIN/r1zero-eval model.name="$TEACHER" "${TASK[@]}" "${EVAL[@]}" out_dir="$OUT/eval_teacher"
fi
# 4 samples per problem, the shortest correct one kept (at most one per problem).
$BIN/r1zero-sample model.name="$TEACHER" "${TASK[@]}" num_problems=384 n=4 max_new_tokens=32 temperature=1.0 \
  rules.max_per_prompt=1 rules.prefer_shortest=true chunk_size=4 out_dir="$OUT/sample"
$BIN/r1zero-sft model.name=smollm2-135m data_path="$OUT/sample/train.jsonl" epochs=1 batch_size=8 lr=1e-5 \
  max_length=256 save_every=10 run_dir="$OUT/sft"
$BIN/r1zero-eval model.name="$OUT/sft" "${TASK[@]}" "${EVAL[@]}" out_dir="$OUT/eval_student"
for stage in base teacher student; do
  f="$OUT/eval_$stage/results.json"
  [[ -f "$f" ]] && $BIN/python -c "import json,sys; m=json.load(open(sys.argv[1]))['metrics']; print(sys.argv[2], 'accuracy %.3f  length %.1f  reflection %.3f' % (m['eval/accuracy'], m['eval/length_mean'], m['eval/reflection_frac']))" "$f" "$stage"
done
