"""Local models: tokenizer round-trips, transformers loads them, determinism, reference resolution."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from r1zero.models import make_tiny_model, resolve_model


def test_tokenizer_round_trips_tags_digits_and_operators(tiny_model_path: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    for text in [
        "<think> 12 + 34 = 46, wait: 46 - 12 = 34 </think> <answer>(3 + 4) * 5 / 7</answer>",
        "0123456789 +-*/() = #### \\boxed{42}",
        "Unicode survives byte-level BPE: é ü 中文 ٣",
    ]:
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == text
    # The tags are frequent in the tokenizer's training text, so BPE learns them as few tokens.
    assert len(tok("<answer>", add_special_tokens=False)["input_ids"]) <= 3
    assert tok.eos_token == "<|im_end|>" and tok.pad_token == "<|endoftext|>"
    assert tok.eos_token_id != tok.pad_token_id


def test_chat_template_is_chatml(tiny_model_path: str) -> None:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_path)
    text = tok.apply_chat_template(
        [{"role": "user", "content": "1+1?"}], tokenize=False, add_generation_prompt=True
    )
    assert text == "<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"


def test_tiny_model_loads_and_has_expected_size(tiny_model_path: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_path)
    n_params = sum(p.numel() for p in model.parameters())
    # "tiny" is specified as ~0.5M parameters.
    assert 300_000 < n_params < 800_000
    assert model.config.tie_word_embeddings
    assert model.lm_head.weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()
    logits = model(torch.tensor([[1, 2, 3]])).logits
    assert logits.shape == (1, 3, model.config.vocab_size)
    assert torch.isfinite(logits).all()


def test_make_tiny_model_is_deterministic(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    kwargs = dict(hidden=32, layers=1, vocab=300, tie_embeddings=False, heads=1, intermediate=64)
    a = make_tiny_model(tmp_path / "a", **kwargs)
    b = make_tiny_model(tmp_path / "b", **kwargs)
    c = make_tiny_model(tmp_path / "c", seed=1, **kwargs)
    wa, wb, wc = (load_file(p / "model.safetensors") for p in (a, b, c))
    assert wa.keys() == wb.keys()
    assert all((wa[k] == wb[k]).all() for k in wa)
    assert any((wa[k] != wc[k]).any() for k in wa)
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()


def test_llama_arch_and_bad_shapes(tmp_path: Path) -> None:
    from transformers import AutoConfig

    path = make_tiny_model(tmp_path / "l", hidden=64, layers=1, vocab=300, tie_embeddings=True, arch="llama")
    assert AutoConfig.from_pretrained(path).model_type == "llama"
    with pytest.raises(ValueError, match="arch"):
        make_tiny_model(tmp_path / "x", hidden=64, layers=1, vocab=300, tie_embeddings=True, arch="gpt9")
    with pytest.raises(ValueError, match="divisible"):
        make_tiny_model(tmp_path / "y", hidden=65, layers=1, vocab=300, tie_embeddings=True, heads=2)


def test_resolve_model_references(
    tmp_path: Path, tiny_model_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert resolve_model("tiny") == tiny_model_path
    assert resolve_model(tiny_model_path) == str(Path(tiny_model_path).resolve())
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"config\.json"):
        resolve_model(str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match="hub is off"):
        resolve_model("Qwen/Qwen2.5-3B")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    assert resolve_model("Qwen/Qwen2.5-3B") == "Qwen/Qwen2.5-3B"


def test_import_is_light_and_fast() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import r1zero, r1zero.config, r1zero.types, r1zero.models, "
        "r1zero.env; dt = time.perf_counter() - t; "
        "heavy = [m for m in ('vllm', 'deepspeed', 'wandb', 'torch', 'transformers') if m in sys.modules]; "
        "print(dt); print(','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split("\n")
    assert float(out[0]) < 1.0
    assert out[1] == "", f"importing r1zero pulled in {out[1]}"
