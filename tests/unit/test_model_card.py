"""The model card of a (synthetic) run directory: metadata a hub accepts, the run's facts as given, no invention."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from r1zero.model_card import base_of, build_model_card, fence, reproduce_command, write_model_card

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _run_dir(
    tmp_path: Path, *, model: str = "smollm2-135m", overrides: bool = True, evals: bool = True
) -> Path:
    from omegaconf import OmegaConf

    from r1zero.config import RunConfig

    cfg = OmegaConf.structured(RunConfig)
    cfg.model.name = model
    cfg.task.name, cfg.task.template, cfg.task.format_kind = "arithmetic", "chat", "answer_only"
    cfg.task.system_prompt = "Give the answer inside <answer></answer> tags."
    cfg.task.fewshot = [["What is 12 + 9?", "12 + 9 = 21 <answer>21</answer>"]]
    cfg.task.format_weight, cfg.steps, cfg.seed, cfg.experiment = 0.1, 60, 1, "cpu_default"
    cfg.learner.lr, cfg.algo.loss_aggregation = 1e-5, "token_mean"
    run = tmp_path / "cpu_s1"
    run.mkdir()
    (run / "config.yaml").write_text(OmegaConf.to_yaml(cfg))
    history = {"first": {"reward/mean": 0.25}, "last": {"reward/mean": 0.575}}
    if evals:
        history["eval"] = [{"step": 0, "eval/accuracy": 0.203125}, {"step": 60, "eval/accuracy": 0.53125}]
    cost = {
        "cost/device_hours": 0.2739,
        "cost/usd": 0.013694,
        "cost/usd_per_device_hour": 0.05,
        "cost/gpu": 0.0,
    }
    (run / "summary.json").write_text(json.dumps({"steps_done": 60, "history": history, "cost": cost}))
    rows = [{"step": s, "reward/mean": 0.2 + s / 100, "reward/accuracy": s / 100} for s in range(1, 61)]
    (run / "metrics.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    prompt = "<|im_start|>system\nGive the answer```` inside tags<|im_end|>\n<|im_start|>user\nWhat is 3 + 4?<|im_end|>\n"
    (run / "samples.jsonl").write_text(json.dumps({"step": 5, "prompt": prompt, "completion": "7"}) + "\n")
    if overrides:
        (run / ".hydra").mkdir()
        (run / ".hydra" / "overrides.yaml").write_text(
            "- seed=1\n- run_dir=runs/cpu_s1\n- task.system_prompt='a b'\n"
        )
    return run


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_card_for_a_finished_run(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    card = build_model_card(
        run, gguf_files=[("cpu_s1-Q8_0.gguf", "q8_0", 144_960_000)], chat_template="<|im_start|><|im_end|>"
    )
    meta = _front_matter(card)
    assert meta["license"] == "apache-2.0"
    assert meta["base_model"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert meta["library_name"] == "gguf" and meta["pipeline_tag"] == "text-generation"
    assert {"r1zero", "grpo", "gguf"} <= set(meta["tags"])
    # the run's own numbers, formatted: 0.203125 -> 20.3%, 0.53125 -> 53.1%
    assert "| held-out accuracy | 20.3% (step 0) -> 53.1% (step 60), greedy, 64 problems |" in card
    assert "| train reward | 0.250 (first step) -> 0.575 (last step) |" in card
    assert "| steps | 60 of 60 |" in card
    assert "0.274 CPU core-hours, $0.0137 at $0.05/h" in card
    assert "lr 1e-05 (constant), 4 prompts x 8 samples per step" in card
    assert "`token_mean` loss" in card and "no KL term" in card
    assert "0.1 for the format (`answer_only`)" in card
    assert "system prompt `Give the answer inside <answer></answer> tags.`, 1 worked example" in card
    assert (
        "r1zero-train seed=1 run_dir=runs/cpu_s1 'task.system_prompt='\"'\"'a b'\"'\"''" in card
    )  # shell-quoted
    assert "| cpu_s1-Q8_0.gguf | Q8_0 | 145.0 MB |" in card
    assert "llama-cli -m cpu_s1-Q8_0.gguf --jinja" in card
    assert 'MESSAGE assistant """12 + 9 = 21 <answer>21</answer>"""' in card
    assert "![train reward and held-out accuracy per step](reward_curve.png)" in card
    assert (
        "`````text\n<|im_start|>system\nGive the answer```` inside" in card
    )  # a fence the prompt cannot close


def test_missing_pieces_are_said_not_invented(tmp_path: Path) -> None:
    run = _run_dir(tmp_path, model="/data/my-base", overrides=False, evals=False)
    card = build_model_card(run, image=None)
    meta = _front_matter(card)
    assert meta["license"] == "other" and "base_model" not in meta
    assert meta["library_name"] == "transformers"
    assert "licence unknown to r1zero" in card
    assert "held-out accuracy | not measured in this run" in card
    assert "r1zero-train experiment=cpu_default model.name=/data/my-base seed=1 steps=60" in card
    assert "no .hydra/overrides.yaml" in card
    assert "reward_curve.png" not in card
    assert "r1zero-export RUN_DIR" in card  # no GGUF files: how to make them


def test_write_model_card_draws_the_reward_curve(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    path = write_model_card(run, run / "final_model")
    assert path == run / "final_model" / "README.md"
    assert (run / "final_model" / "reward_curve.png").read_bytes().startswith(PNG_SIGNATURE)
    assert "reward_curve.png" in path.read_text()


def test_not_a_run_directory(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"config\.yaml"):
        build_model_card(tmp_path)


@pytest.mark.parametrize(
    "name,license,hub",
    [
        ("Qwen/Qwen2.5-3B", "other", "Qwen/Qwen2.5-3B"),
        ("Qwen/Qwen2.5-0.5B", "apache-2.0", "Qwen/Qwen2.5-0.5B"),
        ("tiny", "apache-2.0", None),
        ("someone/unknown-model", "other", "someone/unknown-model"),
    ],
)
def test_base_models(name: str, license: str, hub: str | None) -> None:
    base = base_of(name)
    assert (base.license, base.hub_id) == (license, hub)


def test_fence_and_reproduce() -> None:
    assert fence("plain") == "```text\nplain\n```"
    assert fence("a ``` b").startswith("````text\n")
    assert (
        reproduce_command({"steps": 5, "model": {"name": "tiny"}}, None)
        == "r1zero-train model.name=tiny seed=0 steps=5"
    )


def test_train_reward_windows_average_each_end_of_the_run() -> None:
    """Hand-computed: window 2 over steps with reward/mean 0, 1, 0.5, 0.25 and reward/accuracy 0, 1, 1, 0."""
    from r1zero.train import format_summary, reward_windows

    history: dict = {}
    for mean, acc in ((0.0, 0.0), (1.0, 1.0), (0.5, 1.0), (0.25, 0.0)):
        reward_windows(history, {"reward/mean": mean, "reward/accuracy": acc}, window=2)
    assert history["first"] == {"reward/accuracy": 0.5, "reward/mean": 0.5}  # steps 1-2
    assert history["last"] == {"reward/accuracy": 0.5, "reward/mean": 0.375}  # steps 3-4
    summary = {"run_dir": "/r", "steps_done": 4, "history": history}
    assert (
        "train reward  0.500 -> 0.375   accuracy 0.500 -> 0.500   (means of the first and the last 2 steps)"
        in (format_summary(summary))
    )


def test_card_names_the_reward_windows(tmp_path: Path) -> None:
    run = _run_dir(tmp_path)
    summary = json.loads((run / "summary.json").read_text())
    summary["history"]["first_steps"] = [{"reward/mean": 0.25}] * 10  # r1zero.train.reward_windows' 10 rows
    (run / "summary.json").write_text(json.dumps(summary))
    card = build_model_card(run, gguf_files=[], chat_template=None)
    assert "| train reward | 0.250 (first 10 steps) -> 0.575 (last 10 steps) |" in card
