"""The distillation recipes (conf/experiment/distill/): each composes with its stage's schema, and each chain's SFT
stage reads the file its sampling stage writes."""

from __future__ import annotations

from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from r1zero.distill import sample, sft

RECIPES = Path(sample.CONF_DIR) / "experiment" / "distill"
CHAINS = [  # (sampling recipe, SFT recipe)
    ("cpu_sample", "cpu_sft"),
    ("cpu_coldstart_sample", "cpu_coldstart_sft"),
    ("countdown_3b_to_0.5b_sample", "countdown_3b_to_0.5b_sft"),
]


def sample_recipe(name: str, *overrides: str) -> sample.SampleRunConfig:
    sample.register_configs()
    with initialize_config_dir(config_dir=sample.CONF_DIR, version_base=None):
        return sample.to_sample_config(
            compose("sample", overrides=[f"experiment=distill/{name}", *overrides])
        )


def sft_recipe(name: str, *overrides: str) -> sft.SftRunConfig:
    sft.register_configs()
    with initialize_config_dir(config_dir=sft.CONF_DIR, version_base=None):
        return sft.to_sft_config(compose("sft", overrides=[f"experiment=distill/{name}", *overrides]))


def test_every_recipe_belongs_to_a_chain() -> None:
    assert sorted(p.stem for p in RECIPES.glob("*.yaml")) == sorted(
        name for chain in CHAINS for name in chain
    )


@pytest.mark.parametrize(("sampling", "training"), CHAINS)
def test_each_chain_feeds_its_sft_stage_with_its_samples(sampling: str, training: str) -> None:
    drawn, tuned = sample_recipe(sampling), sft_recipe(training)
    assert (drawn.experiment, tuned.experiment) == (f"distill/{sampling}", f"distill/{training}")
    assert Path(tuned.data_path) == Path(drawn.out_dir) / "train.jsonl"
    assert drawn.rules.max_per_prompt >= 1 and drawn.n >= 2  # rejection needs several samples per problem


def test_the_cpu_demo_is_the_cpu_default_task_and_model() -> None:
    """Teacher = a CPU default run directory, student = the base SmolLM2-135M, task = the CPU default's sums."""
    drawn, tuned = sample_recipe("cpu_sample"), sft_recipe("cpu_sft")
    assert drawn.model.name == "runs/arithmetic-smollm2-135m-seed0"  # `bash scripts/train.sh` writes it
    assert (drawn.task.name, drawn.task.template, drawn.max_new_tokens) == ("arithmetic", "chat", 32)
    assert tuned.model.name == "smollm2-135m"
    assert sample_recipe("cpu_coldstart_sample").model.name == "smollm2-135m"  # the base samples for itself
    # Command-line overrides still win over the recipe.
    assert sample_recipe("cpu_sample", "model.name=/x", "seed=1").model.name == "/x"
