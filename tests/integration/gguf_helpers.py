"""Helpers for the GGUF export tests (imported as `gguf_helpers`): test models, and llama.cpp vs transformers.

Why the test models are "sharpened": a random-init model (init std 0.02) predicts an almost uniform next-token
distribution (top-2 log-prob margins ~0.01), so greedy decoding between two runtimes is a coin toss and says
nothing. Multiplying every matrix by 3 gives peaked, varied predictions (measured: margins mostly > 0.05, 7-21
distinct tokens in 24 for the untied models) while keeping the architecture exactly as it was.

Why some tokens are banned in BOTH runtimes: single-byte pieces of UTF-8 characters do not appear in llama.cpp's
per-token output (it holds them back until a character is complete), and llama.cpp ends generation on every
end-of-generation token while transformers ends on eos only. Banning byte pieces and the special tokens other
than eos (identically in both) leaves comparable sequences; it does not change the model's math.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from r1zero.export import llamacpp
from r1zero.models import make_tiny_model

SHARPEN = 3.0

# Max |log p(token)| difference, llama.cpp vs transformers on the same file, per stored type. Measured on the
# sharpened tiny models (2026-11-30): F32/F16 <= 1.5e-3 (llama.cpp's CPU kernels round activations to F16 for
# F16 weights and sum in another order), BF16 <= 7e-3, Q8_0/Q4_0 <= 3e-2 (llama.cpp quantizes the activations to
# 8 bits for quantized matmuls; transformers multiplies dequantized weights in F32). Limits: ~3x the measurement.
LOGPROB_TOL = {"f32": 5e-3, "f16": 5e-3, "bf16": 2e-2, "q8_0": 0.1, "q4_0": 0.1}


@dataclass
class Completion:
    text: str
    token_ids: list[int]  # the generated tokens; the end-of-generation token that stopped it included
    logprobs: list[float]  # llama.cpp's log-probability of each of them
    prompt_tokens: int  # how many tokens llama.cpp made of the prompt


def _request(max_tokens: int, banned: Sequence[int]) -> dict[str, Any]:
    """r1zero's greedy request, with `banned` token ids never sampled (logit bias false)."""
    return llamacpp.greedy_request(max_tokens) | {"logit_bias": [[token_id, False] for token_id in banned]}


def complete(server: Any, prompt: str | list[int], max_tokens: int, banned: Sequence[int]) -> Completion:
    """Greedy continuation of a text prompt (tokenized by llama.cpp with the file's tokenizer) or of token ids.

    token_ids come from llama.cpp's per-token logprobs, which leave out tokens that end inside a UTF-8 character
    (byte-fallback pieces): when the tokens do not spell the text, this raises instead of returning wrong ids.
    `logprobs` are llama.cpp's, over the unbiased logits.
    """
    request = _request(max_tokens, banned) | {"prompt": prompt, "logprobs": 1}
    response = llamacpp.checked(server.handle_completions(request))
    choice = response["choices"][0]
    content = (choice.get("logprobs") or {}).get("content") or []
    spelled = b"".join(bytes(entry.get("bytes") or []) for entry in content).decode("utf-8", errors="replace")
    if spelled != choice["text"]:
        raise ValueError(f"llama.cpp's token list spells {spelled!r}, its text is {choice['text']!r}")
    return Completion(
        choice["text"],
        [int(entry["id"]) for entry in content],
        [float(entry["logprob"]) for entry in content],
        int(response["usage"]["prompt_tokens"]),
    )


def chat_reply(
    server: Any, messages: list[dict[str, str]], max_tokens: int, banned: Sequence[int]
) -> Completion:
    """`llamacpp.chat`'s request with `banned` tokens: the reply text and the prompt's length in tokens (token_ids
    and logprobs left empty)."""
    request = _request(max_tokens, banned) | {"messages": messages}
    response = llamacpp.checked(server.handle_chat_completions(request))
    return Completion(
        response["choices"][0]["message"]["content"], [], [], int(response["usage"]["prompt_tokens"])
    )


def sharpened_model(path: Path, *, arch: str, tie: bool, vocab: int = 512, extra_rows: int = 0) -> Path:
    """A tiny model (hidden 64, 2 layers) with every matrix x3; `extra_rows` pads the embedding past the
    tokenizer, as Qwen2.5 does."""
    from transformers import AutoModelForCausalLM

    make_tiny_model(path, hidden=64, layers=2, vocab=vocab, tie_embeddings=tie, arch=arch)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    if extra_rows:
        model.resize_token_embeddings(model.config.vocab_size + extra_rows, mean_resizing=False)
    with torch.no_grad():
        for param in model.parameters():
            if param.ndim == 2:
                param.mul_(SHARPEN)
    model.save_pretrained(path)
    return path


def banned_ids(tokenizer: Any) -> list[int]:
    """Byte pieces (decode to U+FFFD) and special tokens other than eos: see the module docstring."""
    pieces = {i for i in range(len(tokenizer)) if "\ufffd" in tokenizer.decode([i])}
    specials = {
        i for i, t in tokenizer.added_tokens_decoder.items() if t.special and i != tokenizer.eos_token_id
    }
    return sorted(pieces | specials)


def chat_ids(tokenizer: Any, messages: list[dict[str, str]]) -> list[int]:
    """The prompt tokens of a conversation through the tokenizer's chat template (as training formats it)."""
    return list(
        tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=True)["input_ids"]
    )


def load_gguf_in_transformers(path: Path) -> Any:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32).eval()


def hf_greedy(model: Any, prompt_ids: list[int], max_new: int, banned: list[int], eos: int) -> list[int]:
    out = model.generate(
        torch.tensor([prompt_ids]), max_new_tokens=max_new, do_sample=False, suppress_tokens=banned,
        eos_token_id=eos, pad_token_id=eos,
    )  # fmt: skip
    return out[0, len(prompt_ids) :].tolist()


@dataclass
class Agreement:
    cpp_ids: list[int]
    hf_ids: list[int]
    common: int  # length of the common prefix
    max_logprob_diff: float  # over llama.cpp's tokens, each scored by transformers on llama.cpp's own path
    divergence_margin: float | None  # transformers' top-2 margin among allowed tokens where the two part


def compare(
    server: Any,
    model: Any,
    prompt: str | list[int],
    prompt_ids: list[int],
    max_new: int,
    banned: list[int],
    eos: int,
) -> tuple[Agreement, Completion]:
    """Greedy llama.cpp vs greedy transformers from the same prompt, and transformers' log-probs of llama.cpp's
    tokens (teacher-forced on llama.cpp's path, so a divergence does not spoil the comparison)."""
    cpp = complete(server, prompt, max_new, banned)
    hf = hf_greedy(model, prompt_ids, max_new, banned, eos)
    common = 0
    while common < min(len(cpp.token_ids), len(hf)) and cpp.token_ids[common] == hf[common]:
        common += 1
    with torch.no_grad():
        logits = model(torch.tensor([prompt_ids + cpp.token_ids])).logits[0].double()  # [P + L, V]
    logp = torch.log_softmax(logits, dim=-1)[len(prompt_ids) - 1 : -1]  # [L, V]: position i predicts token i
    chosen = logp[torch.arange(len(cpp.token_ids)), cpp.token_ids]  # [L]
    diff = (
        float((chosen - torch.tensor(cpp.logprobs, dtype=torch.float64)).abs().max())
        if cpp.token_ids
        else 0.0
    )
    margin = None
    if common < min(len(cpp.token_ids), len(hf)):
        allowed = logp[common].clone()
        allowed[banned] = -torch.inf
        top2 = torch.topk(allowed, 2).values
        margin = float(top2[0] - top2[1])
    return Agreement(cpp.token_ids, hf, common, diff, margin), cpp
