"""The GGUF exporter's pure parts: RoPE row order, storage types and sizes, pre-tokenizer names, vocabulary."""

from __future__ import annotations

import numpy as np
import pytest

from r1zero.export.tensors import encoded_nbytes, permute_rope_rows, storage_type
from r1zero.export.vocab import (
    LLAMA3_REGEX,
    QWEN2_REGEX,
    llama_cpp_pre_name,
    pretokenizer_steps,
    vocab_meta,
)


def test_permutation_hand_examples() -> None:
    rows = np.arange(4.0)[:, None]  # one head, D 4: pairs (0, 2) and (1, 3) -> adjacent
    assert permute_rope_rows(rows, 1)[:, 0].tolist() == [0, 2, 1, 3]
    two = np.arange(8.0)  # two heads of D 4, a bias (1-D)
    assert permute_rope_rows(two, 2).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]
    six = np.arange(6.0)  # one head of D 6: pairs (0, 3), (1, 4), (2, 5)
    assert permute_rope_rows(six, 1).tolist() == [0, 3, 1, 4, 2, 5]
    with pytest.raises(ValueError, match="even"):
        permute_rope_rows(np.zeros((6, 2)), 2)  # D 3


def _hf_rope(x: np.ndarray, pos: int, base: float = 10000.0) -> np.ndarray:
    """Hugging Face Llama: rotate-half, pair (i, i + D/2) turned by pos * base^(-2i/D)."""
    d = x.shape[-1]
    theta = pos * base ** (-2 * np.arange(d // 2) / d)
    first, second = x[: d // 2], x[d // 2 :]
    return np.concatenate(
        [first * np.cos(theta) - second * np.sin(theta), second * np.cos(theta) + first * np.sin(theta)]
    )


def _interleaved_rope(x: np.ndarray, pos: int, base: float = 10000.0) -> np.ndarray:
    """llama.cpp's llama graph (GGML_ROPE_TYPE_NORMAL): pair (2i, 2i + 1) turned by pos * base^(-2i/D)."""
    d = x.shape[-1]
    theta = pos * base ** (-2 * np.arange(d // 2) / d)
    even, odd = x[0::2], x[1::2]
    out = np.empty_like(x)
    out[0::2] = even * np.cos(theta) - odd * np.sin(theta)
    out[1::2] = odd * np.cos(theta) + even * np.sin(theta)
    return out


def test_permuted_weights_under_interleaved_rope_equal_hf_rope() -> None:
    """float64: q from the permuted weights, rotated llama.cpp's way, is HF's rotated q in the new row order,
    so every attention score q . k is unchanged."""
    rng = np.random.default_rng(0)
    n_head, head_dim, hidden = 3, 8, 5
    w_q, w_k = rng.normal(size=(n_head * head_dim, hidden)), rng.normal(size=(head_dim, hidden))
    x_q, x_k = rng.normal(size=hidden), rng.normal(size=hidden)
    pq, pk = permute_rope_rows(w_q, n_head), permute_rope_rows(w_k, 1)
    for pos_q, pos_k in [(0, 0), (7, 3), (100, 99)]:
        for h in range(n_head):
            rows = slice(h * head_dim, (h + 1) * head_dim)
            hf = _hf_rope(w_q[rows] @ x_q, pos_q) @ _hf_rope(w_k @ x_k, pos_k)
            cpp = _interleaved_rope(pq[rows] @ x_q, pos_q) @ _interleaved_rope(pk @ x_k, pos_k)
            assert cpp == pytest.approx(hf, rel=1e-12, abs=1e-12)
            # and without the permutation the scores differ (the test can fail)
            if pos_q != pos_k:
                wrong = _interleaved_rope(w_q[rows] @ x_q, pos_q) @ _interleaved_rope(w_k @ x_k, pos_k)
                assert abs(wrong - hf) > 1e-6


@pytest.mark.parametrize(
    "name,shape,out_type,tied,expected",
    [
        ("blk.0.attn_norm.weight", (576,), "q4_0", False, "F32"),
        ("blk.0.attn_q.bias", (896,), "f16", False, "F32"),
        ("blk.0.attn_q.weight", (576, 576), "f32", False, "F32"),
        ("blk.0.attn_q.weight", (576, 576), "bf16", False, "BF16"),
        ("blk.0.attn_q.weight", (576, 576), "q8_0", False, "Q8_0"),
        ("blk.0.ffn_down.weight", (576, 1536), "q4_0", False, "Q4_0"),
        ("blk.0.attn_q.weight", (96, 100), "q4_0", False, "F16"),  # 100 % 32 != 0: no blocks
        ("output.weight", (49152, 576), "q4_0", False, "Q8_0"),
        ("output.weight", (49152, 576), "q8_0", False, "Q8_0"),
        ("token_embd.weight", (49152, 576), "q4_0", True, "Q8_0"),  # tied: the embedding makes the logits
        ("token_embd.weight", (49152, 576), "q4_0", False, "Q4_0"),
    ],
)
def test_storage_type(name: str, shape: tuple[int, ...], out_type: str, tied: bool, expected: str) -> None:
    assert storage_type(name, shape, out_type, tied=tied) == expected


def test_encoded_nbytes_hand_arithmetic() -> None:
    # Q8_0 block: 32 int8 + an f16 scale = 34 B; Q4_0 block: 16 B of nibbles + an f16 scale = 18 B
    assert encoded_nbytes((64, 96), "Q8_0") == 64 * 3 * 34
    assert encoded_nbytes((64, 96), "Q4_0") == 64 * 3 * 18
    assert encoded_nbytes((64, 96), "F16") == 64 * 96 * 2
    assert encoded_nbytes((64, 96), "BF16") == 64 * 96 * 2
    assert encoded_nbytes((96,), "F32") == 96 * 4


def _bytelevel(use_regex: bool) -> dict:
    return {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": use_regex}


def _split(regex: str) -> dict:
    return {"type": "Split", "pattern": {"Regex": regex}, "behavior": "Isolated", "invert": False}


def _backend(pre: dict | None, *, model: str = "BPE", normalizer: str | None = None) -> dict:
    return {
        "model": {"type": model, "byte_fallback": False, "merges": []},
        "normalizer": {"type": normalizer} if normalizer else None,
        "pre_tokenizer": pre,
    }


@pytest.mark.parametrize(
    "pre,normalizer,name",
    [
        (_bytelevel(True), None, "gpt-2"),
        ({"type": "Sequence", "pretokenizers": [_split(QWEN2_REGEX), _bytelevel(False)]}, "NFC", "qwen2"),
        ({"type": "Sequence", "pretokenizers": [_split(LLAMA3_REGEX), _bytelevel(False)]}, None, "llama-bpe"),
        (
            {
                "type": "Sequence",
                "pretokenizers": [{"type": "Digits", "individual_digits": True}, _bytelevel(True)],
            },
            None,
            "smollm",
        ),
    ],
)
def test_pre_tokenizer_names(pre: dict, normalizer: str | None, name: str) -> None:
    assert llama_cpp_pre_name(_backend(pre, normalizer=normalizer)) == name


def test_unknown_tokenizers_are_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"gpt-2, llama-bpe, qwen2, smollm"):
        llama_cpp_pre_name(_backend({"type": "Whitespace"}))
    with pytest.raises(ValueError, match="prefix_space"):
        llama_cpp_pre_name(_backend({**_bytelevel(True), "add_prefix_space": True}))
    with pytest.raises(ValueError, match="SentencePiece"):
        llama_cpp_pre_name(_backend(_bytelevel(True), model="Unigram"))
    with pytest.raises(ValueError, match="normalizer"):
        llama_cpp_pre_name(_backend(_bytelevel(True), normalizer="NFKC"))
    assert pretokenizer_steps(None) == ()


def _tokenizer(bos: bool):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(vocab={"a": 0, "b": 1, "ab": 2}, merges=[("a", "b")]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    special = ["<|im_end|>", "<s>"] if bos else ["<|im_end|>"]
    tok.add_special_tokens(special)
    tok.add_tokens(["<x>"])
    if bos:
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 4)])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        bos_token="<s>" if bos else None,
        chat_template="{{ x }}",
    )


def test_vocab_meta_types_padding_merges_and_bos() -> None:
    meta = vocab_meta(_tokenizer(bos=False), 6)
    # ids: a 0, b 1, ab 2, <|im_end|> 3 (special: CONTROL 3), <x> 4 (added, not special: USER_DEFINED 4),
    # row 5 has no token: UNUSED 5
    assert meta.tokens == ["a", "b", "ab", "<|im_end|>", "<x>", "<|unused_5|>"]
    assert meta.types == [1, 1, 1, 3, 4, 5]
    assert meta.merges == ["a b"]
    assert meta.pre == "gpt-2"
    assert meta.special_ids == {"eos": 3}
    assert (meta.add_bos, meta.add_eos, meta.chat_template) == (False, False, "{{ x }}")
    with_bos = vocab_meta(_tokenizer(bos=True), 6)  # "ab" encodes as [<s>, ab]: the tokenizer adds bos
    assert with_bos.special_ids == {"bos": 4, "eos": 3}
    assert with_bos.add_bos and not with_bos.add_eos
    with pytest.raises(ValueError, match="only 4 rows"):
        vocab_meta(_tokenizer(bos=False), 4)
