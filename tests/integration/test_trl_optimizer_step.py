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


def trl_steps(cfg: Any, model_path: str, completions: list[list[list[int]]], out_dir: Path) -> dict[str, Any]:
    """Two steps of TRL's GRPOTrainer on the fixed batches; its weights, advantages, clipped gradients and the
    prompt ids it tokenized."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    from r1zero.bench.loops import trl_config

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TRL warns about the vLLM version on import
        from trl import GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(model_path)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    reward_of = {
        tuple(ids): reward
        for step, rows in enumerate(completions)
        for ids, reward in zip(rows, REWARDS[step])
    }
    seen: dict[str, list[Any]] = {"prompt_ids": [], "advantages": [], "grads": []}

    def reward(completion_ids: list[list[int]], **_: Any) -> list[float]:
        return [reward_of[tuple(ids)] for ids in completion_ids]

    class Gradients(TrainerCallback):  # type: ignore[misc]
        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            seen["grads"].append({n: p.grad.detach().clone() for n, p in model.named_parameters()})

    class FixedBatches(GRPOTrainer):  # type: ignore[misc]
        def _generate_single_turn(self, prompt_ids: list[list[int]], *args: Any, **kwargs: Any) -> Any:
            step = len(seen["prompt_ids"])
            seen["prompt_ids"].append([list(ids) for ids in prompt_ids])
            return [list(ids) for ids in completions[step]], None

        def _generate_and_score_completions(self, inputs: Any) -> Any:
            out = super()._generate_and_score_completions(inputs)
            seen["advantages"].append(out["advantages"].detach().clone())
            return out

    prompts = [p for step in PROMPTS for p in step]
    trainer = FixedBatches(
        model=model, reward_funcs=reward, processing_class=tokenizer,
        train_dataset=Dataset.from_dict({"prompt": prompts}), callbacks=[Gradients()],
        args=trl_config(cfg, steps=len(PROMPTS), use_vllm=False, output_dir=str(out_dir)),
    )  # fmt: skip
    trainer.train()
    seen["weights"] = {n: p.detach().clone() for n, p in model.named_parameters()}
    return seen


def r1zero_steps(
    cfg: Any, model_path: str, prompt_ids: list[list[list[int]]], completions: list[list[list[int]]]
) -> dict[str, Any]:
    """The same two steps through r1zero's Learner (torch backend); weights, advantages, clipped gradients."""
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
        advantages = group_advantages(torch.tensor(REWARDS[s]), G, normalize=cfg.algo.advantage_normalize)
        seen["advantages"].append(advantages)
        learner.train_step(list(zip(prompt_ids[s], rows)), advantages)
    seen["weights"] = {n: p.detach().clone() for n, p in learner.module.named_parameters()}
    return seen


def flat(tensors: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([tensors[n].flatten() for n in names]).double()


def relative_gap(a: torch.Tensor, b: torch.Tensor, scale: torch.Tensor) -> float:
    return float((a - b).norm() / scale.norm())


@pytest.mark.usefixtures("clean_launcher_env")
def test_two_optimizer_steps_equal_trl(tiny_model_path: str, tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from r1zero.bench.loops import compose_config

    overrides = [
        "model=tiny", f"model.name={tiny_model_path}", "learner.backend=torch", "learner.max_grad_norm=0.5",
        f"rollout.prompts_per_step={len(PROMPTS[0])}", f"rollout.group_size={G}", "rollout.max_new_tokens=8",
        f"steps={len(PROMPTS)}",
    ]  # fmt: skip
    cfg = compose_config([*overrides, "learner.lr=1e-4"])
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_path)
    completions = fixed_completions(tokenizer, len(PROMPTS), cfg.rollout.max_new_tokens)
    trl = trl_steps(cfg, tiny_model_path, completions, tmp_path / "trl")
    # TRL tokenized each prompt (repeated G times, in dataset order); r1zero takes the same ids.
    ours = [[tokenizer(p)["input_ids"] for p in step for _ in range(G)] for step in PROMPTS]
    assert trl["prompt_ids"] == ours
    r1 = r1zero_steps(cfg, tiny_model_path, ours, completions)

    initial = dict(
        AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32).named_parameters()
    )
    names = list(initial)
    for s in range(len(PROMPTS)):
        # TRL's std epsilon is 1e-4, r1zero's 1e-6: advantages of std ~0.5 groups differ by ~2e-4 relative.
        torch.testing.assert_close(trl["advantages"][s], r1["advantages"][s], rtol=5e-4, atol=1e-6)
        grad_trl, grad_r1 = flat(trl["grads"][s], names), flat(r1["grads"][s], names)
        assert grad_trl.norm() > 0
        assert relative_gap(grad_r1, grad_trl, grad_trl) < GRAD_TOLERANCE, (
            f"step {s + 1}: clipped gradients differ"
        )
    # Clipping was active (max_grad_norm 0.5): both clipped gradients have norm 0.5.
    assert abs(float(flat(trl["grads"][0], names).norm()) - 0.5) < 1e-4
    w0 = flat({n: p.detach() for n, p in initial.items()}, names)
    w_trl, w_r1 = flat(trl["weights"], names), flat(r1["weights"], names)
    assert (w_trl - w0).norm() > 0
    assert relative_gap(w_r1, w_trl, w_trl - w0) < WEIGHT_TOLERANCE

    # The control: the same two steps at 1.5x the learning rate are told apart.
    faster = compose_config([*overrides, "learner.lr=1.5e-4"])
    w_fast = flat(r1zero_steps(faster, tiny_model_path, ours, completions)["weights"], names)
    assert relative_gap(w_fast, w_trl, w_trl - w0) > 0.3
