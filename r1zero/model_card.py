"""A Hugging Face model card (README.md) for a trained run, written beside the weights, ready for a hub upload.

Built from what a run directory holds: config.yaml (the resolved config), summary.json (steps, reward and
held-out accuracy history, cost), metrics.jsonl (the reward curve, drawn into reward_curve.png beside the card)
and .hydra/overrides.yaml (the command line that reproduces the run). Anything missing is said, not invented.

    write_model_card("runs/cpu_s0", "runs/cpu_s0/final_model")           # what the end of a run does
    write_model_card("runs/cpu_s0", "runs/cpu_s0/gguf", gguf_files=[...]) # what r1zero-export does
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1zero.export.usage import usage_markdown

IMAGE = "reward_curve.png"


@dataclass(frozen=True)
class Base:
    """A base model r1zero knows: its hub id and licence (Hugging Face metadata spelling)."""

    hub_id: str | None
    license: str  # apache-2.0 | other
    license_name: str | None = None
    license_link: str | None = None
    note: str = ""


KNOWN_BASES: dict[str, Base] = {
    "smollm2-135m": Base("HuggingFaceTB/SmolLM2-135M-Instruct", "apache-2.0"),
    "tiny": Base(
        None, "apache-2.0", note="a random-init test model built locally by r1zero (not pretrained)"
    ),
    "small": Base(
        None, "apache-2.0", note="a random-init test model built locally by r1zero (not pretrained)"
    ),
    "Qwen/Qwen2.5-0.5B": Base("Qwen/Qwen2.5-0.5B", "apache-2.0"),
    "Qwen/Qwen2.5-1.5B": Base("Qwen/Qwen2.5-1.5B", "apache-2.0"),
    "Qwen/Qwen2.5-3B": Base(
        "Qwen/Qwen2.5-3B",
        "other",
        "qwen-research",
        "https://huggingface.co/Qwen/Qwen2.5-3B/blob/main/LICENSE",
    ),
    "Qwen/Qwen2.5-Math-7B": Base("Qwen/Qwen2.5-Math-7B", "apache-2.0"),
}


def base_of(model_name: str) -> Base:
    """The base model behind `model.name`: a known preset or hub id, else a hub id or path of unknown licence."""
    if model_name in KNOWN_BASES:
        return KNOWN_BASES[model_name]
    local = model_name.startswith((".", "/", "~")) or Path(model_name).expanduser().exists()
    return Base(
        None if local else model_name,
        "other",
        note="licence unknown to r1zero: check the base model's own card and licence before sharing",
    )


def _read_yaml(path: Path) -> Any:
    if not path.exists():
        return None
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.load(path), resolve=False)


def read_run(run_dir: Path, summary: dict[str, Any] | None = None) -> dict[str, Any]:
    """config (dict), summary (dict), metrics rows, overrides (list or None) of a run directory."""
    from r1zero.report import read_jsonl

    config = _read_yaml(run_dir / "config.yaml")
    if not isinstance(config, dict):
        raise FileNotFoundError(f"{run_dir}/config.yaml not found: not a training run directory")
    if summary is None and (run_dir / "summary.json").exists():
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    overrides = _read_yaml(run_dir / ".hydra" / "overrides.yaml")
    return {
        "config": config,
        "summary": summary or {},
        "rows": read_jsonl(run_dir / "metrics.jsonl"),
        "samples": read_jsonl(run_dir / "samples.jsonl"),
        "overrides": overrides if isinstance(overrides, list) else None,
    }


def reproduce_command(config: dict[str, Any], overrides: list[str] | None) -> str:
    """The command that reproduces the run: the recorded overrides on top of the defaults, exactly; without
    them, the experiment, seed and steps (the card then says config.yaml holds every other value)."""
    if overrides is not None:
        return " ".join(["r1zero-train", *(shlex.quote(str(o)) for o in overrides)])
    parts = [f"experiment={config['experiment']}"] if config.get("experiment") else []
    parts += [
        f"model.name={config['model']['name']}",
        f"seed={config.get('seed', 0)}",
        f"steps={config['steps']}",
    ]
    return " ".join(["r1zero-train", *map(shlex.quote, parts)])


def held_out(
    summary: dict[str, Any], rows: list[dict[str, Any]]
) -> tuple[tuple[int, float], tuple[int, float]] | None:
    """((step, accuracy) first, (step, accuracy) last) of eval/accuracy, from summary.json or else metrics.jsonl."""
    from r1zero.report import series

    evals = [e for e in summary.get("history", {}).get("eval", []) if "eval/accuracy" in e]
    if len(evals) >= 2:
        return (evals[0]["step"], evals[0]["eval/accuracy"]), (evals[-1]["step"], evals[-1]["eval/accuracy"])
    steps, values = series(rows, "eval/accuracy")
    if len(steps) >= 2:
        return (steps[0], values[0]), (steps[-1], values[-1])
    return None


def _describe(config: dict[str, Any]) -> dict[str, str]:
    task, algo, rollout, learner = config["task"], config["algo"], config["rollout"], config["learner"]
    kwargs = ", ".join(f"{k}={v}" for k, v in (task.get("kwargs") or {}).items())
    template = (
        "the tokenizer's chat template" if task["template"] == "chat" else "the R1-Zero plain-text template"
    )
    shots = len(task.get("fewshot") or [])
    fmt_weight = task.get("format_weight")
    kl = f"KL to the base model {algo['kl_coef']} ({algo['kl_kind']})" if algo["kl_coef"] else "no KL term"
    return {
        "task": f"`{task['name']}`"
        + (f" ({kwargs})" if kwargs else "")
        + f", prompted with {template}"
        + (f", system prompt `{task['system_prompt']}`" if task.get("system_prompt") else "")
        + (f", {shots} worked example{'s' * (shots != 1)} before the question" if shots else ""),
        "reward": f"rule-based: {task['correct_weight']} for a correct answer + "
        + (f"{fmt_weight}" if fmt_weight is not None else "the task's default weight")
        + f" for the format (`{task['format_kind']}`); no learned reward model",
        "algorithm": f"GRPO ({algo['advantage_normalize']}-normalised advantages, `{algo['loss_aggregation']}` loss, "
        f"clip {algo['clip_low']}/{algo['clip_high']}, {kl}, {algo['num_iterations']} pass per batch)",
        "hyperparameters": f"lr {learner['lr']} ({learner['lr_schedule']}), {rollout['prompts_per_step']} prompts x "
        f"{rollout['group_size']} samples per step, at most {rollout['max_new_tokens']} new tokens, temperature "
        f"{rollout['temperature']}, learner {learner['precision']} ({learner['backend']}, ZeRO-{learner['zero_stage']}), "
        f"seed {config.get('seed', 0)}",
    }


def fence(text: str) -> str:
    """A markdown code block that no run of backticks inside `text` can close early (model text is hostile).
    Example: "a ``` b" -> a block fenced with 4 backticks."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    ticks = "`" * max(3, longest + 1)
    return f"{ticks}text\n{text}\n{ticks}"


def averaged_steps(history: dict[str, Any]) -> int:
    """How many steps the run's "first" / "last" train reward each average (`r1zero.train.reward_windows` keeps
    them in history["first_steps"]: min(window, steps run)); 1 for a summary written before the windows."""
    return len(history.get("first_steps", [])) or 1


def build_model_card(
    run_dir: str | Path,
    *,
    summary: dict[str, Any] | None = None,
    gguf_files: Sequence[tuple[str, str, int]] = (),
    image: str | None = IMAGE,
    chat_template: str | None = None,
) -> str:
    """The README.md text. gguf_files: (file name, type, bytes) rows for the files beside the card."""
    run = read_run(Path(run_dir), summary)
    config, summary = run["config"], run["summary"]
    base = base_of(config["model"]["name"])
    facts = _describe(config)
    meta = [f"license: {base.license}"]
    meta += (
        [f"license_name: {base.license_name}", f"license_link: {base.license_link}"]
        if base.license_name
        else []
    )
    meta += [f"base_model: {base.hub_id}", "base_model_relation: finetune"] if base.hub_id else []
    meta += ["library_name: " + ("gguf" if gguf_files else "transformers"), "pipeline_tag: text-generation"]
    meta += ["tags:", *(f"  - {t}" for t in ("r1zero", "grpo", "reinforcement-learning", "reasoning"))]
    meta += ["  - gguf"] if gguf_files else []
    steps_done = summary.get("steps_done", "?")
    base_text = f"`{base.hub_id}`" if base.hub_id else f"`{config['model']['name']}`"
    rows = [
        (
            "base model",
            base_text
            + f" (licence: {base.license_name or base.license})"
            + (f"; {base.note}" if base.note else ""),
        ),
        *facts.items(),
        ("steps", f"{steps_done} of {config['steps']}"),
    ]
    accuracy = held_out(summary, run["rows"])
    if accuracy:
        (s0, a0), (s1, a1) = accuracy
        n = config["task"].get("num_eval", "?")
        rows.append(
            ("held-out accuracy", f"{a0:.1%} (step {s0}) -> {a1:.1%} (step {s1}), greedy, {n} problems")
        )
    else:
        rows.append(("held-out accuracy", "not measured in this run (eval.at_start_and_end / eval.every)"))
    history = summary.get("history", {})
    first, last = history.get("first", {}), history.get("last", {})
    if "reward/mean" in first and "reward/mean" in last:
        k = averaged_steps(history)
        ends = ("first step", "last step") if k == 1 else (f"first {k} steps", f"last {k} steps")
        rows.append(
            (
                "train reward",
                f"{first['reward/mean']:.3f} ({ends[0]}) -> {last['reward/mean']:.3f} ({ends[1]})",
            )
        )
    cost = summary.get("cost") or {}
    if "cost/usd" in cost:
        unit = "GPU-hours" if cost.get("cost/gpu") else "CPU core-hours"
        rows.append(
            (
                "compute",
                f"{cost['cost/device_hours']:.3g} {unit}, ${cost['cost/usd']:.3g} at ${cost['cost/usd_per_device_hour']:g}/h",
            )
        )
    table = "\n".join(["| | |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows)])
    out = ["---", *meta, "---", "", f"# {Path(run_dir).resolve().name}", ""]
    out += [f"A reasoner trained from {base_text} by pure reinforcement learning (GRPO, as in DeepSeek R1-Zero: "
            f"no supervised fine-tuning) with r1zero.", "", table, ""]  # fmt: skip
    if image:
        out += ["## Reward curve", "", f"![train reward and held-out accuracy per step]({image})", ""]
    if run["samples"]:
        out += ["## How training formatted a prompt", "", "Chat with the same system prompt and worked example to",
                "ask the model the way it was trained:", "", fence(str(run["samples"][0].get("prompt", ""))), ""]  # fmt: skip
    out += usage_markdown(
        [f for f, _, _ in gguf_files], chat_template=chat_template, system_prompt=config["task"].get("system_prompt"),
        fewshot=[tuple(t) for t in config["task"].get("fewshot") or []], sizes=gguf_files,
    )  # fmt: skip
    out += ["## Reproduce", "", "With the r1zero version that made the run:", "", "```bash",
            reproduce_command(config, run["overrides"]), "```", ""]  # fmt: skip
    if run["overrides"] is None:
        out += [
            "(no .hydra/overrides.yaml in the run: config.yaml, the resolved config, holds every value)",
            "",
        ]
    out += ["## Limitations", "", "Trained on one narrow synthetic task with a rule-based reward: it is not a general "
            "assistant, and its answers outside that task are the base model's.", ""]  # fmt: skip
    return "\n".join(out)


def write_model_card(
    run_dir: str | Path,
    out_dir: str | Path,
    *,
    summary: dict[str, Any] | None = None,
    gguf_files: Sequence[tuple[str, str, int]] = (),
    chat_template: str | None = None,
) -> Path:
    """Write out_dir/README.md (and out_dir/reward_curve.png when the metrics allow); returns the README path."""
    from r1zero.report import plot_reward, render_png

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    png, _ = render_png(plot_reward, read_run(run_dir, summary)["rows"], [])
    if png is not None:
        (out_dir / IMAGE).write_bytes(png)
    text = build_model_card(
        run_dir,
        summary=summary,
        gguf_files=gguf_files,
        image=IMAGE if png else None,
        chat_template=chat_template,
    )
    path = out_dir / "README.md"
    path.write_text(text, encoding="utf-8")
    return path
