#!/usr/bin/env bash
# The CPU distillation demo: rejection sampling from a teacher -> SFT of the base model -> held-out evaluation, on
# the CPU default task (two-term sums, SmolLM2-135M-Instruct, chat template with one worked example).
#
#   bash scripts/distill_cpu_demo.sh [TEACHER] [OUT] [SEED]
#     TEACHER  a CPU default run directory (default runs/arithmetic-smollm2-135m-seed0, what
#              `bash scripts/train.sh` writes), a model folder, or smollm2-135m (the base model samples for
#              itself: rejection-sampling fine-tuning on its own correct answers)
#     OUT      output folder (default runs/distill-cpu)
#     SEED     the teacher run's seed (default 0): the same train / held-out split as the teacher saw
# The student is always the base SmolLM2-135M. Stages: r1zero-eval of the base and the teacher, r1zero-sample
# (experiment=distill/cpu_sample), r1zero-sft (experiment=distill/cpu_sft), r1zero-eval of the student, then one
# table of held-out accuracy, length and reflection rate. Measured: README "Distillation and rejection sampling".
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
TEACHER="${1:-runs/arithmetic-smollm2-135m-seed0}"
OUT="${2:-runs/distill-cpu}"
SEED="${3:-0}"
BIN=.venv/bin
EVAL=(task=arithmetic_chat seed="$SEED" temperature=0 n=1 "k=[1]" max_new_tokens=32)
mkdir -p "$OUT"
timed() { local start=$SECONDS; "$@"; echo "[demo] $(( SECONDS - start )) s: ${*:1:2}" | tee -a "$OUT/times.txt"; }
timed $BIN/r1zero-eval model.name=smollm2-135m "${EVAL[@]}" out_dir="$OUT/eval_base"
if [[ "$TEACHER" != smollm2-135m ]]; then
  timed $BIN/r1zero-eval model.name="$TEACHER" "${EVAL[@]}" out_dir="$OUT/eval_teacher"
fi
timed $BIN/r1zero-sample experiment=distill/cpu_sample model.name="$TEACHER" seed="$SEED" out_dir="$OUT/sample"
timed $BIN/r1zero-sft experiment=distill/cpu_sft data_path="$OUT/sample/train.jsonl" seed="$SEED" run_dir="$OUT/sft"
timed $BIN/r1zero-eval model.name="$OUT/sft" "${EVAL[@]}" out_dir="$OUT/eval_student"
for stage in base teacher student; do
  f="$OUT/eval_$stage/results.json"
  [[ -f "$f" ]] && $BIN/python -c "import json,sys; m=json.load(open(sys.argv[1]))['metrics']; print(sys.argv[2], 'accuracy %.3f  length %.1f  reflection %.3f' % (m['eval/accuracy'], m['eval/length_mean'], m['eval/reflection_frac']))" "$f" "$stage"
done
