"""task=reasoning_gym end to end: a two-step training run on the tiny model whose rewards come from reasoning-gym.

The tiny model never answers right, so the rollout engine's TEXTS are replaced after sampling (token ids and
logprobs stay as sampled, so the learner and the sync checks see the real samples): in each group, completion 0
answers with the value of the question's expression computed here from the question text, completion 1 with that
value + 1, the others stay as the model wrote them. The engine is registered under a new name in the rollout
registry, which the config accepts because its choice list is that registry.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("reasoning_gym")

from r1zero.config import RunConfig, register_configs, to_run_config
from r1zero.rollout import base, engines
from r1zero.train import CONF_DIR, run
from r1zero.types import Completion, Prompt

G = 4  # completions per prompt
B = 2  # prompts per step
STEPS = 2
# chain_sum with 2-3 terms of 1-2 digits: "State the final answer to the following arithmetic problem: 5 - 9 ="
GENERATOR_CONFIG = "{min_terms: 2, max_terms: 3, min_digits: 1, max_digits: 2}"
QUESTION = re.compile(r"following arithmetic problem: (-?\d+(?: [+-] \d+)+) =")


def expression_value(question: str) -> int:
    """The value of the chain of + and - in a chain_sum question, from its text alone."""
    match = QUESTION.search(question)
    assert match, f"not a chain_sum question: {question!r}"
    tokens = match.group(1).split()
    value = int(tokens[0])
    for op, number in zip(tokens[1::2], tokens[2::2]):
        value = value + int(number) if op == "+" else value - int(number)
    return value


def answer_text(completion: str) -> str | None:
    """The content of the last <answer>...</answer> block (None without one)."""
    found = re.findall(r"<answer>(.*?)</answer>", completion, flags=re.DOTALL)
    return found[-1].strip() if found else None


class ScriptedAnswers:
    """A real engine whose training completions get hand-written answers (see the module docstring)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def generate(self, prompts: Sequence[Prompt], sampling: base.SamplingSettings) -> list[Completion]:
        out = self.inner.generate(prompts, sampling)
        for i, completion in enumerate(out):
            value = expression_value(prompts[completion.prompt_index].example.question)
            if i % sampling.n == 0:
                completion.text = f" scripted </think> <answer>{value}</answer>"
            elif i % sampling.n == 1:
                completion.text = f" scripted </think> <answer>{value + 1}</answer>"
        return out


def _compose(run_dir: Path) -> RunConfig:
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        return to_run_config(
            compose(
                "config",
                overrides=[
                    "model=tiny",
                    "task=reasoning_gym",
                    "task.kwargs.name=chain_sum",
                    f"+task.kwargs.config={GENERATOR_CONFIG}",
                    "task.num_train=32",
                    "task.num_eval=0",
                    "rollout.engine=scripted",
                    f"rollout.prompts_per_step={B}",
                    f"rollout.group_size={G}",
                    "rollout.max_new_tokens=12",
                    f"steps={STEPS}",
                    "eval.every=0",
                    "eval.at_start_and_end=false",
                    "log.samples_every=1",
                    f"log.num_samples={B * G}",
                    "checkpoint.every=0",
                    "checkpoint.save_final_model=false",
                    f"run_dir={run_dir}",
                ],
            )
        )


def test_reasoning_gym_rewards_come_from_its_verifier(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vllm_factory = engines.ENGINES["vllm"]
    monkeypatch.setitem(
        engines.ENGINES, "scripted", lambda *args, **kwargs: ScriptedAnswers(vllm_factory(*args, **kwargs))
    )
    cfg = _compose(tmp_path / "run")
    assert cfg.task.format_weight is None  # reasoning_gym's default format weight is 0: reward = correctness
    run(cfg)

    samples = [json.loads(line) for line in (tmp_path / "run" / "samples.jsonl").read_text().splitlines()]
    metrics = {
        row["step"]: row
        for row in map(json.loads, (tmp_path / "run" / "metrics.jsonl").read_text().splitlines())
        if "reward/mean" in row
    }
    assert sorted(metrics) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        rows = [r for r in samples if r["step"] == step]
        assert len(rows) == B * G  # every completion of the step, in order
        expected = []
        for i, row in enumerate(rows):
            question = row["prompt"].rsplit("User: ", 1)[1]
            value = expression_value(question)
            tokens = QUESTION.search(question).group(1).split()  # type: ignore[union-attr]
            # The generator's options reached reasoning-gym: 2-3 terms of 1-2 digits.
            assert 2 <= len(tokens[0::2]) <= 3 and all(len(t.lstrip("-")) <= 2 for t in tokens[0::2])
            assert row["answer"] == str(value)  # the task's gold answer is the expression's value
            given = answer_text(row["completion"])
            right = given is not None and re.fullmatch(r"-?\d+", given) is not None and int(given) == value
            expected.append(1.0 if right else 0.0)
            if i % G == 0:
                assert row["reward"] == 1.0 and row["correct"] == 1.0, row  # hand-written right answer
            elif i % G == 1:
                assert row["reward"] == 0.0 and row["correct"] == 0.0, row  # hand-written wrong answer
            else:
                assert row["reward"] == expected[-1], row  # the model's own text, scored the same way
        assert metrics[step]["reward/mean"] == pytest.approx(sum(expected) / len(expected))
        assert metrics[step]["reward/error_mean"] == 0.0
        # Mixed rewards in every group: the verifier's scores reached the advantages and the loss.
        assert metrics[step]["algo/advantage_abs_mean"] > 0
