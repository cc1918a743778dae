"""r1zero-bench --learning: time to accuracy. r1zero and TRL's GRPOTrainer train the same model on the same
prompts with the same settings for the same training seconds; then both models answer the same held-out
problems, greedy, through the same evaluation (`r1zero.eval.run_eval`).

    r1zero-bench --learning                       # the CPU default run (60 steps) against TRL: ~14 min, 2 cores
    r1zero-bench --learning --seeds 0,1,2,3       # the same comparison for each seed (its own prompts, its own
                                                  # held-out problems), then the means: ~55 min

r1zero trains first for `--learning-steps` steps. Its training seconds (the sum of its step times, evaluation and
start-up excluded) become TRL's budget. TRL stops at the first step end past the budget (start-up excluded too).
The base model is evaluated the same way. The three evaluations run in fresh processes and so does each trainer.
One seed is one sample of a noisy outcome (held-out accuracies of the same settings ranged 25-70% over 4 seeds on
a 2-core CPU, README "Performance"): `--seeds` repeats the comparison and reports the means.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from statistics import median
from typing import Any

from r1zero_bench.loops import compose_config, trl_inputs
from r1zero_bench.worker import failure


def r1zero_learning(overrides: list[str], steps: int, workdir: str) -> dict[str, Any]:
    """Worker: r1zero's run of `steps` steps; its final model, training seconds and its own held-out evals."""
    from r1zero.train import run

    run_dir = Path(workdir) / "r1zero_run"
    # The run as users run it (its own held-out evaluations before and after), minus periodic checkpoints.
    cfg = compose_config([*overrides, f"steps={steps}", f"run_dir={run_dir}", "checkpoint.every=0",
                          "checkpoint.save_final_model=true", "log.samples_every=0"], bench_defaults=False)  # fmt: skip
    run(cfg)
    shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # the final step's; final_model is what counts
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    step_s = [r["perf/step_s"] for r in rows if "perf/step_s" in r]
    evals = [r["eval/accuracy"] for r in rows if "eval/accuracy" in r]
    return {
        "steps": len(step_s), "train_s": sum(step_s), "step_s_median": median(step_s),
        "rewards": [r["reward/mean"] for r in rows if "reward/mean" in r],
        "model": str(run_dir / "final_model"), "run_eval_first": evals[0] if evals else None,
        "run_eval_last": evals[-1] if evals else None,
    }  # fmt: skip


def trl_learning(overrides: list[str], seconds: float, workdir: str) -> dict[str, Any]:
    """Worker: TRL's GRPOTrainer (the settings of `trl_config`, prompts in r1zero's order, r1zero's reward)
    until `seconds` of training have passed; the model is saved for the evaluation."""
    from transformers import TrainerCallback
    from trl import GRPOTrainer

    cfg = compose_config(overrides)
    max_steps = int(4 * seconds) + 8  # more than TRL can run (a step takes over 0.25 s): the clock stops it
    inputs = trl_inputs(cfg, max_steps, use_vllm=False, output_dir=str(Path(workdir) / "trl_out"))
    clock: dict[str, float] = {}

    class Budget(TrainerCallback):  # type: ignore[misc]
        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock["start"] = time.perf_counter()

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            clock["elapsed"] = time.perf_counter() - clock["start"]
            if clock["elapsed"] >= seconds:
                control.should_training_stop = True

    trainer = GRPOTrainer(**inputs, callbacks=[Budget()])
    trainer.train()
    final = Path(workdir) / "trl_model"
    model: Any = trainer.model
    if hasattr(model, "merge_and_unload"):  # LoRA: the evaluation loads a plain model, adapters merged
        model = model.merge_and_unload()
    model.save_pretrained(str(final))
    inputs["processing_class"].save_pretrained(str(final))
    steps = int(trainer.state.global_step)
    rewards = [float(h["reward"]) for h in trainer.state.log_history if "reward" in h]  # one per step
    return {"steps": steps, "train_s": clock.get("elapsed", 0.0), "rewards": rewards,
            "step_s_median": clock.get("elapsed", 0.0) / max(1, steps), "model": str(final)}  # fmt: skip


def held_out(overrides: list[str], models: dict[str, str], workdir: str) -> dict[str, Any]:
    """Worker: greedy accuracy of each of `models` ({name: model}) on the run's held-out problems, as the training
    run evaluates them (task.num_eval problems of the test split, the run's seed, eval.max_new_tokens or the
    rollout's), one engine at a time. A model that fails to evaluate is reported as failed; the others go on."""
    from r1zero.eval import EvalRunConfig, run_eval

    cfg = compose_config(overrides, bench_defaults=False)  # the task's own held-out set (task.num_eval)
    out: dict[str, dict[str, Any]] = {}
    for name, model in models.items():
        eval_cfg = EvalRunConfig(
            model=dataclasses.replace(cfg.model, name=model), task=cfg.task, rollout=cfg.rollout,
            num_problems=cfg.task.num_eval, n=1, temperature=0.0, k=[1],
            max_new_tokens=cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens, seed=cfg.seed,
            out_dir=str(Path(workdir) / "eval" / name),
        )  # fmt: skip
        try:
            metrics = run_eval(eval_cfg)["metrics"]
        except Exception as exc:  # reported per model, as a failed worker is
            out[name] = failure(exc)
            continue
        out[name] = {
            "ok": True,
            "accuracy": metrics["eval/accuracy"],
            "problems": metrics["eval/num_problems"],
        }
    return {"models": out}


def render_learning(result: dict[str, Any]) -> str:
    """The table: per trainer, training seconds, steps, seconds per step, held-out accuracy before and after."""
    base = result.get("base", {}).get("accuracy")
    lines = ["| trainer | training s | steps | s per step | held-out before | held-out after |", "|---|---|---|---|---|---|"]  # fmt: skip
    for side in ("r1zero", "trl"):
        row = result.get(side, {})
        after = result.get(f"{side}_eval", {}).get("accuracy")
        if not row.get("ok"):
            lines.append(f"| {side} | failed: {str(row.get('error', ''))[:120]} | | | | |")
            continue
        lines.append(
            f"| {side} | {row['train_s']:.0f} | {row['steps']} | {row['step_s_median']:.2f} | "
            f"{_pct(base)} | {_pct(after)} |"
        )
    r1, trl = result.get("r1zero", {}), result.get("trl", {})
    if r1.get("ok") and trl.get("ok") and trl.get("step_s_median"):
        lines.append(f"\nr1zero's step takes {r1['step_s_median'] / trl['step_s_median']:.2f}x TRL's time.")
    if r1.get("ok") and r1.get("run_eval_last") is not None:
        lines.append(f"(r1zero's own end-of-run evaluation: {_pct(r1['run_eval_last'])})")
    return "\n".join(lines)


def render_seeds(per_seed: dict[str, dict[str, Any]]) -> str:
    """One row per seed (each its own prompts and held-out problems) and the mean ± standard error over the seeds
    where all three evaluations and both trainers succeeded; per_seed: {seed: a `learning_comparison` result}.
    The training-reward columns compare the two trainers at equal steps on the same prompts: the mean reward of
    steps 1..n, n = the fewer steps of the two (TRL's, in the same seconds).

    Example: seeds "0" and "1" with r1zero 0.5 and 0.7 after, TRL 0.6 and 0.4 -> means 60.0% ± 10.0 and
    50.0% ± 10.0 (the standard error: sample std / sqrt(seeds))."""
    lines = [
        "| seed | held-out before | r1zero after | TRL after | r1zero steps | TRL steps | step time vs TRL "
        "| train reward at equal steps: r1zero | TRL |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    complete: list[tuple[float, float, float, float]] = []  # (before, r1zero after, TRL after, ratio)
    paired: list[tuple[float, float]] = []  # (r1zero, TRL) training reward at equal steps, complete seeds
    for seed, result in per_seed.items():
        r1, trl = result.get("r1zero", {}), result.get("trl", {})
        accuracy = {k: result.get(k, {}).get("accuracy") for k in ("base", "r1zero_eval", "trl_eval")}
        ratio = r1["step_s_median"] / trl["step_s_median"] if r1.get("ok") and trl.get("ok") else None
        rewards = equal_step_rewards(r1.get("rewards"), trl.get("rewards"))
        reward_cells = (
            "- | -" if rewards is None else f"{rewards[0]:.3f} | {rewards[1]:.3f} (steps 1-{rewards[2]})"
        )
        lines.append(
            f"| {seed} | {_pct(accuracy['base'])} | {_pct(accuracy['r1zero_eval'])} | {_pct(accuracy['trl_eval'])} | "
            f"{r1.get('steps', '-')} | {trl.get('steps', '-')} | {'-' if ratio is None else f'{ratio:.2f}x'} | "
            f"{reward_cells} |"
        )
        if ratio is not None and None not in accuracy.values():
            complete.append((accuracy["base"], accuracy["r1zero_eval"], accuracy["trl_eval"], ratio))
            if rewards is not None:
                paired.append(rewards[:2])
    if complete:
        mean = [mean_and_error(list(column)) for column in zip(*complete)]
        pct = [_with_error(100 * m, None if e is None else 100 * e, 1, "%") for m, e in mean[:3]]
        reward = [_with_error(*mean_and_error(list(column)), 3) for column in zip(*paired)] or ["-", "-"]
        lines.append(
            f"| mean ± SE of {len(complete)} | {pct[0]} | {pct[1]} | {pct[2]} | | | {mean[3][0]:.2f}x | "
            f"{reward[0]} | {reward[1]} |"
        )
    return "\n".join(lines)


def equal_step_rewards(
    r1zero: list[float] | None, trl: list[float] | None
) -> tuple[float, float, int] | None:
    """Mean training reward of steps 1..n on each side, n = the shorter run: (r1zero, TRL, n); None without
    both. Example: [0.1, 0.3, 0.5], [0.2, 0.4] -> (0.2, 0.3, 2)."""
    if not r1zero or not trl:
        return None
    n = min(len(r1zero), len(trl))
    return sum(r1zero[:n]) / n, sum(trl[:n]) / n, n


def mean_and_error(values: list[float]) -> tuple[float, float | None]:
    """Mean and standard error (sample std / sqrt(n); None for one value). Example: [0.5, 0.7] -> (0.6, 0.1)."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    variance = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, (variance / n) ** 0.5


def _with_error(mean: float, error: float | None, digits: int, unit: str = "") -> str:
    return f"{mean:.{digits}f}{unit}" + ("" if error is None else f" ± {error:.{digits}f}")


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"
