"""The cost's token count under dynamic sampling (issue 34, item 11): every round sampled is paid for, not only
the groups kept for training. The whole loop on the tiny model: its random policy scores 0 on Countdown, so no
group ever has varied rewards, every step samples 1 + max_sampling_rounds rounds and trains on none of them."""

from __future__ import annotations

from pathlib import Path

from test_train_loop import compose, metrics_of

from r1zero.train import run


def test_cost_counts_the_tokens_of_every_round_sampled(tmp_path: Path) -> None:
    cfg = compose(
        tmp_path / "run", "learner=torch", "steps=2", "algo.dynamic_sampling=true", "algo.max_sampling_rounds=2",
        "eval.at_start_and_end=false",
    )  # fmt: skip
    summary = run(cfg)
    rows = metrics_of(tmp_path / "run")
    assert [r["algo/sampling_rounds"] for r in rows.values()] == [3.0, 3.0]
    assert [r["algo/trained_groups"] for r in rows.values()] == [0.0, 0.0]  # nothing kept, all paid for
    # rollout/* covers every completion sampled (3 rounds x 2 prompts x 4 samples a step): their tokens
    every_round = sum(r["rollout/num_completions"] * r["rollout/length/mean"] for r in rows.values())
    assert [r["rollout/num_completions"] for r in rows.values()] == [24.0, 24.0]
    assert every_round > 0
    assert summary["cost"]["cost/tokens_generated"] == every_round
