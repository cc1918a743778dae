"""Data parallelism at a batch bigger than one vLLM scheduling pass (issue #18).

32 prompts x 8 samples of the CPU default task (arithmetic_chat) on the tiny model, one seeded training step and
a sampled eval (32 problems x 4) before and after it, run by 1 process and by 2 (16 prompts each). Every
engine's requests hold more prompt tokens than one vLLM pass (4,096 on CPU), which crashed seeded sampling on CPU
before the engine turned chunked prefill off. Both runs must finish and sample the same 256 completions and eval
samples, as 1 and 2 processes do at small batches (test_multiprocess.py).

Slow (~33 s, out of CI since issue #33). In CI, test_multiprocess.py::test_two_processes_match_one checks that 2
processes sample what 1 samples, and batches beyond one vLLM pass run in test_readme_commands.py (every README
training command at 8 x 8, checked to exceed a pass) and test_rollout_vllm_batches.py (the same seeded samples in
one pass or many).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from dist_helpers import compare_runs, report, run_checked, samples_of, torchrun, train_module

pytestmark = [pytest.mark.distributed, pytest.mark.slow]

B, G, EVAL_PROBLEMS, EVAL_N = 32, 8, 32, 4
LARGE = [
    "model=tiny",  # the CPU default experiment otherwise: arithmetic_chat, token-mean GRPO, ZeRO-2
    f"rollout.prompts_per_step={B}",
    f"rollout.group_size={G}",
    "rollout.max_new_tokens=16",
    "steps=1",
    "task.num_train=256",
    f"task.num_eval={EVAL_PROBLEMS}",
    f"eval.n={EVAL_N}",
    "eval.temperature=1.0",
    "log.samples_every=1",
    f"log.num_samples={B * G}",  # every completion of the step goes to samples.jsonl
    "cpu_threads=1",
    "checkpoint.save_final_model=false",
]


def _prompt_tokens_per_rank(run_dir: Path, world: int) -> tuple[int, int]:
    """(prompt tokens one rank's engine is given in the step, the same in its eval): every sample is a vLLM
    request carrying its whole prompt. Prompts come from samples.jsonl, tokenized with the tiny model's tokenizer."""
    from transformers import AutoTokenizer

    from r1zero.models import build_preset

    tokenizer = AutoTokenizer.from_pretrained(str(build_preset("tiny")))
    rows = [json.loads(line) for line in (run_dir / "samples.jsonl").read_text().splitlines()]
    prompts = [row["prompt"] for row in rows if row["step"] == 1][::G]  # prompt-major, G rows per prompt
    assert len(prompts) == B
    lengths = [len(tokenizer(p, add_special_tokens=False)["input_ids"]) for p in prompts]
    # The eval prompts use the same template and question shape as the training ones (two-term sums).
    return G * sum(lengths) // world, EVAL_N * EVAL_PROBLEMS * min(lengths) // world


def test_two_processes_sample_what_one_samples_beyond_one_pass(tmp_path: Path) -> None:
    from r1zero.rollout.vllm_engine import CPU_MAX_NUM_BATCHED_TOKENS

    one, two = tmp_path / "one", tmp_path / "two"
    run_checked(
        [sys.executable, *train_module(), *LARGE, f"run_dir={one}"], tmp_path / "one.log", timeout=600
    )
    cmd = [*torchrun("--standalone", "--nproc_per_node", "2"), *train_module(), *LARGE, f"run_dir={two}"]
    run_checked(cmd, tmp_path / "two.log", timeout=600)
    step_tokens, eval_tokens = _prompt_tokens_per_rank(one, world=2)
    assert step_tokens > CPU_MAX_NUM_BATCHED_TOKENS and eval_tokens > CPU_MAX_NUM_BATCHED_TOKENS
    assert len(samples_of(one)[1]) == B * G
    # Same 256 completions, same reward/rollout/eval metrics (eval before and after the step), losses to 1e-4.
    report("2 processes, 32x8 per step", compare_runs(one, two, steps=[-1, 1, -2]))
    evals = [json.loads(x) for x in (two / "metrics.jsonl").read_text().splitlines() if "eval/n" in x]
    assert [(r["eval/num_problems"], r["eval/n"]) for r in evals] == [(EVAL_PROBLEMS, EVAL_N)] * 2
