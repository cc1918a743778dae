"""Learner paths the default run does not take (issue 12, items 1, 3, 7, 8, 9), on the tiny model with the torch
learner. Expected values come from float64 references or hand arithmetic, not from the learner itself.

Trick used below (as in test_learner.py): with Adam's eps at 10 and lr 10, a first Adam step moves each weight by
~lr * g / eps = g, so weights after one step compare gradients (Adam's usual sign-like step would hide scale)."""

from __future__ import annotations

import math

import pytest
import torch

# Shared helpers (tests/ has no packages; pytest puts this folder on sys.path).
from test_learner import _sequences

from r1zero import distributed
from r1zero.config import AlgoConfig, LearnerConfig
from r1zero.learner.learner import Learner


@pytest.fixture(scope="module", autouse=True)
def _process_group() -> None:
    distributed.init_process_group()


def _learner(
    path: str, algo: AlgoConfig | None = None, temperature: float = 1.0, **learner: object
) -> Learner:
    torch.manual_seed(0)
    settings: dict = dict(backend="torch", micro_batch_size=2, lr=10.0, adam_eps=10.0, max_grad_norm=0.0)
    settings.update(learner)
    extra = {"temperature": temperature} if temperature != 1.0 else {}
    return Learner(
        path, LearnerConfig(**settings), algo or AlgoConfig(), total_steps=2, max_response_len=8, **extra
    )


def _weights(learner: Learner) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in learner.module.named_parameters()}


def _reference_logprobs(path: str, sequences, temperature: float) -> list[torch.Tensor]:
    """float64, one plain forward per sequence: log_softmax(logits / T) of each response token."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float64).eval()
    out = []
    with torch.no_grad():
        for prompt, response in sequences:
            logits = model(torch.tensor([prompt + response])).logits[0]  # [L, V]
            positions = torch.arange(len(prompt) - 1, len(prompt) + len(response) - 1)
            out.append(
                (logits[positions] / temperature).log_softmax(-1)[torch.arange(len(response)), response]
            )
    return out


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_masked_rows_give_the_step_of_the_kept_rows_alone_and_are_not_forwarded(
    tiny_model_path: str, aggregation: str
) -> None:
    sequences = _sequences(5, n=6, group_size=2)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])
    keep = torch.tensor([True, False, True, True, False, True])
    algo = AlgoConfig(loss_aggregation=aggregation)
    masked = _learner(tiny_model_path, algo)
    metrics_masked = masked.train_step(sequences, advantages, loss_mask=keep)
    alone = _learner(tiny_model_path, algo)
    kept_sequences = [s for s, k in zip(sequences, keep) if k]
    metrics_alone = alone.train_step(kept_sequences, advantages[keep])
    assert metrics_masked["loss/policy"] == pytest.approx(metrics_alone["loss/policy"], rel=1e-5, abs=1e-7)
    assert metrics_masked["loss/grad_norm"] == pytest.approx(metrics_alone["loss/grad_norm"], rel=1e-5)
    assert metrics_masked["loss/grad_norm"] > 1e-3
    got, want = _weights(masked), _weights(alone)
    for name, value in want.items():
        assert torch.allclose(got[name], value, atol=1e-6, rtol=1e-5), (name, (got[name] - value).abs().max())
    # The masked rows were never forwarded: the same packed tokens as the kept rows alone.
    assert metrics_masked["perf/learner_tokens"] == metrics_alone["perf/learner_tokens"]
    assert metrics_masked["perf/learner_packed_tokens"] <= metrics_alone["perf/learner_packed_tokens"] + 16


def test_learner_scores_at_the_sampling_temperature(tiny_model_path: str) -> None:
    sequences = _sequences(6, n=4, group_size=2)
    reference = _reference_logprobs(tiny_model_path, sequences, 0.7)
    learner = _learner(tiny_model_path, temperature=0.7)
    for got, want in zip(learner.logprobs(sequences, temperature=0.7), reference):
        assert torch.allclose(got.double(), want, atol=2e-5), (got - want).abs().max()
    # The free sync check compares at T: engine logprobs equal to the T = 0.7 reference leave no gap ...
    metrics = learner.train_step(sequences, torch.zeros(4), rollout_logprobs=[r.tolist() for r in reference])
    assert metrics["sync/step_logprob_max_abs_diff"] < 1e-4
    # ... and untempered (T = 1) ones, what both sides reported before, are far off.
    untempered = _reference_logprobs(tiny_model_path, sequences, 1.0)
    metrics = _learner(tiny_model_path, temperature=0.7).train_step(
        sequences, torch.zeros(4), rollout_logprobs=[r.tolist() for r in untempered]
    )
    assert metrics["sync/step_logprob_max_abs_diff"] > 0.05


@pytest.mark.parametrize(
    "algo",
    [AlgoConfig(tis_cap=2.0), AlgoConfig(old_logprobs_source="rollout")],
    ids=["tis_cap", "old_logprobs_source"],
)
def test_missing_or_mismatched_rollout_logprobs_name_the_option(
    tiny_model_path: str, algo: AlgoConfig
) -> None:
    sequences = _sequences(7, n=2, group_size=2)
    learner = _learner(tiny_model_path, algo)
    option = "algo.tis_cap" if algo.tis_cap else "algo.old_logprobs_source=rollout"
    with pytest.raises(ValueError, match=rf"{option}.*none were given"):
        learner.train_step(sequences, torch.ones(2))
    short = [[-1.0] * len(r) for _, r in sequences]
    short[1] = short[1][:-1]
    with pytest.raises(ValueError, match=rf"{option}.*completion 1 has {len(short[1])}"):
        learner.train_step(sequences, torch.ones(2), rollout_logprobs=short)


def test_old_logprobs_from_the_rollout_set_the_ratio(tiny_model_path: str) -> None:
    # Rollout logprobs = the learner's + 0.3 on every token: ratio exp(-0.3) = 0.741 everywhere.
    sequences = _sequences(8, n=4, group_size=2)
    learner = _learner(tiny_model_path, AlgoConfig(old_logprobs_source="rollout", clip_low=0.5))
    exact = [t.tolist() for t in learner.logprobs(sequences)]
    metrics = learner.train_step(
        sequences,
        torch.tensor([1.0, -1.0, 1.0, -1.0]),
        rollout_logprobs=[[v + 0.3 for v in r] for r in exact],
    )
    assert metrics["loss/ratio_mean"] == pytest.approx(math.exp(-0.3), rel=1e-4)


def test_several_iterations_take_several_updates_against_fixed_old_logprobs(tiny_model_path: str) -> None:
    sequences = _sequences(9, n=4, group_size=2)
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    learner = _learner(tiny_model_path, AlgoConfig(num_iterations=3), lr=1e-3, adam_eps=1e-8)
    before = [t.clone() for t in learner.logprobs(sequences)]
    metrics = learner.train_step(sequences, advantages)
    state = learner.engine.optimizer.state
    assert {int(s["step"]) for s in state.values()} == {3}  # three optimizer updates in one RL step
    # Passes 2 and 3 see a moved policy against the pass-1 (fixed) old logprobs: ratio != 1, KL(old||new) > 0.
    assert metrics["loss/approx_kl_old"] > 1e-7
    after = learner.logprobs(sequences)
    # The update went the advantages' way: positive-advantage responses became likelier.
    gains = [float((a - b).sum()) for a, b in zip(after, before)]
    assert gains[0] > 0 and gains[2] > 0 and gains[1] < 0 and gains[3] < 0


def test_kl_metrics_are_the_aggregated_terms(tiny_model_path: str) -> None:
    # Step 1 moves the policy away from the reference; at step 2, loss/kl must equal the k3 estimate aggregated
    # as the loss is (seq_mean_token_mean: the mean of per-sequence means), computed here from float64 logprobs,
    # and loss/total = loss/policy + kl_coef * loss/kl.
    sequences = _sequences(10, n=4, group_size=2)
    algo = AlgoConfig(kl_coef=0.5, loss_aggregation="seq_mean_token_mean")
    learner = _learner(tiny_model_path, algo, lr=1e-2, adam_eps=1e-8)
    learner.train_step(sequences, torch.tensor([1.0, -1.0, 1.0, -1.0]))
    policy = [t.double() for t in learner.logprobs(sequences)]
    reference = _reference_logprobs(tiny_model_path, sequences, 1.0)
    per_row = [float((torch.exp(r - p) - 1 - (r - p)).mean()) for p, r in zip(policy, reference)]
    metrics = learner.train_step(sequences, torch.tensor([1.0, -1.0, 1.0, -1.0]))
    assert metrics["loss/kl"] == pytest.approx(sum(per_row) / len(per_row), rel=1e-3)
    assert metrics["loss/kl"] > 1e-6
    assert metrics["loss/total"] == pytest.approx(metrics["loss/policy"] + 0.5 * metrics["loss/kl"], rel=1e-6)
