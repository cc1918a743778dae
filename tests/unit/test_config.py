"""Config schema: validation messages name the field and the allowed values; every conf file composes."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from r1zero.config import (
    AlgoConfig,
    LearnerConfig,
    RolesConfig,
    RolloutConfig,
    RunConfig,
    TaskConfig,
    register_configs,
    to_run_config,
)

CONF = Path(__file__).resolve().parents[2] / "conf"


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda: RolloutConfig(group_size=1), r"rollout\.group_size must be >= 2"),
        (lambda: RolloutConfig(engine="sglang"), r"rollout\.engine must be one of vllm, hf; got 'sglang'"),
        (lambda: RolloutConfig(temperature=0), r"rollout\.temperature must be > 0"),
        (lambda: AlgoConfig(clip_low=1.5), r"algo\.clip_low must be in \[0, 1\)"),
        (lambda: AlgoConfig(loss_aggregation="mean"), r"algo\.loss_aggregation must be one of token_mean"),
        (lambda: AlgoConfig(kl_coef=-1), r"algo\.kl_coef must be >= 0"),
        (lambda: LearnerConfig(zero_stage=4), r"learner\.zero_stage must be one of 0, 1, 2, 3; got 4"),
        (lambda: LearnerConfig(precision="fp8"), r"learner\.precision must be one of fp32, bf16"),
        (lambda: TaskConfig(template="alpaca"), r"task\.template must be one of r1zero, chat"),
        (
            lambda: TaskConfig(name="sudoku"),
            r"task\.name must be one of countdown, arithmetic, gsm8k, math, reasoning_gym; got 'sudoku'",
        ),
        (
            lambda: TaskConfig(format_kind="xml"),
            r"task\.format_kind must be one of think_answer, answer_only",
        ),
        (
            lambda: RolloutConfig(dtype="int8"),
            r"rollout\.dtype must be one of float32, bfloat16, float16, auto",
        ),
        (lambda: AlgoConfig(kl_kind="k4"), r"algo\.kl_kind must be one of k1, k2, k3; got 'k4'"),
        (
            lambda: AlgoConfig(advantage_normalize="rank"),
            r"algo\.advantage_normalize must be one of group, batch",
        ),
        (
            lambda: LearnerConfig(lr_schedule="step"),
            r"learner\.lr_schedule must be one of constant, cosine, linear",
        ),
        (
            lambda: TaskConfig(fewshot=[["only a question"]]),
            r"task\.fewshot\[0\] must be a \[user, assistant\] pair",
        ),
        (lambda: RunConfig(steps=0), r"steps must be >= 1"),
        (
            lambda: RunConfig(rollout=RolloutConfig(max_new_tokens=64), algo=AlgoConfig(overlong_buffer=64)),
            r"algo\.overlong_buffer \(64\) must be < rollout\.max_new_tokens \(64\)",
        ),
    ],
)
def test_bad_values_name_the_field(build, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        build()


def _compose(*overrides: str):
    from hydra import compose, initialize_config_dir

    register_configs()
    with initialize_config_dir(config_dir=str(CONF), version_base=None):
        return compose("config", overrides=list(overrides))


def test_defaults_compose_to_a_typed_config() -> None:
    cfg = to_run_config(_compose())
    assert isinstance(cfg, RunConfig)
    assert cfg.run_dir == f"runs/{cfg.task.name}-{cfg.model.name}-seed{cfg.seed}"


def test_bad_override_from_the_command_line_is_reported() -> None:
    with pytest.raises(ValueError, match=r"rollout\.group_size must be >= 2"):
        to_run_config(_compose("rollout.group_size=1"))
    with pytest.raises(Exception, match="nonexistent_field"):
        _compose("algo.nonexistent_field=3")


def test_rollout_has_no_seed_of_its_own() -> None:
    """Sampling seeds derive from the top-level seed (step s: seed * 1_000_003 + s); `rollout.seed` was never
    read, so it is gone rather than silently ignored."""
    assert "seed" not in {f.name for f in fields(RolloutConfig)}
    with pytest.raises(Exception, match="seed"):
        _compose("rollout.seed=3")
    assert to_run_config(_compose("seed=3")).seed == 3


@pytest.mark.parametrize("name", sorted(p.stem for p in (CONF / "experiment").glob("*.yaml")))
def test_every_experiment_composes(name: str) -> None:
    cfg = to_run_config(_compose(f"experiment={name}"))
    assert cfg.experiment == name
    # A recipe names its model explicitly, never the test default.
    assert cfg.model.name not in ("tiny", "small")


@pytest.mark.parametrize(
    "group",
    ["model", "task", "algo", "rollout", "learner", "logger"],
)
def test_every_group_option_composes(group: str) -> None:
    for option in sorted(p.stem for p in (CONF / group).glob("*.yaml")):
        to_run_config(_compose(f"{group}={option}"))


def test_algo_presets_say_what_they_are() -> None:
    dr = to_run_config(_compose("algo=dr_grpo")).algo
    assert (dr.advantage_normalize, dr.loss_aggregation) == ("none", "seq_mean_token_sum_norm")
    dapo = to_run_config(_compose("algo=dapo")).algo
    assert (dapo.clip_low, dapo.clip_high, dapo.loss_aggregation, dapo.dynamic_sampling) == (
        0.2,
        0.28,
        "token_mean",
        True,
    )


def test_engine_memory_defaults_follow_the_role() -> None:
    """Colocated, vLLM shares the GPU with the learner: 35% of it and sleep mode. Disaggregated, every engine is
    a rollout worker's, alone on its GPU: 90% (vLLM's own default) and no sleep mode. Values set by hand stay;
    enforce_eager stays None (auto: eager on CPU, CUDA graphs on GPUs, decided by the engine)."""
    colocated = RunConfig().rollout
    assert (colocated.gpu_memory_utilization, colocated.enable_sleep_mode, colocated.enforce_eager) == (
        0.35,
        True,
        None,
    )
    worker = RunConfig(roles=RolesConfig(mode="disaggregated", max_staleness=0)).rollout
    assert (worker.gpu_memory_utilization, worker.enable_sleep_mode) == (0.9, False)
    chosen = RolloutConfig(gpu_memory_utilization=0.6, enable_sleep_mode=True, enforce_eager=True)
    kept = RunConfig(rollout=chosen, roles=RolesConfig(mode="disaggregated", max_staleness=0)).rollout
    assert (kept.gpu_memory_utilization, kept.enable_sleep_mode, kept.enforce_eager) == (0.6, True, True)
    with pytest.raises(ValueError, match=r"rollout\.gpu_memory_utilization must be in \(0, 1\)"):
        RolloutConfig(gpu_memory_utilization=1.5)
    composed = to_run_config(_compose("roles.mode=disaggregated"))
    assert composed.rollout.gpu_memory_utilization == 0.9


GPU_RECIPES = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml") if not p.stem.startswith("cpu_"))


@pytest.mark.parametrize("name", GPU_RECIPES)
def test_gpu_recipes_state_their_memory_and_where_it_is_derived(name: str) -> None:
    """Each GPU recipe's header gives its GPU memory and points at docs/gpu_memory.md, whose table derives it
    term by term (a header figure without its arithmetic is how "~40 GB" stood for a recipe that needs ~49)."""
    header = "".join(line for line in (CONF / "experiment" / f"{name}.yaml").open() if line.startswith("#"))
    assert "GPU memory: ~" in header and "docs/gpu_memory.md" in header, name
    doc = (CONF.parent / "docs" / "gpu_memory.md").read_text()
    assert f"| {name} |" in doc, f"docs/gpu_memory.md has no row for {name}"


def test_cpu_default_trains_adapters_and_its_variants_say_what_they_change() -> None:
    """The CPU default trains rank-16 adapters on the MLP projections at lr 1e-4 (issue #32); cpu_default_lora is
    the same run under issue #31's name; cpu_default_full fine-tunes every weight at lr 1e-5 and changes nothing
    else."""
    from dataclasses import asdict

    default = to_run_config(_compose())
    assert default.experiment == "cpu_default"
    assert (default.learner.lora_rank, default.learner.lora_alpha, default.learner.lr) == (16, 32.0, 1e-4)
    assert default.learner.lora_target_modules == ["gate_proj", "up_proj", "down_proj"]
    assert (default.steps, default.rollout.prompts_per_step, default.rollout.group_size) == (60, 4, 4)

    def differences(other: RunConfig) -> dict[str, Any]:
        mine, theirs = asdict(default), asdict(other)
        out = {k: theirs[k] for k in mine if k not in ("learner", "run_dir") and mine[k] != theirs[k]}
        out |= {f"learner.{k}": v for k, v in theirs["learner"].items() if mine["learner"][k] != v}
        return out

    assert differences(to_run_config(_compose("experiment=cpu_default_lora"))) == {
        "experiment": "cpu_default_lora"
    }
    assert differences(to_run_config(_compose("experiment=cpu_default_full"))) == {
        "experiment": "cpu_default_full", "learner.lr": 1e-5, "learner.lora_rank": 0,
        "learner.lora_target_modules": None,
    }  # fmt: skip
