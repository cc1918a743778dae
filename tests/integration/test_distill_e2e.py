"""The distillation stages chained on the tiny preset: r1zero-sample (16 traces) -> r1zero-sft (2 steps) ->
r1zero-eval on the SFT run directory; a cheap restart of the sampler; an interrupted SFT run resumed to the same
weights as an uninterrupted one. The transformers engine keeps it cheap (the vLLM path is the same code behind
the RolloutEngine protocol)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from r1zero.config import ModelConfig, RolloutConfig, TaskConfig
from r1zero.distill.rules import RejectionRules
from r1zero.distill.sample import SampleRunConfig, run_sample
from r1zero.distill.sft import SftRunConfig, run_sft
from r1zero.eval import EvalRunConfig, run_eval
from r1zero.tasks.registry import load_examples

# TRL's Trainer runs in this process: it must not take leftover launcher variables for a torchrun world.
pytestmark = pytest.mark.usefixtures("clean_launcher_env")

TASK = TaskConfig(name="arithmetic", num_train=8, num_eval=4)
# A random-init model is never correct: keep everything it samples, so the set has exactly 8 x 2 rows.
KEEP_ALL = RejectionRules(require_correct=False, require_format=False, drop_truncated=False, dedupe=False)


class NoGeneration:
    """An engine that must not be used: a restart with every chunk done samples nothing."""

    def generate(self, prompts: Any, sampling: Any) -> Any:
        raise AssertionError("a finished chunk was sampled again")


def test_sample_sft_eval_end_to_end(tmp_path: Path, tiny_model_path: str) -> None:
    from datasets import load_dataset

    cfg = SampleRunConfig(
        model=ModelConfig(name=tiny_model_path), task=TASK, rollout=RolloutConfig(engine="hf"), num_problems=8, n=2,
        max_new_tokens=8, rules=KEEP_ALL, chunk_size=3, out_dir=str(tmp_path / "sample"),
    )  # fmt: skip
    summary = run_sample(cfg)
    assert (summary["candidates"], summary["kept"], summary["prompts"]) == (16, 16, 8)
    assert summary["acceptance_rate"] == 1.0 and summary["coverage"] == 1.0
    assert sorted(p.name for p in (tmp_path / "sample" / "chunks").glob("*.stats.json")) == [
        "chunk-00000.stats.json", "chunk-00001.stats.json", "chunk-00002.stats.json",
    ]  # fmt: skip  # 8 problems in chunks of 3
    data = tmp_path / "sample" / "train.jsonl"
    rows = [json.loads(line) for line in data.read_text().splitlines()]
    held_out = {e.question for e in load_examples("arithmetic", split="test", n=4, seed=0)}
    assert len(rows) == 16 and not {r["question"] for r in rows} & held_out
    assert all(r["prompt"].endswith("Assistant: <think>") and r["length"] <= 8 for r in rows)
    loaded = load_dataset("json", data_files=str(data), split="train")
    assert loaded.num_rows == 16 and {"prompt", "completion"} <= set(loaded.column_names)

    assert run_sample(cfg, engine=NoGeneration())["kept"] == 16  # restart: nothing sampled again

    sft = run_sft(
        SftRunConfig(
            model=ModelConfig(name=tiny_model_path), data_path=str(data), steps=2, batch_size=4, save_every=0,
            run_dir=str(tmp_path / "sft"),
        )
    )  # fmt: skip
    assert sft["steps_done"] == 2 and sft["data"]["kept"] == 16
    metrics = [json.loads(line) for line in (tmp_path / "sft" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in metrics] == [1, 2] and all(m["sft/loss"] > 0 for m in metrics)

    results = run_eval(
        EvalRunConfig(
            model=ModelConfig(name=str(tmp_path / "sft")), task=TASK, rollout=RolloutConfig(engine="hf"), n=1,
            temperature=0.0, k=[1], max_new_tokens=8, out_dir=str(tmp_path / "eval"),
        )
    )  # fmt: skip
    assert results["model_path"] == str((tmp_path / "sft" / "final_model").resolve())
    assert results["metrics"]["eval/num_problems"] == 4.0


class StopAt:
    """Raise after optimizer step `step` (before its checkpoint is written): a crash mid-run."""

    def __new__(cls, step: int) -> Any:
        from transformers import TrainerCallback

        class _Stop(TrainerCallback):
            def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
                if state.global_step == step:
                    raise RuntimeError("interrupted")

        return _Stop()


def test_interrupted_sft_resumes_to_the_same_weights(tmp_path: Path, tiny_model_path: str) -> None:
    import torch
    from safetensors.torch import load_file

    data = tmp_path / "data.jsonl"
    data.write_text(
        "".join(
            json.dumps({"prompt": f"What is {i} + 1?", "completion": f" {i + 1}"}) + "\n" for i in range(12)
        )
    )

    def cfg(run: str) -> SftRunConfig:
        return SftRunConfig(
            model=ModelConfig(name=tiny_model_path), data_path=str(data), steps=3, batch_size=2, lr=1e-3,
            save_every=1, run_dir=str(tmp_path / run),
        )  # fmt: skip

    with pytest.raises(RuntimeError, match="interrupted"):
        run_sft(cfg("resumed"), callbacks=[StopAt(2)])
    assert not (tmp_path / "resumed" / "final_model").exists()
    resumed = run_sft(cfg("resumed"))
    assert resumed["resumed_from"] == str(tmp_path / "resumed" / "checkpoints" / "checkpoint-1")
    assert resumed["steps_done"] == 3
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").read_text().splitlines()
    ]
    assert steps == [1, 2, 3]  # each step logged once over the two processes
    straight = run_sft(cfg("straight"))
    assert straight["resumed_from"] is None
    a = load_file(str(tmp_path / "resumed" / "final_model" / "model.safetensors"))
    b = load_file(str(tmp_path / "straight" / "final_model" / "model.safetensors"))
    assert a.keys() == b.keys()
    start = load_file(str(Path(tiny_model_path) / "model.safetensors"))
    name = next(iter(a))
    assert not torch.equal(a[name], start[name])  # it trained (lr 1e-3)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
