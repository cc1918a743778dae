"""r1zero-eval: hand-checked pass@k / maj@k through a scripted engine, then the tiny model end to end on vLLM."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from r1zero.config import ModelConfig, RolloutConfig, TaskConfig
from r1zero.eval import (
    CONF_DIR,
    EvalRunConfig,
    evaluate_model,
    load_eval_examples,
    register_configs,
    resolve_eval_model,
    run_eval,
    to_eval_config,
)
from r1zero.passk import maj_at_k, pass_at_k
from r1zero.rollout.base import SamplingSettings
from r1zero.tasks.templates import build_prompt
from r1zero.types import Completion, Example, Prompt

# ---------------------------------------------------------------------------------------------- scripted engine

GOOD = " 2 + 3 = 5. wait, let me check: yes </think> <answer>{}</answer>"  # format ok, two reflection matches
SCRIPT = {
    # problem 0, gold 5: answers 5 7 5 7 7 -> c = 2 of n = 5
    0: [GOOD.format(5), GOOD.format(7), GOOD.format(5), GOOD.format(7), " </think> <answer>7</answer>"],
    # problem 1, gold 4: no correct answer; two samples have no answer at all (they do not vote)
    1: [GOOD.format(1), " no idea", GOOD.format(2), " loop loop", GOOD.format(2)],
}


class ScriptedEngine:
    """A RolloutEngine that returns SCRIPT[prompt index] (one word = one token)."""

    policy_version = 0
    tokenizer = None

    def generate(self, prompts: Sequence[Prompt], sampling: SamplingSettings) -> list[Completion]:
        out = []
        for i in range(len(prompts)):
            assert len(SCRIPT[i]) == sampling.n
            for text in SCRIPT[i]:
                tokens = list(range(len(text.split())))
                out.append(Completion(i, [1, 2], tokens, None, text, "stop", 0))
        return out


def test_evaluate_model_hand_computed() -> None:
    task = TaskConfig(name="arithmetic")
    examples = [Example("What is 2 + 3?", "5", "u0"), Example("What is 1 + 3?", "4", "u1")]
    prompts = [build_prompt(e, template="r1zero") for e in examples]
    metrics, records = evaluate_model(
        ScriptedEngine(), prompts, task, n=5, temperature=1.0, max_new_tokens=64, seed=0, ks=[1, 2, 5, 9]
    )
    # problem 0: n=5, c=2 -> pass@1 .4, pass@2 1 - C(3,2)/C(5,2) = .7, pass@5 1.
    #            votes: k=1 "5" -> right; k=2 "5" vs "7" tie, "5" first -> right; k=5 "7" 3-2 -> wrong.
    # problem 1: c=0 -> pass@k 0, maj@k 0.
    assert records[0]["num_correct"] == 2 and records[1]["num_correct"] == 0
    assert records[0]["pass@k"] == pytest.approx({"1": 0.4, "2": 0.7, "5": 1.0})
    assert records[0]["maj@k"] == {"1": 1.0, "2": 1.0, "5": 0.0}
    assert records[0]["majority_answer"] == "7" and records[1]["majority_answer"] == "2"
    assert metrics["eval/pass@1"] == pytest.approx(0.2)  # (.4 + 0) / 2
    assert metrics["eval/pass@2"] == pytest.approx(0.35)  # (.7 + 0) / 2
    assert metrics["eval/pass@5"] == pytest.approx(0.5)
    assert "eval/pass@9" not in metrics  # k > n is dropped
    assert metrics["eval/maj@1"] == 0.5 and metrics["eval/maj@2"] == 0.5 and metrics["eval/maj@5"] == 0.0
    assert metrics["eval/accuracy"] == pytest.approx(2 / 10)
    # format: the 7 GOOD texts and " </think> <answer>7</answer>" (with the "<think>" prefill) are well formed
    assert metrics["eval/format_rate"] == pytest.approx(8 / 10)
    # reflection: 7 GOOD texts x 2 matches ("wait", "let me check") = 14 over all tokens
    tokens = sum(len(t.split()) for texts in SCRIPT.values() for t in texts)
    assert metrics["eval/length_mean"] == pytest.approx(tokens / 10)
    assert metrics["eval/reflection_per_1k_tokens"] == pytest.approx(1000 * 14 / tokens)
    assert metrics["eval/reflection_frac"] == pytest.approx(7 / 10)
    assert records[0]["samples"][0]["text"].startswith("<think>")  # the prefill is re-attached
    assert metrics["eval/num_problems"] == 2.0 and metrics["eval/n"] == 5.0


# ---------------------------------------------------------------------------------------------- config, data


def test_config_composes_from_conf_eval_yaml() -> None:
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        dict_cfg = compose("eval", overrides=["task=arithmetic", "n=8", "k=[1,8]", "temperature=0.6"])
    cfg = to_eval_config(dict_cfg)
    assert isinstance(cfg.task, TaskConfig) and cfg.task.name == "arithmetic"
    assert cfg.model.name == "tiny" and cfg.rollout.engine == "vllm"
    assert (cfg.n, cfg.k, cfg.temperature) == (8, [1, 8], 0.6)
    assert cfg.out_dir == "runs/eval/arithmetic-test-seed0"


def test_config_validation() -> None:
    EvalRunConfig(temperature=0.0, n=1)  # greedy
    with pytest.raises(ValueError, match="greedy"):
        EvalRunConfig(temperature=0.0, n=2)
    with pytest.raises(ValueError, match="split"):
        EvalRunConfig(split="val")
    with pytest.raises(ValueError, match="k must"):
        EvalRunConfig(k=[0])


def _countdown_file(path: Path, rows: list[tuple[list[int], int]]) -> str:
    path.write_text("".join(json.dumps({"nums": nums, "target": t}) + "\n" for nums, t in rows))
    return str(path)


def test_held_out_split_is_checked_against_train(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    generated = EvalRunConfig(task=TaskConfig(name="countdown", num_train=50), num_problems=3)
    assert len(load_eval_examples(generated)) == 3
    train = _countdown_file(tmp_path / "train.jsonl", [([1, 2, 3], 6), ([4, 5, 6], 15)])
    test = _countdown_file(tmp_path / "test.jsonl", [([7, 8, 9], 24), ([4, 5, 6], 15)])  # one row shared
    overlapping = EvalRunConfig(
        task=TaskConfig(name="countdown", train_path=train, eval_path=test), num_problems=2
    )
    with pytest.raises(ValueError, match="also occur in train"):
        load_eval_examples(overlapping)
    only_eval = EvalRunConfig(task=TaskConfig(name="countdown", eval_path=test), num_problems=2)
    with caplog.at_level(logging.WARNING, logger="r1zero"):
        assert len(load_eval_examples(only_eval)) == 2
    assert "not checked" in caplog.text


def test_resolve_eval_model_accepts_a_run_directory(tmp_path: Path) -> None:
    (tmp_path / "final_model").mkdir()
    (tmp_path / "final_model" / "config.json").write_text("{}")
    assert resolve_eval_model(str(tmp_path)) == str((tmp_path / "final_model").resolve())


# ---------------------------------------------------------------------------------------------- the tiny model, vLLM


@pytest.fixture(scope="module")
def vllm_engine(tiny_model_path: str) -> Iterator:
    pytest.importorskip("vllm")
    from r1zero.rollout.engines import build_engine

    engine = build_engine(tiny_model_path, RolloutConfig(engine="vllm", max_new_tokens=8), seed=0)
    yield engine
    engine.close()


def _cfg(model: str, out_dir: Path, **kw) -> EvalRunConfig:
    base = dict(
        model=ModelConfig(name=model), task=TaskConfig(name="countdown", num_train=50), num_problems=4, n=2,
        k=[1, 2], max_new_tokens=8, out_dir=str(out_dir),
    )  # fmt: skip
    return EvalRunConfig(**(base | kw))


def test_run_eval_end_to_end_writes_consistent_files(tiny_model_path: str, tmp_path: Path) -> None:
    pytest.importorskip("vllm")
    # engine=None: run_eval builds (and closes) its own vLLM engine from cfg.rollout, as the CLI does;
    # k=4 > n=2 is skipped with a warning
    results = run_eval(_cfg(tiny_model_path, tmp_path, k=[1, 2, 4]), engine=None)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["metrics"] == pytest.approx(results["metrics"]) and saved["ks"] == [1, 2]
    records = [json.loads(line) for line in (tmp_path / "completions.jsonl").read_text().splitlines()]
    assert len(records) == 4 and all(len(r["samples"]) == 2 for r in records)
    for r in records:
        correct = [s["correct"] for s in r["samples"]]
        assert r["num_correct"] == sum(correct)
        for k in (1, 2):
            assert r["pass@k"][str(k)] == pytest.approx(pass_at_k(2, sum(correct), k))
            assert r["maj@k"][str(k)] == maj_at_k([s["answer"] for s in r["samples"]], correct, k)
        assert all(s["length"] <= 8 and s["text"].startswith("<think>") for s in r["samples"])
    metrics = saved["metrics"]
    for k in (1, 2):
        assert metrics[f"eval/pass@{k}"] == pytest.approx(sum(r["pass@k"][str(k)] for r in records) / 4)
        assert metrics[f"eval/maj@{k}"] == pytest.approx(sum(r["maj@k"][str(k)] for r in records) / 4)
    all_correct = [s["correct"] for r in records for s in r["samples"]]
    assert (
        metrics["eval/accuracy"]
        == pytest.approx(sum(all_correct) / 8)
        == pytest.approx(metrics["eval/pass@1"])
    )
    assert metrics["eval/length_mean"] == pytest.approx(
        sum(s["length"] for r in records for s in r["samples"]) / 8
    )


def test_same_seed_same_samples_and_greedy(vllm_engine, tiny_model_path: str, tmp_path: Path) -> None:
    cfg = _cfg(tiny_model_path, tmp_path)
    prompts = [build_prompt(e, template="r1zero") for e in load_eval_examples(cfg)]
    task = cfg.task

    def texts(**kw) -> list[str]:
        args = dict(n=2, temperature=1.0, max_new_tokens=8, seed=3) | kw
        _, records = evaluate_model(vllm_engine, prompts, task, **args)
        return [s["text"] for r in records for s in r["samples"]]

    first = texts()
    assert texts() == first
    assert texts(seed=4) != first
    greedy = texts(n=1, temperature=0.0, seed=1)
    assert texts(n=1, temperature=0.0, seed=2) == greedy  # greedy ignores the seed
