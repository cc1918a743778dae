"""transformers `generate` rollout engine: the same contract as VLLMEngine, for debugging and machines without
vLLM. Slower (no paged KV cache, no continuous batching) but simple, and exact in fp32 on CPU.

Randomness: one seeded generator per `generate` call (HF samples a whole batch from one stream), so with a
seed the result is reproducible for the same prompts, but unlike vLLM it depends on which prompts share a call.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from r1zero.config import RolloutConfig
from r1zero.rollout.base import (
    SamplingSettings,
    TokenPair,
    normalize_param_name,
    tokenize_prompts,
    torch_dtype,
)
from r1zero.types import Completion, Prompt

log = logging.getLogger(__name__)


def _left_pad(
    rows: Sequence[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token id rows -> (input_ids [B, P], attention_mask [B, P]), left-padded so every row ends at column P-1.
    [[5, 6], [7]] with pad 0 -> ids [[5, 6], [0, 7]], mask [[1, 1], [0, 1]]."""
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long, device=device)  # [B, P]
    mask = torch.zeros((len(rows), width), dtype=torch.long, device=device)  # [B, P]
    for i, row in enumerate(rows):
        if row:
            ids[i, width - len(row) :] = torch.tensor(row, dtype=torch.long, device=device)
            mask[i, width - len(row) :] = 1
    return ids, mask


class ChosenTokenLogprobs:
    """A forward hook on the model during `generate`: the logprob of each step's chosen token, without keeping
    the step's logits (output_logits=True kept T x [N, V] floats: ~40 GB for the 3B recipe).

    Each forward's last-position logits [N, V] become log_softmax(logits / scale), held for one step only: the
    next forward's input is the token chosen from them ([N, 1], with the KV cache), which picks the [N] values to
    keep; the last step's are picked from the finished sequences (`per_step`). The logits are the model's own
    output, before transformers' processors, as output_logits returned them, and the arithmetic is the same, so
    the values are unchanged. Example: V = 3, logits [0, 0, ln 2] (scale 1), next input token 2 ->
    log(2 / 4) = -0.693.
    """

    def __init__(self, scale: float) -> None:
        self.scale = scale
        self.steps: list[torch.Tensor] = []  # [N] per decided step
        self.pending: torch.Tensor | None = None  # [N, V] of the step whose token is not known yet

    def __call__(self, module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
        ids: torch.Tensor = kwargs["input_ids"] if "input_ids" in kwargs else args[0]  # [N, S]: P, then 1
        if self.pending is not None:
            self.steps.append(self.pending.gather(1, ids[:, -1:]).squeeze(1))  # [N]
        logits = output.logits[:, -1]  # [N, V]
        self.pending = torch.log_softmax(logits.float() / self.scale, dim=-1)  # [N, V]

    def per_step(self, new_tokens: torch.Tensor) -> torch.Tensor:
        """new_tokens [N, T] -> logprobs [N, T] (steps generated beyond T, if any, are dropped)."""
        steps = self.steps[: new_tokens.shape[1]]
        if len(steps) < new_tokens.shape[1]:
            assert self.pending is not None and len(steps) == new_tokens.shape[1] - 1
            steps.append(self.pending.gather(1, new_tokens[:, -1:]).squeeze(1))  # [N]
        self.pending = None
        return torch.stack(steps, dim=1)  # [N, T]


class HFEngine:
    """`RolloutEngine` over a transformers causal LM held in this process."""

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        seed: int = 0,
        max_prompt_tokens: int = 512,
        device: str | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.max_prompt_tokens = max_prompt_tokens
        self.seed = seed
        self.policy_version = 0
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        model: Any = AutoModelForCausalLM.from_pretrained(
            model_path, dtype=torch_dtype(dtype, self.device.type), trust_remote_code=trust_remote_code
        )
        self.model: Any = model.to(self.device).eval()
        self.eos_token_ids = self._eos_ids()
        pad = self.tokenizer.pad_token_id
        self.pad_token_id = pad if pad is not None else self.eos_token_ids[0]
        self._calls = 0

    @classmethod
    def from_config(cls, model_path: str, cfg: RolloutConfig, *, seed: int, **overrides: Any) -> HFEngine:
        kwargs: dict[str, Any] = dict(dtype=cfg.dtype, seed=seed, max_prompt_tokens=cfg.max_prompt_tokens)
        kwargs.update(overrides)
        return cls(model_path, **kwargs)

    def _eos_ids(self) -> list[int]:
        """End-of-sequence ids: the generation config's (int or list) plus the tokenizer's, as vLLM uses."""
        ids: list[int] = []
        configured = getattr(self.model.generation_config, "eos_token_id", None)
        for value in [configured, self.tokenizer.eos_token_id]:
            for token in value if isinstance(value, list) else [value]:
                if token is not None and token not in ids:
                    ids.append(int(token))
        if not ids:
            raise ValueError("the model has no eos_token_id: generation could never stop")
        return ids

    @torch.no_grad()
    def generate(self, prompts: Sequence[Prompt], sampling: SamplingSettings) -> list[Completion]:
        """N = len(prompts) * n completions, prompt-major (HF repeats each prompt n times in place).
        temperature 0 is greedy decoding."""
        from transformers import GenerationConfig

        prompt_ids = tokenize_prompts(self.tokenizer, prompts, self.max_prompt_tokens)
        input_ids, attention_mask = _left_pad(prompt_ids, self.pad_token_id, self.device)  # [B, P]
        greedy = sampling.temperature == 0
        knobs: dict[str, Any] = (
            {"do_sample": False}
            if greedy
            else {
                "do_sample": True,
                "temperature": sampling.temperature,
                "top_p": sampling.top_p,
                "top_k": max(sampling.top_k, 0),  # 0 disables top-k (HF's default would be 50)
            }
        )
        config = GenerationConfig(
            **knobs,
            max_new_tokens=sampling.max_new_tokens,
            # HF refuses n > 1 greedy sequences: generate one and repeat it (the n samples are identical anyway).
            num_return_sequences=1 if greedy else sampling.n,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
        )
        seed = sampling.seed if sampling.seed is not None else self.seed * 1_000_003 + self._calls
        self._calls += 1
        devices = [self.device] if self.device.type == "cuda" else []
        # raw logits / T: the logprob of each chosen token under the distribution sampled from (greedy: T = 1)
        chosen = ChosenTokenLogprobs(sampling.temperature if sampling.temperature > 0 else 1.0)
        hook = self.model.register_forward_hook(chosen, with_kwargs=True)
        try:
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(seed)
                sequences = self.model.generate(
                    input_ids=input_ids, attention_mask=attention_mask, generation_config=config
                )  # [N, P + T] ([B, P + T] when greedy)
        finally:
            hook.remove()
        new_tokens = sequences[:, input_ids.shape[1] :]  # [N, T] ([B, T] when greedy)
        logprobs = chosen.per_step(new_tokens)  # [N, T]
        if greedy:
            new_tokens = new_tokens.repeat_interleave(sampling.n, dim=0)  # [B, T] -> [N, T]
            logprobs = logprobs.repeat_interleave(sampling.n, dim=0)  # [N, T]
        return [
            self._completion(row // sampling.n, prompt_ids[row // sampling.n], new_tokens[row], logprobs[row])
            for row in range(new_tokens.shape[0])
        ]

    def _completion(
        self, prompt_index: int, prompt_ids: list[int], tokens: torch.Tensor, logprobs: torch.Tensor
    ) -> Completion:
        """Cut a generated row [T] at its first eos (kept); rows that never produce one are "length"."""
        token_list = tokens.tolist()
        stop_at = next((t for t, token in enumerate(token_list) if token in self.eos_token_ids), None)
        length = len(token_list) if stop_at is None else stop_at + 1
        token_list = token_list[:length]
        return Completion(
            prompt_index=prompt_index,
            prompt_token_ids=list(prompt_ids),
            token_ids=token_list,
            logprobs=logprobs[:length].tolist(),
            text=self.tokenizer.decode(token_list, skip_special_tokens=True),
            finish_reason="length" if stop_at is None else "stop",
            policy_version=self.policy_version,
        )

    @torch.no_grad()
    def score(self, sequences: Sequence[TokenPair]) -> list[list[float]]:
        """One right-padded forward pass; logprob of full[j] read from the logits at j - 1 (temperature 1)."""
        if not sequences:
            return []
        rows = [list(p) + list(r) for p, r in sequences]
        width = max(len(r) for r in rows)
        ids = torch.full(
            (len(rows), width), self.pad_token_id, dtype=torch.long, device=self.device
        )  # [S, L]
        mask = torch.zeros_like(ids)  # [S, L]
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row, dtype=torch.long, device=self.device)
            mask[i, : len(row)] = 1
        logits = self.model(input_ids=ids, attention_mask=mask).logits  # [S, L, V]
        scores = []
        for i, (prompt, response) in enumerate(sequences):
            if not prompt:
                raise ValueError(f"score: sequence {i} has an empty prompt (the first token has no logprob)")
            p, n = len(prompt), len(response)
            step_logits = logits[i, p - 1 : p - 1 + n].float()  # [n, V]
            target = ids[i, p : p + n].unsqueeze(1)  # [n, 1]
            scores.append(torch.log_softmax(step_logits, dim=-1).gather(1, target).squeeze(1).tolist())
        return scores

    @torch.no_grad()
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        """Copy streamed (HF name, tensor) pairs into the model's parameters, one at a time (what
        `load_state_dict(strict=False)` does, without ever holding a state dict). A tied `lm_head.weight` is
        the embedding, so pushing either name updates both."""
        params = dict(self.model.named_parameters())  # name -> the live Parameter (no copies)
        output = self.model.get_output_embeddings()
        if output is not None and "lm_head.weight" not in params:
            params["lm_head.weight"] = (
                output.weight
            )  # tied: named_parameters() lists it once, as the embedding
        loaded: set[int] = set()
        for raw_name, tensor in named_tensors:
            name = normalize_param_name(raw_name)
            target = params.get(name)
            if target is None:
                raise KeyError(f"update_weights: {name!r} is not a parameter of {type(self.model).__name__}")
            if target.shape != tensor.shape:
                raise ValueError(
                    f"update_weights: {name} has shape {tuple(tensor.shape)}, expected {tuple(target.shape)}"
                )
            target.copy_(tensor.detach().to(device=target.device, dtype=target.dtype))
            loaded.add(id(target))
        missing = [n for n, p in self.model.named_parameters() if id(p) not in loaded]
        if missing:
            log.warning(
                "update_weights: %d parameters were not pushed and keep old values: %s",
                len(missing),
                missing[:5],
            )
        self.policy_version = version

    def sleep(self) -> None:
        """No-op: the HF engine has no separate memory pool to release."""

    def wake(self) -> None:
        """No-op."""

    def close(self) -> None:
        self.model = None
