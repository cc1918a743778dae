"""The learner on the tiny model: packed logprobs equal a plain forward pass, gradient accumulation is exact,
DeepSpeed ZeRO-2/3 steps run and move the policy the way the advantages say."""

from __future__ import annotations

import random

import pytest
import torch

from r1zero import distributed
from r1zero.config import AlgoConfig, LearnerConfig
from r1zero.learner.learner import Learner


def _sequences(seed: int, n: int = 6, group_size: int = 2) -> list[tuple[list[int], list[int]]]:
    """n (prompt, response) pairs; each run of `group_size` shares its prompt (as G samples of one prompt do)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i % group_size == 0:
            prompt = [rng.randint(3, 1000) for _ in range(rng.randint(2, 9))]
        out.append((prompt, [rng.randint(3, 1000) for _ in range(rng.randint(1, 7))]))
    return out


def _naive_logprobs(model_path: str, sequences) -> list[torch.Tensor]:
    """Reference: one unpacked forward per sequence in float64, full log_softmax."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_path, torch_dtype=torch.float64)
    out = []
    with torch.no_grad():
        for prompt, response in sequences:
            ids = torch.tensor([prompt + response])
            logp = model(ids).logits[0].log_softmax(-1)  # [L, V]
            positions = torch.arange(len(prompt) - 1, len(prompt) + len(response) - 1)
            out.append(logp[positions, torch.tensor(response)].float())
    return out


@pytest.fixture(scope="module", autouse=True)
def _process_group() -> None:
    distributed.init_process_group()


@pytest.mark.parametrize(
    "backend,stage,share",
    [("torch", 0, True), ("torch", 0, False), ("deepspeed", 2, True), ("deepspeed", 3, True)],
)
def test_packed_logprobs_match_plain_forward(
    tiny_model_path: str, backend: str, stage: int, share: bool
) -> None:
    sequences = _sequences(0, n=7, group_size=3)
    learner = Learner(
        tiny_model_path,
        LearnerConfig(
            backend=backend,
            zero_stage=stage,
            micro_batch_size=5,
            logprob_chunk_size=5,
            share_prompts=share,
            zero3_persistence_threshold=0,  # the tiny model's parameters are partitioned, not kept whole
        ),
        AlgoConfig(),
        total_steps=1,
        max_response_len=8,
    )
    got = learner.logprobs(sequences)
    want = _naive_logprobs(tiny_model_path, sequences)
    for g, w in zip(got, want):
        assert g.shape == w.shape
        assert torch.allclose(g, w, atol=1e-4), (g - w).abs().max()


def _updated_params(
    model_path: str, micro_batch_size: int, aggregation: str, share: bool = True
) -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    learner = Learner(
        model_path,
        # Adam with eps 10 and lr 10 moves each weight by 10 * g / (|g| + 10) ~ g: the update is (nearly) the
        # accumulated gradient itself, so any error in gradient accumulation shows in the weights.
        LearnerConfig(
            backend="torch",
            micro_batch_size=micro_batch_size,
            lr=10.0,
            adam_eps=10.0,
            max_grad_norm=0.0,
            share_prompts=share,
        ),
        AlgoConfig(loss_aggregation=aggregation),
        total_steps=1,
        max_response_len=8,
    )
    sequences = _sequences(1, n=8, group_size=4)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.0, 1.0])
    learner.train_step(sequences, advantages)
    return {k: v.detach().clone() for k, v in learner.module.named_parameters()}


@pytest.mark.parametrize("aggregation", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_gradient_accumulation_is_exact(tiny_model_path: str, aggregation: str) -> None:
    # One micro-batch of 8 sequences vs 8 micro-batches of 1 vs 3 of <= 3: the same update, up to float32
    # summation order (~1e-7 here; a per-micro-batch normaliser would be off by factors of 2-8, i.e. ~1e-3).
    from safetensors.torch import load_file

    initial = load_file(f"{tiny_model_path}/model.safetensors")
    full = _updated_params(tiny_model_path, 8, aggregation)
    delta = full["model.embed_tokens.weight"] - initial["model.embed_tokens.weight"]
    assert delta.abs().max() > 1e-5  # the step did move the weights
    # Shared prompts are an exact rewrite of the computation: unshared packing gives the same update too.
    for mbs, share in ((1, True), (3, True), (8, False)):
        split = _updated_params(tiny_model_path, mbs, aggregation, share)
        for name, value in full.items():
            assert torch.allclose(value, split[name], atol=1e-6, rtol=1e-5), (
                name,
                (value - split[name]).abs().max(),
            )


@pytest.mark.parametrize("stage", [2, 3])
def test_deepspeed_step_moves_policy_toward_positive_advantage(tiny_model_path: str, stage: int) -> None:
    prompt = [10, 20, 30]
    good, bad = [40, 50, 60], [70, 80, 90]
    sequences = [(prompt, good), (prompt, bad)]
    learner = Learner(
        tiny_model_path,
        LearnerConfig(
            backend="deepspeed", zero_stage=stage, lr=1e-3, micro_batch_size=2, zero3_persistence_threshold=0
        ),
        AlgoConfig(),
        total_steps=3,
        max_response_len=4,
    )
    before = [t.sum() for t in learner.logprobs(sequences)]
    for _ in range(3):
        metrics = learner.train_step(sequences, torch.tensor([1.0, -1.0]))
    after = [t.sum() for t in learner.logprobs(sequences)]
    assert after[0] > before[0] + 0.1
    assert after[1] < before[1] - 0.1
    assert metrics["loss/grad_norm"] > 0
    assert metrics["perf/learner_tokens"] == 6
    params = dict(learner.named_parameters_for_sync())
    assert params["model.embed_tokens.weight"].shape == (learner.module.config.vocab_size, 96)


def test_step_reports_the_gap_to_the_engines_logprobs(tiny_model_path: str) -> None:
    # The engine's sampling logprobs of a step must equal the learner's before the update: the step reports the
    # gap for free (its forward pass computes those logprobs anyway).
    sequences = _sequences(2, n=4, group_size=2)
    learner = Learner(
        tiny_model_path, LearnerConfig(backend="torch"), AlgoConfig(), total_steps=2, max_response_len=8
    )
    exact = [t.tolist() for t in learner.logprobs(sequences)]
    metrics = learner.train_step(sequences, torch.zeros(4), rollout_logprobs=exact)
    assert metrics["sync/step_logprob_max_abs_diff"] < 1e-5
    shifted = [[v + 0.5 for v in row] for row in learner.logprobs(sequences)]
    metrics = learner.train_step(sequences, torch.zeros(4), rollout_logprobs=shifted)
    assert metrics["sync/step_logprob_max_abs_diff"] == pytest.approx(0.5, abs=1e-4)
    assert metrics["sync/step_logprob_mean_abs_diff"] == pytest.approx(0.5, abs=1e-4)
    missing = learner.train_step(sequences, torch.zeros(4), rollout_logprobs=[[] for _ in sequences])
    assert "sync/step_logprob_max_abs_diff" not in missing  # no engine logprobs, no check


def test_a_gap_above_the_limit_stops_the_step_before_the_optimizer(tiny_model_path: str) -> None:
    from r1zero.sync import SyncVerificationError

    sequences = _sequences(2, n=4, group_size=2)
    learner = Learner(
        tiny_model_path,
        LearnerConfig(backend="torch", lr=1.0),
        AlgoConfig(),
        total_steps=2,
        max_response_len=8,
    )
    exact = [t.tolist() for t in learner.logprobs(sequences)]
    advantages = torch.tensor([1.0, -1.0, 1.0, -1.0])
    before = {k: v.detach().clone() for k, v in learner.module.named_parameters()}
    wrong = [row if i != 2 else [v - 0.3 for v in row] for i, row in enumerate(exact)]  # one completion off
    with pytest.raises(SyncVerificationError, match=r"max 0\.3.* > 0\.1.*completion 2.*before the optimizer"):
        learner.train_step(sequences, advantages, rollout_logprobs=wrong, max_rollout_gap=0.1)
    for name, value in learner.module.named_parameters():
        assert torch.equal(value, before[name]), name  # no update from samples of the wrong weights
    metrics = learner.train_step(sequences, advantages, rollout_logprobs=exact, max_rollout_gap=0.1)
    assert metrics["sync/step_logprob_max_abs_diff"] < 1e-5
    assert not torch.equal(learner.module.model.embed_tokens.weight, before["model.embed_tokens.weight"])


def test_truncated_is_in_one_pass_weights_each_sequence_without_an_extra_forward(
    tiny_model_path: str,
) -> None:
    # With one inner iteration the TIS weights come from the training pass itself. If the engine's logprobs are
    # the learner's shifted by c_i for all of sequence i's tokens, every token of i gets weight min(exp(c_i), cap),
    # so the step must equal a plain step with advantages A_i * min(exp(c_i), cap): exp(0.3) = 1.35 -> 1.2
    # (capped), exp(-1) = 0.368, exp(0) = 1, exp(0.1) = 1.105.
    import math

    from safetensors.torch import load_file

    sequences = _sequences(3, n=4, group_size=2)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5])
    shifts, cap = [-0.3, 1.0, 0.0, -0.1], 1.2
    weights = torch.tensor([min(math.exp(-c), cap) for c in shifts])

    def learner() -> Learner:
        cfg = LearnerConfig(backend="torch", micro_batch_size=2, lr=10.0, adam_eps=10.0, max_grad_norm=0.0)
        return Learner(tiny_model_path, cfg, AlgoConfig(tis_cap=cap), total_steps=1, max_response_len=8)

    with_tis = learner()
    exact = [t.tolist() for t in with_tis.logprobs(sequences)]
    rollout = [[v + c for v in row] for row, c in zip(exact, shifts)]
    calls = []
    forward = with_tis._forward
    with_tis._forward = lambda *a, **k: calls.append(1) or forward(*a, **k)  # type: ignore[method-assign]
    with_tis.train_step(sequences, advantages, rollout_logprobs=rollout)
    assert len(calls) == 2  # two micro-batches, one forward each: no separate pass for the old logprobs
    plain = learner()
    plain.train_step(sequences, advantages * weights, rollout_logprobs=exact)
    initial = load_file(f"{tiny_model_path}/model.safetensors")
    got, want = dict(with_tis.module.named_parameters()), dict(plain.module.named_parameters())
    moved = (want["model.embed_tokens.weight"] - initial["model.embed_tokens.weight"]).abs().max()
    assert moved > 1e-5
    for name, value in want.items():
        assert torch.allclose(got[name], value, atol=1e-6, rtol=1e-5), (name, (got[name] - value).abs().max())


def test_zero2_on_one_rank_takes_the_plain_torch_step_with_clipping(tiny_model_path: str) -> None:
    # One rank: ZeRO-2 runs as stage 0 and the learner clips itself. With Adam's eps at 10 the update is ~lr * g,
    # so the clipping factor shows in the weights: both learners must clip to the same norm and move alike.
    sequences = _sequences(4, n=8, group_size=4)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.0, 1.0])
    updated, norms = [], []
    for backend in ("torch", "deepspeed"):
        torch.manual_seed(0)
        cfg = LearnerConfig(backend=backend, zero_stage=2, lr=10.0, adam_eps=10.0, max_grad_norm=1e-3)
        learner = Learner(tiny_model_path, cfg, AlgoConfig(), total_steps=1, max_response_len=8)
        norms.append(learner.train_step(sequences, advantages)["loss/grad_norm"])
        updated.append({k: v.detach().clone() for k, v in learner.module.named_parameters()})
        if backend == "deepspeed":  # one rank: no flatten-and-copy-back "all-reduce" of the gradients
            assert learner.engine.enable_backward_allreduce is False
    assert norms[0] > 1e-2  # far above the limit: the clip is active
    assert norms[1] == pytest.approx(norms[0], rel=1e-5)
    for name, value in updated[0].items():
        assert torch.allclose(value, updated[1][name], atol=1e-7, rtol=1e-5), name


def _count_layer_forwards(model: torch.nn.Module) -> list[int]:
    """Calls of every decoder layer's MLP, counted on entry (a checkpointed layer runs again in backward; torch
    stops that recomputation once it has what backward needs, inside the MLP, so exit hooks would not fire)."""
    calls = [0]
    for layer in model.model.layers:
        layer.mlp.register_forward_pre_hook(lambda *_: calls.__setitem__(0, calls[0] + 1))
    return calls


@pytest.mark.parametrize("checkpointing", [True, False])
def test_gradient_checkpointing_recomputes_each_layer_in_backward(
    tiny_model_path: str, checkpointing: bool
) -> None:
    # With checkpointing every decoder layer's forward runs twice per micro-batch (once in forward, once again in
    # backward to rebuild its activations); without it, once. 2 layers x 2 micro-batches here. As loaded by
    # transformers the model is in eval mode, where checkpointing is silently skipped: the policy must train.
    sequences = _sequences(5, n=4, group_size=2)
    cfg = LearnerConfig(backend="torch", micro_batch_size=2, gradient_checkpointing=checkpointing)
    learner = Learner(tiny_model_path, cfg, AlgoConfig(kl_coef=0.1), total_steps=1, max_response_len=8)
    assert learner.module.training and learner.ref_model is not None and not learner.ref_model.training
    layers = len(learner.module.model.layers)
    calls = _count_layer_forwards(learner.module)
    ref_calls = _count_layer_forwards(learner.ref_model)
    learner.train_step(sequences, torch.tensor([1.0, -1.0, 0.5, -0.5]))
    assert calls[0] == (2 if checkpointing else 1) * layers * 2
    assert ref_calls[0] == layers * 2  # the reference runs under no_grad: one forward per micro-batch


def test_training_mode_turns_dropout_off(tiny_model_path: str, tmp_path) -> None:
    # The policy trains in train mode (for checkpointing), but RL's ratio and the sync check compare logprobs of
    # the same weights: dropout must not make them random. A model configured with dropout still scores exactly.
    import json
    import shutil

    path = tmp_path / "dropout"
    shutil.copytree(tiny_model_path, path)
    config = json.loads((path / "config.json").read_text())
    config["attention_dropout"] = 0.5
    (path / "config.json").write_text(json.dumps(config))
    sequences = _sequences(6, n=4, group_size=2)
    learner = Learner(
        str(path), LearnerConfig(backend="torch"), AlgoConfig(), total_steps=1, max_response_len=8
    )
    assert learner.module.training
    torch.manual_seed(0)
    first = learner.logprobs(sequences)
    for got, want in zip(first, _naive_logprobs(str(path), sequences)):
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_zero3_logprobs_run_as_many_forwards_as_the_busiest_rank(
    tiny_model_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Under ZeRO-3 every forward gathers parameters with all ranks, so a rank with fewer micro-batches (dynamic
    # sampling splits groups unevenly) must run filler forwards, as train_step does, or the busier rank hangs.
    # One process here: the peer is faked by the all-reduce, which reports a rank with 3 micro-batches.
    sequences = _sequences(7, n=2, group_size=2)
    cfg = LearnerConfig(backend="deepspeed", zero_stage=3, micro_batch_size=2, zero3_persistence_threshold=0)
    learner = Learner(tiny_model_path, cfg, AlgoConfig(), total_steps=1, max_response_len=8)
    monkeypatch.setattr(distributed, "all_reduce_max", lambda value: max(value, 3.0))
    calls = []
    forward = learner._forward
    learner._forward = lambda *a, **k: calls.append(1) or forward(*a, **k)  # type: ignore[method-assign]
    got = learner.logprobs(sequences)
    assert len(calls) == 3  # its own micro-batch, then two fillers
    for g, w in zip(got, _naive_logprobs(tiny_model_path, sequences)):  # the fillers change no result
        assert torch.allclose(g, w, atol=1e-4)
    calls.clear()
    assert learner.logprobs([]) == [] and len(calls) == 3  # a rank with nothing to score still joins


def test_zero3_forward_completes_deepspeeds_parameter_trace(tiny_model_path: str) -> None:
    # ZeRO-3 prefetches the next layers' parameters only once it has recorded a complete trace of a step, which
    # it closes in the root module's forward hook: a forward that skips the root module leaves it invalid forever.
    sequences = _sequences(8, n=4, group_size=2)
    cfg = LearnerConfig(backend="deepspeed", zero_stage=3, micro_batch_size=2, zero3_persistence_threshold=0)
    learner = Learner(tiny_model_path, cfg, AlgoConfig(), total_steps=2, max_response_len=8)
    coordinator = learner.engine.optimizer.parameter_offload.get_param_coordinator()
    for _ in range(2):
        learner.train_step(sequences, torch.tensor([1.0, -1.0, 0.5, -0.5]))
    assert coordinator.is_complete_trace()


def test_zero3_keeps_deepspeeds_persistence_threshold_unless_set() -> None:
    from r1zero.learner.engine import deepspeed_config

    default = deepspeed_config(LearnerConfig(zero_stage=3), world_size=8)["zero_optimization"]
    assert "stage3_param_persistence_threshold" not in default  # DeepSpeed's own: norms stay whole
    zero = LearnerConfig(zero_stage=3, zero3_persistence_threshold=0)
    assert (
        deepspeed_config(zero, world_size=8)["zero_optimization"]["stage3_param_persistence_threshold"] == 0
    )
    with pytest.raises(ValueError, match="zero3_persistence_threshold must be >= 0"):
        LearnerConfig(zero3_persistence_threshold=-1)


def _count_device_copies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Tensor.to calls made by the learner's own code (r1zero/learner/learner.py), not by transformers' or by a
    micro-batch's move (its own tensors must move with it)."""
    import sys

    calls = [0]
    tensor_to = torch.Tensor.to

    def counted(self, *args, **kwargs):
        calls[0] += sys._getframe(1).f_code.co_filename.endswith("learner/learner.py")
        return tensor_to(self, *args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "to", counted)
    return calls


def test_step_tensors_move_to_the_device_once_per_step(
    tiny_model_path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The per-step [N, T] tensors (old / engine / reference logprobs, masks, advantages) are moved once per step
    # and sliced on the device: the copies must not grow with the number of micro-batches (8 vs 1 here).
    sequences = _sequences(9, n=8, group_size=4)
    advantages = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0, 0.0, 1.0])
    counts = []
    for micro_batch_size in (8, 1):
        cfg = LearnerConfig(backend="torch", micro_batch_size=micro_batch_size)
        algo = AlgoConfig(kl_coef=0.1, num_iterations=2, tis_cap=2.0)
        learner = Learner(tiny_model_path, cfg, algo, total_steps=1, max_response_len=8)
        exact = [t.tolist() for t in learner.logprobs(sequences)]
        with monkeypatch.context() as patch:
            calls = _count_device_copies(patch)
            learner.train_step(sequences, advantages, rollout_logprobs=exact)
        counts.append(calls[0])
    assert counts[1] == counts[0], counts


def test_save_pretrained_copies_to_the_host_on_rank_0_only(
    tiny_model_path: str, tmp_path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every rank joins the gathers (ZeRO-3), but only rank 0 writes, so only rank 0 keeps host copies: a 7B bf16
    # policy is 15 GB of host memory per rank otherwise.
    learner = Learner(
        tiny_model_path, LearnerConfig(backend="torch"), AlgoConfig(), total_steps=1, max_response_len=8
    )
    parameters = len(list(learner.module.parameters()))
    for rank, copies in ((1, 0), (0, parameters)):
        monkeypatch.setattr(distributed, "rank", lambda rank=rank: rank)
        with monkeypatch.context() as patch:
            calls = _count_device_copies(patch)
            learner.save_pretrained(tmp_path / f"rank{rank}")
        assert calls[0] == copies
        assert (tmp_path / f"rank{rank}" / "model.safetensors").exists() == (rank == 0)


def test_micro_batches_follow_the_token_budget(tiny_model_path: str) -> None:
    # 16 sequences fit a micro-batch by count; 36 packed tokens do not: the 31-token response (prompt 4 + 30
    # inputs = 34, and 34 + 3 > 36) goes alone, the short ones (3 inputs each; the second micro-batch re-packs the
    # prompt) share one, and the step's update is the same as one big micro-batch's.
    prompt = [11, 12, 13, 14]
    sequences = [(prompt, list(range(20, 51)))] + [(prompt, [7, 8, 9, 10]) for _ in range(11)]
    advantages = torch.linspace(-1.0, 1.0, len(sequences))
    updates = []
    for tokens in (36, 0):
        torch.manual_seed(0)
        cfg = LearnerConfig(
            backend="torch",
            micro_batch_size=16,
            micro_batch_tokens=tokens,
            lr=10.0,
            adam_eps=10.0,
            max_grad_norm=0,
        )
        learner = Learner(tiny_model_path, cfg, AlgoConfig(), total_steps=1, max_response_len=32)
        plan = learner._plan(sequences, range(len(sequences)))
        assert plan == ([[0], list(range(1, 12))] if tokens else [list(range(12))])
        learner.train_step(sequences, advantages)
        updates.append({k: v.detach().clone() for k, v in learner.module.named_parameters()})
    for name, value in updates[0].items():
        assert torch.allclose(value, updates[1][name], atol=1e-6, rtol=1e-5), name
