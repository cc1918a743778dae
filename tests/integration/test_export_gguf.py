"""GGUF export checked against the real runtimes: transformers reads each file back (`gguf_file=`) and llama.cpp
itself (the xllamacpp wheel) generates from it, for a tiny Qwen2 (tied and untied) and a tiny Llama (untied and
tied), in every output type. Expectations come from the original model and from torch's own rounding, never from
the exporter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from gguf_helpers import (
    LOGPROB_TOL,
    banned_ids,
    chat_ids,
    chat_reply,
    compare,
    load_gguf_in_transformers,
    sharpened_model,
)

from r1zero.export import export_gguf, llamacpp

MODELS = [("qwen2", True), ("qwen2", False), ("llama", False), ("llama", True)]
TYPES = ["f32", "f16", "bf16", "q8_0", "q4_0"]
TEXT_PROMPTS = ["What is 12 + 9? <answer>", "Using the numbers [3, 5, 7], create"]
MAX_NEW = 16


@pytest.fixture(scope="module", params=MODELS, ids=[f"{a}-{'tied' if t else 'untied'}" for a, t in MODELS])
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    arch, tie = request.param
    folder = sharpened_model(tmp_path_factory.mktemp(f"{arch}-{tie}") / "model", arch=arch, tie=tie)
    files = {t: export_gguf(folder, folder.parent / f"model-{t}.gguf", t).path for t in TYPES}
    return {
        "folder": folder,
        "files": files,
        "tokenizer": AutoTokenizer.from_pretrained(folder),
        "model": AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval(),
    }


def _logits(model: Any, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0]  # [T, V]


def _probe_ids(tokenizer: Any) -> list[int]:
    return tokenizer("<think> 45 * 3 = 135, wait: let me verify. </think> <answer>135</answer>").input_ids


def test_f32_file_gives_the_same_logits(exported: dict[str, Any]) -> None:
    ids = _probe_ids(exported["tokenizer"])
    back = load_gguf_in_transformers(exported["files"]["f32"])
    assert torch.equal(_logits(back, ids), _logits(exported["model"], ids))


@pytest.mark.parametrize("out_type,dtype", [("f16", torch.float16), ("bf16", torch.bfloat16)])
def test_half_files_equal_the_model_with_rounded_matrices(
    exported: dict[str, Any], out_type: str, dtype: torch.dtype
) -> None:
    """F16/BF16 keep norms and biases in F32 and round every matrix once (round to nearest even): the file must
    give exactly the logits of the original model with its matrices rounded by torch. Against the unrounded
    model the difference is the rounding itself (reported, not asserted)."""
    from transformers import AutoModelForCausalLM

    reference = AutoModelForCausalLM.from_pretrained(exported["folder"], dtype=torch.float32).eval()
    with torch.no_grad():
        for param in reference.parameters():
            if param.ndim == 2:
                param.copy_(param.to(dtype).to(torch.float32))
    ids = _probe_ids(exported["tokenizer"])
    back = load_gguf_in_transformers(exported["files"][out_type])
    assert torch.equal(_logits(back, ids), _logits(reference, ids))


@pytest.mark.parametrize("out_type", ["q8_0", "q4_0"])
def test_quantized_files_store_the_planned_types(exported: dict[str, Any], out_type: str) -> None:
    from gguf import GGUFReader

    tied = exported["model"].config.tie_word_embeddings
    reader = GGUFReader(exported["files"][out_type])
    logits_matrix = "token_embd.weight" if tied else "output.weight"
    for tensor in reader.tensors:
        expected = "F32" if len(tensor.shape) == 1 or tensor.shape[1] == 1 else out_type.upper()
        if out_type == "q4_0" and tensor.name == logits_matrix:
            expected = "Q8_0"  # Q4_0 keeps the matrix that makes the logits at 8 bits
        assert tensor.tensor_type.name == expected, tensor.name
    names = {t.name for t in reader.tensors}
    assert ("output.weight" in names) == (not tied)


@pytest.mark.parametrize("out_type", ["q8_0", "q4_0"])
def test_quantized_logits_stay_close(exported: dict[str, Any], out_type: str) -> None:
    """A sanity bound (not a spec): a misplaced block scale or a wrong row order moves logits by the logit range
    itself. Measured max |dlogit| / range on these four models: Q8_0 0.8-1.1%, Q4_0 11-20% (random Gaussian
    weights at 4 bits; a trained model fares better, see README)."""
    ids = _probe_ids(exported["tokenizer"])
    original = _logits(exported["model"], ids)
    back = _logits(load_gguf_in_transformers(exported["files"][out_type]), ids)
    spread = float(original.max() - original.min())
    assert float((back - original).abs().max()) < {"q8_0": 0.03, "q4_0": 0.4}[out_type] * spread


@pytest.mark.parametrize("out_type", TYPES)
def test_llamacpp_greedy_matches_transformers(exported: dict[str, Any], out_type: str) -> None:
    """llama.cpp and transformers run the SAME file: text prompts (tokenized by llama.cpp from the file's
    vocabulary) and token-id prompts give the same prompt length, llama.cpp's per-token log-probs within the
    type's tolerance, and the same greedy tokens, except where transformers' top two are closer than that
    tolerance allows llama.cpp to tell apart."""
    tokenizer, path = exported["tokenizer"], exported["files"][out_type]
    model = load_gguf_in_transformers(path)
    server = llamacpp.load(path)
    banned, eos = banned_ids(tokenizer), tokenizer.eos_token_id
    tol = LOGPROB_TOL[out_type]
    prompts: list[str | list[int]] = [
        *TEXT_PROMPTS,
        chat_ids(tokenizer, [{"role": "user", "content": "2 + 3?"}]),
    ]
    for prompt in prompts:
        prompt_ids = tokenizer(prompt).input_ids if isinstance(prompt, str) else prompt
        agreement, cpp = compare(server, model, prompt, prompt_ids, MAX_NEW, banned, eos)
        assert cpp.prompt_tokens == len(prompt_ids), prompt
        assert agreement.max_logprob_diff <= tol, (prompt, agreement)
        if agreement.divergence_margin is None:
            assert agreement.cpp_ids == agreement.hf_ids, (prompt, agreement)
            assert cpp.text == tokenizer.decode(agreement.hf_ids), prompt
        else:
            assert agreement.divergence_margin <= 2 * tol, (prompt, agreement)


def test_chat_template_travels_in_the_file(exported: dict[str, Any]) -> None:
    """llama.cpp formats the conversation with the template stored in the file: the same prompt tokens and the
    same greedy reply as transformers' apply_chat_template (F32 file)."""
    tokenizer, path = exported["tokenizer"], exported["files"]["f32"]
    messages = [
        {"role": "system", "content": "Give the answer inside <answer></answer> tags."},
        {"role": "user", "content": "What is 12 + 9?"},
    ]
    prompt_ids = chat_ids(tokenizer, messages)
    banned, eos = banned_ids(tokenizer), tokenizer.eos_token_id
    reply = chat_reply(llamacpp.load(path), messages, MAX_NEW, banned)
    hf = exported["model"].generate(
        torch.tensor([prompt_ids]), max_new_tokens=MAX_NEW, do_sample=False, suppress_tokens=banned,
        eos_token_id=eos, pad_token_id=eos,
    )[0, len(prompt_ids) :]  # fmt: skip
    assert reply.prompt_tokens == len(prompt_ids)
    assert reply.text == tokenizer.decode(hf, skip_special_tokens=True)


def test_padded_embedding_rows_become_unused_tokens(tmp_path: Path) -> None:
    """Qwen2.5 pads its embedding past the tokenizer: the file lists one token per row, the extra ones UNUSED
    (type 5), and llama.cpp runs it like transformers."""
    from gguf import GGUFReader
    from transformers import AutoTokenizer

    folder = sharpened_model(tmp_path / "padded", arch="qwen2", tie=False, extra_rows=5)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    path = export_gguf(folder, tmp_path / "padded.gguf", "f32").path
    reader = GGUFReader(path)
    types = reader.fields["tokenizer.ggml.token_type"]
    token_types = [int(types.parts[i][0]) for i in types.data]
    assert len(token_types) == len(tokenizer) + 5
    assert token_types[-5:] == [5] * 5 and 5 not in token_types[:-5]
    model = load_gguf_in_transformers(path)
    agreement, _ = compare(
        llamacpp.load(path), model, TEXT_PROMPTS[0], tokenizer(TEXT_PROMPTS[0]).input_ids, MAX_NEW,
        banned_ids(tokenizer), tokenizer.eos_token_id,
    )  # fmt: skip
    assert agreement.max_logprob_diff <= LOGPROB_TOL["f32"]


def test_other_architectures_are_refused(tmp_path: Path) -> None:
    from transformers import MistralConfig

    MistralConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=32).save_pretrained(
        tmp_path
    )
    with pytest.raises(ValueError, match=r"'mistral' is not supported; supported: llama .*qwen2"):
        export_gguf(tmp_path, tmp_path / "x.gguf", "f16")


@pytest.mark.slow
def test_smollm2_f16_in_transformers_and_llamacpp(tmp_path: Path) -> None:
    """The CPU default run's model (SmolLM2-135M, Llama architecture, tied, 49k vocabulary) in F16: the same
    checks as the tiny models above (which cover this code path in CI), on a real pretrained model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1zero.models import resolve_model

    folder = Path(resolve_model("smollm2-135m"))
    path = export_gguf(folder, tmp_path / "smollm2-F16.gguf", "f16").path
    tokenizer = AutoTokenizer.from_pretrained(folder)
    reference = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        for param in reference.parameters():
            if param.ndim == 2:
                param.copy_(param.to(torch.float16).to(torch.float32))
    messages = [
        {"role": "system", "content": "Give the answer inside <answer></answer> tags."},
        {"role": "user", "content": "What is 12 + 9?"},
        {"role": "assistant", "content": "12 + 9 = 21 <answer>21</answer>"},
        {"role": "user", "content": "What is 41 + 27?"},
    ]
    prompt_ids = chat_ids(tokenizer, messages)
    back = load_gguf_in_transformers(path)
    assert torch.equal(_logits(back, prompt_ids), _logits(reference, prompt_ids))
    server = llamacpp.load(path, threads=2)
    banned, eos = banned_ids(tokenizer), tokenizer.eos_token_id
    # 30 layers add up more rounding than the tiny models' 2: measured max |dlogprob| 0.0043 (F16) and 0.0059
    # (F32) over 8 chat replies of 32 tokens (docs/local.md); limit ~3x that.
    tol = 0.02
    for prompt in ["The capital of France is", "def fibonacci(n):", prompt_ids]:
        ids = tokenizer(prompt).input_ids if isinstance(prompt, str) else prompt
        agreement, cpp = compare(server, back, prompt, ids, MAX_NEW, banned, eos)
        assert cpp.prompt_tokens == len(ids)
        assert agreement.max_logprob_diff <= tol, (prompt, agreement)
        assert agreement.divergence_margin is None or agreement.divergence_margin <= 2 * tol
    reply = chat_reply(server, messages, MAX_NEW, banned)
    hf = back.generate(
        torch.tensor([prompt_ids]), max_new_tokens=MAX_NEW, do_sample=False, suppress_tokens=banned,
        eos_token_id=eos, pad_token_id=eos,
    )[0, len(prompt_ids) :]  # fmt: skip
    assert reply.prompt_tokens == len(prompt_ids)
    assert reply.text == tokenizer.decode(hf, skip_special_tokens=True)
