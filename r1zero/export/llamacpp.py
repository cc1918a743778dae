"""Run a GGUF file in llama.cpp itself, through the `xllamacpp` wheel (a dev dependency: `pip install xllamacpp`).

Used by `r1zero-export --chat` (a first reply from the exported file); the export tests build their requests from
the same parts. Greedy means temperature 0: llama.cpp then takes the most likely token at every step.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


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


def checked(response: Any) -> dict[str, Any]:
    """llama.cpp's answer, or a RuntimeError when it is an error instead."""
    if not isinstance(response, dict) or "choices" not in response:
        raise RuntimeError(f"llama.cpp answered with an error: {response}")
    return response


def greedy_request(max_tokens: int) -> dict[str, Any]:
    """The fields of a greedy request of at most `max_tokens` tokens (no prompt cache reused across requests)."""
    return {"max_tokens": max_tokens, "temperature": 0.0, "cache_prompt": False}


def chat(server: Any, messages: list[dict[str, str]], max_tokens: int) -> str:
    """Greedy reply to a conversation, formatted by the chat template stored in the file (as a chat client does;
    llama.cpp runs the Jinja template itself)."""
    request = greedy_request(max_tokens) | {"messages": messages}
    return str(checked(server.handle_chat_completions(request))["choices"][0]["message"]["content"])
