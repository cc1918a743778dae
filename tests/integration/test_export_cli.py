"""r1zero-export end to end: a run directory -> GGUF files + model card (+ a llama.cpp reply); a plain folder; the
errors a user meets."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1zero.export.cli import chat_messages, main
from r1zero.models import make_tiny_model

SYSTEM = "Give the answer inside <answer></answer> tags."


def _run(tmp_path: Path, *, final_model: bool = True) -> Path:
    from omegaconf import OmegaConf

    from r1zero.config import RunConfig

    run = tmp_path / "arith_s0"
    cfg = OmegaConf.structured(RunConfig)
    cfg.task.template, cfg.task.system_prompt = "chat", SYSTEM
    cfg.task.fewshot = [["What is 12 + 9?", "12 + 9 = 21 <answer>21</answer>"]]
    cfg.steps = 3
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    summary = {
        "steps_done": 3,
        "history": {"eval": [{"step": 0, "eval/accuracy": 0.125}, {"step": 3, "eval/accuracy": 0.25}]},
    }
    (run / "summary.json").write_text(json.dumps(summary))
    rows = [{"step": s, "reward/mean": s / 10} for s in (1, 2, 3)]
    (run / "metrics.jsonl").write_text("\n".join(map(json.dumps, rows)) + "\n")
    if final_model:
        make_tiny_model(
            run / "final_model", hidden=64, layers=2, vocab=512, tie_embeddings=True, arch="llama"
        )
    return run


def test_run_directory_to_gguf_card_and_a_reply(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path)
    main([str(run), "--type", "f16", "q4_0", "--chat", "What is 3 + 4?"])
    out = capsys.readouterr().out
    files = [run / "gguf" / "arith_s0-F16.gguf", run / "gguf" / "arith_s0-Q4_0.gguf"]
    for path in files:
        assert path.read_bytes()[:4] == b"GGUF"
        assert f"[{path.name}] 'What is 3 + 4?' -> " in out  # llama.cpp loaded the file and answered
    card = (run / "gguf" / "README.md").read_text()
    assert "held-out accuracy | 12.5% (step 0) -> 25.0% (step 3)" in card
    assert "| arith_s0-F16.gguf | F16 |" in card and "| arith_s0-Q4_0.gguf | Q4_0 |" in card
    assert (run / "gguf" / "reward_curve.png").exists()
    from gguf import GGUFReader

    reader = GGUFReader(files[0])
    template = reader.fields["tokenizer.chat_template"]
    assert "<|im_start|>" in bytes(template.parts[template.data[0]]).decode()
    assert bytes(reader.fields["general.name"].parts[-1]).decode() == "arith_s0"


def test_chat_messages_carry_the_training_prompt(tmp_path: Path) -> None:
    run = _run(tmp_path, final_model=False)
    assert chat_messages(run, "What is 3 + 4?") == [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "What is 12 + 9?"},
        {"role": "assistant", "content": "12 + 9 = 21 <answer>21</answer>"},
        {"role": "user", "content": "What is 3 + 4?"},
    ]
    assert chat_messages(None, "hi") == [{"role": "user", "content": "hi"}]


def test_plain_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = make_tiny_model(
        tmp_path / "m", hidden=64, layers=2, vocab=512, tie_embeddings=False, arch="qwen2"
    )
    main([str(folder), "--out", str(tmp_path / "out"), "--type", "q8_0", "--name", "mini"])
    assert (tmp_path / "out" / "mini-Q8_0.gguf").exists()
    card = (tmp_path / "out" / "README.md").read_text()
    assert "library_name: gguf" in card and "llama-cli -m mini-Q8_0.gguf --jinja --temp 0" in card
    assert "Q8_0" in capsys.readouterr().out


def test_errors_name_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run = _run(tmp_path, final_model=False)
    with pytest.raises(SystemExit) as exit_info:
        main([str(run)])
    assert exit_info.value.code == 2
    assert "without final_model/" in capsys.readouterr().err
    from transformers import GPT2Config

    GPT2Config(n_embd=32, n_layer=1, n_head=2, vocab_size=16).save_pretrained(tmp_path / "gpt2")
    with pytest.raises(SystemExit):
        main([str(tmp_path / "gpt2"), "--out", str(tmp_path / "o")])
    assert (
        "'gpt2' is not supported; supported: llama (LlamaForCausalLM), qwen2 (Qwen2ForCausalLM)"
        in capsys.readouterr().err
    )
