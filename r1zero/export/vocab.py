"""The tokenizer as GGUF metadata: tokens, token types, merges, pre-tokenizer, special tokens, chat template.

Everything is read from the tokenizer as transformers LOADS it (what training used), not from the files on disk:
transformers 5 rebuilds some pre-tokenizers from the model type (a qwen2 model gets Qwen2's digit-splitting
regex whatever tokenizer.json says), so the file can disagree with what the model was trained on.

Only byte-level BPE tokenizers (GPT-2 style; Qwen2, SmolLM2, Llama 3) are supported: llama.cpp calls that model
"gpt2". llama.cpp does not read a pre-tokenizer regex from the file: it knows a fixed list by name, so the
loaded pre-tokenizer is matched against the ones named in `PRE_TOKENIZERS`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

# Token types as llama.cpp reads them (gguf.TokenType): special added tokens are CONTROL (never produced from
# plain text, rendered only by templates); other added tokens are USER_DEFINED (matched verbatim in text);
# embedding rows beyond the tokenizer are UNUSED.
NORMAL, CONTROL, USER_DEFINED, UNUSED = 1, 3, 4, 5

QWEN2_REGEX = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
LLAMA3_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
    r"|\s+(?!\S)|\s+"
)

# Pre-tokenizer pipelines (as `pretokenizer_steps` describes them) -> the name llama.cpp knows them by.
PRE_TOKENIZERS: dict[tuple[str, ...], str] = {
    # GPT-2's regex inside ByteLevel (SmolLM2 as transformers loads it from its GGUF, the tiny llama preset).
    ("bytelevel+regex",): "gpt-2",
    # Every digit its own piece, then GPT-2's regex (SmolLM/StarCoder tokenizer.json files).
    ("digits", "bytelevel+regex"): "smollm",
    ("split:" + QWEN2_REGEX, "bytelevel"): "qwen2",
    ("split:" + LLAMA3_REGEX, "bytelevel"): "llama-bpe",
}
# Normalizers that change nothing llama.cpp would tokenize differently on NFC text (Qwen2's NFC).
ALLOWED_NORMALIZERS = (None, "NFC")


@dataclass
class VocabMeta:
    """The tokenizer facts a GGUF file carries. tokens/types: [V], one per embedding row."""

    tokens: list[str]
    types: list[int]
    merges: list[str]
    pre: str
    special_ids: dict[str, int]  # "bos" | "eos" | "pad" | "unk" -> token id
    add_bos: bool
    add_eos: bool
    chat_template: str | None


def _step(pre: dict[str, Any]) -> str:
    kind = pre.get("type")
    if kind == "ByteLevel":
        if pre.get("add_prefix_space"):
            return "bytelevel+prefix_space"  # llama.cpp never adds a prefix space to a BPE vocabulary
        return "bytelevel+regex" if pre.get("use_regex", True) else "bytelevel"
    if kind == "Digits":
        return "digits" if pre.get("individual_digits") else "digits+grouped"
    if kind == "Split":
        pattern = pre.get("pattern", {})
        if pre.get("behavior") != "Isolated" or pre.get("invert") or "Regex" not in pattern:
            return f"split({pre.get('behavior')}, invert={pre.get('invert')}, {pattern})"
        return "split:" + pattern["Regex"]
    return str(kind)


def pretokenizer_steps(pre: dict[str, Any] | None) -> tuple[str, ...]:
    """A tokenizers pre_tokenizer JSON object -> its steps as short strings (Sequence flattened).

    Example: `{"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true},
    {"type": "ByteLevel", "use_regex": true}]}` -> ("digits", "bytelevel+regex").
    """
    if pre is None:
        return ()
    if pre.get("type") == "Sequence":
        return tuple(s for p in pre.get("pretokenizers", []) for s in pretokenizer_steps(p))
    return (_step(pre),)


def llama_cpp_pre_name(backend: dict[str, Any]) -> str:
    """The llama.cpp pre-tokenizer name of a loaded tokenizer's backend JSON; ValueError naming what is there."""
    model = backend.get("model", {})
    if model.get("type") != "BPE" or model.get("byte_fallback"):
        raise ValueError(
            f"only byte-level BPE tokenizers are supported (tokenizer model {model.get('type')!r}, "
            f"byte_fallback={model.get('byte_fallback')}); SentencePiece vocabularies are not"
        )
    normalizer = (backend.get("normalizer") or {}).get("type")
    if normalizer not in ALLOWED_NORMALIZERS:
        raise ValueError(f"tokenizer normalizer {normalizer!r} is not supported (allowed: none, NFC)")
    steps = pretokenizer_steps(backend.get("pre_tokenizer"))
    name = PRE_TOKENIZERS.get(steps)
    if name is None:
        known = ", ".join(sorted(set(PRE_TOKENIZERS.values())))
        raise ValueError(
            f"pre-tokenizer {steps} matches none that llama.cpp knows and this exporter maps ({known})"
        )
    return name


def _merges(backend: dict[str, Any]) -> list[str]:
    """tokenizer.json merges (["a", "b"] pairs or "a b" strings) -> "a b" strings, llama.cpp's format."""
    out = []
    for merge in backend.get("model", {}).get("merges", []):
        if isinstance(merge, str):
            out.append(merge)
            continue
        left, right = merge
        if (
            " " in left or " " in right
        ):  # a byte-level vocabulary spells a space as "Ġ"; a raw one cannot be split
            raise ValueError(
                f"merge {merge!r} holds a raw space, which llama.cpp's 'a b' merge format cannot carry"
            )
        out.append(f"{left} {right}")
    return out


def _adds(tokenizer: Any, token_id: int | None, *, first: bool) -> bool:
    """Does encoding plain text put `token_id` first (bos) / last (eos)? Read from the tokenizer's behaviour."""
    if token_id is None:
        return False
    with_special = tokenizer("a").input_ids
    plain = tokenizer("a", add_special_tokens=False).input_ids
    if len(with_special) == len(plain):
        return False
    return bool(with_special) and with_special[0 if first else -1] == token_id


def vocab_meta(tokenizer: Any, n_vocab: int) -> VocabMeta:
    """The GGUF tokenizer metadata of a loaded `PreTrainedTokenizerFast`, with `n_vocab` embedding rows.

    Rows beyond the tokenizer (models pad the embedding, e.g. Qwen2.5 to a multiple of 128) become UNUSED
    placeholder tokens, since llama.cpp takes the vocabulary size from the token list.
    Example: 3 ids {"a": 0, "b": 1, "<|im_end|>": 2 (special)}, n_vocab 4 -> tokens ["a", "b", "<|im_end|>",
    "<|unused_3|>"], types [1, 1, 3, 5].
    """
    vocab = tokenizer.get_vocab()  # token -> id, added tokens included
    if max(vocab.values()) >= n_vocab:
        raise ValueError(
            f"the tokenizer has ids up to {max(vocab.values())} but the model only {n_vocab} rows"
        )
    tokens: list[str | None] = [None] * n_vocab
    for token, token_id in vocab.items():
        tokens[token_id] = token
    added = tokenizer.added_tokens_decoder  # id -> AddedToken
    types = []
    for token_id, token in enumerate(tokens):
        if token is None:
            types.append(UNUSED)
        elif token_id in added:
            types.append(CONTROL if added[token_id].special else USER_DEFINED)
        else:
            types.append(NORMAL)
    backend = json.loads(tokenizer.backend_tokenizer.to_str())
    special_ids = {
        kind: token_id
        for kind in ("bos", "eos", "pad", "unk")
        if (token_id := getattr(tokenizer, f"{kind}_token_id", None)) is not None
    }
    template = tokenizer.chat_template
    if isinstance(
        template, dict
    ):  # several named templates: the default one is what apply_chat_template uses
        template = template.get("default")
    return VocabMeta(
        tokens=[t if t is not None else f"<|unused_{i}|>" for i, t in enumerate(tokens)],
        types=types,
        merges=_merges(backend),
        pre=llama_cpp_pre_name(backend),
        special_ids=special_ids,
        add_bos=_adds(tokenizer, special_ids.get("bos"), first=True),
        add_eos=_adds(tokenizer, special_ids.get("eos"), first=False),
        chat_template=template,
    )


def add_vocab(writer: Any, meta: VocabMeta) -> None:
    """Write `meta` into a `gguf.GGUFWriter` (before its KV data is written)."""
    writer.add_tokenizer_model("gpt2")  # llama.cpp's name for byte-level BPE
    writer.add_tokenizer_pre(meta.pre)
    writer.add_token_list(meta.tokens)
    writer.add_token_types(meta.types)
    writer.add_token_merges(meta.merges)
    for kind, token_id in meta.special_ids.items():
        getattr(writer, f"add_{kind}_token_id")(token_id)
    writer.add_add_bos_token(meta.add_bos)
    writer.add_add_eos_token(meta.add_eos)
    if meta.chat_template:
        writer.add_chat_template(meta.chat_template)
