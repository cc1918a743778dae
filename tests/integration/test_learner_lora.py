"""LoRA on the tiny model: zero-initialised adapters change nothing, the reference is the base model, merged weights
compute what the adapted model does, only adapters train, exact resume, the exported folders load."""

from __future__ import annotations

import pytest
import torch
from test_learner import _count_layer_forwards, _naive_logprobs, _sequences

from r1zero import distributed
from r1zero.config import AlgoConfig, LearnerConfig
from r1zero.learner import lora
from r1zero.learner.learner import Learner

ADVANTAGES = torch.tensor([1.0, -1.0, 0.5, -0.5, 2.0, -2.0])


@pytest.fixture(scope="module", autouse=True)
def _process_group() -> None:
    distributed.init_process_group()


def _learner(path: str, kl: float = 0.0, **learner: object) -> Learner:
    settings: dict[str, object] = dict(
        backend="torch", lora_rank=4, lora_alpha=8.0, lr=1e-2, micro_batch_size=3
    )
    settings.update(learner)
    cfg = LearnerConfig(**settings)  # type: ignore[arg-type]
    return Learner(path, cfg, AlgoConfig(kl_coef=kl), total_steps=4, max_response_len=8)


def _trained(path: str, steps: int = 2, **learner: object) -> Learner:
    torch.manual_seed(0)
    learner_ = _learner(path, **learner)
    for step in range(steps):
        learner_.train_step(_sequences(10 + step), ADVANTAGES)
    return learner_


def test_zero_initialised_adapters_give_the_base_models_logprobs_exactly(tiny_model_path: str) -> None:
    # B starts at zero, so x @ A^T @ B^T adds exactly 0.0 to every adapted projection.
    sequences = _sequences(0)
    base = Learner(
        tiny_model_path, LearnerConfig(backend="torch"), AlgoConfig(), total_steps=1, max_response_len=8
    )
    adapted = _learner(tiny_model_path)
    for got, want in zip(adapted.logprobs(sequences), base.logprobs(sequences)):
        assert torch.equal(got, want)


def test_only_the_adapters_train_and_hold_optimizer_state(tiny_model_path: str) -> None:
    from safetensors.torch import load_file

    learner = _trained(tiny_model_path)
    initial = load_file(f"{tiny_model_path}/model.safetensors")
    trained = {n for n, p in learner.module.named_parameters() if p.requires_grad}
    assert trained and all(".lora_A." in n or ".lora_B." in n for n in trained)
    for name, param in learner.module.named_parameters():  # the base weights are bit for bit the loaded ones
        if name not in trained:
            plain = name.removeprefix("base_model.model.").replace(".base_layer.", ".")
            assert torch.equal(param.detach(), initial[plain]), name
    assert any(learner.module.get_parameter(n).abs().max() > 0 for n in trained if ".lora_B." in n)
    state = learner.engine.optimizer.state
    assert {id(p) for p in state} == {id(p) for p in learner.module.parameters() if p.requires_grad}
    # AdamW keeps two fp32 moments per trained element (plus a step counter per tensor).
    moments = 2 * 4 * learner.trainable_params
    held = sum(
        v.numel() * v.element_size() for per in state.values() for v in per.values() if torch.is_tensor(v)
    )
    assert moments <= held <= moments + 8 * len(state)
    assert learner.trainable_params < learner.total_params


def test_the_reference_is_the_base_model_with_no_second_copy(tiny_model_path: str) -> None:
    learner = _trained(tiny_model_path, kl=0.0)
    learner.has_reference = (
        True  # what algo.kl_coef > 0 sets; the adapters have trained without the KL term here
    )
    assert learner.ref_model is None
    sequences = _sequences(3)
    reference = learner.logprobs(sequences, reference=True)
    policy = learner.logprobs(sequences)
    want = _naive_logprobs(tiny_model_path, sequences)  # the base model, loaded separately, in float64
    for ref, pol, base in zip(reference, policy, want):
        assert torch.allclose(ref, base, atol=1e-5), (ref - base).abs().max()
        assert (pol - base).abs().max() > 1e-3  # the adapters did change the policy
    with_kl = _learner(tiny_model_path, kl=0.1)
    assert with_kl.ref_model is None and with_kl.has_reference


def test_merged_weights_compute_what_the_adapted_model_does(tiny_model_path: str, tmp_path) -> None:
    # The engine gets base + scale * B @ A under the base model's names: a plain model with those weights scores
    # what the adapted (unmerged) model scores.
    from transformers import AutoModelForCausalLM

    learner = _trained(tiny_model_path)
    merged = dict(learner.named_parameters_for_sync())
    plain = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float32)
    plain_names = {n for n, _ in plain.named_parameters()}
    assert set(merged) == plain_names  # every parameter, under its own name, nothing from the adapters
    plain.load_state_dict(merged, strict=False)
    path = tmp_path / "merged"
    plain.save_pretrained(path)
    sequences = _sequences(4)
    for got, want in zip(learner.logprobs(sequences), _naive_logprobs(str(path), sequences)):
        assert torch.allclose(got, want, atol=1e-4), (got - want).abs().max()


def test_merged_weight_by_hand() -> None:
    weight = torch.eye(2)
    got = lora.merged_weight(weight, torch.tensor([[1.0, 2.0]]), torch.tensor([[1.0], [0.0]]), 0.5)
    assert torch.equal(got, torch.tensor([[1.5, 1.0], [0.0, 1.0]]))
    assert torch.equal(weight, torch.eye(2))  # not modified in place
    with pytest.raises(ValueError, match="do not chain"):
        lora.merged_weight(weight, torch.ones(1, 3), torch.ones(2, 1), 1.0)


@pytest.mark.parametrize("backend,stage", [("torch", 0), ("deepspeed", 2)])
def test_resume_continues_exactly(tiny_model_path: str, tmp_path, backend: str, stage: int) -> None:
    # Two steps, save, a third; against a fresh learner that loads the checkpoint and takes the same third step.
    learner = _trained(tiny_model_path, steps=2, backend=backend, zero_stage=stage)
    learner.save_state(tmp_path)
    saved = sum(f.stat().st_size for f in (tmp_path / "learner").rglob("*") if f.is_file())
    assert (
        saved < 4 * 4 * learner.total_params / 4
    )  # adapters + their AdamW state, not the frozen base weights
    learner.train_step(_sequences(20), ADVANTAGES)
    resumed = _learner(tiny_model_path, backend=backend, zero_stage=stage)
    resumed.load_state(tmp_path)
    resumed.train_step(_sequences(20), ADVANTAGES)
    for (name, want), (_, got) in zip(learner.module.named_parameters(), resumed.module.named_parameters()):
        assert torch.equal(got, want), name


def test_gradient_checkpointing_recomputes_adapted_layers(tiny_model_path: str) -> None:
    learner = _learner(tiny_model_path, gradient_checkpointing=True, micro_batch_size=2)
    decoder = learner.module.get_base_model()
    calls = _count_layer_forwards(decoder)
    learner.train_step(_sequences(5, n=4), ADVANTAGES[:4])
    assert calls[0] == 2 * len(decoder.model.layers) * 2  # each layer twice per micro-batch, 2 micro-batches


def test_save_pretrained_writes_the_merged_model_and_the_adapter(tiny_model_path: str, tmp_path) -> None:
    from peft import PeftModel
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    learner = _trained(tiny_model_path)
    learner.save_pretrained(tmp_path / "final_model", tokenizer_path=tiny_model_path)
    with safe_open(str(tmp_path / "final_model" / "model.safetensors"), "pt") as f:
        keys = list(f.keys())
    assert keys and not any("lora" in k or "base_layer" in k for k in keys)
    _, info = AutoModelForCausalLM.from_pretrained(str(tmp_path / "final_model"), output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    sequences = _sequences(6)
    want = learner.logprobs(sequences)
    for got, expected in zip(_naive_logprobs(str(tmp_path / "final_model"), sequences), want):
        assert torch.allclose(got, expected, atol=1e-4)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_path, dtype=torch.float64)
    adapted = PeftModel.from_pretrained(base, str(tmp_path / "final_model" / "adapter"))
    prompt, response = sequences[0]
    with torch.no_grad():
        logits = adapted(torch.tensor([prompt + response])).logits[0].log_softmax(-1)
    positions = torch.arange(len(prompt) - 1, len(prompt) + len(response) - 1)
    assert torch.allclose(logits[positions, torch.tensor(response)].float(), want[0], atol=1e-4)


def test_bad_adapter_settings_fail_naming_the_field(tiny_model_path: str) -> None:
    with pytest.raises(ValueError, match=r"learner\.lora_rank must be >= 0"):
        LearnerConfig(lora_rank=-1)
    with pytest.raises(ValueError, match=r"learner.lora_target_modules: 'qkv'.*it has: q_proj, k_proj"):
        _learner(tiny_model_path, lora_target_modules=["qkv"])
    only_v = _learner(tiny_model_path, lora_target_modules=["v_proj"])
    adapted = {n.split(".")[-4] for n, p in only_v.module.named_parameters() if p.requires_grad}
    assert adapted == {"v_proj"}


def test_the_sync_check_passes_merged_weights_and_catches_unmerged_ones(tiny_model_path: str) -> None:
    # The engine holds what the learner pushed: the merged weights score like the adapted learner; the base
    # weights alone (a push that forgot the adapters) are caught by the same check full fine-tuning uses.
    from r1zero.config import RolloutConfig
    from r1zero.rollout.engines import build_engine
    from r1zero.sync import SyncVerificationError, push_weights, verify_sync

    learner = _trained(tiny_model_path)
    engine = build_engine(tiny_model_path, RolloutConfig(engine="hf", dtype="float32"), seed=0)
    probe = _sequences(7)
    push_weights(engine, learner.named_parameters_for_sync(), version=1)
    assert (
        verify_sync(engine, learner.logprobs, probe, max_abs_diff=0.01)["sync/max_abs_logprob_diff"] <= 1e-4
    )
    base = {n.replace(".base_layer.", "."): p for n, p in learner.module.get_base_model().named_parameters()}
    push_weights(engine, ((n, p.data) for n, p in base.items() if ".lora_" not in n), version=2)
    with pytest.raises(SyncVerificationError):
        verify_sync(engine, learner.logprobs, probe, max_abs_diff=0.01)
    engine.close()
