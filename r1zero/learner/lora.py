"""LoRA on the learner (PEFT adapters): wrapping the policy, the merged weights the rollout engine gets (so the engine
needs no adapter support and the per-step sync check still compares the same function), the adapter folder.

Only the adapters train: their gradients and AdamW state are all the optimizer holds. The reference model of the KL
term is the same model with the adapters disabled (`reference_mode`), so no second copy of the weights is loaded.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from r1zero.learner.engine import gathered

ADAPTER = "default"  # PEFT's name for the one adapter a run trains


def merged_weight(weight: Tensor, lora_a: Tensor, lora_b: Tensor, scale: float) -> Tensor:
    """The dense weight of a LoRA linear layer: weight + scale * lora_b @ lora_a, computed in fp32, returned in
    weight's dtype (a new tensor; the inputs are not modified).

    weight [out, in], lora_a [r, in], lora_b [out, r]; scale = lora_alpha / r.
    Example: weight [[1, 0], [0, 1]], lora_a [[1, 2]], lora_b [[1], [0]], scale 0.5 -> [[1.5, 1], [0, 1]].
    """
    if (
        lora_a.shape[1] != weight.shape[1]
        or lora_b.shape[0] != weight.shape[0]
        or lora_a.shape[0] != lora_b.shape[1]
    ):
        raise ValueError(
            f"merged_weight: shapes do not chain: weight {tuple(weight.shape)}, lora_a {tuple(lora_a.shape)}, "
            f"lora_b {tuple(lora_b.shape)}"
        )
    # One fused op (weight + scale * B @ A), no [out, in] temporaries: it runs for every adapted layer at each push.
    return torch.addmm(weight.float(), lora_b.float(), lora_a.float(), alpha=scale).to(weight.dtype)


def resolve_targets(requested: Sequence[str] | None, available: Sequence[str]) -> list[str]:
    """The module names to adapt: `requested` (learner.lora_target_modules), or every one of `available` (the linear
    projections inside the model's decoder layers) when None or empty. A name the model lacks is an error that
    lists what it has.
    Example: (None, ["q_proj", "v_proj"]) -> ["q_proj", "v_proj"]; (["v_proj"], ...) -> ["v_proj"];
    (["qkv"], ["q_proj"]) -> ValueError."""
    if not requested:
        return list(available)
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise ValueError(
            f"learner.lora_target_modules: {', '.join(repr(n) for n in unknown)} "
            f"{'is not a module' if len(unknown) == 1 else 'are not modules'} of this model's decoder layers; "
            f"it has: {', '.join(available)}"
        )
    return list(dict.fromkeys(requested))


def projection_names(model: Any) -> list[str]:
    """The distinct names of the linear layers inside `model`'s decoder (attention and MLP projections; not the
    embeddings or the lm_head), in first-seen order. Example: a Llama -> q_proj, k_proj, v_proj, o_proj,
    gate_proj, up_proj, down_proj."""
    decoder = model.get_decoder() if hasattr(model, "get_decoder") else model
    names = [
        name.rsplit(".", 1)[-1] for name, module in decoder.named_modules() if isinstance(module, nn.Linear)
    ]
    return list(dict.fromkeys(names))


def lora_config(
    model: nn.Module, *, rank: int, alpha: float, dropout: float, target_modules: Sequence[str] | None
) -> Any:
    """PEFT's LoraConfig for `model`: adapters of `rank` on `target_modules` (None: every projection in the decoder
    layers), scale alpha / rank, no bias adapters. The one place the adapter settings are spelled out (the learner
    and the TRL side of r1zero-bench both take it)."""
    from peft import LoraConfig

    if rank < 1:
        raise ValueError(f"learner.lora_rank must be >= 1 to add adapters; got {rank}")
    return LoraConfig(
        r=rank,
        lora_alpha=alpha,  # type: ignore[arg-type]  # PEFT annotates int; a float works (scale = alpha / r)
        lora_dropout=dropout,
        target_modules=resolve_targets(target_modules, projection_names(model)),
        bias="none",
        task_type="CAUSAL_LM",
    )


def apply_lora(
    model: nn.Module, *, rank: int, alpha: float, dropout: float, target_modules: Sequence[str] | None
) -> Any:
    """`model` wrapped in a PEFT LoRA model (`lora_config`'s adapters), B initialised to zero (the wrapped model
    computes exactly what the base did), every base parameter frozen."""
    from peft import get_peft_model

    config = lora_config(model, rank=rank, alpha=alpha, dropout=dropout, target_modules=target_modules)
    return get_peft_model(model, config, adapter_name=ADAPTER)


def reference_mode(model: Any) -> contextlib.AbstractContextManager[Any]:
    """A context in which the PEFT `model` computes its base model (the adapters switched off): the reference
    policy of the KL term, with no second copy of the weights."""
    return model.disable_adapter()


def _lora_layers(inner: nn.Module) -> dict[str, Any]:
    from peft.tuners.lora import LoraLayer

    return {name: module for name, module in inner.named_modules() if isinstance(module, LoraLayer)}


def merged_parameters(model: Any, *, zero3: bool) -> Iterator[tuple[str, Tensor]]:
    """(HF name, tensor) of the merged model, one parameter at a time, under the base model's own names (what the
    rollout engines and `save_pretrained` expect): an adapted linear layer's weight is `merged_weight` of its base
    weight and adapters; every other parameter is yielded as it is. zero3: gather each parameter (with its
    adapters) around its use."""
    inner = model.get_base_model()
    layers = _lora_layers(inner)
    for name, param in inner.named_parameters():
        if ".lora_" in name:
            continue
        owner, _, leaf = name.rpartition(".")
        layer_name = owner.removesuffix(".base_layer")
        layer = layers.get(layer_name) if owner.endswith(".base_layer") else None
        if layer is not None and leaf == "weight" and ADAPTER in layer.lora_A:
            lora_a, lora_b = layer.lora_A[ADAPTER].weight, layer.lora_B[ADAPTER].weight
            with gathered([param, lora_a, lora_b], zero3):
                scale = float(layer.scaling[ADAPTER])
                if getattr(layer, "fan_in_fan_out", False):  # Conv1D-style [in, out] weights (GPT-2)
                    merged = merged_weight(param.data.T, lora_a.data, lora_b.data, scale).T.contiguous()
                else:
                    merged = merged_weight(param.data, lora_a.data, lora_b.data, scale)
                yield f"{layer_name}.weight", merged
        else:
            with gathered([param], zero3):
                yield name.replace(".base_layer.", "."), param.data


def adapter_state(model: Any, *, zero3: bool) -> dict[str, Tensor]:
    """Host copies of the adapter parameters (PEFT names), gathered under ZeRO-3: what `save_adapter` writes."""
    state = {}
    for name, param in model.named_parameters():
        if ".lora_" in name:
            with gathered([param], zero3):
                state[name] = param.data.detach().to("cpu", copy=True)
    return state


def save_adapter(model: Any, state: dict[str, Tensor], path: Any) -> None:
    """Write the PEFT adapter folder (adapter_config.json + adapter_model.safetensors) from `adapter_state`;
    loadable with `peft.PeftModel.from_pretrained(base_model, path)`."""
    model.save_pretrained(str(path), state_dict=state, safe_serialization=True)


def parameter_counts(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter elements of `model`; a ZeRO-3 partitioned parameter counts its full size.
    Example: a 135M model with rank-8 adapters on every projection -> (~2.4M, ~137M)."""
    trainable = total = 0
    for param in model.parameters():
        n = int(getattr(param, "ds_numel", 0) or param.numel())
        total += n
        trainable += n if param.requires_grad else 0
    return trainable, total
