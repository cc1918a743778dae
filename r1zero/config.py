"""The one structured config tree. YAML files in conf/ only override these defaults.

Every field is documented by the comment above it; `__post_init__` validates with messages that name the field
and the allowed values. Below the entry point, code receives these typed objects, never a DictConfig.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ROLLOUT_ENGINES = ("vllm", "hf")
DTYPES = ("float32", "bfloat16", "float16", "auto")
TEMPLATES = ("r1zero", "chat")
FORMAT_KINDS = ("think_answer", "answer_only")
ADV_NORMALIZE = ("group", "batch", "none")
AGGREGATIONS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")
KL_KINDS = ("k1", "k2", "k3")
OLD_LOGPROB_SOURCES = ("learner", "rollout")
LEARNER_BACKENDS = ("deepspeed", "torch")
PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine", "linear")
DIST_BACKENDS = ("auto", "nccl", "gloo")


def _check_choice(section: str, name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(f"{section}.{name} must be one of {', '.join(allowed)}; got {value!r}")


def _check(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass
class ModelConfig:
    # A preset ("tiny", "small", "smollm2-135m"), a local model folder, or a hub id (see r1zero.models).
    name: str = "tiny"
    # Learner parameter dtype is set by learner.precision; this only affects trust_remote_code models.
    trust_remote_code: bool = False


@dataclass
class TaskConfig:
    # countdown | arithmetic | gsm8k | math | reasoning_gym
    name: str = "countdown"
    # "r1zero": the DeepSeek R1-Zero plain-text template (prefills <think>); "chat": the tokenizer's chat template.
    template: str = "r1zero"
    # System message for the chat template (None: none).
    system_prompt: str | None = None
    # Few-shot (user, assistant) turns placed before the question with the chat template.
    fewshot: list[list[str]] = field(default_factory=list)
    # Local data file (JSONL/parquet) for the training split; None uses the task's generator.
    train_path: str | None = None
    # Local data file for the held-out split; None uses the generator with a disjoint seed.
    eval_path: str | None = None
    # Number of generated training examples (generators only; files use all rows).
    num_train: int = 10000
    # Number of held-out problems for evaluation.
    num_eval: int = 64
    # Extra keyword arguments for the task's generator/loader (e.g. number_range, min_numbers).
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Format check: "think_answer" (one think block then one answer block) or "answer_only" (one answer block).
    format_kind: str = "think_answer"
    # Weight of the format reward in the total; None uses the task default (0.1 countdown/arithmetic, 0 math).
    format_weight: float | None = None
    # Weight of the correctness reward.
    correct_weight: float = 1.0

    def __post_init__(self) -> None:
        _check_choice("task", "template", self.template, TEMPLATES)
        _check_choice("task", "format_kind", self.format_kind, FORMAT_KINDS)
        _check(self.num_train >= 1, f"task.num_train must be >= 1; got {self.num_train}")
        _check(self.num_eval >= 0, f"task.num_eval must be >= 0; got {self.num_eval}")
        for i, turn in enumerate(self.fewshot):
            _check(len(turn) == 2, f"task.fewshot[{i}] must be a [user, assistant] pair; got {turn!r}")


@dataclass
class RolloutConfig:
    # vllm (the real engine) or hf (transformers.generate, for debugging / machines without vLLM).
    engine: str = "vllm"
    # Prompts per step (B), over all processes: with W ranks each samples B / W of them (B % W == 0). Each prompt
    # gets group_size samples, so a step has N = B * G completions.
    prompts_per_step: int = 4
    # Completions per prompt (G); group-relative advantages need at least 2.
    group_size: int = 8
    # Most new tokens per completion; also the Dr. GRPO normaliser.
    max_new_tokens: int = 128
    # Prompts longer than this many tokens are an error (a data problem, not something to truncate silently).
    max_prompt_tokens: int = 512
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = -1
    # Rollout weights dtype: float32 matches the learner on CPU; bfloat16 is faster with a small mismatch.
    dtype: str = "float32"
    # vLLM: fraction of GPU memory for weights + KV cache (GPU only; colocated with the learner).
    gpu_memory_utilization: float = 0.35
    # vLLM: release GPU memory while the learner runs (sleep/wake; no-op on CPU).
    enable_sleep_mode: bool = True
    # vLLM: tensor-parallel size per engine (ranks r // tp share one engine replica; must divide the world size).
    tensor_parallel_size: int = 1
    # vLLM: no CUDA graphs (faster start, slower decode).
    enforce_eager: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        _check_choice("rollout", "engine", self.engine, ROLLOUT_ENGINES)
        _check_choice("rollout", "dtype", self.dtype, DTYPES)
        _check(
            self.group_size >= 2,
            f"rollout.group_size must be >= 2 (group-relative advantages); got {self.group_size}",
        )
        _check(
            self.prompts_per_step >= 1, f"rollout.prompts_per_step must be >= 1; got {self.prompts_per_step}"
        )
        _check(self.max_new_tokens >= 1, f"rollout.max_new_tokens must be >= 1; got {self.max_new_tokens}")
        _check(self.temperature > 0, f"rollout.temperature must be > 0; got {self.temperature}")
        _check(0 < self.top_p <= 1, f"rollout.top_p must be in (0, 1]; got {self.top_p}")
        _check(0 < self.gpu_memory_utilization < 1, "rollout.gpu_memory_utilization must be in (0, 1)")


@dataclass
class AlgoConfig:
    # Advantage normalisation: group (GRPO), batch, none (Dr. GRPO).
    advantage_normalize: str = "group"
    # Loss aggregation: token_mean (DAPO), seq_mean_token_mean (GRPO), seq_mean_token_sum_norm (Dr. GRPO).
    loss_aggregation: str = "token_mean"
    # PPO clip range: ratio in [1 - clip_low, 1 + clip_high]; clip_high > clip_low is DAPO's clip-higher.
    clip_low: float = 0.2
    clip_high: float = 0.2
    # KL(pi || pi_ref) coefficient; 0 skips the reference model entirely.
    kl_coef: float = 0.0
    kl_kind: str = "k3"
    # Optimizer passes over each step's rollouts (PPO inner epochs); 1 is on-policy.
    num_iterations: int = 1
    # Where old logprobs come from when num_iterations > 1 or for the ratio: the learner (recomputed) or vLLM.
    old_logprobs_source: str = "learner"
    # Truncated importance-sampling correction for the rollout/learner mismatch: cap (None = off).
    tis_cap: float | None = None
    # DAPO dynamic sampling: drop groups whose rewards are all equal (they carry no gradient).
    dynamic_sampling: bool = False
    # DAPO soft overlong penalty: buffer length in tokens before max_new_tokens (0 = off), and its size.
    overlong_buffer: int = 0
    overlong_penalty: float = 1.0
    # Drop truncated completions from the loss (their rewards still count toward group statistics).
    mask_truncated: bool = False

    def __post_init__(self) -> None:
        _check_choice("algo", "advantage_normalize", self.advantage_normalize, ADV_NORMALIZE)
        _check_choice("algo", "loss_aggregation", self.loss_aggregation, AGGREGATIONS)
        _check_choice("algo", "kl_kind", self.kl_kind, KL_KINDS)
        _check_choice("algo", "old_logprobs_source", self.old_logprobs_source, OLD_LOGPROB_SOURCES)
        _check(0 <= self.clip_low < 1, f"algo.clip_low must be in [0, 1); got {self.clip_low}")
        _check(self.clip_high >= 0, f"algo.clip_high must be >= 0; got {self.clip_high}")
        _check(self.kl_coef >= 0, f"algo.kl_coef must be >= 0; got {self.kl_coef}")
        _check(self.num_iterations >= 1, f"algo.num_iterations must be >= 1; got {self.num_iterations}")
        _check(
            self.tis_cap is None or self.tis_cap >= 1,
            f"algo.tis_cap must be None or >= 1; got {self.tis_cap}",
        )
        _check(self.overlong_buffer >= 0, f"algo.overlong_buffer must be >= 0; got {self.overlong_buffer}")


@dataclass
class LearnerConfig:
    # deepspeed (ZeRO) or torch (plain single-process AdamW, for debugging).
    backend: str = "deepspeed"
    # DeepSpeed ZeRO stage (0-3).
    zero_stage: int = 2
    precision: str = "fp32"
    lr: float = 1e-6
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.99
    adam_eps: float = 1e-8
    max_grad_norm: float = 1.0
    # Sequences per forward/backward micro-batch (the step's N completions are split into micro-batches).
    micro_batch_size: int = 8
    gradient_checkpointing: bool = False
    # Pack each prompt once for its G responses (attention mask keeps the responses apart): same gradients, the
    # prompt's compute paid once instead of G times. False packs (prompt + response) sequences separately.
    share_prompts: bool = True
    # Rows of [tokens, vocab] logits computed at a time in the logprob/entropy pass (512: peak memory ~20% of a
    # full softmax at 2048 tokens x 49k vocab, measured).
    logprob_chunk_size: int = 512
    # Use DeepSpeed's JIT-compiled fused/CPU Adam (minutes to compile on first use); False uses torch's AdamW.
    fused_optimizer: bool = False

    def __post_init__(self) -> None:
        _check_choice("learner", "backend", self.backend, LEARNER_BACKENDS)
        _check_choice("learner", "precision", self.precision, PRECISIONS)
        _check_choice("learner", "lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _check(
            self.zero_stage in (0, 1, 2, 3),
            f"learner.zero_stage must be one of 0, 1, 2, 3; got {self.zero_stage}",
        )
        _check(self.lr > 0, f"learner.lr must be > 0; got {self.lr}")
        _check(
            self.micro_batch_size >= 1, f"learner.micro_batch_size must be >= 1; got {self.micro_batch_size}"
        )
        _check(self.logprob_chunk_size >= 1, "learner.logprob_chunk_size must be >= 1")
        _check(self.max_grad_norm >= 0, "learner.max_grad_norm must be >= 0 (0 = no clipping)")


@dataclass
class SyncConfig:
    # Every step, for free: the learner's first forward pass recomputes the logprobs the engine sampled with
    # (the weights are the same until the optimizer step), so a gap above the threshold stops the run before the
    # optimizer step: a bad push is caught one rollout later and never trains the policy.
    check_step_logprobs: bool = True
    # Also score a probe batch with both models right after a push (catches a bad push before the next rollout).
    verify: bool = True
    # Probe after the first push of a run (or of a resume), the last one, and every k-th (1 = every push). The
    # probe costs a forward pass on each side: 2-6% of a CPU step on the small preset; the per-step check covers
    # the pushes in between.
    verify_every: int = 10
    # Probe sequences used for verification.
    probe_size: int = 2
    # Stop with an error when the max abs per-token logprob difference (probe or per-step check) exceeds this.
    # None = by precision: 0.01 when rollout and learner are both fp32 (measured agreement ~1e-6; a stale tied
    # lm_head is off by 0.2+ nats after one step), 1.0 otherwise (bf16 rollout vs fp32 learner: mean ~2e-3, max
    # ~1e-2 measured on tiny; 0.011-0.017 per step on the small preset).
    max_abs_logprob_diff: float | None = None

    def __post_init__(self) -> None:
        _check(self.verify_every >= 1, f"sync.verify_every must be >= 1; got {self.verify_every}")
        _check(self.probe_size >= 1, f"sync.probe_size must be >= 1; got {self.probe_size}")
        _check(
            self.max_abs_logprob_diff is None or self.max_abs_logprob_diff > 0,
            "sync.max_abs_logprob_diff must be > 0 (or null for the precision-based default)",
        )


@dataclass
class LogConfig:
    # Log to W&B as well as JSONL (WANDB_MODE=offline works without network).
    wandb: bool = False
    project: str = "r1zero"
    entity: str | None = None
    group: str | None = None
    tags: list[str] = field(default_factory=list)
    # Log a table of sample completions every k steps (0 = never).
    samples_every: int = 5
    num_samples: int = 4
    # Print a progress line every k steps.
    print_every: int = 1


@dataclass
class CheckpointConfig:
    # Save every k steps (0 = only at the end).
    every: int = 50
    # Keep the last n checkpoints.
    keep_last: int = 2
    # Resume automatically from the latest valid checkpoint in run_dir.
    resume: bool = True
    # Export the final policy as a Hugging Face folder (run_dir/final_model).
    save_final_model: bool = True

    def __post_init__(self) -> None:
        _check(self.every >= 0, f"checkpoint.every must be >= 0; got {self.every}")
        _check(self.keep_last >= 1, f"checkpoint.keep_last must be >= 1; got {self.keep_last}")


@dataclass
class EvalConfig:
    # Evaluate on the held-out split every k steps (0 = never), plus at the start and end when > 0.
    every: int = 0
    # Also evaluate before the first and after the last step.
    at_start_and_end: bool = True
    # Samples per problem; temperature 0 with n=1 is greedy accuracy.
    n: int = 1
    temperature: float = 0.0
    max_new_tokens: int | None = None


@dataclass
class DistributedConfig:
    # Seconds any collective (all-reduce, gather, barrier; ours, DeepSpeed's and vLLM's) may wait for the other
    # ranks. A rank that died or hangs then fails the run with "rank R failed in phase P at step S: ...".
    timeout_s: float = 1800.0
    # torch.distributed backend: auto = nccl when a GPU is visible, gloo otherwise.
    backend: str = "auto"

    def __post_init__(self) -> None:
        _check_choice("dist", "backend", self.backend, DIST_BACKENDS)
        _check(self.timeout_s > 0, f"dist.timeout_s must be > 0; got {self.timeout_s}")


@dataclass
class RunConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    task: TaskConfig = field(default_factory=TaskConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)
    log: LogConfig = field(default_factory=LogConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    dist: DistributedConfig = field(default_factory=DistributedConfig)
    cost: CostConfig = field(default_factory=lambda: CostConfig())
    # Optimizer steps to run.
    steps: int = 20
    seed: int = 0
    # Run directory: metrics, checkpoints, final model, resolved config. The same directory resumes.
    run_dir: str = "runs/${task.name}-${model.name}-seed${seed}"
    # Deterministic torch kernels (for exact resume tests; slower).
    deterministic: bool = False
    # Threads for torch on CPU (0 = torch's default).
    cpu_threads: int = 0
    # Name of the experiment preset this config came from (informational).
    experiment: str | None = None

    def __post_init__(self) -> None:
        _check(self.steps >= 1, f"steps must be >= 1; got {self.steps}")
        _check(
            self.algo.loss_aggregation != "seq_mean_token_sum_norm" or self.rollout.max_new_tokens >= 1,
            "algo.loss_aggregation=seq_mean_token_sum_norm needs rollout.max_new_tokens",
        )
        _check(
            self.algo.overlong_buffer < self.rollout.max_new_tokens,
            f"algo.overlong_buffer ({self.algo.overlong_buffer}) must be < rollout.max_new_tokens "
            f"({self.rollout.max_new_tokens})",
        )

    def check_world_size(self, world_size: int) -> None:
        """Checks that need the number of processes (known only at start-up). rollout.prompts_per_step is the
        GLOBAL number of prompts per step: each of the W ranks takes B / W of them (whole groups)."""
        B, tp = self.rollout.prompts_per_step, self.rollout.tensor_parallel_size
        _check(
            B % world_size == 0,
            f"rollout.prompts_per_step ({B}) is the global number of prompts per step and must be divisible by "
            f"the number of processes ({world_size}): each rank takes prompts_per_step / {world_size} of them",
        )
        _check(
            world_size % tp == 0,
            f"rollout.tensor_parallel_size ({tp}) must divide the number of processes ({world_size})",
        )
        _check(
            world_size == 1 or self.learner.backend == "deepspeed",
            f"learner.backend={self.learner.backend} is single-process; use learner.backend=deepspeed with "
            f"{world_size} processes",
        )

    @property
    def sync_threshold(self) -> float:
        """sync.max_abs_logprob_diff, or its precision-based default (see SyncConfig)."""
        if self.sync.max_abs_logprob_diff is not None:
            return self.sync.max_abs_logprob_diff
        fp32 = self.rollout.dtype == "float32" and self.learner.precision == "fp32"
        return 0.01 if fp32 else 1.0

    @property
    def completions_per_step(self) -> int:
        """N = B * G."""
        return self.rollout.prompts_per_step * self.rollout.group_size


def register_configs() -> None:
    """Register the schema with Hydra's ConfigStore (the YAML in conf/ overrides it)."""
    from hydra.core.config_store import ConfigStore

    cs = ConfigStore.instance()
    cs.store(name="run_schema", node=RunConfig)


def to_run_config(cfg: Any) -> RunConfig:
    """DictConfig (from Hydra) -> validated RunConfig. Raises ValueError naming the bad field."""
    from omegaconf import OmegaConf

    structured = OmegaConf.merge(OmegaConf.structured(RunConfig), cfg)
    obj = OmegaConf.to_object(structured)
    assert isinstance(obj, RunConfig)
    return obj


@dataclass
class CostConfig:
    """Rates for the cost/* metrics (r1zero.cost): money = device-hours x rate."""

    # USD per GPU-hour; $2 is the H800 rate DeepSeek's V3 report priced its 2.788M GPU-hours at.
    usd_per_gpu_hour: float = 2.0
    # USD per CPU core-hour: of the order of an on-demand cloud vCPU-hour (2025). Set your own.
    usd_per_cpu_core_hour: float = 0.05
    # Devices billed: 0 = detect (one GPU per process on GPU; the busy cores on CPU).
    devices: int = 0

    def __post_init__(self) -> None:
        _check(self.usd_per_gpu_hour >= 0, f"cost.usd_per_gpu_hour must be >= 0; got {self.usd_per_gpu_hour}")
        _check(
            self.usd_per_cpu_core_hour >= 0,
            f"cost.usd_per_cpu_core_hour must be >= 0; got {self.usd_per_cpu_core_hour}",
        )
        _check(self.devices >= 0, f"cost.devices must be >= 0 (0 = detect); got {self.devices}")
