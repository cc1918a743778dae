"""r1zero-sft's data: bad rows counted or failed with file and line, and the completion-only labels of a two-turn
conversation checked against the ChatML text written out by hand."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1zero.distill.sft import SftRunConfig, build_trainer, latest_checkpoint, load_rows, row_problem

# TRL's Trainer runs in this process: it must not take leftover launcher variables for a torchrun world.
pytestmark = pytest.mark.usefixtures("clean_launcher_env")

CHAT = {"prompt": [{"role": "user", "content": "Q"}], "completion": [{"role": "assistant", "content": "A"}]}


def test_row_problems_by_hand() -> None:
    assert row_problem({"prompt": "Q", "completion": " A"}) is None
    assert row_problem(CHAT) is None
    assert row_problem({"prompt": "Q"}) == "missing completion"
    assert row_problem({"completion": "A"}) == "missing prompt"
    assert row_problem({"prompt": "Q", "completion": "  "}) == "empty completion"
    assert row_problem({**CHAT, "completion": [{"role": "assistant", "content": ""}]}) == "empty completion"
    assert "ending with an assistant" in str(
        row_problem({**CHAT, "completion": [{"role": "user", "content": "A"}]})
    )
    assert "both be strings" in str(row_problem({"prompt": "Q", "completion": CHAT["completion"]}))
    assert row_problem([1, 2]) == "not a JSON object"


def _write(tmp_path: Path) -> Path:
    lines = [
        json.dumps({"prompt": "What is 2 + 3?", "completion": " 5"}),  # 1 ok
        json.dumps({"prompt": "What is 2 + 3?"}),  # 2 missing completion
        "",  # blank: ignored
        "{not json",  # 4
        json.dumps({"prompt": "Q", "completion": ""}),  # 5 empty
        json.dumps(
            {"prompt": "What is", "completion": " 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1 + 1"}
        ),  # 6 long
        json.dumps(CHAT),  # 7 ok
    ]
    path = tmp_path / "data.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_bad_rows_skipped_and_counted(tmp_path: Path, tiny_model_path: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    rows, summary = load_rows(_write(tmp_path), tok, max_length=20, on_bad_row="skip")
    assert rows == [{"prompt": "What is 2 + 3?", "completion": " 5"}, CHAT]
    assert summary["read"] == 6 and summary["kept"] == 2
    skipped = summary["skipped"]
    assert skipped.pop("missing completion") == 1 and skipped.pop("empty completion") == 1
    assert skipped.pop("longer than max_length=20 tokens") == 1
    assert list(skipped) == ["not valid JSON (Expecting property name enclosed in double quotes)"]
    assert summary["first_line"]["missing completion"] == 2


def test_bad_row_fails_with_file_and_line(tmp_path: Path, tiny_model_path: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    path = _write(tmp_path)
    with pytest.raises(ValueError, match=rf"{path}:2: missing completion"):
        load_rows(path, tok, max_length=20, on_bad_row="fail")


def test_completion_only_labels_on_a_two_turn_conversation(tmp_path: Path, tiny_model_path: str) -> None:
    row = {
        "prompt": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What is 2 + 3?"},
            {"role": "assistant", "content": "5"},  # an earlier assistant turn: context, not a target
            {"role": "user", "content": "And 4 + 4?"},
        ],
        "completion": [{"role": "assistant", "content": "8 <answer>8</answer>"}],
    }
    cfg = SftRunConfig(data_path="unused", steps=1, run_dir=str(tmp_path / "run"), save_every=0)
    trainer = build_trainer(cfg, [row], tiny_model_path, [])
    example = trainer.train_dataset[0]
    ids, labels = example["input_ids"], example["labels"]
    tok = trainer.processing_class
    # ChatML written out by hand (the tiny tokenizer's template): everything up to the last assistant header is
    # context; the target is the answer turn and its end-of-turn marker.
    context = (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n5<|im_end|>\n<|im_start|>user\nAnd 4 + 4?<|im_end|>\n<|im_start|>assistant\n"
    )
    target = "8 <answer>8</answer><|im_end|>\n"
    assert tok.decode(ids) == context + target
    masked = [t for t, lab in zip(ids, labels) if lab == -100]
    trained = [lab for lab in labels if lab != -100]
    assert tok.decode(masked) == context
    assert tok.decode(trained) == target
    assert labels[: len(masked)] == [-100] * len(
        masked
    )  # the mask is one prefix: the first turn's "5" is not trained
    assert trained == ids[len(masked) :]


def test_latest_checkpoint_skips_incomplete(tmp_path: Path) -> None:
    for step, complete in ((1, True), (3, True), (5, False)):
        folder = tmp_path / f"checkpoint-{step}"
        folder.mkdir()
        if complete:
            (folder / "trainer_state.json").write_text("{}")
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-3"
    assert latest_checkpoint(tmp_path / "none") is None
