"""Whole optimizer steps against TRL 1.16.0's GRPOTrainer: same initial weights, same fixed batches (prompts,
completions, rewards), r1zero's settings mapped to TRL by the bench's own `trl_config`. After two optimizer steps
the weights of both trainers must agree to fp32 tolerance, and so must the advantages TRL computed and the
clipped gradient of each step.

TRL samples nothing here: its `_generate_single_turn` is replaced by a function handing out the fixed completions
of the prompt it is given, so the rest of TRL's step runs as in training (reward call, group advantages, loss,
gradient clipping, AdamW). Two steps, so that the second AdamW update (moments from the first) is compared too.
A control with another learning rate must fail the same tolerance: the comparison can tell a different update.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

from r1zero.algo import group_advantages

pytest.importorskip("trl")

G = 4  # completions per prompt
PROMPTS = [
    ["Add seven and five.", "What is 3 + 4?"],
    ["Name a prime number.", "Count to three."],
]  # [step][B]
REWARDS = [
    [1.0, 0.0, 0.1, 0.0, 1.1, 1.1, 0.1, 0.0],
    [0.0, 0.1, 1.1, 1.0, 0.0, 0.0, 1.0, 0.1],
]  # [step][B * G]
# Relative gaps, |a - b| / |scale| over all weights. Measured: clipped gradients 2e-5, 2.7e-5; weights after two
# steps 7.8e-4 (AdamW's first updates are ~lr * sign(g): elements whose gradient is near adam_eps carry the float
# summation-order noise of the two forward passes into the weights); the 1.5x-LR control 0.50.
GRAD_TOLERANCE = 1e-4
WEIGHT_TOLERANCE = 3e-3


def fixed_completions(tokenizer: Any, steps: int, max_new_tokens: int) -> list[list[list[int]]]:
    """[step][B * G] completion token ids: random lengths 2..max_new_tokens, about half ending with EOS."""
    generator = torch.Generator().manual_seed(7)
    vocab = [i for i in range(tokenizer.vocab_size) if i not in tokenizer.all_special_ids]
    out = []
    for _ in range(steps):
        rows = []
        for _ in range(len(PROMPTS[0]) * G):
            length = int(torch.randint(2, max_new_tokens + 1, (1,), generator=generator))
            ids = [vocab[int(i)] for i in torch.randint(len(vocab), (length,), generator=generator)]
            if torch.rand(1, generator=generator).item() < 0.5:
                ids[-1] = tokenizer.eos_token_id
            rows.append(ids)
        out.append(rows)
    return out


def trl_steps(inputs: dict[str, Any], completions: list[list[list[int]]] | None) -> dict[str, Any]:
    """TRL's GRPOTrainer over `inputs` (GRPOTrainer's arguments): its own sampling when `completions` is None,
    else the fixed completions [step][B * G]. Returns per step the prompt and completion ids it trained on, the
    rewards and advantages it computed, the clipped gradients; and the weights at the end."""
    from transformers import TrainerCallback

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRL warns about the vLLM version on import
        from trl import GRPOTrainer

    model, reward_funcs = inputs["model"], inputs["reward_funcs"]
    seen: dict[str, list[Any]] = {
        k: [] for k in ("prompt_ids", "completions", "rewards", "advantages", "grads")
    }

    def reward(*args: Any, **kwargs: Any) -> list[float]:
        seen["rewards"].append(reward_funcs(*args, **kwargs))
        return seen["rewards"][-1]

    class Gradients(TrainerCallback):  # type: ignore[misc]
        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seen["grads"].append({n: p.grad.detach().clone() for n, p in model.named_parameters()})

    class Recorded(GRPOTrainer):  # type: ignore[misc]
        def _generate_single_turn(self, prompt_ids: list[list[int]], *args: Any, **kwargs: Any) -> Any:
            step = len(seen["prompt_ids"])
            seen["prompt_ids"].append([list(ids) for ids in prompt_ids])
            if completions is None:
                ids, logprobs = super()._generate_single_turn(prompt_ids, *args, **kwargs)
            else:
                ids, logprobs = [list(row) for row in completions[step]], None
            seen["completions"].append([list(row) for row in ids])
            return ids, logprobs

        def _generate_and_score_completions(self, inputs: Any) -> Any:
            out = super()._generate_and_score_completions(inputs)
            seen["advantages"].append(out["advantages"].detach().clone())
            return out

    Recorded(**{**inputs, "reward_funcs": reward}, callbacks=[Gradients()]).train()
    seen["weights"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    return seen


def fixed_batch_inputs(cfg: Any, model_path: str, completions: list[list[list[int]]], out_dir: Path) -> dict:
    """GRPOTrainer's arguments for the fixed batches: PROMPTS as the dataset, REWARDS looked up by completion."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1zero_bench.loops import trl_config

    reward_of = {
        tuple(ids): reward
        for step, rows in enumerate(completions)
        for ids, reward in zip(rows, REWARDS[step])
    }

    def reward(completion_ids: list[list[int]], **_: Any) -> list[float]:
        return [reward_of[tuple(ids)] for ids in completion_ids]

    return {
        "model": AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32),
        "reward_funcs": reward,
        "processing_class": AutoTokenizer.from_pretrained(model_path),
        "train_dataset": Dataset.from_dict({"prompt": [p for step in PROMPTS for p in step]}),
        "args": trl_config(cfg, steps=len(PROMPTS), use_vllm=False, output_dir=str(out_dir)),
    }


def r1zero_steps(
    cfg: Any, model_path: str, prompt_ids: list[list[list[int]]], completions: list[list[list[int]]],
    rewards: list[list[float]],
) -> dict[str, Any]:  # fmt: skip
    """The same steps through r1zero's Learner: [step][B * G] prompt ids, completions and rewards. Returns the
    advantages and clipped gradients of each step and the weights at the end."""
    from r1zero.learner.learner import Learner

    learner = Learner(model_path, cfg.learner, cfg.algo, total_steps=cfg.steps,
                      max_response_len=cfg.rollout.max_new_tokens, temperature=cfg.rollout.temperature)  # fmt: skip
    seen: dict[str, Any] = {"advantages": [], "grads": []}
    optimizer_step = learner.engine.optimizer.step

    def step(*args: Any, **kwargs: Any) -> Any:  # after r1zero's clipping, before AdamW
        seen["grads"].append({n: p.grad.detach().clone() for n, p in learner.module.named_parameters()})
        return optimizer_step(*args, **kwargs)

    learner.engine.optimizer.step = step
    for s, rows in enumerate(completions):
        group = cfg.rollout.group_size
        advantages = group_advantages(torch.tensor(rewards[s]), group, normalize=cfg.algo.advantage_normalize)
        seen["advantages"].append(advantages)
        learner.train_step(list(zip(prompt_ids[s], rows)), advantages)
    seen["weights"] = {n: p.detach().clone() for n, p in learner.module.named_parameters()}
    return seen


def assert_same_steps(trl: dict[str, Any], r1: dict[str, Any], initial: dict[str, torch.Tensor]) -> None:
    """Advantages, clipped gradients of every step and the final weights agree (GRAD_ / WEIGHT_TOLERANCE)."""
    names = list(initial)
    for s in range(len(trl["grads"])):
        # TRL's std epsilon is 1e-4, r1zero's 1e-6: advantages of std ~0.5 groups differ by ~2e-4 relative.
        torch.testing.assert_close(trl["advantages"][s], r1["advantages"][s], rtol=5e-4, atol=1e-6)
        grad_trl, grad_r1 = flat(trl["grads"][s], names), flat(r1["grads"][s], names)
        assert grad_trl.norm() > 0
        gap = relative_gap(grad_r1, grad_trl, grad_trl)
        assert gap < GRAD_TOLERANCE, f"step {s + 1}: clipped gradients differ by {gap:.2g}"
    w0 = flat(initial, names)
    w_trl, w_r1 = flat(trl["weights"], names), flat(r1["weights"], names)
    assert (w_trl - w0).norm() > 0
    assert relative_gap(w_r1, w_trl, w_trl - w0) < WEIGHT_TOLERANCE


def flat(tensors: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([tensors[n].flatten() for n in names]).double()


def relative_gap(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    return float((a - b).norm() / scale.norm())


def initial_weights(model_path: str) -> dict[str, torch.Tensor]:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    return {n: p.detach() for n, p in model.named_parameters()}


@pytest.mark.usefixtures("clean_launcher_env")
def test_two_optimizer_steps_equal_trl(tiny_model_path: str, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from r1zero_bench.loops import compose_config

    overrides = [
        "model=tiny", f"model.name={tiny_model_path}", "learner.backend=torch", "learner.max_grad_norm=0.5",
        f"rollout.prompts_per_step={len(PROMPTS[0])}", f"rollout.group_size={G}", "rollout.max_new_tokens=8",
        f"steps={len(PROMPTS)}", "learner.lora_rank=0",
    ]  # fmt: skip
    cfg = compose_config([*overrides, "learner.lr=1e-4"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    completions = fixed_completions(tokenizer, len(PROMPTS), cfg.rollout.max_new_tokens)
    trl = trl_steps(fixed_batch_inputs(cfg, tiny_model_path, completions, tmp_path / "trl"), completions)
    # TRL tokenized each prompt (repeated G times, in dataset order); r1zero takes the same ids.
    ours = [[tokenizer(p)["input_ids"] for p in step for _ in range(G)] for step in PROMPTS]
    assert trl["prompt_ids"] == ours and trl["rewards"] == REWARDS
    r1 = r1zero_steps(cfg, tiny_model_path, ours, completions, REWARDS)
    initial = initial_weights(tiny_model_path)
    assert_same_steps(trl, r1, initial)
    # Clipping was active (max_grad_norm 0.5): the clipped gradient has norm 0.5.
    assert abs(float(flat(trl["grads"][0], list(initial)).norm()) - 0.5) < 1e-4

    # The control: the same two steps at 1.5x the learning rate are told apart.
    faster = compose_config([*overrides, "learner.lr=1.5e-4"])
    names = list(initial)
    w0, w_trl = flat(initial, names), flat(trl["weights"], names)
    w_fast = flat(r1zero_steps(faster, tiny_model_path, ours, completions, REWARDS)["weights"], names)
    assert relative_gap(w_fast, w_trl, w_trl - w0) > 0.3


@pytest.mark.slow
@pytest.mark.usefixtures("clean_launcher_env")
def test_one_step_on_trls_own_samples_of_the_cpu_default(tmp_path: Path) -> None:
    """The CPU default's model, prompts, reward and settings (full fine-tuning, the torch learner): TRL samples
    and steps once; r1zero's Learner steps on TRL's samples and rewards. Measured (2026-12-04): clipped gradients
    cosine 1.00000000, update cosine 0.99999995 (DeepSpeed ZeRO-2 learner: the same)."""
    from r1zero.models import resolve_model
    from r1zero_bench.loops import compose_config, trl_inputs

    cfg = compose_config(["learner.backend=torch", "learner.lora_rank=0", "learner.lr=1e-5", "steps=1"])
    model_path = resolve_model(cfg.model.name)
    trl = trl_steps(trl_inputs(cfg, 1, use_vllm=False, output_dir=str(tmp_path / "trl")), None)
    r1 = r1zero_steps(cfg, model_path, trl["prompt_ids"], trl["completions"], trl["rewards"])
    assert len(set(trl["rewards"][0])) > 1  # the batch has a learning signal
    assert_same_steps(trl, r1, initial_weights(model_path))
