"""How to run an exported model locally: llama.cpp, LM Studio and Ollama instructions as markdown lines, for the
model card and `r1zero-export`'s closing message.

Ollama reads GGUF files but takes its prompt format from a Modelfile TEMPLATE written in Go's template language,
not from the Jinja template in the file. For ChatML templates (every r1zero preset and recipe: the tiny/small
presets, SmolLM2, Qwen2.5) `ollama_modelfile` writes the equivalent Go template; the system prompt and the worked
examples training put in front of each question travel as SYSTEM and MESSAGE lines.
"""

from __future__ import annotations

from collections.abc import Sequence

# ChatML in Ollama's Go template language: each message "<|im_start|>{role}\n{content}<|im_end|>\n", then the
# assistant header the reply follows, as in the Jinja templates of the presets.
CHATML_GO_TEMPLATE = "{{- range .Messages }}<|im_start|>{{ .Role }}\n{{ .Content }}<|im_end|>\n{{ end }}<|im_start|>assistant\n"


def is_chatml(chat_template: str | None) -> bool:
    return bool(chat_template) and "<|im_start|>" in chat_template and "<|im_end|>" in chat_template  # type: ignore[operator]


def ollama_modelfile(
    gguf_name: str,
    chat_template: str | None,
    system_prompt: str | None,
    fewshot: Sequence[tuple[str, str]] = (),
) -> str:
    """An Ollama Modelfile for `gguf_name` that formats prompts as training did (greedy, stop at <|im_end|>)."""
    lines = [f"FROM ./{gguf_name}"]
    if is_chatml(chat_template):
        lines += [f'TEMPLATE """{CHATML_GO_TEMPLATE}"""', 'PARAMETER stop "<|im_end|>"']
    else:
        lines += [
            "# The chat template in the file is not ChatML: write TEMPLATE by hand from the Jinja template"
        ]
        lines += ["# (`tokenizer.chat_template` in the GGUF metadata)."]
    lines.append("PARAMETER temperature 0")
    if system_prompt:
        lines.append(f'SYSTEM """{system_prompt}"""')
    for user, assistant in fewshot:
        lines += [f'MESSAGE user """{user}"""', f'MESSAGE assistant """{assistant}"""']
    return "\n".join(lines)


def usage_markdown(
    files: Sequence[str],
    *,
    chat_template: str | None,
    system_prompt: str | None,
    fewshot: Sequence[tuple[str, str]] = (),
    sizes: Sequence[tuple[str, str, int]] = (),
) -> list[str]:
    """Markdown lines: the files, then llama.cpp, LM Studio and Ollama. Without GGUF files: transformers, and how
    to make GGUF files."""
    out = []
    if not files:
        out += ["## Use it", "", "```python", "from transformers import AutoModelForCausalLM, AutoTokenizer",
                'model = AutoModelForCausalLM.from_pretrained("THIS_FOLDER")',
                'tokenizer = AutoTokenizer.from_pretrained("THIS_FOLDER")  # chat template included', "```", "",
                "For llama.cpp, LM Studio or Ollama: `r1zero-export RUN_DIR --type q8_0` writes GGUF files and a "
                "card with the commands.", ""]  # fmt: skip
        return out
    pick = next((f for f in files if "Q8_0" in f), files[0])
    if sizes:
        out += ["## Files", "", "| file | type | size |", "| --- | --- | --- |"]
        out += [f"| {name} | {kind.upper()} | {size / 1e6:.1f} MB |" for name, kind, size in sizes] + [""]
    sys_arg = f' -sys "{system_prompt}"' if system_prompt else ""
    out += ["## Run it locally", "", "llama.cpp (`--jinja` runs the chat template stored in the file):", "",
            "```bash", f"llama-cli -m {pick} --jinja{sys_arg} --temp 0",
            f"llama-server -m {pick} --jinja --port 8080   # OpenAI-compatible API on :8080", "```", "",
            f"LM Studio: `lms import {pick}` (or drag the file into My Models), load it, and put the system prompt "
            "below in the chat's system prompt box; LM Studio formats turns with the file's chat template.", ""]  # fmt: skip
    if system_prompt or fewshot:
        out += [
            "Training put this system prompt and these worked examples before every question; give them too:",
            "",
        ]
        out += [f"- system: `{system_prompt}`"] if system_prompt else []
        out += [f"- user: `{u}` / assistant: `{a}`" for u, a in fewshot] + [""]
    out += ["Ollama: save as `Modelfile` beside the file, then `ollama create r1zero-model -f Modelfile` and "
            "`ollama run r1zero-model`:", "", "```", ollama_modelfile(pick, chat_template, system_prompt, fewshot),
            "```", ""]  # fmt: skip
    return out
