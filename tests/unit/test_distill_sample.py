"""r1zero-sample's parts without a model: hand-made completions through the reward and the rules, the rows it
writes, and the held-out guard (assert_disjoint before sampling, and again on every merged row)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1zero.config import TaskConfig
from r1zero.distill.rules import RejectionRules
from r1zero.distill.sample import (
    SampleRunConfig,
    choose,
    load_problems,
    merge_chunks,
    prompt_messages,
    sft_row,
)
from r1zero.tasks.splits import split_of
from r1zero.tasks.templates import build_prompt
from r1zero.types import Completion, Example


def comp(i: int, text: str, n_tokens: int, finish: str = "stop") -> Completion:
    return Completion(i, [1, 2, 3], list(range(n_tokens)), None, text, finish, 0)


def test_choose_keeps_correct_wellformed_unique_completions() -> None:
    task = TaskConfig(name="arithmetic")  # r1zero template: the prompt ends with the "<think>" prefill
    examples = [Example("What is 2 + 3?", "5", "u0"), Example("What is 4 + 4?", "8", "u1")]
    prompts = [build_prompt(e, template="r1zero") for e in examples]
    good = " 2 + 3 = 5 </think> <answer>5</answer>"
    completions = [
        comp(0, good, 12),
        comp(0, " 2 + 3 = 6 </think> <answer>6</answer>", 12),  # incorrect
        comp(0, " 2 + 3 = 5 <answer>5</answer>", 9),  # right answer, no </think>: malformed
        comp(0, good, 12),  # duplicate of the first
        comp(1, " 4 + 4 = 8 </think> <answer>8</answer>", 12),
        comp(1, " 4 + 4 = 8, so </think> <answer>8</answer>", 30),  # correct but over max_length
        comp(
            1, " 4+4=8 </think> <answer>8</answer>", 20, "length"
        ),  # correct, well-formed, but cut at the limit
        comp(1, " no idea", 3),
    ]
    rows, stats = choose(prompts, completions, task, 4, RejectionRules(max_length=20))
    assert [(r["uid"], r["completion"]) for r in rows] == [
        ("u0", good),
        ("u1", " 4 + 4 = 8 </think> <answer>8</answer>"),
    ]
    assert rows[0]["prompt"] == prompts[0].text and rows[0]["prompt"].endswith("Assistant: <think>")
    assert rows[0]["length"] == 12 and rows[0]["answer"] == "5"
    assert stats["kept_per_prompt"] == [1, 1] and stats["candidates"] == 8
    assert stats["reasons"] == {
        "incorrect": 2,
        "bad_format": 1,
        "truncated": 1,
        "duplicate": 1,
        "too_long": 1,
    }
    assert stats["kept_lengths"] == [12, 12]


def test_chat_rows_are_conversational() -> None:
    task = TaskConfig(
        name="arithmetic",
        template="chat",
        system_prompt="Use tags.",
        fewshot=[["What is 1 + 1?", "<answer>2</answer>"]],
    )
    example = Example("What is 2 + 3?", "5", "u0")
    assert prompt_messages(example, task) == [
        {"role": "system", "content": "Use tags."},
        {"role": "user", "content": "What is 1 + 1?"},
        {"role": "assistant", "content": "<answer>2</answer>"},
        {"role": "user", "content": "What is 2 + 3?"},
    ]
    from r1zero.types import Prompt

    row = sft_row(Prompt("(rendered)", example, ""), comp(0, "2 + 3 = 5 <answer>5</answer>", 9), task, 1.1)
    assert row["completion"] == [{"role": "assistant", "content": "2 + 3 = 5 <answer>5</answer>"}]
    assert row["prompt"][-1] == {"role": "user", "content": "What is 2 + 3?"}
    assert row["reward"] == 1.1


def test_held_out_problems_never_reach_the_sampled_set() -> None:
    # 1-digit sums: 81 distinct questions, a handful held out; 400 training draws repeat every train question
    kwargs = {"kind": "sum", "terms": 2, "low": 1, "high": 9}
    task = TaskConfig(name="arithmetic", num_train=400, num_eval=4, kwargs=kwargs)
    train, held_out = load_problems(SampleRunConfig(task=task, num_problems=400))
    assert len(train) == 400 and len(held_out) == 4
    # independent of the code under test: the held-out partition is the SHA-256 bucket of the question text
    assert all(split_of(q) == "test" for q in held_out)
    assert not {e.question for e in train} & held_out
    assert (
        len({e.question for e in train}) > 60
    )  # the train side of the space is covered, without the held out


def test_merge_refuses_a_held_out_row(tmp_path: Path) -> None:
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    row = {"prompt": "p", "completion": "c", "question": "What is 1 + 2?", "length": 3}
    (chunks / "chunk-00000.jsonl").write_text(json.dumps(row) + "\n")
    stats = {"kept_per_prompt": [1], "candidates": 2, "reasons": {"incorrect": 1}, "kept_lengths": [3]}
    (chunks / "chunk-00000.stats.json").write_text(json.dumps(stats))
    summary = merge_chunks(tmp_path, 1, held_out={"What is 9 + 9?"})
    assert (
        summary["kept"] == 1 and summary["acceptance_rate"] == 0.5 and summary["rejected"]["incorrect"] == 1
    )
    assert json.loads((tmp_path / "train.jsonl").read_text())["question"] == "What is 1 + 2?"
    with pytest.raises(ValueError, match="held-out"):
        merge_chunks(tmp_path, 1, held_out={"What is 1 + 2?"})


def test_restart_with_other_settings_is_refused(tmp_path: Path) -> None:
    from r1zero.distill.sample import check_plan

    cfg = SampleRunConfig(n=4, chunk_size=16, out_dir=str(tmp_path))
    check_plan(tmp_path, cfg, "/m", 100)
    check_plan(tmp_path, cfg, "/m", 100)  # the same plan: the finished chunks are reused
    with pytest.raises(ValueError, match="chunk_size"):
        check_plan(tmp_path, SampleRunConfig(n=4, chunk_size=4, out_dir=str(tmp_path)), "/m", 100)
    with pytest.raises(ValueError, match="model_path"):
        check_plan(tmp_path, cfg, "/other", 100)
