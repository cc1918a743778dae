"""r1zero-bench's pure parts: medians and ratios, step intervals, token and FLOP accounting, targets, the
summary and the table. Nothing here times anything."""

from __future__ import annotations

import math

import pytest

from r1zero_bench.report import render_report, summarize, summarize_model
from r1zero_bench.stats import (
    ModelShape,
    Target,
    check_targets,
    count_tokens,
    fmt,
    learner_flops,
    median,
    ratio,
    render_table,
    spread,
    step_intervals,
)


def test_median_spread_ratio() -> None:
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([1.0, 2.0, 3.0, 10.0]) == 2.5  # the outlier 10 does not move it much
    assert math.isnan(median([]))
    assert spread([2.0, 5.0, 3.0]) == (2.0, 5.0)
    assert ratio(6.0, 2.0) == 3.0
    assert math.isnan(ratio(1.0, 0.0)) and math.isnan(ratio(1.0, float("nan")))


def test_step_intervals_drop_warmup() -> None:
    ends = [10.0, 13.0, 15.0, 18.0]
    assert step_intervals(ends, warmup=2) == [2.0, 3.0]  # steps 3 and 4
    assert step_intervals(ends, warmup=0) == [3.0, 2.0, 3.0]  # step 1 has no start time: always dropped
    assert step_intervals([10.0], warmup=1) == []


def test_count_tokens_by_hand() -> None:
    # prompt [1, 2] with responses [3, 4] and [5]; prompt [6] with response [7, 8, 9].
    sequences = [([1, 2], [3, 4]), ([1, 2], [5]), ([6], [7, 8, 9])]
    one = count_tokens(sequences, micro_batch_size=3)
    assert one.naive == 4 + 3 + 4  # every (prompt + response) token
    assert one.packed == 2 + 1 + 0 + 1 + 2  # prompts once, each response without its last token
    assert one.padded == 3 * 4  # 3 rows x the longest sequence
    assert one.targets == 2 + 1 + 3
    assert one.padded_waste == pytest.approx(1 - 11 / 12)
    assert one.sharing_saving == pytest.approx(1 - 6 / 11)
    # Micro-batches of 1: nothing to share; padding only within each (none).
    alone = count_tokens(sequences, micro_batch_size=1)
    assert (alone.packed, alone.padded) == (2 + 1 + 2 + 0 + 1 + 2, 11)
    unshared = count_tokens(sequences, micro_batch_size=3, share_prompts=False)
    assert unshared.packed == alone.packed


def test_count_tokens_agrees_with_the_learners_packing() -> None:
    from r1zero.learner.batching import pack

    sequences = [([1, 2, 3], [4, 5]), ([1, 2, 3], [6]), ([7], [8, 9, 10]), ([7], [11, 12])]
    for share in (True, False):
        packed = count_tokens(sequences, micro_batch_size=4, share_prompts=share).packed
        assert packed == pack(sequences, [0, 1, 2, 3], share_prompts=share).num_tokens


def test_flops_by_hand() -> None:
    config = {
        "num_hidden_layers": 2, "hidden_size": 4, "intermediate_size": 8, "num_attention_heads": 2,
        "num_key_value_heads": 1, "vocab_size": 10,
    }  # fmt: skip
    shape = ModelShape.from_config(config)
    assert shape.head_dim == 2
    # per layer: q, o 2 * 4 * (2 * 2) = 32; k, v 2 * 4 * (1 * 2) = 16; MLP 3 * 4 * 8 = 96 -> 144; 2 layers 288
    assert shape.body_params == 288
    # 6 * 288 * 5 tokens + 2 * V * H * 3 rows * 3 passes = 8640 + 720
    assert learner_flops(shape, tokens=5, head_rows=3) == 8640 + 720
    assert learner_flops(shape, tokens=5, head_rows=3, head_passes=4) == 8640 + 960


def test_targets() -> None:
    at_least, at_most = Target("a", 2.0, True, ""), Target("b", 0.05, False, "")
    assert at_least.met(2.5) and not at_least.met(1.9)
    assert at_most.met(0.04) and not at_most.met(0.06)
    assert at_least.met(float("nan")) is None
    assert check_targets({"a": 3.0, "c": 1.0}, [at_least, at_most]) == {"a": True}


def test_fmt_and_table() -> None:
    assert fmt(1.23456) == "1.23" and fmt(float("nan")) == "-" and fmt(None) == "-" and fmt(True) == "yes"
    assert fmt(1824.0) == "1824"
    assert render_table(["a", "b"], [[1.0, "x"]]) == "| a | b |\n| --- | --- |\n| 1 | x |"


def _results() -> dict:
    """Workers' results as they come back, numbers chosen for easy arithmetic."""
    loop = {
        "ok": True, "step_s_median": 2.0, "completion_tokens_per_step": 512.0, "peak_rss_mib": 3000.0,
        "phases": {"perf/rollout_s": 0.8, "perf/learner_s": 1.0, "perf/sync_s": 0.1, "sync/push_s": 0.06,
                   "sync/verify_seconds": 0.04},
        "settings": {"group_size": 4},
    }  # fmt: skip
    trl = {
        "ok": True,
        "step_s_median": 5.0,
        "completion_tokens_per_step": 512.0,
        "generation": "transformers",
    }
    components = {
        "ok": True,
        "rollout": {"ours_s": [1.0, 1.1, 0.9], "raw_s": [0.95, 0.9, 1.0], "same_tokens": True},
        "learner": {
            "ours_s": [1.0, 1.0], "raw_s": {"packed": [2.0, 2.0], "separate": [3.0, 3.0]}, "reference": "packed",
            "max_abs_logprob_diff": {"packed": 1e-6}, "tokens": {"naive": 1000, "packed": 450, "padding": 50,
            "padded": 1250, "targets": 400},
        },
        "model_config": {"num_hidden_layers": 2, "hidden_size": 4, "intermediate_size": 8,
                         "num_attention_heads": 2, "vocab_size": 10},
    }  # fmt: skip
    memory = {"ok": True, "naive_bytes": 1000 * 2**20, "chunked_bytes": 200 * 2**20}
    return {
        "environment": {"date": "d", "cpus": 2, "versions": {"trl": "1"}},
        "models": {"small": {"r1zero": loop, "trl": trl, "components": components}},
        "memory": memory,
        "trl_vllm_attempt": {"ok": False, "error": "AttributeError: no weight_loader"},
    }


def test_summary_numbers() -> None:
    s = summarize_model(_results()["models"]["small"])
    assert s["speedup_vs_trl"] == 2.5  # 5.0 / 2.0
    assert s["sync_fraction"] == pytest.approx(0.05)  # 0.1 of 2.0
    assert s["rollout_efficiency"] == pytest.approx(0.95 / 1.0)  # raw median / ours median
    assert s["learner_efficiency"] == 2.0  # the packed reference took 2.0 s, ours 1.0 s
    assert s["learner_ours_tokens_per_s"] == 1000.0 and s["learner_raw_tokens_per_s"] == 500.0
    assert s["learner_padding_fraction"] == pytest.approx(50 / 500)
    assert s["padded_layout_waste"] == pytest.approx(1 - 1000 / 1250)


def test_sync_share_counts_the_probe_once_per_verify_every() -> None:
    per = _results()["models"]["small"]
    per["r1zero"]["settings"]["sync_verify_every"] = 10
    assert summarize_model(per)["sync_fraction"] == pytest.approx((0.06 + 0.04 / 10) / 2.0)
    per["r1zero"]["settings"]["sync_verify_every"] = 0  # probe off: the push alone
    assert summarize_model(per)["sync_fraction"] == pytest.approx(0.06 / 2.0)


def test_summary_targets_and_report() -> None:
    results = _results()
    summary = summarize(results)
    assert summary["target_model"] == "small"
    assert summary["memory"]["logprob_memory_ratio"] == pytest.approx(0.2)
    assert summary["targets"] == {
        "speedup_vs_trl": True,
        "rollout_efficiency": True,
        "learner_efficiency": True,
        "sync_fraction": True,  # 0.05 <= 0.05
        "logprob_memory_ratio": True,
    }
    results["summary"] = summary
    text = render_report(results)
    assert "| speed-up vs TRL (TRL s / r1zero s) | 2.5 | >= 2: met |" in text
    assert "vllm_mode=colocate failed here: AttributeError" in text
    assert "halt polling" not in text  # not recorded (bare metal or an older result file): nothing said
    results["environment"] = {
        "cpus": 2,
        "machine": "x86_64",
        "vector_features": "avx2, bf16 emulated",
        "guest_halt_poll_ns": 0,
    }
    assert "2 CPUs (x86_64; avx2, bf16 emulated; guest halt polling 0 ns)" in render_report(results)


def test_each_precision_of_the_target_model_is_judged() -> None:
    import copy

    results = _results()
    slow = copy.deepcopy(results["models"]["small"])
    slow["r1zero"]["step_s_median"] = 4.0  # 5.0 / 4.0 = 1.25x: misses the 2x target
    slow["r1zero"]["settings"]["precision"] = "learner bf16, rollout bfloat16"
    results["models"]["small bf16"] = slow
    results["summary"] = summarize(results)
    by_model = results["summary"]["targets_by_model"]
    assert by_model["small"]["speedup_vs_trl"] is True and by_model["small bf16"]["speedup_vs_trl"] is False
    text = render_report(results)
    assert (
        "| speed-up vs TRL (TRL s / r1zero s) | 2.5 | 1.25 | >= 2: met (small), MISSED (small bf16) |" in text
    )
    assert "| precision, both sides | - | learner bf16, rollout bfloat16 |" in text


def test_a_busy_machine_is_flagged() -> None:
    results = _results()
    results["models"]["small"]["trl"]["foreign_cpu_share"] = 0.3
    results["summary"] = summarize(results)
    assert results["summary"]["models"]["small"]["foreign_cpu_share"] == 0.3
    assert "WARNING: other processes took a share of the CPU during small/trl (30%)" in render_report(results)
    results["models"]["small"]["trl"]["foreign_cpu_share"] = 0.01
    assert "WARNING" not in render_report(results)


def test_failed_workers_give_nan_not_errors() -> None:
    s = summarize_model({"r1zero": {"ok": False, "error": "x"}, "components": {"ok": True}})
    assert math.isnan(s["r1zero_step_s"]) and math.isnan(s["speedup_vs_trl"])
    assert math.isnan(s["rollout_efficiency"]) and math.isnan(s["learner_efficiency"])


def test_cli_defaults_and_unknown_worker() -> None:
    from r1zero_bench import parse_args
    from r1zero_bench.worker import run_spec

    quick = parse_args(["--quick"])
    assert (quick.models, quick.warmup, quick.reps, quick.trl_generation) == (["small"], 1, 3, "hf")
    full = parse_args([])
    assert (full.models, full.warmup, full.reps, full.threads) == (["tiny", "small"], 2, 6, 2)
    assert full.trl_generation == "auto"
    assert (quick.precisions, full.precisions) == (["fp32"], ["fp32", "bf16"])
    with pytest.raises(SystemExit):
        parse_args(["--precisions", "fp16"])
    with pytest.raises(ValueError, match="unknown bench worker"):
        run_spec({"kind": "nope"})


def test_the_cleaner_of_two_attempts_is_kept() -> None:
    from r1zero_bench import _cleaner

    quiet, busy, failed = {"ok": True, "foreign_cpu_share": 0.01}, {"ok": True, "foreign_cpu_share": 0.4}, {}
    assert _cleaner(quiet, busy) and not _cleaner(busy, quiet)
    assert _cleaner(busy, failed) and not _cleaner(failed, busy)  # a noisy number beats no number


def test_merge_rounds_pools_steps_and_keeps_the_worst_noise() -> None:
    from r1zero_bench.report import merge_rounds

    a = {"ok": True, "step_s": [2.0, 2.2], "phases": {"perf/learner_s": 1.0}, "peak_rss_mib": 10.0,
         "foreign_cpu_share": 0.01, "completion_tokens_per_step": 512.0}  # fmt: skip
    b = {"ok": True, "step_s": [2.4, 2.1], "phases": {"perf/learner_s": 1.2}, "peak_rss_mib": 12.0,
         "foreign_cpu_share": 0.03, "completion_tokens_per_step": 510.0}  # fmt: skip
    merged = merge_rounds([a, {"ok": False, "error": "x"}, b])
    assert merged["step_s"] == [2.0, 2.2, 2.4, 2.1] and merged["step_s_median"] == pytest.approx(2.15)
    assert merged["phases"]["perf/learner_s"] == pytest.approx(1.1) and merged["rounds"] == 2
    assert merged["peak_rss_mib"] == 12.0 and merged["foreign_cpu_share"] == 0.03
    assert merged["completion_tokens_per_step"] == 511.0
    assert merge_rounds([{"ok": False, "error": "x"}]) == {"ok": False, "error": "x"}


def test_roles_flags_are_for_roles_and_checked() -> None:
    from r1zero_bench import parse_args

    args = parse_args(["--roles"])
    assert (args.modes, args.steps, args.eval, args.rounds) == (["colocated", "k0", "k1"], 12, False, 1)
    args = parse_args(["--roles", "--modes", "colocated,k1", "--steps", "3", "--eval"])
    assert (args.modes, args.steps, args.eval) == (["colocated", "k1"], 3, True)
    for bad in (
        ["--steps", "3"],
        ["--eval"],
        ["--modes", "k0"],
        ["--roles", "--learning"],
        ["--roles", "--steps", "0"],
    ):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_seeds_flag_is_for_learning_and_takes_distinct_integers() -> None:
    from r1zero_bench import parse_args

    assert parse_args(["--learning", "--seeds", "0,2,3"]).seeds == [0, 2, 3]
    assert parse_args(["--learning"]).seeds is None
    for bad in (["--seeds", "0,1"], ["--learning", "--seeds", "0,x"], ["--learning", "--seeds", "1,1"]):
        with pytest.raises(SystemExit):
            parse_args(bad)


def test_learning_comparison_runs_every_worker_at_the_seed() -> None:
    from r1zero_bench import learning_comparison, parse_args

    calls: list[tuple[dict, str]] = []

    def measure(spec: dict, name: str) -> dict:
        calls.append((spec, name))
        if spec["kind"] == "r1zero_learning":
            return {"ok": True, "train_s": 12.0, "model": "/m/r1zero"}
        if spec["kind"] == "trl_learning":
            return {"ok": True, "model": "/m/trl"}
        return {"ok": True, "models": {name: {"ok": True, "accuracy": 0.5} for name in spec["models"]}}

    args = parse_args(["--learning", "--learning-steps", "3", "--seeds", "7", "--override", "model=tiny"])
    out = learning_comparison(args, measure, seed=7)
    names = [name for _, name in calls]
    assert names == ["learning-r1zero-seed7", "learning-trl-seed7", "learning-held-out-seed7"]
    assert all(spec["overrides"][-1] == "seed=7" and "model=tiny" in spec["overrides"] for spec, _ in calls)
    assert calls[0][0]["steps"] == 3 and calls[1][0]["seconds"] == 12.0  # TRL gets r1zero's training seconds
    # one worker evaluates the base model and both trained models; each gets its own result
    assert calls[2][0]["models"] == {"base": "tiny", "r1zero_eval": "/m/r1zero", "trl_eval": "/m/trl"}
    assert all(out[name] == {"ok": True, "accuracy": 0.5} for name in ("base", "r1zero_eval", "trl_eval"))
    assert out["overrides"][-1] == "seed=7"


def test_a_failed_held_out_worker_fails_every_model_it_held() -> None:
    from r1zero_bench import learning_comparison, parse_args

    def measure(spec: dict, name: str) -> dict:
        if spec["kind"] == "held_out":
            return {"ok": False, "error": "RuntimeError: boom"}
        return {"ok": True, "train_s": 1.0, "model": f"/m/{spec['kind']}"}

    out = learning_comparison(parse_args(["--learning", "--override", "model=tiny"]), measure)
    assert [out[name] for name in ("base", "r1zero_eval", "trl_eval")] == [
        {"ok": False, "error": "RuntimeError: boom"}
    ] * 3


def test_render_seeds_rows_and_means_over_complete_seeds() -> None:
    from r1zero_bench.learning import render_seeds

    def seed(
        before: float, r1: float, trl: float | None, r1_step: float, trl_step: float, rewards: tuple
    ) -> dict:
        return {
            "r1zero": {"ok": True, "steps": 60, "step_s_median": r1_step, "rewards": rewards[0]},
            "trl": {"ok": trl is not None, "steps": 20, "step_s_median": trl_step, "rewards": rewards[1]},
            "base": {"ok": True, "accuracy": before},
            "r1zero_eval": {"ok": True, "accuracy": r1},
            "trl_eval": {"ok": trl is not None, **({} if trl is None else {"accuracy": trl})},
        }

    table = render_seeds({"0": seed(0.25, 0.5, 0.75, 5.0, 20.0, ([0.1, 0.3, 0.5], [0.2, 0.4])),
                          "1": seed(0.25, 0.7, 0.4, 9.0, 20.0, ([0.5, 0.5, 0.5], [0.1, 0.3])),
                          "2": seed(0.1, 0.9, None, 5.0, 20.0, ([0.5], None))})  # fmt: skip
    lines = table.splitlines()
    # Training rewards at equal steps: steps 1-2, the shorter side's.
    assert lines[2] == "| 0 | 25.0% | 50.0% | 75.0% | 60 | 20 | 0.25x | 0.200 | 0.300 (steps 1-2) |"
    assert lines[3] == "| 1 | 25.0% | 70.0% | 40.0% | 60 | 20 | 0.45x | 0.500 | 0.200 (steps 1-2) |"
    assert (
        lines[4] == "| 2 | 10.0% | 90.0% | - | 60 | 20 | - | - | - |"
    )  # TRL failed: shown, left out of the means
    # Means ± standard errors (std / sqrt(2)) by hand: r1zero (0.5, 0.7) -> 60.0 ± 10.0; TRL (0.75, 0.4) -> 57.5 ±
    # 17.5; rewards (0.2, 0.5) -> 0.350 ± 0.150 and (0.3, 0.2) -> 0.250 ± 0.050.
    assert lines[5] == (
        "| mean ± SE of 2 | 25.0% ± 0.0 | 60.0% ± 10.0 | 57.5% ± 17.5 | | | 0.35x | 0.350 ± 0.150 | 0.250 ± 0.050 |"
    )


def test_learning_with_seeds_writes_one_comparison_per_seed_and_the_means(
    tmp_path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`r1zero-bench --learning --seeds 3,5` end to end with the workers replaced by canned results (the real
    workers run in tests/integration/test_readme_commands.py::test_bench_learning)."""
    import json

    import r1zero_bench as bench

    accuracy = {("base", "3"): 0.25, ("r1zero", "3"): 0.5, ("trl", "3"): 0.75,
                ("base", "5"): 0.25, ("r1zero", "5"): 0.7, ("trl", "5"): 0.4}  # fmt: skip

    def fake_worker(spec: dict, workdir, name: str, threads: int, timeout: float) -> dict:
        seed = spec["overrides"][-1].removeprefix("seed=")
        if spec["kind"] == "r1zero_learning":
            return {"ok": True, "steps": 60, "train_s": 300.0, "step_s_median": 5.0, "model": f"r{seed}"}
        if spec["kind"] == "trl_learning":
            return {"ok": True, "steps": 20, "train_s": 300.0, "step_s_median": 20.0, "model": f"t{seed}"}
        assert spec["kind"] == "held_out"
        return {"ok": True, "models": {
            name: {"ok": True, "accuracy": accuracy[(name.removesuffix("_eval"), seed)], "problems": 64.0}
            for name in spec["models"]
        }}  # fmt: skip

    monkeypatch.setattr(bench, "run_worker", fake_worker)
    out = tmp_path / "bench.json"
    bench.main(["--learning", "--seeds", "3,5", "--out", str(out), "--workdir", str(tmp_path / "work")])
    per_seed = json.loads(out.read_text())["learning"]["per_seed"]
    assert list(per_seed) == ["3", "5"]
    assert per_seed["5"]["r1zero_eval"]["accuracy"] == 0.7 and per_seed["3"]["trl_eval"]["accuracy"] == 0.75
    printed = capsys.readouterr().out
    assert "seed 3:\n| trainer |" in printed and "seed 5:\n| trainer |" in printed
    assert "| mean ± SE of 2 | 25.0% ± 0.0 | 60.0% ± 10.0 | 57.5% ± 17.5 | | | 0.25x | - | - |" in printed
