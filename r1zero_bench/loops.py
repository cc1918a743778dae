"""Whole training steps, timed: r1zero's own loop (`r1zero.train.run`) and TRL's `GRPOTrainer`, same settings.

Each function runs in a fresh worker process (see `r1zero_bench.worker`) and returns plain JSON-able numbers.
Both sides are timed the same way: wall-clock time between the ends of consecutive optimizer steps, so a step's
duration includes everything the trainer does per step (generation, reward, learner, weight sync, logging), and
the first `warmup` steps are dropped.

Equivalence by construction: the TRL side reads every setting from the same composed `RunConfig` as r1zero
(model folder, prompts in the same order, group size, completion length, sampling, lr and AdamW settings, clip
range, token-mean loss, no KL, one pass per batch, fp32, thread count) and scores with the same reward function.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

from r1zero.config import RunConfig
from r1zero_bench.stats import median, step_intervals

# On top of the default experiment (conf/experiment/cpu_default.yaml): no evaluation, no samples table, no
# checkpoints or model export inside the timed steps.
BENCH_OVERRIDES = [
    "eval.at_start_and_end=false",
    "eval.every=0",
    "task.num_eval=0",
    "checkpoint.every=0",
    "checkpoint.save_final_model=false",
    "log.samples_every=0",
]


def compose_config(overrides: list[str], *, bench_defaults: bool = True) -> RunConfig:
    """conf/config.yaml + BENCH_OVERRIDES (no evaluation, no checkpoints: unless bench_defaults is False) +
    `overrides` -> a validated RunConfig (as `r1zero-train` builds it)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from r1zero.config import register_configs, to_run_config
    from r1zero.train import CONF_DIR

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = compose("config", overrides=[*(BENCH_OVERRIDES if bench_defaults else []), *overrides])
    return to_run_config(cfg)


def peak_rss_mib() -> float:
    """Peak resident memory of this process so far (Linux ru_maxrss is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def peak_gpu_mib() -> float | None:
    """Peak GPU memory allocated by torch in this process (None without a GPU)."""
    import torch

    return torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else None


def step_prompts(cfg: RunConfig, tokenizer: Any, steps: int) -> list[list[Any]]:
    """The prompts of steps 1..steps, exactly as `r1zero.train.run` draws them: [steps][B] `Prompt`s."""
    from r1zero.parts import PromptSampler
    from r1zero.tasks.registry import training_examples
    from r1zero.tasks.templates import build_prompts

    examples = training_examples(cfg.task, cfg.seed)
    sampler = PromptSampler(len(examples), seed=cfg.seed)
    B = cfg.rollout.prompts_per_step
    return [build_prompts([examples[i] for i in sampler.next(B)], cfg.task, tokenizer) for _ in range(steps)]


PHASE_KEYS = (
    "perf/step_s", "perf/rollout_s", "perf/reward_s", "perf/learner_s", "perf/sync_s", "sync/push_s",
    "sync/verify_seconds", "perf/learner_packed_tokens", "perf/learner_tokens",
)  # fmt: skip


def _phase_medians(rows: list[dict[str, Any]], keys: tuple[str, ...]) -> dict[str, float]:
    return {k: median([float(r[k]) for r in rows if r.get(k) is not None]) for k in keys}


def r1zero_loop(overrides: list[str], warmup: int, reps: int, workdir: str) -> dict[str, Any]:
    """`run(cfg)` for warmup + reps steps; per-step numbers read back from its metrics.jsonl."""
    from r1zero.train import run

    run_dir = Path(workdir) / "r1zero_run"
    cfg = compose_config([*overrides, f"steps={warmup + reps}", f"run_dir={run_dir}"])
    started = time.perf_counter()
    run(cfg)
    total = time.perf_counter() - started
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    rows = [row for row in map(json.loads, lines) if "reward/mean" in row]
    timed = rows[max(1, warmup) :]
    N = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    out: dict[str, Any] = {
        "step_s": step_intervals([r["time"] for r in rows], warmup),
        "phases": _phase_medians(timed, PHASE_KEYS),
        "completion_tokens_per_step": median([r["rollout/length/mean"] * N for r in timed]),
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": peak_gpu_mib(),
        "wall_s": total,
        "settings": settings_of(cfg),
    }
    out["step_s_median"] = median(out["step_s"])
    return out


def settings_of(cfg: RunConfig) -> dict[str, Any]:
    """The settings both sides share, for the report."""
    return {
        "task": cfg.task.name,
        "prompts_per_step": cfg.rollout.prompts_per_step,
        "group_size": cfg.rollout.group_size,
        "max_new_tokens": cfg.rollout.max_new_tokens,
        "micro_batch_size": cfg.learner.micro_batch_size,
        "learner": f"{cfg.learner.backend} zero{cfg.learner.zero_stage}"
        if cfg.learner.backend == "deepspeed"
        else cfg.learner.backend,
        "precision": f"learner {cfg.learner.precision}, rollout {cfg.rollout.dtype}",
        "lr": cfg.learner.lr,
        "threads": cfg.cpu_threads,
        "sync_verify_every": cfg.sync.verify_every if cfg.sync.verify else 0,
    }


def trl_config(cfg: RunConfig, *, steps: int, use_vllm: bool, output_dir: str) -> Any:
    """TRL's GRPOConfig equivalent to `cfg` (one optimizer step consumes the B x G completions of one
    generation batch), in TRL's fastest settings that apply here: no gradient checkpointing (TRL's default is
    on), fp32 like ours, no vLLM importance-sampling pass (ours has none: algo.tis_cap is off)."""
    import torch
    from trl import GRPOConfig

    r, a, lr = cfg.rollout, cfg.algo, cfg.learner
    N = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    if a.kl_coef or a.num_iterations != 1 or a.loss_aggregation != "token_mean":
        raise ValueError("the TRL comparison is set up for token_mean, kl_coef 0 and num_iterations 1")
    return GRPOConfig(
        output_dir=output_dir,
        use_cpu=not torch.cuda.is_available(),
        report_to="none",
        bf16=lr.precision == "bf16",
        gradient_checkpointing=lr.gradient_checkpointing,
        per_device_train_batch_size=N,
        gradient_accumulation_steps=1,
        num_generations=r.group_size,
        generation_batch_size=N,
        max_completion_length=r.max_new_tokens,
        temperature=r.temperature,
        top_p=r.top_p,
        top_k=max(r.top_k, 0),
        learning_rate=lr.lr,
        lr_scheduler_type="constant" if lr.lr_schedule == "constant" else lr.lr_schedule,
        warmup_steps=lr.warmup_steps,
        weight_decay=lr.weight_decay,
        adam_beta1=lr.adam_beta1,
        adam_beta2=lr.adam_beta2,
        adam_epsilon=lr.adam_eps,
        max_grad_norm=lr.max_grad_norm,
        beta=0.0,
        loss_type="dapo",  # token-mean, as algo.loss_aggregation=token_mean
        scale_rewards=a.advantage_normalize,
        epsilon=a.clip_low,
        epsilon_high=a.clip_high,
        num_iterations=1,
        mask_truncated_completions=a.mask_truncated,
        max_steps=steps,
        logging_steps=1,
        save_strategy="no",
        shuffle_dataset=False,  # the dataset is already in r1zero's prompt order
        seed=cfg.seed,
        dataloader_num_workers=0,
        disable_tqdm=True,
        use_vllm=use_vllm,
        vllm_mode="colocate",
        vllm_importance_sampling_correction=False,
        vllm_max_model_length=r.max_prompt_tokens + r.max_new_tokens,
        vllm_enable_sleep_mode=False,
    )


def time_method(obj: Any, name: str) -> list[float]:
    """Wrap obj.name to record the seconds of each call (a private TRL method: when it is gone, record
    nothing rather than fail)."""
    seconds: list[float] = []
    method = getattr(obj, name, None)
    if method is None:
        return seconds

    def timed(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return method(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    setattr(obj, name, timed)
    return seconds


def trl_inputs(cfg: RunConfig, steps: int, *, use_vllm: bool, output_dir: str) -> dict[str, Any]:
    """GRPOTrainer's arguments for `steps` steps of `cfg` (threads and seed set): the model, r1zero's prompts
    in r1zero's order as the dataset, r1zero's reward, `trl_config`'s settings, and with learner.lora_rank > 0
    the same LoRA adapters (`peft_config`). The model is loaded here, so
    a caller that times the trainer starts its clock after this."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1zero.models import resolve_model
    from r1zero.rewards.registry import score

    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    torch.manual_seed(cfg.seed)
    model_path = resolve_model(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    prompts = [p for step in step_prompts(cfg, tokenizer, steps) for p in step]
    task = cfg.task

    def r1zero_reward(completions: list[str], row: list[int], **_: Any) -> list[float]:
        return [
            score(
                task.name, prompts[i].prefill + text, prompts[i].example,
                correct_weight=task.correct_weight, format_weight=task.format_weight,
                format_kind=task.format_kind,
            ).total
            for text, i in zip(completions, row)
        ]  # fmt: skip

    dataset = Dataset.from_dict({"prompt": [p.text for p in prompts], "row": list(range(len(prompts)))})
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32, attn_implementation="sdpa")
    inputs = {
        "model": model, "reward_funcs": r1zero_reward, "train_dataset": dataset, "processing_class": tokenizer,
        "args": trl_config(cfg, steps=steps, use_vllm=use_vllm, output_dir=output_dir),
    }  # fmt: skip
    if cfg.learner.lora_rank > 0:  # the same adapters as r1zero's learner (TRL wraps the model with PEFT)
        from r1zero.learner.lora import lora_config

        lr = cfg.learner
        inputs["peft_config"] = lora_config(
            model, rank=lr.lora_rank, alpha=lr.lora_alpha, dropout=lr.lora_dropout,
            target_modules=lr.lora_target_modules,
        )  # fmt: skip
    return inputs


def trl_loop(
    overrides: list[str], warmup: int, reps: int, workdir: str, *, use_vllm: bool = False
) -> dict[str, Any]:
    """TRL's GRPOTrainer on the same model, prompts (same order) and reward as `r1zero_loop`."""
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    cfg = compose_config(overrides)
    steps = warmup + reps
    inputs = trl_inputs(cfg, steps, use_vllm=use_vllm, output_dir=str(Path(workdir) / "trl_out"))
    ends: list[float] = []

    class StepClock(TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            ends.append(time.time())

    started = time.perf_counter()
    trainer = GRPOTrainer(**inputs, callbacks=[StepClock()])
    generation_s = time_method(trainer, "_generate_and_score_completions")  # TRL's rollout + reward phase
    trainer.train()
    total = time.perf_counter() - started
    logs = [h for h in trainer.state.log_history if "completions/mean_length" in h][max(1, warmup) :]
    N = cfg.rollout.prompts_per_step * cfg.rollout.group_size
    out: dict[str, Any] = {
        "step_s": step_intervals(ends, warmup),
        "completion_tokens_per_step": median([h["completions/mean_length"] * N for h in logs]),
        "generation": "vllm colocate" if use_vllm else "transformers generate",
        "generate_and_score_s": median(generation_s[max(1, warmup) :]),
        "peak_rss_mib": peak_rss_mib(),
        "peak_gpu_mib": peak_gpu_mib(),
        "wall_s": total,
    }
    out["step_s_median"] = median(out["step_s"])
    return out
