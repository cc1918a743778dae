"""A bf16 vLLM rollout fed fp32 learner weights: the sync works, and the bf16 rounding gap it leaves is
measured (it is what `sync.max_abs_logprob_diff` must allow for bf16 rollouts)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from r1zero.rollout import SamplingSettings
from r1zero.sync import SyncVerificationError, make_probe, push_weights, verify_sync

pytest.importorskip("vllm")

# Shared helpers (tests/ has no packages; pytest puts this folder on sys.path).
from test_rollout_hf import PROMPTS, forward_logprobs, simulate_training_step


@pytest.fixture(scope="module")
def engine(tiny_model_path: str) -> Iterator:
    from r1zero.rollout.vllm_engine import VLLMEngine

    eng = VLLMEngine(tiny_model_path, dtype="bfloat16", seed=0, max_prompt_tokens=64, max_new_tokens=16)
    yield eng
    eng.close()


def test_bf16_rollout_tracks_an_fp32_learner_within_bf16_precision(
    engine, tiny_model_path: str, capsys
) -> None:
    from transformers import AutoModelForCausalLM

    learner = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).eval()
    simulate_training_step(learner, engine.tokenizer, seed=1)
    seconds = push_weights(engine, learner.named_parameters(), version=1)
    rows = engine.generate(PROMPTS, SamplingSettings(n=4, max_new_tokens=16, seed=0))
    probe = make_probe(rows, size=len(rows))  # every sample: a fuller measurement than the default 2
    metrics = verify_sync(engine, lambda p: forward_logprobs(learner, p), probe, max_abs_diff=1.0)
    with capsys.disabled():
        print(f"\n[sync bf16 vs fp32 learner] push {seconds:.3f} s, {metrics}")
    assert 1e-4 < metrics["sync/max_abs_logprob_diff"] < 0.5
    # At an fp32-sized threshold the verifier fails and puts the dtype first among the causes.
    with pytest.raises(SyncVerificationError, match=r"Possible causes: a dtype mismatch"):
        verify_sync(engine, lambda p: forward_logprobs(learner, p), probe[:2], max_abs_diff=1e-5)
