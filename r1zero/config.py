"""The one structured config tree. YAML files in conf/ only override these defaults.

Every field is documented by the comment above it and read by the code (tests/unit/test_config_schema.py checks
both); `__post_init__` validates with messages that name the field and the allowed values, and a choice field's
allowed values are the keys of the registry that implements it (REGISTRY_CHOICES). Below the entry point, code
receives these typed objects, never a DictConfig.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from r1zero.sync_limits import GapLimits

# A choice field's allowed values are the keys of the registry that implements them, so there is one list:
# (section, field) -> (module, registry). The registries are read at validation time, never at import, so that
# importing this module stays free of torch (the algo and learner registries import it).
REGISTRY_CHOICES: dict[tuple[str, str], tuple[str, str]] = {
    ("task", "name"): ("r1zero.tasks.registry", "LOADERS"),
    ("task", "template"): ("r1zero.tasks.templates", "TEMPLATES"),
    ("task", "format_kind"): ("r1zero.rewards.registry", "FORMATS"),
    ("rollout", "engine"): ("r1zero.rollout.engines", "ENGINES"),
    ("rollout", "dtype"): ("r1zero.rollout.base", "DTYPES"),
    ("algo", "advantage_normalize"): ("r1zero.algo.advantages", "NORMALIZERS"),
    ("algo", "loss_aggregation"): ("r1zero.algo.losses", "AGGREGATIONS"),
    ("algo", "kl_kind"): ("r1zero.algo.losses", "KL_ESTIMATORS"),
    ("learner", "precision"): ("r1zero.learner.learner", "DTYPES"),
    ("learner", "lr_schedule"): ("r1zero.learner.engine", "LR_SCHEDULES"),
}
# Choices no registry implements (the code that uses them branches on the value): this is their one list.
OLD_LOGPROB_SOURCES = ("learner", "rollout")
LEARNER_BACKENDS = ("deepspeed", "torch")
DIST_BACKENDS = ("auto", "nccl", "gloo")
ROLE_MODES = ("colocated", "disaggregated")


def choices(section: str, name: str) -> tuple[str, ...]:
    """The allowed values of `section.name`: its registry's keys, e.g. choices("rollout", "engine") ->
    ("vllm", "hf"). A key added to the registry (a new loss, a new engine) is accepted with no edit here."""
    module, registry = REGISTRY_CHOICES[(section, name)]
    return tuple(getattr(importlib.import_module(module), registry))


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
    # Let transformers and vLLM run Python code shipped with the model (for architectures transformers lacks);
    # only for models you trust.
    trust_remote_code: bool = False


@dataclass
class TaskConfig:
    # The task: a key of r1zero.tasks.registry.LOADERS (countdown, arithmetic, gsm8k, math, reasoning_gym). Its
    # reward is r1zero.rewards.registry.REWARDS[name]; reasoning_gym needs the `tasks` extra.
    name: str = "countdown"
    # Prompt template, a key of r1zero.tasks.templates.TEMPLATES: "r1zero", the DeepSeek R1-Zero plain-text
    # template (prefills <think>); "chat", the tokenizer's chat template.
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
    # Extra keyword arguments for the task's generator/loader (countdown: number_range, min_numbers; reasoning_gym:
    # name = the generator, config = its options; see r1zero.tasks.registry.load_examples).
    kwargs: dict[str, Any] = field(default_factory=dict)
    # Format check, a key of r1zero.rewards.registry.FORMATS: "think_answer" (one think block then one answer
    # block) or "answer_only" (one answer block).
    format_kind: str = "think_answer"
    # Weight of the format reward in the total; None uses the task default (0.1 countdown/arithmetic, 0 math).
    format_weight: float | None = None
    # Weight of the correctness reward.
    correct_weight: float = 1.0

    def __post_init__(self) -> None:
        _check_choice("task", "name", self.name, choices("task", "name"))
        _check_choice("task", "template", self.template, choices("task", "template"))
        _check_choice("task", "format_kind", self.format_kind, choices("task", "format_kind"))
        _check(self.num_train >= 1, f"task.num_train must be >= 1; got {self.num_train}")
        _check(self.num_eval >= 0, f"task.num_eval must be >= 0; got {self.num_eval}")
        for i, turn in enumerate(self.fewshot):
            _check(len(turn) == 2, f"task.fewshot[{i}] must be a [user, assistant] pair; got {turn!r}")


# vLLM's (gpu_memory_utilization, enable_sleep_mode) by whether the engine owns its GPU: colocated (False) it hands
# its memory to the learner between rollouts; a disaggregated rollout worker (True) keeps vLLM's own 0.9 awake.
ENGINE_MEMORY_DEFAULTS: dict[bool, tuple[float, bool]] = {False: (0.35, True), True: (0.9, False)}


@dataclass
class RolloutConfig:
    # A key of r1zero.rollout.engines.ENGINES: vllm (the real engine) or hf (transformers.generate, for debugging and
    # machines without vLLM).
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
    # Sampling temperature of the training rollouts (> 0; evaluation has its own, eval.temperature). The learner
    # scores the same distribution, logits / temperature. The sampling seed is not set here: step s samples with
    # one derived from the top-level seed (seed * 1_000_003 + s).
    temperature: float = 1.0
    # Nucleus sampling: only 1.0 (off) for training; the learner scores the full tempered distribution, so a
    # truncated one would make every sample off-policy (refused at start-up).
    top_p: float = 1.0
    # Top-k sampling: only -1 (off) for training, for the same reason as top_p.
    top_k: int = -1
    # Rollout weights dtype, a key of r1zero.rollout.base.DTYPES: float32 matches the learner on CPU; bfloat16 is
    # faster with a small mismatch; auto is float32 on CPU and bfloat16 on a GPU.
    dtype: str = "float32"
    # vLLM: fraction of the GPU's memory for its weights, activations and KV cache (GPU only). None = by role:
    # 0.35 colocated (the learner holds the rest: docs/gpu_memory.md), 0.9 on a disaggregated rollout worker,
    # which owns its GPU (vLLM's own default; the rest holds the CUDA context and roles.read_ahead_mb).
    gpu_memory_utilization: float | None = None
    # vLLM: release GPU memory while the learner runs (sleep/wake; no-op on CPU). None = by role: on colocated,
    # off on a disaggregated rollout worker (it never sleeps: no learner shares its GPU).
    enable_sleep_mode: bool | None = None
    # vLLM: tensor-parallel size per engine (ranks r // tp share one engine replica; must divide the world size).
    tensor_parallel_size: int = 1
    # vLLM: run the model eagerly. None = auto: eager on CPU, compiled with CUDA graphs on a GPU (vLLM's own GPU
    # default: small decode batches are bound by kernel launches without graphs). false on CPU compiles with
    # Dynamo + Inductor: decode passes faster, start slower. CPU default run, 2 cores: generate ~10-15% faster,
    # engine start 23-28 s instead of 8-11 s with Inductor's cache warm, ~60 s the first time
    # (docs/performance.md). Weight pushes reach the compiled model on both paths
    # (tests/integration/test_sync_vllm.py, CPU).
    enforce_eager: bool | None = None

    def __post_init__(self) -> None:
        _check_choice("rollout", "engine", self.engine, choices("rollout", "engine"))
        _check_choice("rollout", "dtype", self.dtype, choices("rollout", "dtype"))
        _check(
            self.group_size >= 2,
            f"rollout.group_size must be >= 2 (group-relative advantages); got {self.group_size}",
        )
        _check(
            self.prompts_per_step >= 1, f"rollout.prompts_per_step must be >= 1; got {self.prompts_per_step}"
        )
        _check(self.max_new_tokens >= 1, f"rollout.max_new_tokens must be >= 1; got {self.max_new_tokens}")
        _check(self.temperature > 0, f"rollout.temperature must be > 0; got {self.temperature}")
        # The learner scores logits / temperature over the whole vocabulary; top-p/top-k sampling draws from a
        # truncated distribution the learner does not compute, so the ratio and the sync check would compare two
        # different distributions. Refused rather than silently off-policy.
        _check(
            self.top_p == 1.0,
            f"rollout.top_p={self.top_p} is not supported for training: the learner scores the full "
            "distribution logits / temperature (top-p would make the samples off-policy); use rollout.top_p=1.0",
        )
        _check(
            self.top_k <= 0,
            f"rollout.top_k={self.top_k} is not supported for training: the learner scores the full "
            "distribution logits / temperature (top-k would make the samples off-policy); use rollout.top_k=-1",
        )
        _check(
            self.gpu_memory_utilization is None or 0 < self.gpu_memory_utilization < 1,
            "rollout.gpu_memory_utilization must be in (0, 1)",
        )

    def resolve_memory_defaults(self, dedicated: bool) -> None:
        """Fill gpu_memory_utilization / enable_sleep_mode left None: a colocated engine shares its GPU with the
        learner, a dedicated rollout worker owns it (ENGINE_MEMORY_DEFAULTS).
        Example: None, None, dedicated -> 0.9, False; 0.6, True, dedicated -> 0.6, True (set by hand, kept)."""
        utilization, sleep = ENGINE_MEMORY_DEFAULTS[dedicated]
        if self.gpu_memory_utilization is None:
            self.gpu_memory_utilization = utilization
        if self.enable_sleep_mode is None:
            self.enable_sleep_mode = sleep


@dataclass
class AlgoConfig:
    # Advantage normalisation, a key of r1zero.algo.advantages.NORMALIZERS: group (GRPO: divide by the group's
    # reward std), batch (by the whole step's), none (Dr. GRPO: no division).
    advantage_normalize: str = "group"
    # Loss aggregation, a key of r1zero.algo.losses.AGGREGATIONS: token_mean (DAPO), seq_mean_token_mean (GRPO),
    # seq_mean_token_sum_norm (Dr. GRPO).
    loss_aggregation: str = "token_mean"
    # PPO clip range, lower side: the ratio is clipped to [1 - clip_low, 1 + clip_high].
    clip_low: float = 0.2
    # PPO clip range, upper side; clip_high > clip_low is DAPO's clip-higher.
    clip_high: float = 0.2
    # KL(pi || pi_ref) coefficient; 0 skips the reference model entirely.
    kl_coef: float = 0.0
    # KL estimator, a key of r1zero.algo.losses.KL_ESTIMATORS: k1 (-r), k2 (r^2 / 2), k3 (exp(r) - 1 - r, GRPO's).
    kl_kind: str = "k3"
    # Optimizer passes over each step's rollouts (PPO inner epochs); 1 is on-policy.
    num_iterations: int = 1
    # Where old logprobs come from when num_iterations > 1 or for the ratio: the learner (recomputed) or vLLM.
    old_logprobs_source: str = "learner"
    # Truncated importance-sampling correction for the rollout/learner mismatch: cap (None = off).
    tis_cap: float | None = None
    # DAPO dynamic sampling: groups whose rewards are all equal carry no gradient; drop them and sample more
    # prompts (B per extra round) until the batch holds prompts_per_step groups with varied rewards.
    dynamic_sampling: bool = False
    # Dynamic sampling: at most this many extra generation rounds per step. When they run out, the step trains on
    # the varied groups found so far (a warning; algo/trained_groups < prompts_per_step in the metrics).
    max_sampling_rounds: int = 3
    # DAPO soft overlong penalty: a reward term that falls linearly from 0 to -overlong_penalty over the last
    # overlong_buffer tokens before rollout.max_new_tokens (0 = off).
    overlong_buffer: int = 0
    # Size of that penalty: the reward term at rollout.max_new_tokens and beyond.
    overlong_penalty: float = 1.0
    # Drop truncated completions from the loss (their rewards still count toward group statistics).
    mask_truncated: bool = False

    def __post_init__(self) -> None:
        _check_choice(
            "algo", "advantage_normalize", self.advantage_normalize, choices("algo", "advantage_normalize")
        )
        _check_choice("algo", "loss_aggregation", self.loss_aggregation, choices("algo", "loss_aggregation"))
        _check_choice("algo", "kl_kind", self.kl_kind, choices("algo", "kl_kind"))
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
        _check(
            self.max_sampling_rounds >= 0,
            f"algo.max_sampling_rounds must be >= 0; got {self.max_sampling_rounds}",
        )


@dataclass
class LearnerConfig:
    # deepspeed (ZeRO) or torch (plain single-process AdamW, for debugging).
    backend: str = "deepspeed"
    # DeepSpeed ZeRO stage (0-3).
    zero_stage: int = 2
    # ZeRO-3: parameters of at most this many elements stay whole on every rank rather than being gathered for
    # each use (norms, biases: one small gather each). None: DeepSpeed's default (100,000); 0 partitions all.
    zero3_persistence_threshold: int | None = None
    # Parameter dtype of the trained model, a key of r1zero.learner.learner.DTYPES: fp32 or bf16 (with the
    # deepspeed backend, DeepSpeed's bf16 mode).
    precision: str = "fp32"
    # Peak learning rate (AdamW).
    lr: float = 1e-6
    # Decay after warmup, a key of r1zero.learner.engine.LR_SCHEDULES: constant, cosine or linear (towards 0 at
    # `steps`). The schedule counts RL steps, not optimizer updates: all algo.num_iterations updates of one RL
    # step use that step's LR, so warmup and decay end where they would with one update per step.
    lr_schedule: str = "constant"
    # RL steps of linear warmup from lr / warmup_steps to lr (0 = none).
    warmup_steps: int = 0
    # AdamW decoupled weight decay.
    weight_decay: float = 0.0
    # AdamW beta1 (first-moment decay).
    adam_beta1: float = 0.9
    # AdamW beta2 (second-moment decay).
    adam_beta2: float = 0.99
    # AdamW epsilon.
    adam_eps: float = 1e-8
    # Clip the global gradient norm to this before each optimizer step (0 = no clipping).
    max_grad_norm: float = 1.0
    # Sequences per forward/backward micro-batch (the step's N completions are split into micro-batches).
    micro_batch_size: int = 8
    # And at most this many packed tokens per micro-batch (a shared prompt counts once; a sequence longer than
    # this gets a micro-batch of its own; 0 = no limit): activation memory follows tokens, so 4k-token responses
    # do not blow up a micro_batch_size tuned on short ones.
    micro_batch_tokens: int = 16384
    # Recompute activations in the backward pass instead of keeping them: less memory, more learner compute.
    gradient_checkpointing: bool = False
    # Pack each prompt once for its G responses (attention mask keeps the responses apart): same gradients, the
    # prompt's compute paid once instead of G times. False packs (prompt + response) sequences separately.
    share_prompts: bool = True
    # Rows of [tokens, vocab] logits computed at a time in the logprob/entropy pass (512: peak memory ~20% of a
    # full softmax at 2048 tokens x 49k vocab, measured). A micro-batch whose response tokens fit in one chunk
    # keeps that chunk's softmax for backward (no second lm_head matmul); larger ones recompute it chunk by chunk.
    logprob_chunk_size: int = 512
    # Use DeepSpeed's JIT-compiled fused/CPU Adam (minutes to compile on first use); False uses torch's AdamW.
    fused_optimizer: bool = False
    # LoRA: PEFT adapters of this rank on the policy, and only they train (0 = off: full fine-tuning). The rollout
    # engine gets the merged weights; with algo.kl_coef > 0 the reference is the policy with its adapters off
    # (no second copy of the model). README, "LoRA".
    lora_rank: int = 0
    # The adapters' output is scaled by lora_alpha / lora_rank.
    lora_alpha: float = 32.0
    # Dropout on the adapters' input in the learner's training forward (0 = none). > 0 makes that forward random,
    # so the free per-step sync check cannot compare it: it needs sync.check_step_logprobs=false.
    lora_dropout: float = 0.0
    # Names of the linear layers to adapt (e.g. [q_proj, v_proj]); null: every attention and MLP projection.
    lora_target_modules: list[str] | None = None

    def __post_init__(self) -> None:
        _check_choice("learner", "backend", self.backend, LEARNER_BACKENDS)
        _check_choice("learner", "precision", self.precision, choices("learner", "precision"))
        _check_choice("learner", "lr_schedule", self.lr_schedule, choices("learner", "lr_schedule"))
        _check(
            self.zero_stage in (0, 1, 2, 3),
            f"learner.zero_stage must be one of 0, 1, 2, 3; got {self.zero_stage}",
        )
        _check(self.lr > 0, f"learner.lr must be > 0; got {self.lr}")
        _check(
            self.micro_batch_size >= 1, f"learner.micro_batch_size must be >= 1; got {self.micro_batch_size}"
        )
        _check(self.logprob_chunk_size >= 1, "learner.logprob_chunk_size must be >= 1")
        _check(
            self.micro_batch_tokens >= 0,
            f"learner.micro_batch_tokens must be >= 0 (0 = no limit); got {self.micro_batch_tokens}",
        )
        _check(
            self.zero3_persistence_threshold is None or self.zero3_persistence_threshold >= 0,
            f"learner.zero3_persistence_threshold must be >= 0 or null; got {self.zero3_persistence_threshold}",
        )
        _check(self.max_grad_norm >= 0, "learner.max_grad_norm must be >= 0 (0 = no clipping)")
        _check(self.lora_rank >= 0, f"learner.lora_rank must be >= 0 (0 = no adapters); got {self.lora_rank}")
        _check(self.lora_alpha > 0, f"learner.lora_alpha must be > 0; got {self.lora_alpha}")
        _check(0 <= self.lora_dropout < 1, f"learner.lora_dropout must be in [0, 1); got {self.lora_dropout}")


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
    # Stop with an error when the max abs per-token logprob difference exceeds this. None = by precision: 0.01
    # when rollout and learner are both fp32 (measured agreement ~1e-6) for both checks; with a bf16 side 1.0 for
    # the probe and none for the per-step check, whose mean limit decides: bf16 scatters single tokens with a long
    # tail whose max grows with the tokens checked (1.09 nats at step 29 of the CPU default in bf16, 330 tokens).
    max_abs_logprob_diff: float | None = None
    # Per-step check: stop when the MEAN abs logprob difference over a rank's tokens of the step exceeds this.
    # None = by precision: none when both sides are fp32 (the max limit is tighter), 0.05 otherwise. bf16 rounding
    # averages out (mean <= 0.022 per step over SmolLM2-135M's 60 CPU-default steps, bf16 on both sides), while a
    # broken sync moves many tokens at once (a stale tied lm_head one step after a push: 0.19-0.27 on tiny, max
    # 0.45-0.62, which a max limit cannot tell from bf16's scatter). Measured distributions: docs/sync_gap.md.
    mean_abs_logprob_diff: float | None = None

    def __post_init__(self) -> None:
        _check(self.verify_every >= 1, f"sync.verify_every must be >= 1; got {self.verify_every}")
        _check(self.probe_size >= 1, f"sync.probe_size must be >= 1; got {self.probe_size}")
        _check(
            self.max_abs_logprob_diff is None or self.max_abs_logprob_diff > 0,
            "sync.max_abs_logprob_diff must be > 0 (or null for the precision-based default)",
        )
        _check(
            self.mean_abs_logprob_diff is None or self.mean_abs_logprob_diff > 0,
            "sync.mean_abs_logprob_diff must be > 0 (or null for the precision-based default)",
        )


@dataclass
class LogConfig:
    # Log to W&B as well as JSONL (WANDB_MODE=offline works without network).
    wandb: bool = False
    # W&B project.
    project: str = "r1zero"
    # W&B entity (team or user; None: your default).
    entity: str | None = None
    # W&B run group, e.g. one per sweep (None: none).
    group: str | None = None
    # W&B run tags.
    tags: list[str] = field(default_factory=list)
    # Log a table of sample completions every k steps (0 = never).
    samples_every: int = 5
    # Completions per sample table, spread over the step's groups.
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
    # Sampling temperature for evaluation (0 = greedy).
    temperature: float = 0.0
    # Most new tokens per evaluation answer (None: rollout.max_new_tokens).
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


# The truncated-IS cap disaggregated runs with max_staleness >= 1 use when algo.tis_cap is not set.
OFF_POLICY_TIS_CAP = 2.0


@dataclass
class RolesConfig:
    """Who does what among the launched processes (r1zero.roles).

    colocated (default): every process samples with its own engine, then learns, then pushes weights (they
    alternate). disaggregated: the launched processes split into `rollout_workers` rollout workers (vLLM engines,
    tensor parallel allowed) and the rest learner ranks (DeepSpeed), which run at the same time: the workers
    sample the next steps while the learner trains, at most `max_staleness` policy versions behind.
    """

    # "colocated" or "disaggregated".
    mode: str = "colocated"
    # Processes that only sample (disaggregated): the last `rollout_workers` ranks; the first ones learn.
    rollout_workers: int = 1
    # How many policy versions the learner's samples may lag (disaggregated): a step s batch is drawn with the
    # weights of step s - 1 - lag, lag <= max_staleness. 0 = synchronous (samples what colocated mode samples);
    # 1 overlaps the next step's generation with this step's training.
    max_staleness: int = 1
    # MB of pushed weights a worker receives ahead of its engine's reload (0: in step with it). The learner then
    # waits only for the transfer, not for the reload; the cost is that much extra memory on the worker's device.
    read_ahead_mb: int = 1024

    def __post_init__(self) -> None:
        _check_choice("roles", "mode", self.mode, ROLE_MODES)
        _check(self.read_ahead_mb >= 0, f"roles.read_ahead_mb must be >= 0; got {self.read_ahead_mb}")
        _check(self.rollout_workers >= 1, f"roles.rollout_workers must be >= 1; got {self.rollout_workers}")
        _check(self.max_staleness >= 0, f"roles.max_staleness must be >= 0; got {self.max_staleness}")

    @property
    def disaggregated(self) -> bool:
        return self.mode == "disaggregated"


@dataclass
class RunConfig:
    # The policy to train (conf/model/).
    model: ModelConfig = field(default_factory=ModelConfig)
    # Data, prompt template and reward (conf/task/).
    task: TaskConfig = field(default_factory=TaskConfig)
    # Sampling the step's completions (conf/rollout/).
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    # Advantages, loss and its DAPO / Dr. GRPO variants (conf/algo/).
    algo: AlgoConfig = field(default_factory=AlgoConfig)
    # The trained model: backend, precision, optimizer, micro-batching (conf/learner/).
    learner: LearnerConfig = field(default_factory=LearnerConfig)
    # Pushing learner weights into the rollout engine and checking them.
    sync: SyncConfig = field(default_factory=SyncConfig)
    # Metrics, sample tables, W&B (conf/logger/).
    log: LogConfig = field(default_factory=LogConfig)
    # Saving and resuming.
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    # Held-out evaluation during training.
    eval: EvalConfig = field(default_factory=EvalConfig)
    # Several processes (torchrun / Slurm).
    dist: DistributedConfig = field(default_factory=DistributedConfig)
    # Colocated processes, or rollout workers beside learner ranks (r1zero.roles).
    roles: RolesConfig = field(default_factory=RolesConfig)
    # Rates and device count for the cost/* metrics (what the run cost; r1zero.cost).
    cost: CostConfig = field(default_factory=lambda: CostConfig())
    # Optimizer steps to run.
    steps: int = 20
    # The run's one seed: torch, task data generation and splits, the prompt order, and each step's rollout
    # sampling (step s samples with seed * 1_000_003 + s; each prompt then gets its own seed derived from that).
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
        # Disaggregated, every vLLM engine is a rollout worker's, alone on its GPU.
        self.rollout.resolve_memory_defaults(dedicated=self.roles.disaggregated)
        if self.roles.disaggregated and self.roles.max_staleness > 0 and self.algo.tis_cap is None:
            # Samples up to max_staleness versions old: correct the off-policy gap with the rollout logprobs
            # (truncated importance sampling) unless the user chose a cap.
            self.algo.tis_cap = OFF_POLICY_TIS_CAP
        _check(
            self.algo.loss_aggregation != "seq_mean_token_sum_norm" or self.rollout.max_new_tokens >= 1,
            "algo.loss_aggregation=seq_mean_token_sum_norm needs rollout.max_new_tokens",
        )
        _check(
            self.learner.lora_rank == 0
            or self.learner.lora_dropout == 0
            or not self.sync.check_step_logprobs,
            f"learner.lora_dropout={self.learner.lora_dropout} makes the learner's training forward random, so the "
            "per-step sync check (its first pass against the engine's sampling logprobs) would fail: set "
            "sync.check_step_logprobs=false with it, or learner.lora_dropout=0",
        )
        _check(
            self.algo.overlong_buffer < self.rollout.max_new_tokens,
            f"algo.overlong_buffer ({self.algo.overlong_buffer}) must be < rollout.max_new_tokens "
            f"({self.rollout.max_new_tokens})",
        )

    def check_world_size(self, world_size: int) -> None:
        """Checks that need the number of processes (known only at start-up; disaggregated: the learner ranks).
        rollout.prompts_per_step is the GLOBAL number of prompts per step: each of the W ranks takes B / W of
        them (whole groups)."""
        B, tp = self.rollout.prompts_per_step, self.rollout.tensor_parallel_size
        _check(
            B % world_size == 0,
            f"rollout.prompts_per_step ({B}) is the global number of prompts per step and must be divisible by "
            f"the number of processes ({world_size}): each rank takes prompts_per_step / {world_size} of them",
        )
        # Colocated, these processes host the engines; disaggregated, `world_size` counts the learner ranks
        # only and the workers are checked against tp where they are counted (r1zero.roles.role_counts).
        _check(
            self.roles.disaggregated or world_size % tp == 0,
            f"rollout.tensor_parallel_size ({tp}) must divide the number of processes ({world_size})",
        )
        _check(
            world_size == 1 or self.learner.backend == "deepspeed",
            f"learner.backend={self.learner.backend} is single-process; use learner.backend=deepspeed with "
            f"{world_size} processes",
        )

    @property
    def sync_threshold(self) -> float:
        """The probe's max limit: sync.max_abs_logprob_diff, or its precision-based default (see SyncConfig)."""
        if self.sync.max_abs_logprob_diff is not None:
            return self.sync.max_abs_logprob_diff
        return 0.01 if self._sync_fp32 else 1.0

    @property
    def sync_limits(self) -> GapLimits:
        """The per-step check's limits (max and mean |logprob gap|): sync.max_abs_logprob_diff and
        sync.mean_abs_logprob_diff, or by precision (see SyncConfig): fp32 max 0.01 and no mean limit; with a
        bf16 side no max limit and mean 0.05."""
        max_abs, mean_abs = self.sync.max_abs_logprob_diff, self.sync.mean_abs_logprob_diff
        if max_abs is None:
            max_abs = 0.01 if self._sync_fp32 else float("inf")
        if mean_abs is None:
            mean_abs = float("inf") if self._sync_fp32 else 0.05
        return GapLimits(max_abs, mean_abs)

    @property
    def _sync_fp32(self) -> bool:
        return self.rollout.dtype == "float32" and self.learner.precision == "fp32"


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
