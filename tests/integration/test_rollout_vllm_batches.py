"""vLLM on CPU with batches larger than one scheduling pass (issue #18), on the tiny model.

vLLM's scheduler takes at most `max_num_batched_tokens` (4096 on CPU) prompt and decode tokens per pass. With
chunked prefill (vLLM's default) the prompt that does not fit is prefilled in part; vLLM then rewinds that
request's seeded generator, which a CPU generator cannot do ("CPU Generator does not use offset"). Every r1zero
request is seeded, so any batch with more prompt tokens than one pass crashed. The CPU engine turns chunked
prefill off (`cpu_scheduler_settings`); here: a seeded batch of ~1.25 passes samples, and the samples are the same
whether the batch is sampled in one call or in slices, in big passes or in many small ones, and equal those of
vLLM's default settings wherever those run.

The CPU engine also uses 32-token KV blocks instead of vLLM's 128, so that the G samples of a prompt share its
prefill through the prefix cache: checked here by counting the tokens the model computes.
"""

from __future__ import annotations

from typing import Any

import pytest

from r1zero.rollout import SamplingSettings, tokenize_prompts
from r1zero.types import Completion, Prompt

pytest.importorskip("vllm")

from test_rollout_hf import PROMPTS, chat_prompt

from r1zero.rollout.vllm_engine import (
    CPU_BLOCK_SIZE,
    CPU_MAX_NUM_BATCHED_TOKENS,
    VLLMEngine,
    cpu_scheduler_settings,
    inprocess_worker,
)

MAX_PROMPT, MAX_NEW = 64, 12
G = 4
# 48 prompts of 26-27 tokens, each sampled G=4 times: every sample is a request of its own with the whole prompt,
# so the batch holds ~5,100 prompt tokens, more than one pass of 4,096 (checked in the test).
BIG = [chat_prompt(f"What is {i} + {3 * i + 1}? Show your work.", f"q{i}") for i in range(48)]
SEED = 21
# vLLM's own KV block size on CPU (r1zero's is CPU_BLOCK_SIZE = 32).
VLLM_CPU_BLOCK_SIZE = 128
# 6 prompts of 50-58 tokens: longer than one 32-token block, shorter than one of 128.
LONG = [
    chat_prompt(
        f"Think step by step, check each step, then answer. Question {i}: what is {7 * i} + {i + 5}?"
        + " Explain." * (i % 2),
        f"l{i}",
    )
    for i in range(6)
]


def _engine(model_path: str, **scheduler: object) -> VLLMEngine:
    """The CPU engine, its scheduler settings (`cpu_scheduler_settings`) overridden by `scheduler`."""
    from r1zero.rollout import vllm_engine

    def settings(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return cpu_scheduler_settings(*args, **kwargs) | scheduler

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(vllm_engine, "cpu_scheduler_settings", settings)
        return VLLMEngine(
            model_path, dtype="float32", seed=0, max_prompt_tokens=MAX_PROMPT, max_new_tokens=MAX_NEW
        )


def _sampling(n: int = G, index_offset: int = 0) -> SamplingSettings:
    return SamplingSettings(n=n, max_new_tokens=MAX_NEW, seed=SEED, index_offset=index_offset)


def _tokens(rows: list[Completion]) -> list[list[int]]:
    return [r.token_ids for r in rows]


def _logprobs(rows: list[Completion]) -> list[float]:
    return [lp for r in rows for lp in r.logprobs or []]


def _prompt_tokens(tokenizer: Any, prompts: list[Prompt], n: int) -> int:
    return n * sum(len(ids) for ids in tokenize_prompts(tokenizer, prompts))


def _generate_counting_prefill(eng: VLLMEngine, prompts: list[Prompt]) -> tuple[list[Completion], int]:
    """The completions of `prompts` (G each) and how many prompt tokens the model computed for them: all tokens
    through the model's forward minus the decode tokens (one per generated token after each sample's first,
    which the prefill's last position gives)."""
    model = inprocess_worker(eng._llm).model_runner.get_model()
    seen = [0]

    def count(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        seen[0] += ids.numel()

    handle = model.register_forward_pre_hook(count, with_kwargs=True)
    try:
        rows = eng.generate(prompts, _sampling())
    finally:
        handle.remove()
    return rows, seen[0] - sum(len(r.token_ids) - 1 for r in rows)


@pytest.fixture(scope="module")
def runs(tiny_model_path: str) -> dict[str, Any]:
    """The samples of three engines, one alive at a time (two in-process engines would share vLLM's global
    process groups): r1zero's CPU settings, the same with tiny passes, and vLLM's default settings."""
    out: dict[str, Any] = {}
    eng = _engine(tiny_model_path)
    try:
        out["tokenizer"] = eng.tokenizer
        out["scheduler"] = eng._llm.llm_engine.vllm_config.scheduler_config
        out["max_model_len"] = eng.max_model_len
        out["big"] = eng.generate(BIG, _sampling())
        out["slices"] = [eng.generate(BIG[lo : lo + 16], _sampling(index_offset=lo)) for lo in (0, 16, 32)]
        out["small"] = eng.generate(PROMPTS, _sampling(n=8))
        out["long"], out["long_prefill"] = _generate_counting_prefill(eng, LONG)
    finally:
        eng.close()
    # One sequence's worth of tokens per pass (2-3 prompts next to the running decodes), at most 16 requests.
    eng = _engine(tiny_model_path, max_num_batched_tokens=MAX_PROMPT + MAX_NEW + 1, max_num_seqs=16)
    try:
        out["big_in_small_passes"] = eng.generate(BIG, _sampling())
    finally:
        eng.close()
    # vLLM's own defaults on CPU
    eng = _engine(tiny_model_path, enable_chunked_prefill=True, block_size=VLLM_CPU_BLOCK_SIZE)
    try:
        out["default_scheduler"] = eng._llm.llm_engine.vllm_config.scheduler_config
        out["small_vllm_default"] = eng.generate(PROMPTS, _sampling(n=8))
        out["long_vllm_default"], out["long_prefill_vllm_default"] = _generate_counting_prefill(eng, LONG)
    finally:
        eng.close()
    return out


def test_cpu_settings_turn_chunked_prefill_off(runs: dict[str, Any]) -> None:
    sched = runs["scheduler"]
    assert sched.enable_chunked_prefill is False
    assert sched.max_num_batched_tokens == 4096  # vLLM's CPU default is kept when it holds max_model_len (77)
    assert runs["max_model_len"] == MAX_PROMPT + MAX_NEW + 1
    # A sequence longer than the default budget must still fit one pass (vLLM refuses to start otherwise).
    assert cpu_scheduler_settings(10_000) == {
        "enable_chunked_prefill": False,
        "max_num_batched_tokens": 10_000,
        "block_size": 32,
    }
    assert cpu_scheduler_settings(100, tensor_parallel_size=2)["max_num_batched_tokens"] == 8192


def test_seeded_batch_larger_than_one_pass_samples(runs: dict[str, Any]) -> None:
    assert _prompt_tokens(runs["tokenizer"], BIG, G) > CPU_MAX_NUM_BATCHED_TOKENS  # it does cross the limit
    big = runs["big"]
    assert len(big) == len(BIG) * G
    assert [r.prompt_index for r in big] == [i // G for i in range(len(big))]
    assert all(1 <= len(r.token_ids) <= MAX_NEW and len(r.logprobs or []) == len(r.token_ids) for r in big)
    assert len({tuple(t) for t in _tokens(big)}) > len(BIG)  # the samples of a group differ


def test_same_samples_in_one_call_or_in_slices(runs: dict[str, Any]) -> None:
    """Three calls of 16 prompts (64 requests, one pass each) sample what the single big call sampled."""
    assert _prompt_tokens(runs["tokenizer"], BIG[:16], G) <= CPU_MAX_NUM_BATCHED_TOKENS
    slices = [row for part in runs["slices"] for row in part]
    assert _tokens(slices) == _tokens(runs["big"])
    assert _logprobs(slices) == pytest.approx(_logprobs(runs["big"]), abs=1e-5)


def test_same_samples_in_many_small_passes(runs: dict[str, Any]) -> None:
    """77 tokens and at most 16 requests per pass (dozens of passes; each request is prefilled and decoded next
    to other requests than in the 4,096-token passes) sample what the big passes sampled."""
    assert _tokens(runs["big_in_small_passes"]) == _tokens(runs["big"])
    assert _logprobs(runs["big_in_small_passes"]) == pytest.approx(_logprobs(runs["big"]), abs=1e-5)


def test_chunked_prefill_off_samples_what_vllm_default_samples(runs: dict[str, Any]) -> None:
    """Where vLLM's default settings run (a batch within one pass), they give the same tokens and logprobs:
    turning chunked prefill off changes only how a bigger batch is split into passes."""
    assert runs["default_scheduler"].enable_chunked_prefill is True
    assert _tokens(runs["small"]) == _tokens(runs["small_vllm_default"])
    assert _logprobs(runs["small"]) == pytest.approx(_logprobs(runs["small_vllm_default"]), abs=1e-5)


def test_samples_of_a_prompt_share_its_prefill(runs: dict[str, Any]) -> None:
    """With 32-token blocks each prompt's whole blocks are computed once for its G samples; with vLLM's 128-token
    blocks (no whole block in a prompt this short) every sample computes the whole prompt. Same samples."""
    lengths = [len(ids) for ids in tokenize_prompts(runs["tokenizer"], LONG)]
    assert all(CPU_BLOCK_SIZE < n <= MAX_PROMPT < VLLM_CPU_BLOCK_SIZE for n in lengths)
    assert runs["long_prefill_vllm_default"] == G * sum(lengths)
    # At most: each prompt once, and each of the other G - 1 samples its tokens after the last whole block
    # before the prompt's last token (which is always computed: its logits give the first sample).
    tail = [n - CPU_BLOCK_SIZE * ((n - 1) // CPU_BLOCK_SIZE) for n in lengths]
    bound = sum(lengths) + (G - 1) * sum(tail)
    assert runs["long_prefill"] <= bound < 0.6 * G * sum(lengths)
    assert _tokens(runs["long"]) == _tokens(runs["long_vllm_default"])
    assert _logprobs(runs["long"]) == pytest.approx(_logprobs(runs["long_vllm_default"]), abs=1e-5)
