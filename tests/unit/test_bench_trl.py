"""The TRL side of r1zero-bench gets r1zero's settings: one optimizer step per B x G completions, token-mean
loss without KL, the same lr, AdamW, clip, sampling and completion length (no timing here)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("trl")


def test_trl_config_mirrors_the_run_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_launcher_env: None
) -> None:
    # The bench builds this config in a fresh worker process. Here an earlier in-process run may have left
    # LOCAL_RANK (DeepSpeed wants it) without a process group, which accelerate would take for a torchrun launch.
    import torch.distributed as dist

    from r1zero_bench.loops import compose_config, trl_config

    if not dist.is_initialized():
        monkeypatch.delenv("LOCAL_RANK", raising=False)

    cfg = compose_config(
        ["model=tiny", "rollout.prompts_per_step=3", "rollout.group_size=4", "learner.lr=3e-5"]
    )
    args = trl_config(cfg, steps=5, use_vllm=False, output_dir=str(tmp_path))
    N = 3 * 4
    assert (args.per_device_train_batch_size, args.generation_batch_size, args.steps_per_generation) == (
        N,
        N,
        1,
    )
    assert args.gradient_accumulation_steps == 1 and args.num_generations == 4 and args.max_steps == 5
    assert args.max_completion_length == cfg.rollout.max_new_tokens
    assert (args.loss_type, args.beta, args.num_iterations) == (
        "dapo",
        0.0,
        1,
    )  # token-mean, no KL, on-policy
    assert args.learning_rate == 3e-5 and args.max_grad_norm == cfg.learner.max_grad_norm
    assert (args.adam_beta1, args.adam_beta2, args.adam_epsilon) == (0.9, 0.99, 1e-8)
    assert (args.epsilon, args.epsilon_high) == (cfg.algo.clip_low, cfg.algo.clip_high)
    assert args.scale_rewards == "group" and args.temperature == cfg.rollout.temperature
    assert not args.bf16 and not args.gradient_checkpointing and not args.shuffle_dataset
    with pytest.raises(ValueError, match="token_mean"):
        trl_config(compose_config(["model=tiny", "algo=dr_grpo"]), steps=1, use_vllm=False, output_dir="x")


def test_trl_gets_the_learners_lora_adapters(
    tiny_model_path: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, restore_launcher_env: None
) -> None:
    """With learner.lora_rank > 0 (the CPU default's) the TRL side trains the same adapters (rank, alpha, dropout,
    targets); with 0 it fine-tunes every weight as r1zero does."""
    import torch.distributed as dist

    from r1zero_bench.loops import compose_config, trl_inputs

    if not dist.is_initialized():
        monkeypatch.delenv("LOCAL_RANK", raising=False)
    base = ["model=tiny", f"model.name={tiny_model_path}"]
    cfg = compose_config(
        [
            *base,
            "learner.lora_rank=4",
            "learner.lora_alpha=8",
            "learner.lora_target_modules=[up_proj,down_proj]",
        ]
    )
    peft = trl_inputs(cfg, 1, use_vllm=False, output_dir=str(tmp_path))["peft_config"]
    assert (peft.r, peft.lora_alpha, peft.lora_dropout) == (4, 8.0, 0.0)
    assert set(peft.target_modules) == {"up_proj", "down_proj"}
    full = compose_config([*base, "learner.lora_rank=0"])
    assert "peft_config" not in trl_inputs(full, 1, use_vllm=False, output_dir=str(tmp_path))
