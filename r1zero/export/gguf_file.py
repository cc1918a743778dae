"""A Hugging Face Llama or Qwen2 folder -> one GGUF file that llama.cpp (LM Studio, Ollama) loads.

Written with the `gguf` package's writer, tensor by tensor (at most one weight in memory at a time, besides the
writer's own buffers), into a temporary file renamed into place when complete.
"""

from __future__ import annotations

import logging
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1zero.export.tensors import (
    OUT_TYPES,
    encode,
    encoded_nbytes,
    gguf_names,
    list_safetensors,
    load_f32,
    permute_rope_rows,
    storage_type,
)
from r1zero.export.vocab import add_vocab, vocab_meta

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Arch:
    """How one Hugging Face architecture maps onto llama.cpp's."""

    gguf_arch: str  # general.architecture, and the gguf.MODEL_ARCH member (upper case)
    permute_qk: bool  # llama.cpp's llama graph uses interleaved RoPE; HF's Llama weights are rotate-half


ARCHS: dict[str, Arch] = {
    "llama": Arch("llama", permute_qk=True),  # LlamaForCausalLM: SmolLM2, the tiny llama
    "qwen2": Arch("qwen2", permute_qk=False),  # Qwen2ForCausalLM: the tiny/small presets, Qwen2.5 recipes
}


@dataclass
class ExportResult:
    path: Path
    out_type: str
    seconds: float
    nbytes: int


def arch_of(config: Any) -> Arch:
    arch = ARCHS.get(config.model_type)
    if arch is None:
        supported = ", ".join(f"{k} ({k.capitalize()}ForCausalLM)" for k in ARCHS)
        raise ValueError(f"architecture {config.model_type!r} is not supported; supported: {supported}")
    return arch


def check_supported(config: Any) -> None:
    """Features this exporter does not write: fail rather than produce a file that runs wrong."""
    rope = getattr(config, "rope_parameters", None) or {}
    rope_type = rope.get("rope_type", "default") if isinstance(rope, dict) else "per-layer"
    if rope_type != "default":
        raise ValueError(f"RoPE scaling {rope_type!r} is not supported by this exporter (only plain RoPE)")
    if getattr(config, "use_sliding_window", False):
        raise ValueError(
            "sliding-window attention (use_sliding_window=true) is not supported by this exporter"
        )
    if getattr(config, "hidden_act", "silu") != "silu":
        raise ValueError(
            f"hidden_act {config.hidden_act!r} is not supported (llama.cpp's llama/qwen2 use SiLU)"
        )


def _hyperparameters(writer: Any, config: Any, n_vocab: int) -> None:
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_dimension_count(head_dim)
    writer.add_rope_freq_base(float(config.rope_parameters["rope_theta"]))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(n_vocab)


def _prepare(data: Any, gguf_name: str, arch: Arch, config: Any) -> Any:
    """Llama: q/k rows into llama.cpp's RoPE order (see `permute_rope_rows`)."""
    if not arch.permute_qk:
        return data
    if re.search(r"\.attn_q\.(weight|bias)$", gguf_name):
        return permute_rope_rows(data, config.num_attention_heads)
    if re.search(r"\.attn_k\.(weight|bias)$", gguf_name):
        return permute_rope_rows(data, config.num_key_value_heads or config.num_attention_heads)
    return data


def export_gguf(
    model_dir: str | Path, out_path: str | Path, out_type: str = "f16", *, name: str | None = None
) -> ExportResult:
    """Write the model in `model_dir` (config.json, safetensors, tokenizer) to `out_path` as `out_type`.

    out_type: f32 | f16 | bf16 | q8_0 | q4_0 (see r1zero.export.tensors.OUT_TYPES). K-quants (Q4_K_M...) are
    made from an F16 file by llama.cpp's own `llama-quantize`.
    """
    import gguf
    import numpy as np
    from transformers import AutoConfig, AutoTokenizer

    if out_type not in OUT_TYPES:
        raise ValueError(f"out_type must be one of {', '.join(OUT_TYPES)}; got {out_type!r}")
    start = time.perf_counter()
    model_dir, out_path = Path(model_dir), Path(out_path)
    config = AutoConfig.from_pretrained(model_dir)
    arch = arch_of(config)
    check_supported(config)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    n_vocab = config.vocab_size
    meta = vocab_meta(AutoTokenizer.from_pretrained(model_dir), n_vocab)
    names = gguf_names(
        list_safetensors(model_dir),
        gguf.MODEL_ARCH[arch.gguf_arch.upper()],
        config.num_hidden_layers,
        tied=tied,
    )
    plan = [(t, source, storage_type(t, source.shape, out_type, tied=tied)) for t, source in names]
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(f".{out_path.name}.tmp-{os.getpid()}")
    writer = gguf.GGUFWriter(str(tmp), arch.gguf_arch)
    try:
        writer.add_name(name or model_dir.name)
        writer.add_file_type(int(gguf.LlamaFileType[OUT_TYPES[out_type][1]]))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        _hyperparameters(writer, config, n_vocab)
        add_vocab(writer, meta)
        for (
            gguf_name,
            source,
            ggml_type,
        ) in plan:  # the tensor directory first, then the data in the same order
            writer.add_tensor_info(
                gguf_name, source.shape, np.dtype(np.float32),
                encoded_nbytes(source.shape, ggml_type), raw_dtype=gguf.GGMLQuantizationType[ggml_type],
            )  # fmt: skip
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        for gguf_name, source, ggml_type in plan:
            data = _prepare(load_f32(source), gguf_name, arch, config)
            writer.write_tensor_data(encode(data, ggml_type))
        writer.close()
        tmp.replace(out_path)
    finally:
        if tmp.exists():  # failed part-way: no half-written file under the real name
            writer.close()
            tmp.unlink()
    seconds = time.perf_counter() - start
    log.info("wrote %s (%s, %.1f MB) in %.1f s", out_path, out_type, out_path.stat().st_size / 1e6, seconds)
    return ExportResult(out_path, out_type, seconds, out_path.stat().st_size)
