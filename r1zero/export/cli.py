"""r1zero-export: a trained model -> GGUF files for llama.cpp, LM Studio and Ollama, with a model card.

r1zero-export runs/cpu_s0                          # the run's final_model -> runs/cpu_s0/gguf/*.gguf + README.md
r1zero-export runs/cpu_s0 --type f16 q8_0 q4_0 --chat "What is 41 + 27?"
r1zero-export path/to/hf_folder --out /tmp/gguf    # any Llama / Qwen2 Hugging Face folder (or a preset name)
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from r1zero.env import setup_environment
from r1zero.export.gguf_file import ARCHS, ExportResult, export_gguf
from r1zero.export.tensors import OUT_TYPES
from r1zero.export.usage import usage_markdown

log = logging.getLogger(__name__)

TYPE_HELP = (
    "output types, one file each: f32, f16, bf16 (16-bit), q8_0 (8-bit, ~half of f16), q4_0 (4-bit; keeps the "
    "logits matrix at q8_0). Default: f16 q8_0. K-quants (Q4_K_M, Q5_K_M, Q6_K, ...) are not written here: they "
    "need llama.cpp's own quantizer, e.g. `llama-quantize NAME-F16.gguf NAME-Q4_K_M.gguf Q4_K_M`."
)


def resolve_source(source: str) -> tuple[Path, Path | None]:
    """(model folder, run directory or None). A run directory (config.yaml + final_model/) exports final_model."""
    from r1zero.models import resolve_model

    folder = Path(source).expanduser()
    if folder.is_dir() and (folder / "config.yaml").exists() and not (folder / "config.json").exists():
        if not (folder / "final_model" / "config.json").exists():
            raise FileNotFoundError(
                f"{folder} is a run directory without final_model/: the run has not finished (or ran with "
                "checkpoint.save_final_model=false); finish or resume it first"
            )
        return folder / "final_model", folder
    return Path(resolve_model(source)), None


def _folder_card(name: str, source: Path, results: list[ExportResult], chat_template: str | None) -> str:
    sizes = [(r.path.name, r.out_type, r.nbytes) for r in results]
    head = ["---", "library_name: gguf", "pipeline_tag: text-generation", "tags:", "  - gguf", "---", ""]
    head += [f"# {name}", "", f"GGUF files of `{source}`, written by `r1zero-export`.", ""]
    files = [r.path.name for r in results]
    return "\n".join(
        head + usage_markdown(files, chat_template=chat_template, system_prompt=None, sizes=sizes)
    )


def chat_messages(run_dir: Path | None, question: str) -> list[dict[str, str]]:
    """The conversation a run was trained on (system prompt, worked examples) ending with `question`."""
    messages: list[dict[str, str]] = []
    if run_dir is not None:
        from omegaconf import OmegaConf

        task: Any = OmegaConf.load(run_dir / "config.yaml").task
        if task.get("system_prompt"):
            messages.append({"role": "system", "content": str(task.system_prompt)})
        for user, assistant in task.get("fewshot") or []:
            messages += [
                {"role": "user", "content": str(user)},
                {"role": "assistant", "content": str(assistant)},
            ]
    return [*messages, {"role": "user", "content": question}]


def main(argv: list[str] | None = None) -> None:
    setup_environment()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("gguf").setLevel(logging.WARNING)  # the writer's own notes on every file
    archs = ", ".join(f"{k} ({k.capitalize()}ForCausalLM)" for k in ARCHS)
    parser = argparse.ArgumentParser(
        prog="r1zero-export",
        description=f"Export a model to GGUF (llama.cpp / LM Studio / Ollama). Architectures: {archs}.",
        epilog=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "source", help="a training run directory, a Hugging Face model folder, or a preset name"
    )
    parser.add_argument("--type", nargs="+", default=["f16", "q8_0"], choices=list(OUT_TYPES), help=TYPE_HELP)
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/gguf, or ./NAME-gguf)")
    parser.add_argument(
        "--name", default=None, help="file name stem and general.name (default: the folder's)"
    )
    parser.add_argument("--no-card", action="store_true", help="do not write README.md (the model card)")
    parser.add_argument(
        "--chat", default=None, metavar="TEXT",
        help="then ask each file TEXT in llama.cpp (needs the xllamacpp wheel), greedy, with the run's system "
        "prompt and worked examples in front, and print the reply",
    )  # fmt: skip
    args = parser.parse_args(argv)
    try:
        model_dir, run_dir = resolve_source(args.source)
    except FileNotFoundError as e:
        parser.error(str(e))
    name = args.name or (run_dir or model_dir).resolve().name
    out = Path(args.out) if args.out else (run_dir / "gguf" if run_dir else Path(f"{name}-gguf"))
    results = []
    for out_type in args.type:
        try:
            results.append(
                export_gguf(model_dir, out / f"{name}-{out_type.upper()}.gguf", out_type, name=name)
            )
        except ValueError as e:
            parser.error(f"{model_dir}: {e}")
    for r in results:
        print(f"{r.path}  {r.out_type.upper():5s} {r.nbytes / 1e6:8.1f} MB  {r.seconds:6.1f} s")
    from transformers import AutoTokenizer

    template = AutoTokenizer.from_pretrained(model_dir).chat_template
    if not args.no_card:
        if run_dir is not None:
            from r1zero.model_card import write_model_card

            sizes = [(r.path.name, r.out_type, r.nbytes) for r in results]
            card = write_model_card(run_dir, out, gguf_files=sizes, chat_template=template)
        else:
            card = out / "README.md"
            card.write_text(_folder_card(name, model_dir, results, template), encoding="utf-8")
        print(f"{card}  (model card)")
    if args.chat:
        from r1zero.export import llamacpp

        messages = chat_messages(run_dir, args.chat)
        for r in results:
            start = time.perf_counter()
            reply = llamacpp.chat(llamacpp.load(r.path, threads=2), messages, max_tokens=128)
            print(f"[{r.path.name}] {args.chat!r} -> {reply!r}  ({time.perf_counter() - start:.1f} s)")


if __name__ == "__main__":
    main()
