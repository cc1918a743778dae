"""Weights -> GGUF tensors: names, the Llama RoPE row order, and the storage type of each tensor.

Shapes are PyTorch's (out_features, in_features); GGUF stores the same bytes with the dimensions reversed, which
`gguf.GGUFWriter` does itself. Letters: H query heads, K key/value heads, D head dim, E hidden size.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# Output types -> (GGML tensor type of the big matrices, GGUF file type). Values are gguf enum names.
OUT_TYPES: dict[str, tuple[str, str]] = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
    "q4_0": ("Q4_0", "MOSTLY_Q4_0"),
}
QUANT_BLOCK = 32  # elements per Q8_0 / Q4_0 block: a row whose length is not a multiple stays F16
# Q4_0 keeps the matrix that produces the logits (output.weight, or token_embd.weight when tied) in Q8_0: on
# SmolLM2-135M, Q4_0 everywhere moved the logits by much more (see README "Run it locally").
Q4_0_LOGITS_TYPE = "Q8_0"


def permute_rope_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """Llama q_proj/k_proj rows from Hugging Face's rotate-half order to llama.cpp's interleaved pairs.

    w: [n_head * D, E] (or a bias [n_head * D]). Within each head, HF puts the first halves of the D/2 rotary
    pairs in rows 0..D/2-1 and the second halves after them; llama.cpp expects each pair on adjacent rows.
    Example, one head, D 4, rows [r0, r1, r2, r3] (pairs (r0, r2) and (r1, r3)) -> [r0, r2, r1, r3].
    Qwen2 must NOT be permuted: llama.cpp runs it with NeoX-style (rotate-half) RoPE.
    """
    rows = w.shape[0]
    head_dim = rows // n_head
    if rows % n_head or head_dim % 2:
        raise ValueError(f"cannot split {rows} rows into {n_head} heads of an even size")
    rest = w.shape[1:]
    return w.reshape(n_head, 2, head_dim // 2, *rest).swapaxes(1, 2).reshape(w.shape)


def storage_type(gguf_name: str, shape: tuple[int, ...], out_type: str, *, tied: bool) -> str:
    """The GGML type a tensor is stored in: 1-D tensors (norms, biases) F32; the rest the output type, except
    that rows not a multiple of 32 cannot be block-quantized (F16 instead) and Q4_0 keeps the logits matrix Q8_0.

    Example: ("blk.0.attn_norm.weight", (576,), "q4_0") -> "F32"; ("output.weight", (49152, 576), "q4_0") -> "Q8_0".
    """
    matrix_type = OUT_TYPES[out_type][0]
    if len(shape) < 2:
        return "F32"
    if matrix_type in ("Q8_0", "Q4_0"):
        if shape[-1] % QUANT_BLOCK:
            return "F16"
        logits = gguf_name == "output.weight" or (tied and gguf_name == "token_embd.weight")
        if matrix_type == "Q4_0" and logits:
            return Q4_0_LOGITS_TYPE
    return matrix_type


@dataclass
class SourceTensor:
    """One weight of a Hugging Face folder: where it lives and its shape (nothing loaded yet)."""

    name: str  # Hugging Face name, e.g. "model.layers.0.self_attn.q_proj.weight"
    shape: tuple[int, ...]
    file: Path


def list_safetensors(model_dir: Path) -> list[SourceTensor]:
    """The tensors of model.safetensors, or of the shards a model.safetensors.index.json names."""
    from safetensors import safe_open

    index = model_dir / "model.safetensors.index.json"
    if index.exists():
        files = sorted({model_dir / f for f in json.loads(index.read_text())["weight_map"].values()})
    elif (model_dir / "model.safetensors").exists():
        files = [model_dir / "model.safetensors"]
    else:
        raise FileNotFoundError(
            f"{model_dir} has no model.safetensors (or index): save the model with safe_serialization=True"
        )
    out = []
    for file in files:
        with safe_open(str(file), framework="pt") as f:
            for name in f.keys():  # noqa: SIM118 (safe_open is not a dict)
                out.append(SourceTensor(name, tuple(f.get_slice(name).get_shape()), file))
    return out


def load_f32(tensor: SourceTensor) -> np.ndarray:
    """One tensor as float32 numpy (bf16 goes through torch: numpy has no bfloat16)."""
    import torch
    from safetensors import safe_open

    with safe_open(str(tensor.file), framework="pt") as f:
        return f.get_tensor(tensor.name).to(torch.float32).numpy()


def encode(data: np.ndarray, ggml_type: str) -> np.ndarray:
    """float32 [..., C] -> the bytes GGUF stores for `ggml_type` (F32/F16 as floats; BF16, Q8_0, Q4_0 packed)."""
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    return quantize(np.ascontiguousarray(data, dtype=np.float32), GGMLQuantizationType[ggml_type])


def encoded_nbytes(shape: tuple[int, ...], ggml_type: str) -> int:
    """Bytes of a tensor of `shape` in `ggml_type`. Example: (64, 96) in Q8_0 -> 64 * 3 blocks * 34 B = 6528."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    block, size = GGML_QUANT_SIZES[GGMLQuantizationType[ggml_type]]
    return int(np.prod(shape[:-1], dtype=np.int64)) * (shape[-1] // block) * size


def gguf_names(
    tensors: list[SourceTensor], arch: Any, n_layer: int, *, tied: bool
) -> Iterator[tuple[str, SourceTensor]]:
    """(GGUF name, source) for each weight that goes into the file; an unknown weight is an error, not dropped.

    With tied embeddings lm_head.weight (if saved at all) is the embedding again: llama.cpp reuses token_embd.
    """
    from gguf import get_tensor_name_map

    names = get_tensor_name_map(arch, n_layer)
    seen_output = False
    for tensor in tensors:
        if tensor.name.endswith("rotary_emb.inv_freq"):
            continue  # recomputed from rope_freq_base
        if tensor.name == "lm_head.weight":
            seen_output = True
            if tied:
                continue
        gguf_name = names.get_name(tensor.name, try_suffixes=(".weight", ".bias"))
        if gguf_name is None:
            raise ValueError(f"weight {tensor.name} {tensor.shape} has no GGUF name for this architecture")
        yield gguf_name, tensor
    if not tied and not seen_output:
        raise ValueError("tie_word_embeddings is false but the folder has no lm_head.weight")
