"""Run a GGUF file in llama.cpp itself, through the `xllamacpp` wheel (a dev dependency: `pip install xllamacpp`).

Used by the export tests (greedy text against transformers) and by `r1zero-export --chat` (a first reply from
the exported file). Greedy means temperature 0: llama.cpp then takes the most likely token at every step.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass
class Completion:
    text: str
    token_ids: list[int]  # the generated tokens; the end-of-generation token that stopped it included
    logprobs: list[float]  # llama.cpp's log-probability of each of them
    prompt_tokens: int  # how many tokens llama.cpp made of the prompt
    finish_reason: str  # "stop" (an end-of-generation token or a stop string) or "length"


def load(path: str | Path, *, n_ctx: int = 512, threads: int = 1, verbose: bool = False) -> Any:
    """An in-process llama.cpp server on the file (no HTTP). One thread by default: on a loaded machine more
    threads spin-wait on each other (measured: several times slower with 2 threads under contention).
    verbose: llama.cpp's own log on stderr (loading details, timings per request)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no GGUF file at {path}")
    try:
        import xllamacpp
    except ImportError as e:
        raise ImportError("running a GGUF file needs the xllamacpp wheel: pip install xllamacpp") from e
    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.n_ctx = n_ctx
    params.n_parallel = 1
    params.warmup = False
    params.verbosity = 3 if verbose else 0  # 0: errors only
    params.cpuparams.n_threads = threads
    params.cpuparams_batch.n_threads = threads
    # F32 KV cache: the default F16 cache adds its own rounding to the comparison with transformers.
    params.cache_type_k = params.cache_type_v = xllamacpp.ggml_type.GGML_TYPE_F32
    try:
        return xllamacpp.Server(params)
    except RuntimeError as e:
        raise RuntimeError(
            f"llama.cpp could not load {path} (rerun with verbose=True for its log): {e}"
        ) from e


def _checked(response: Any) -> dict[str, Any]:
    if not isinstance(response, dict) or "choices" not in response:
        raise RuntimeError(f"llama.cpp answered with an error: {response}")
    return response


def _request(max_tokens: int, banned: Sequence[int]) -> dict[str, Any]:
    request: dict[str, Any] = {"max_tokens": max_tokens, "temperature": 0.0, "cache_prompt": False}
    if banned:
        request["logit_bias"] = [[token_id, False] for token_id in banned]  # false: never sampled
    return request


def complete(
    server: Any, prompt: str | list[int], max_tokens: int, *, banned: Sequence[int] = ()
) -> Completion:
    """Greedy continuation of a text prompt (tokenized by llama.cpp with the file's tokenizer) or of token ids.

    token_ids come from llama.cpp's per-token logprobs, which leave out tokens that end inside a UTF-8 character
    (byte-fallback pieces): when the tokens do not spell the text, this raises instead of returning wrong ids.
    `banned` token ids are never sampled (logit bias); `logprobs` are llama.cpp's, over the unbiased logits.
    """
    request = _request(max_tokens, banned) | {"prompt": prompt, "logprobs": 1}
    response = _checked(server.handle_completions(request))
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
        choice["finish_reason"],
    )


def chat(
    server: Any, messages: list[dict[str, str]], max_tokens: int, *, banned: Sequence[int] = ()
) -> Completion:
    """Greedy reply to a conversation, formatted by the chat template stored in the file (as a chat client does;
    llama.cpp runs the Jinja template itself). token_ids and logprobs are left empty."""
    response = _checked(server.handle_chat_completions(_request(max_tokens, banned) | {"messages": messages}))
    choice = response["choices"][0]
    return Completion(
        choice["message"]["content"], [], [], int(response["usage"]["prompt_tokens"]), choice["finish_reason"]
    )
