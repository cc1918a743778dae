"""Every recipe in conf/experiment/ runs one step on CPU with the model swapped for `tiny` and its sizes shrunk;
everything else (algorithm, ZeRO stage, precision, KL/reference model, DAPO filters) stays as the recipe says."""

from __future__ import annotations

import json
from dataclasses import asdict, fields
from pathlib import Path

import pytest

from r1zero.config import AlgoConfig, register_configs, to_run_config
from r1zero.train import CONF_DIR, run

# cpu_default_lora is the CPU default under its #31 name: tests/unit/test_config.py checks that the two compose to
# the same run, so the step runs once.
EXPERIMENTS = sorted(
    p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml") if p.stem != "cpu_default_lora"
)


def _write_jsonl(path: Path, rows: list[dict]) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_one_step_on_tiny(name: str, tmp_path: Path) -> None:
    from hydra import compose, initialize_config_dir

    overrides = [
        f"experiment={name}",
        "model=tiny",
        "steps=1",
        f"run_dir={tmp_path / 'run'}",
        "rollout.prompts_per_step=2",
        "rollout.group_size=2",
        "rollout.max_new_tokens=16",
        "task.num_eval=2",
        "task.num_train=16",
        "eval.every=0",
        "eval.at_start_and_end=false",
    ]
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        recipe = to_run_config(compose("config", overrides=[f"experiment={name}"]))
        # The only algo fields this test changes: the overlong buffer must fit the shrunk max_new_tokens.
        algo_overrides: dict[str, object] = {"overlong_buffer": 4} if recipe.algo.overlong_buffer else {}
        overrides += [f"algo.{key}={value}" for key, value in algo_overrides.items()]
        if recipe.task.name == "gsm8k":
            rows = [
                {"question": f"What is {i} + 1?", "answer": f"{i} + 1 = {i + 1}\n#### {i + 1}"}
                for i in range(20)
            ]
            overrides += [
                f"task.train_path={_write_jsonl(tmp_path / 'train.jsonl', rows[:16])}",
                f"task.eval_path={_write_jsonl(tmp_path / 'test.jsonl', rows[16:])}",
            ]
        if recipe.task.name == "math":
            rows = [
                {"problem": f"Compute {i}/2.", "solution": f"It is \\boxed{{\\frac{{{i}}}{{2}}}}."}
                for i in range(20)
            ]
            overrides += [
                f"task.train_path={_write_jsonl(tmp_path / 'train.jsonl', rows[:16])}",
                f"task.eval_path={_write_jsonl(tmp_path / 'test.jsonl', rows[16:])}",
            ]
        cfg = to_run_config(compose("config", overrides=overrides))
    # The algorithm is the recipe's: every field equals the recipe's, except the overridden ones, which hold the
    # override values (fields added to AlgoConfig later are covered too).
    expected_algo = {f.name: getattr(recipe.algo, f.name) for f in fields(AlgoConfig)} | algo_overrides
    assert asdict(cfg.algo) == expected_algo
    assert cfg.learner.zero_stage == recipe.learner.zero_stage
    summary = run(cfg)
    assert summary["steps_done"] == 1
    row = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    # 2 prompts x 2 samples per generation round; dynamic sampling (DAPO) may take up to 1 + max_sampling_rounds.
    rounds = row["algo/sampling_rounds"]
    assert row["rollout/num_completions"] == 4 * rounds
    assert rounds == 1 or (cfg.algo.dynamic_sampling and rounds <= 1 + cfg.algo.max_sampling_rounds)
    assert row["sync/max_abs_logprob_diff"] < cfg.sync_threshold
