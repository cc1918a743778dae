"""Building the trainable model: DeepSpeed (ZeRO 0-3) or plain torch, the optimizer and the LR schedule."""

from __future__ import annotations

import contextlib
import logging
import math
import types
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from r1zero.algo import hidden_to_logprobs
from r1zero.config import LearnerConfig
from r1zero.learner import attention
from r1zero.learner.attention import GroupedLayout

log = logging.getLogger(__name__)


# Keyed by LearnerConfig.lr_schedule: the decay after warmup, progress p in [0, 1] -> multiplier of the base LR.
LR_SCHEDULES: dict[str, Callable[[float], float]] = {
    "constant": lambda p: 1.0,
    "cosine": lambda p: 0.5 * (1.0 + math.cos(math.pi * p)),
    "linear": lambda p: 1.0 - p,
}


def lr_lambda(
    schedule: str, warmup_steps: int, total_steps: int, updates_per_step: int = 1
) -> Callable[[int], float]:
    """Multiplier of the base LR for optimizer update u: linear warmup, then LR_SCHEDULES[schedule] decay.

    The schedule is defined per RL step: warmup_steps and total_steps count RL steps, and all
    `updates_per_step` optimizer updates of one RL step (algo.num_iterations) use that step's LR, so the
    schedule's shape does not depend on num_iterations. RL step s (0-based) = u // updates_per_step.
    Example: warmup 2, total 10, cosine: s=0 -> 0.5, s=1 -> 1.0, s=6 -> 0.5 * (1 + cos(pi * 4 / 8)) = 0.5;
    with updates_per_step 2, updates 0 and 1 both get 0.5 and updates 12, 13 both get 0.5 (s = 6).
    """
    if updates_per_step < 1:
        raise ValueError(f"updates_per_step must be >= 1; got {updates_per_step}")
    if schedule not in LR_SCHEDULES:
        raise ValueError(f"learner.lr_schedule must be one of {', '.join(LR_SCHEDULES)}; got {schedule!r}")
    decay = LR_SCHEDULES[schedule]

    def factor(update: int) -> float:
        step = update // updates_per_step
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return decay(min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps)))

    return factor


def effective_zero_stage(stage: int, world_size: int) -> int:
    """The ZeRO stage to run. ZeRO-1/2 partition optimizer state and gradients over the ranks; with one rank
    there is nothing to partition, and stage 0 takes the same step without first copying every gradient into
    flat buffers (small preset, 2 CPU cores: learner step 1.18 -> 1.02 s in fp32, 0.79 -> 0.69 s in bf16, where
    stage 0 also keeps fp32 master weights). ZeRO-3 is kept: its gathered-parameter paths are what a user tests
    on one device before scaling out.
    Example: (2, 1) -> 0; (2, 8) -> 2; (3, 1) -> 3."""
    return 0 if world_size == 1 and stage in (1, 2) else stage


def learner_clips(cfg: LearnerConfig, world_size: int) -> bool:
    """Does the learner clip gradients itself (before `engine.step()`) instead of DeepSpeed? Only for fp32 at
    ZeRO stage 0, where DeepSpeed clips but keeps no gradient norm to report (its ZeRO and bf16 optimizers do).
    The gradients are already averaged over ranks then: stage 0 all-reduces them in the boundary backward."""
    stage = effective_zero_stage(cfg.zero_stage, world_size)
    return cfg.backend == "deepspeed" and stage == 0 and cfg.precision == "fp32"


def deepspeed_config(cfg: LearnerConfig, *, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON config for a learner config. Gradient accumulation is driven by the caller (it
    marks the boundary itself and scales each micro-batch loss by the step's global normaliser)."""
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": 1,
        "gradient_accumulation_steps": 1,
        "train_batch_size": world_size,
        "gradient_clipping": 0.0 if learner_clips(cfg, world_size) else cfg.max_grad_norm,
        "zero_optimization": {"stage": effective_zero_stage(cfg.zero_stage, world_size)},
        "bf16": {"enabled": cfg.precision == "bf16"},
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }
    if cfg.fused_optimizer:  # DeepSpeed's own fused/CPU Adam; otherwise `build_engine` hands it torch's AdamW
        config["optimizer"] = {
            "type": "AdamW",
            "params": {
                "lr": cfg.lr,
                "betas": [cfg.adam_beta1, cfg.adam_beta2],
                "eps": cfg.adam_eps,
                "weight_decay": cfg.weight_decay,
            },
        }
    if cfg.zero_stage == 3:
        config["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] = True
        if cfg.zero3_persistence_threshold is not None:
            config["zero_optimization"]["stage3_param_persistence_threshold"] = (
                cfg.zero3_persistence_threshold
            )
    return config


def attach_packed_forward(model: Any, chunk_size: int) -> None:
    """Make `model(input_ids, position_ids, target_pos, labels, temperature, layout)` return the (logprobs [M],
    entropy [M]) of a packed micro-batch (r1zero.learner.batching.PackedBatch's fields).

    The decoder runs on input_ids / position_ids [R, S] with the grouped attention of `layout`; the hidden states
    at target_pos [M] (flat row * S + column) go through the lm_head, whose forward computes logprobs of labels
    [M] in chunks of `chunk_size` rows, so the [M, vocab] logits never all exist. The lm_head keeps its
    parameters, so ZeRO-3 gathers its weight around the call and in backward.
    The forward goes through the root module on purpose: DeepSpeed's ZeRO-3 ends a step's parameter trace in
    the root module's forward hook, and only a complete trace prefetches the next layers' parameters while the
    current one computes (calling the decoder and the head directly left the trace invalid: no prefetch).
    """
    head = model.get_output_embeddings()
    if getattr(head, "bias", None) is not None:
        raise ValueError("the chunked logprob head supports lm_heads without bias (Llama/Qwen/Mistral style)")

    def head_forward(self: Any, hidden: Tensor, labels: Tensor, temperature: float = 1.0):
        # Labelled for profiles (scripts/gpu_learner_check.py's step shares).
        with torch.profiler.record_function("r1zero::head"):
            return hidden_to_logprobs(
                hidden, self.weight, labels, temperature=temperature, chunk_size=chunk_size
            )

    def packed_forward(
        self: Any,
        input_ids: Tensor,
        position_ids: Tensor,
        target_pos: Tensor,
        labels: Tensor,
        temperature: float,
        layout: GroupedLayout,
    ) -> tuple[Tensor, Tensor]:
        body = self.get_decoder() if hasattr(self, "get_decoder") else self.model
        hidden = body(
            input_ids=input_ids,
            position_ids=position_ids,
            use_cache=False,
            layout=layout,  # handed by transformers to every layer's attention (r1zero.learner.attention)
        ).last_hidden_state  # [R, S, H]
        targets = hidden.flatten(0, 1)[target_pos]  # [M, H]
        return self.get_output_embeddings()(targets, labels, temperature)  # [M], [M]

    head.forward = types.MethodType(head_forward, head)
    model.forward = types.MethodType(packed_forward, model)


def load_model(
    model_path: str,
    *,
    dtype: torch.dtype,
    gradient_checkpointing: bool,
    trust_remote_code: bool,
    trainable: bool = True,
):
    """The model from `model_path`. trainable: the policy, in train mode with dropout off; else a frozen model
    (the reference) in eval mode.

    transformers returns models in eval mode, and its layers checkpoint only while `self.training` is true: a
    policy left in eval mode skips gradient checkpointing silently (tiny model: 0 recomputed layers per
    backward, 2 per layer after `train()`). Dropout goes off in train mode because the ratio, the KL term and
    the sync check compare logprobs of the same weights, which dropout would make random (as TRL's GRPO
    `disable_dropout`); for the usual decoders (Llama, Qwen: attention_dropout 0) train mode changes nothing else.
    """
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=dtype, attn_implementation=attention.register(), trust_remote_code=trust_remote_code
    )
    model.config.use_cache = False
    if not trainable:
        return model.eval().requires_grad_(False)
    if gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    disable_dropout(model)
    return model.train()


def disable_dropout(model: nn.Module) -> None:
    """Zero every dropout probability of `model`: nn.Dropout modules and the attention modules' own
    `attention_dropout` / `dropout` rates (transformers' attention passes them to sdpa while training).
    Example: a Qwen2 config with attention_dropout 0.5 -> every attention module's attention_dropout is 0.0."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        for name in ("attention_dropout", "dropout"):
            if isinstance(getattr(module, name, None), float):
                setattr(module, name, 0.0)


def gathered(params: list[nn.Parameter], zero3: bool) -> contextlib.AbstractContextManager[Any]:
    """Around a read of `params`' full values: under ZeRO-3 DeepSpeed gathers them from every rank (all ranks must
    enter together) and frees them again on exit; otherwise nothing to do."""
    if not zero3:
        return contextlib.nullcontext()
    import deepspeed

    return deepspeed.zero.GatheredParameters(params, modifier_rank=None)


def make_adamw(params: list[nn.Parameter], cfg: LearnerConfig) -> torch.optim.AdamW:
    """torch's AdamW with its fused kernel where the parameters allow it (CPU or CUDA floating point; no JIT
    build): one pass over the parameters instead of a dozen element-wise ops (24.5M fp32 parameters on 2 CPU
    cores: 17 ms per step fused vs 92-98 ms foreach / single-tensor). DeepSpeed's ZeRO optimizers keep this
    optimizer and swap its parameters for their own fp32 partitions."""
    settings: dict[str, Any] = dict(
        lr=cfg.lr, betas=(cfg.adam_beta1, cfg.adam_beta2), eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )
    fusable = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, fused=fusable or None, **settings)


def clip_gradients(module: nn.Module, max_grad_norm: float) -> float:
    """Scale `module`'s gradients to a global L2 norm of at most `max_grad_norm` (0: no clipping); returns the
    norm before clipping. Example: gradients [3, 4], max 1 -> [0.6, 0.8], returns 5.0."""
    params = [p for p in module.parameters() if p.grad is not None]
    limit = max_grad_norm if max_grad_norm > 0 else float("inf")
    return float(torch.nn.utils.clip_grad_norm_(params, limit))


class TorchEngine:
    """The plain-torch stand-in for a DeepSpeed engine (single process, for debugging): the same methods the
    learner uses (backward, step, module, save/load)."""

    def __init__(self, model: nn.Module, cfg: LearnerConfig, schedule) -> None:
        self.module = model
        self.optimizer = make_adamw([p for p in model.parameters() if p.requires_grad], cfg)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, schedule)
        self.max_grad_norm = cfg.max_grad_norm
        self.last_grad_norm = 0.0

    def set_gradient_accumulation_boundary(self, is_boundary: bool) -> None:
        pass

    def backward(self, loss: Tensor) -> None:
        loss.backward()

    def step(self) -> None:
        self.last_grad_norm = clip_gradients(self.module, self.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)

    def get_global_grad_norm(self) -> float:
        return self.last_grad_norm

    def save_checkpoint(self, directory: str, tag: str, exclude_frozen_parameters: bool = False) -> None:
        from pathlib import Path

        path = Path(directory) / tag
        path.mkdir(parents=True, exist_ok=True)
        model = self.module.state_dict()
        if exclude_frozen_parameters:  # as DeepSpeed's flag: the trained parameters only
            trained = {name for name, p in self.module.named_parameters() if p.requires_grad}
            model = {name: value for name, value in model.items() if name in trained}
        torch.save(
            {
                "model": model,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.lr_scheduler.state_dict(),
            },
            path / "state.pt",
        )

    def load_checkpoint(self, directory: str, tag: str, load_module_strict: bool = True) -> None:
        from pathlib import Path

        state = torch.load(Path(directory) / tag / "state.pt", map_location="cpu", weights_only=False)
        self.module.load_state_dict(state["model"], strict=load_module_strict)
        self.optimizer.load_state_dict(state["optimizer"])
        self.lr_scheduler.load_state_dict(state["scheduler"])


def build_engine(
    model: nn.Module, cfg: LearnerConfig, *, total_steps: int, world_size: int, updates_per_step: int = 1
):
    """DeepSpeed engine (backend "deepspeed") or TorchEngine (backend "torch") around `model`. The LR schedule
    runs over total_steps RL steps of updates_per_step optimizer updates each (see `lr_lambda`)."""
    schedule = lr_lambda(cfg.lr_schedule, cfg.warmup_steps, total_steps, updates_per_step)
    if cfg.backend == "deepspeed" and effective_zero_stage(cfg.zero_stage, world_size) != cfg.zero_stage:
        log.info("learner: ZeRO-%d on a single rank runs as stage 0 (nothing to partition)", cfg.zero_stage)
    if cfg.backend == "torch":
        if world_size > 1:
            raise ValueError(
                "learner.backend=torch is single-process; use learner.backend=deepspeed with torchrun"
            )
        return TorchEngine(model, cfg, schedule)
    import deepspeed
    import deepspeed.ops
    from deepspeed.utils import groups

    # Skip the shared-memory comm op: it JIT-compiles for ~2 minutes on CPU and gloo does the job.
    deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
    # DeepSpeed caches a clone of the world group; an earlier run in this process (tests, notebooks) may have
    # torn the default group down since (vLLM's shutdown does), which would leave that clone dangling.
    groups._WORLD_GROUP = None
    params = [p for p in model.parameters() if p.requires_grad]
    engine, _, _, _ = deepspeed.initialize(
        model=model,
        model_parameters=params,
        optimizer=None if cfg.fused_optimizer else make_adamw(params, cfg),
        config=deepspeed_config(cfg, world_size=world_size),
        lr_scheduler=lambda optimizer: torch.optim.lr_scheduler.LambdaLR(optimizer, schedule),
        dist_init_required=False,
    )
    if world_size == 1 and learner_clips(cfg, world_size):
        # One rank, stage 0, fp32: DeepSpeed's boundary all-reduce still flattens every gradient into buckets and
        # copies it back, an identity over one rank (CPU default step: 63 cats, 0.16 s, plus the copies).
        engine.enable_backward_allreduce = False
    return engine
