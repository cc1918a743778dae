"""The rollout contract pieces that need no model: prompt tokenization, sampling settings, seeds, the engine
registry, parameter names."""

from __future__ import annotations

import dataclasses

import pytest

from r1zero.config import RolloutConfig
from r1zero.rollout import engines
from r1zero.rollout.base import (
    SamplingSettings,
    normalize_param_name,
    request_seed,
    step_seed,
    tokenize_prompts,
)
from r1zero.types import Example, Prompt


class WordTokenizer:
    """One token per whitespace-separated word; records the keyword arguments it was called with."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, text: str, **kwargs: object) -> dict[str, list[int]]:
        self.calls.append(kwargs)
        return {"input_ids": [len(word) for word in text.split()]}


def _prompt(text: str, uid: str = "u") -> Prompt:
    return Prompt(text=text, example=Example(question=text, answer="0", uid=uid))


def test_tokenize_prompts_adds_no_special_tokens() -> None:
    tok = WordTokenizer()
    ids = tokenize_prompts(tok, [_prompt("a bb ccc"), _prompt("dddd")], max_prompt_tokens=3)
    assert ids == [[1, 2, 3], [4]]
    assert all(call == {"add_special_tokens": False} for call in tok.calls)


def test_tokenize_prompts_rejects_an_over_long_prompt_by_index_and_length() -> None:
    prompts = [_prompt("a b"), _prompt("a b c d e", uid="long-one")]
    with pytest.raises(ValueError, match=r"prompt 1 has 5 tokens.*max_prompt_tokens=4.*long-one"):
        tokenize_prompts(WordTokenizer(), prompts, max_prompt_tokens=4)
    # No limit: anything goes.
    assert len(tokenize_prompts(WordTokenizer(), prompts)[1]) == 5


def test_sampling_settings_from_config_and_validation() -> None:
    cfg = RolloutConfig(group_size=4, max_new_tokens=33, temperature=0.7)
    s = SamplingSettings.from_config(cfg, seed=5)
    assert (s.n, s.max_new_tokens, s.temperature, s.top_p, s.top_k, s.seed) == (4, 33, 0.7, 1.0, -1, 5)
    # Training refuses truncated sampling: the learner scores the full tempered distribution (issue 12, item 3).
    with pytest.raises(ValueError, match=r"rollout\.top_p=0\.9 is not supported for training"):
        RolloutConfig(top_p=0.9)
    with pytest.raises(ValueError, match=r"rollout\.top_k=20 is not supported for training"):
        RolloutConfig(top_k=20)
    assert SamplingSettings(n=2, max_new_tokens=4, temperature=0.0).temperature == 0.0  # greedy (evaluation)
    with pytest.raises(ValueError, match="temperature"):
        SamplingSettings(n=2, max_new_tokens=4, temperature=-0.1)
    with pytest.raises(ValueError, match=r"\.n must"):
        SamplingSettings(n=0, max_new_tokens=4)


def test_step_seed_is_the_documented_formula() -> None:
    # conf: step s of a run seeded `seed` samples with seed * 1_000_003 + s (hand-computed)
    assert step_seed(0, 5) == 5
    assert step_seed(2, 1) == 2_000_007
    assert len({step_seed(seed, step) for seed in range(3) for step in range(100)}) == 300


def test_request_seed_is_deterministic_and_spreads_steps_apart() -> None:
    assert request_seed(7, 3) == request_seed(7, 3)
    # vLLM gives sample j of a request seed + j; 8 samples x 4 prompts x 50 steps must not collide.
    seeds = [request_seed(step, i) + j for step in range(50) for i in range(4) for j in range(8)]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < 2**31 for s in seeds)


def test_normalize_param_name_strips_wrappers() -> None:
    assert normalize_param_name("module.model.norm.weight") == "model.norm.weight"
    assert normalize_param_name("_orig_mod.lm_head.weight") == "lm_head.weight"
    assert normalize_param_name("model.layers.0.mlp.up_proj.weight") == "model.layers.0.mlp.up_proj.weight"


def test_build_engine_dispatches_on_the_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    made = []

    def factory(path, cfg, seed, **kwargs):
        made.append((path, cfg.engine, seed, kwargs))
        return "engine"

    monkeypatch.setitem(engines.ENGINES, "hf", factory)
    assert engines.build_engine("/m", RolloutConfig(engine="hf"), seed=3, trust_remote_code=True) == "engine"
    assert made == [("/m", "hf", 3, {"trust_remote_code": True})]
    bad = dataclasses.replace(RolloutConfig(), engine="hf")
    object.__setattr__(bad, "engine", "sglang")  # bypass __post_init__ to reach the registry's own check
    with pytest.raises(ValueError, match=r"rollout\.engine must be one of vllm, hf"):
        engines.build_engine("/m", bad, seed=0)


def test_importing_rollout_imports_no_backend() -> None:
    import subprocess
    import sys

    code = "import sys, r1zero.rollout; assert not {'vllm', 'transformers', 'torch'} & set(sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_rollout_dtypes_by_device() -> None:
    """base.DTYPES holds names (so the config checks rollout.dtype without torch); torch_dtype resolves them."""
    import torch

    from r1zero.rollout.base import torch_dtype

    assert [torch_dtype(name, "cpu") for name in ("float32", "bfloat16", "float16", "auto")] == [
        torch.float32,
        torch.bfloat16,
        torch.float16,
        torch.float32,  # auto on CPU: bf16 matmuls are slow and inexact there
    ]
    assert torch_dtype("auto", "cuda") == torch.bfloat16
    with pytest.raises(ValueError, match=r"rollout\.dtype must be one of float32, bfloat16, float16, auto"):
        torch_dtype("int8")
