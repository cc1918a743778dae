"""The rollout-engine contract: what the trainer asks of vLLM (or the transformers fallback).

A rollout engine holds its own copy of the policy. Per step it
    generate(prompts [B], sampling)   -> N = B * G completions, prompt-major (row i has prompt i // G)
    update_weights(named_tensors, v)  <- the learner's new weights (streamed, HF parameter names)
    score(probe)                      -> per-token logprobs under its CURRENT weights, to verify the sync
and, colocated on a GPU, `sleep()` / `wake()` hand its memory to the learner between steps.

Prompts become token ids in exactly one place, `tokenize_prompts`, so the learner and the engine see the same
tokens (the engine is given ids, never text).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from r1zero.config import RolloutConfig
from r1zero.types import Completion, Prompt

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class SamplingSettings:
    """How to sample one step's completions.

    n:              completions per prompt (G).
    max_new_tokens: most generated tokens per completion; a completion that reaches it is "length"-truncated.
    temperature, top_p, top_k: the usual sampling knobs (temperature 0: greedy, for evaluation; top_k=-1: off).
    seed:           None samples from the engine's own random stream; an int makes the step reproducible (each
                    prompt gets its own seed derived from it, so the result does not depend on batching).
    index_offset:   global index of the first prompt passed to `generate`: prompt i is seeded with
                    `request_seed(seed, index_offset + i)`, so a rank sampling a slice of the global batch samples
                    exactly what one process sampling the whole batch would (data parallelism, r1zero.dp).
    """

    n: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    seed: int | None = None
    index_offset: int = 0

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError(f"SamplingSettings.n must be >= 1; got {self.n}")
        if self.max_new_tokens < 1:
            raise ValueError(f"SamplingSettings.max_new_tokens must be >= 1; got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ValueError(
                f"SamplingSettings.temperature must be >= 0 (0 = greedy); got {self.temperature}"
            )
        if not 0 < self.top_p <= 1:
            raise ValueError(f"SamplingSettings.top_p must be in (0, 1]; got {self.top_p}")

    @classmethod
    def from_config(cls, cfg: RolloutConfig, seed: int | None, index_offset: int = 0) -> SamplingSettings:
        """The training step's settings: G = cfg.group_size samples per prompt."""
        return cls(
            n=cfg.group_size,
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            top_p=cfg.top_p,
            top_k=cfg.top_k,
            seed=seed,
            index_offset=index_offset,
        )


# (prompt_token_ids [P], response_token_ids [L]) pairs, as `score` and the sync probe use them.
TokenPair = tuple[list[int], list[int]]


@runtime_checkable
class RolloutEngine(Protocol):
    """A sampler holding its own copy of the policy weights.

    policy_version: the learner step whose weights the engine holds (0 = the initial model); stamped on every
                    Completion it generates.
    tokenizer:      the Hugging Face tokenizer of the model (the one `tokenize_prompts` uses).
    """

    policy_version: int
    tokenizer: Any

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingSettings) -> list[Completion]:
        """Sample `sampling.n` completions per prompt: N = len(prompts) * n rows, prompt-major.

        Row i belongs to prompt i // n (`Completion.prompt_index`). Each row records its token ids (with the
        end-of-sequence token when one was produced), the raw logprob of each chosen token (log-softmax of the
        model's logits BEFORE temperature/top-p/top-k, i.e. the policy the learner computes), finish_reason
        "stop" (end-of-sequence) or "length" (hit max_new_tokens), the text decoded without special tokens,
        and policy_version = self.policy_version.
        """
        ...

    def score(self, sequences: Sequence[TokenPair]) -> list[list[float]]:
        """Logprob of each response token given the prompt and the previous tokens, under the current weights,
        temperature 1. One list of len(response) floats per (prompt_ids, response_ids) pair."""
        ...

    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        """Load new weights, streamed as (HF parameter name, tensor) pairs (`model.layers.0.mlp.up_proj.weight`;
        `lm_head.weight` may be absent when the embeddings are tied); then policy_version = version.

        The engine may keep a tensor after the iterator has moved on (vLLM's reload buffers each layer until all
        of its tensors have arrived), so a yielded tensor must not be overwritten in place later (a reused
        gather buffer would be; measured: 0.45 nats off). DeepSpeed 0.19's ZeRO-3 release re-points `p.data`
        instead, so yielding `p.data` inside `GatheredParameters` is fine; when unsure, yield a clone.
        """
        ...

    def sleep(self) -> None:
        """Release accelerator memory until `wake()` (no-op where unsupported)."""
        ...

    def wake(self) -> None:
        """Undo `sleep()`; call it before `generate`, `score` or `update_weights`."""
        ...

    def close(self) -> None:
        """Free the engine's resources."""
        ...


def tokenize_prompts(
    tokenizer: Any, prompts: Sequence[Prompt], max_prompt_tokens: int | None = None
) -> list[list[int]]:
    """Prompt texts -> token ids [B][P_b]: the ONE place prompts become tokens.

    `add_special_tokens=False`: templates already contain every special token they need (a chat template's
    `<|im_start|>`, a base model's BOS); adding a BOS here would give the learner different tokens than the
    template author meant. Raises ValueError naming the first prompt longer than `max_prompt_tokens`.
    """
    ids: list[list[int]] = [list(tokenizer(p.text, add_special_tokens=False)["input_ids"]) for p in prompts]
    if max_prompt_tokens is not None:
        for i, row in enumerate(ids):
            if len(row) > max_prompt_tokens:
                raise ValueError(
                    f"prompt {i} has {len(row)} tokens, more than rollout.max_prompt_tokens={max_prompt_tokens} "
                    f"(uid {prompts[i].example.uid!r}); shorten the data or raise the limit"
                )
            if not row:
                raise ValueError(f"prompt {i} is empty after tokenization (uid {prompts[i].example.uid!r})")
    return ids


def step_seed(run_seed: int, step: int) -> int:
    """The sampling seed of training step `step` in a run seeded `run_seed` (what the loop passes to
    `SamplingSettings`; each prompt's seed then comes from `request_seed`). Example: step_seed(0, 5) = 5,
    step_seed(2, 1) = 2_000_007."""
    return run_seed * 1_000_003 + step


def request_seed(seed: int, prompt_index: int) -> int:
    """A per-prompt seed in [0, 2**31) derived from the step seed by hashing (not `seed + i`, so that the seeds of
    consecutive steps do not overlap). Sample j of the prompt uses `request_seed + j` (vLLM's rule for n > 1)."""
    digest = hashlib.sha256(f"{seed}:{prompt_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") % (2**31 - 2**16)


def normalize_param_name(name: str) -> str:
    """Strip wrapper prefixes a learner may add to HF parameter names: DDP/DeepSpeed `module.`, torch.compile
    `_orig_mod.`. `module.model.norm.weight` -> `model.norm.weight`."""
    for prefix in ("module.", "_orig_mod."):
        while name.startswith(prefix):
            name = name[len(prefix) :]
    return name.replace("._orig_mod.", ".")


# Keyed by RolloutConfig.dtype: the torch dtype's name on (CPU, GPU). "auto" is float32 on CPU (bf16 matmuls are
# slow and inexact there) and bfloat16 on a GPU. Names, not torch objects, so the config validates without torch.
DTYPES: dict[str, tuple[str, str]] = {
    "float32": ("float32", "float32"),
    "bfloat16": ("bfloat16", "bfloat16"),
    "float16": ("float16", "float16"),
    "auto": ("float32", "bfloat16"),
}


def torch_dtype(name: str, device: str = "cpu") -> torch.dtype:
    """RolloutConfig.dtype -> torch dtype on `device` ("cpu", "cuda"), from DTYPES: ("auto", "cpu") -> float32."""
    import torch

    if name not in DTYPES:
        raise ValueError(f"rollout.dtype must be one of {', '.join(DTYPES)}; got {name!r}")
    on_cpu, on_gpu = DTYPES[name]
    dtype = getattr(torch, on_cpu if device == "cpu" else on_gpu)
    assert isinstance(dtype, torch.dtype)
    return dtype
