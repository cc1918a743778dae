"""Measure the rollout-vs-learner logprob gap for correct weight syncs and for known sync failures (issue #12).

    # one run: the real training loop (r1zero.train.run) with recorders, per-token gaps saved as JSON
    python scripts/sync_gap_study.py run --case stale_tie --out /tmp/gap/x.json -- model=tiny steps=8 \
        rollout.dtype=bfloat16 learner.precision=fp32
    # a grid of runs (one process each; finished outputs are skipped, so it resumes)
    python scripts/sync_gap_study.py sweep --models tiny small --out-dir /tmp/gap
    # the tables (markdown) from the saved runs
    python scripts/sync_gap_study.py report /tmp/gap/*.json

What is recorded, per step:
  step  the per-step check: |engine sampling logprob - learner first-pass logprob| on every response token of
        the step (the learner's first pass is captured inside `Learner.train_step`, so it is exactly what the
        check compares; its max is cross-checked against the `sync/step_logprob_max_abs_diff` it logs).
  probe the probe after each push (`verify_sync`, default probe: 2 sequences cut to 32 tokens; the study sets
        sync.verify_every=1 so every push is probed).
Each with max, mean, p50/p90/p99 and the largest per-row mean, and the raw per-token gaps.

Cases (the fault is injected; the training loop itself is the real one):
  correct          nothing broken.
  stale_tie        VLLMEngine(fix_tied_embeddings=False): the tied lm_head keeps its load-time weights.
  no_prefix_reset  the engine's reset_prefix_cache() is a no-op, so a prompt prefix that was cached before a
                   push is reused after it (the chat template's system prompt and worked example are the same in
                   every prompt, so a cached block is hit at every step).
  lagged_param     one tensor (the middle layer's mlp.down_proj) is pushed with its value from the step before.
  noisy_param      the same tensor is pushed with Gaussian noise of --noise-rel times its RMS added.

Prefix caching works in whole KV blocks: 128 tokens by default on CPU, 16 on GPU. At 128 the CPU default's
~70-token prompts never fill a block and nothing is ever reused, so the sweep sets --block-size 32 (what the
GPU default of 16 does to these prompts) for every case.

The tiny and small presets are random-init and earn no reward: every group would have zero advantage and the
weights would never move. With --random-advantages the rewards fed to `group_advantages` are seeded uniform
noise, so the learner takes real optimizer steps at the configured learning rate (Adam moves each weight by ~lr
per step whatever the advantages' scale).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

CASES = ("correct", "stale_tie", "no_prefix_reset", "lagged_param", "noisy_param")
PRECISIONS = {  # label -> (rollout.dtype, learner.precision)
    "bf16/fp32": ("bfloat16", "fp32"),
    "bf16/bf16": ("bfloat16", "bf16"),
    "fp32/fp32": ("float32", "fp32"),
}
ROLLOUT_LABEL = {"bfloat16": "bf16", "float32": "fp32"}
STATS = ("max", "mean", "p50", "p90", "p99", "row_mean_max")
BASE_OVERRIDES = [
    "eval.at_start_and_end=false",
    "checkpoint.every=0",
    "checkpoint.save_final_model=false",
    "checkpoint.resume=false",
    "log.samples_every=0",
    "sync.verify_every=1",
    "sync.max_abs_logprob_diff=1e9",  # measure every step: never stop the run
]


def load_average() -> float:
    return os.getloadavg()[0]


# ---------------------------------------------------------------------------------------------- statistics
def gap_stats(rows: Sequence[Sequence[float]]) -> dict[str, float]:
    """Summary of per-token gaps given per row: max, mean, p50/p90/p99 (over all tokens), max of the row means.

    Example: rows [[0.1, 0.3], [0.2]] -> max 0.3, mean 0.2, row_mean_max 0.2 (rows' means 0.2 and 0.2).
    """
    import torch

    flat = torch.tensor([g for row in rows for g in row], dtype=torch.float64)  # [M]
    if flat.numel() == 0:
        return {k: 0.0 for k in STATS} | {"tokens": 0.0}
    q = torch.quantile(flat, torch.tensor([0.5, 0.9, 0.99], dtype=torch.float64))  # [3]
    row_means = [sum(r) / len(r) for r in rows if len(r)]
    return {
        "max": float(flat.max()),
        "mean": float(flat.mean()),
        "p50": float(q[0]),
        "p90": float(q[1]),
        "p99": float(q[2]),
        "row_mean_max": max(row_means),
        "tokens": float(flat.numel()),
    }


def abs_gaps(engine_lp: Sequence[Sequence[float]], learner_lp: Sequence[Any]) -> list[list[float]]:
    """Per row, |engine - learner| per token (NaN -> inf), rounded to 7 significant digits for the JSON."""
    out = []
    for e, learner_row in zip(engine_lp, learner_lp):
        row = [float(x) for x in learner_row][: len(e)]
        gaps = [abs(a - b) for a, b in zip(e, row)]
        out.append([float(f"{g:.7g}") if g == g else math.inf for g in gaps])
    return out


# ---------------------------------------------------------------------------------------------- one run
class Recorder:
    """Hooks into the real loop; writes the JSON after every step so a killed run keeps its data."""

    def __init__(self, out: Path, meta: dict[str, Any]) -> None:
        self.out, self.meta = out, meta
        self.steps: list[dict[str, Any]] = []
        self.probes: list[dict[str, Any]] = []
        self.capture: list[tuple[list[int], Any]] | None = None
        self.calls = 0
        self.start = time.perf_counter()

    def save(self) -> None:
        self.meta["seconds"] = round(time.perf_counter() - self.start, 1)
        self.meta["load_avg_end"] = load_average()
        body = {"meta": self.meta, "steps": self.steps, "probes": self.probes}
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(body))
        tmp.replace(self.out)


def install_hooks(rec: Recorder, args: argparse.Namespace) -> None:
    """Patch the learner, the engine factory and the sync check (module attributes the loop looks up)."""
    import torch

    import r1zero.algo
    import r1zero.collect
    import r1zero.rollout.engines
    import r1zero.sync
    from r1zero.learner.learner import Learner

    orig_forward, orig_step = Learner._forward, Learner.train_step

    def forward(self: Learner, model: Any, batch: Any, width: int, *args: Any, **kwargs: Any) -> Any:
        logprobs, entropy = orig_forward(self, model, batch, width, *args, **kwargs)
        if rec.capture is not None and model is self.module:
            rec.capture.append((list(batch.rows), logprobs.detach().float().cpu()))
        return logprobs, entropy

    def train_step(self: Learner, sequences: Any, advantages: Any, **kwargs: Any) -> dict[str, float]:
        rec.capture = []
        rec.calls += 1
        out: dict[str, float] = {}
        try:
            out = orig_step(self, sequences, advantages, **kwargs)
        finally:
            first: dict[int, Any] = {}
            for rows, lp in rec.capture:
                for local, row in enumerate(rows):
                    first.setdefault(row, lp[local, : len(sequences[row][1])].tolist())
            complete = len(first) == len(sequences)  # False when the pass was interrupted
            rec.capture = None
            engine_lp = (kwargs.get("rollout_logprobs") or []) if complete else []
            gaps = abs_gaps(engine_lp, [first.get(i, []) for i in range(len(engine_lp))])
            if gaps:
                rec.steps.append(
                    {
                        "step": rec.calls,
                        "stats": gap_stats(gaps),
                        "logged_max": out.get("sync/step_logprob_max_abs_diff"),
                        "logged_mean": out.get("sync/step_logprob_mean_abs_diff"),
                        "gaps": gaps,
                    }
                )
            rec.save()
        return out

    Learner._forward = forward  # type: ignore[method-assign]
    Learner.train_step = train_step  # type: ignore[method-assign]

    orig_verify = r1zero.sync.verify_sync

    def verify_sync(engine: Any, learner_logprobs: Any, probe: Any, **kwargs: Any) -> dict[str, float]:
        gaps = abs_gaps(engine.score(probe), learner_logprobs(probe))
        rec.probes.append({"after_push": engine.policy_version, "stats": gap_stats(gaps), "gaps": gaps})
        rec.save()
        return orig_verify(engine, learner_logprobs, probe, **kwargs)

    r1zero.sync.verify_sync = verify_sync

    orig_build = r1zero.rollout.engines.build_engine

    def build_engine(model_path: str, cfg: Any, *, seed: int, **kwargs: Any) -> Any:
        if args.block_size:
            kwargs["block_size"] = args.block_size
        if args.case == "stale_tie":
            kwargs["fix_tied_embeddings"] = False
        engine = orig_build(model_path, cfg, seed=seed, **kwargs)
        if args.case == "no_prefix_reset":
            engine._llm.reset_prefix_cache = lambda *a, **k: True
        rec.meta["tied_embeddings"] = bool(getattr(engine, "tied_embeddings", False))
        return engine

    r1zero.rollout.engines.build_engine = build_engine

    if args.random_advantages:
        orig_adv = r1zero.algo.group_advantages
        gen = torch.Generator().manual_seed(1234)

        def group_advantages(rewards: torch.Tensor, group_size: int, **kwargs: Any) -> torch.Tensor:
            fake = torch.rand(rewards.shape, generator=gen)  # [N] seeded noise in place of the rewards
            return orig_adv(fake, group_size, **kwargs)

        r1zero.algo.group_advantages = group_advantages
        r1zero.collect.group_advantages = group_advantages  # the loop's Collector imported it by name

    if args.case in ("lagged_param", "noisy_param"):
        install_param_fault(rec, args)


def install_param_fault(rec: Recorder, args: argparse.Namespace) -> None:
    """lagged_param / noisy_param: one tensor of the push replaced (the middle layer's mlp.down_proj)."""
    import torch

    from r1zero.learner.learner import Learner

    orig_init, orig_named = Learner.__init__, Learner.named_parameters_for_sync
    state: dict[str, Any] = {"pushes": 0}

    def target_name(self: Learner) -> str:
        layers = int(self.module.config.num_hidden_layers)
        return f"model.layers.{layers // 2}.mlp.down_proj.weight"

    def init(self: Learner, *a: Any, **k: Any) -> None:
        orig_init(self, *a, **k)
        state["name"] = target_name(self)
        state["prev"] = dict(self.module.named_parameters())[state["name"]].detach().clone()
        rec.meta["fault_param"] = state["name"]

    def named(self: Learner) -> Iterator[tuple[str, torch.Tensor]]:
        state["pushes"] += 1
        for name, tensor in orig_named(self):
            if name != state["name"]:
                yield name, tensor
            elif args.case == "lagged_param":
                prev, state["prev"] = state["prev"], tensor.detach().clone()
                yield name, prev
            else:
                gen = torch.Generator().manual_seed(state["pushes"])
                rms = tensor.float().pow(2).mean().sqrt()
                noise = torch.randn(tensor.shape, generator=gen) * (args.noise_rel * rms)
                yield name, (tensor.float() + noise).to(tensor.dtype)

    Learner.__init__ = init  # type: ignore[method-assign]
    Learner.named_parameters_for_sync = named  # type: ignore[method-assign]


def resume_records(rec: Recorder, run_dir: Path) -> None:
    """A run killed part-way resumes from its latest checkpoint (the loop does that); keep the steps recorded up
    to that checkpoint's step and redo the rest."""
    from r1zero.checkpoint import find_latest_checkpoint, load_meta

    latest = find_latest_checkpoint(run_dir) if run_dir.exists() else None
    if latest is None or not rec.out.exists():
        return
    step = int(load_meta(latest)["step"])
    old = json.loads(rec.out.read_text())
    rec.steps = [s for s in old["steps"] if s["step"] <= step]
    rec.probes = [p for p in old["probes"] if p["after_push"] <= step]
    rec.calls = step
    rec.meta["resumed_at"] = [*old["meta"].get("resumed_at", []), step]
    rec.meta["load_avg_start"] = old["meta"].get("load_avg_start", rec.meta["load_avg_start"])


def cmd_run(args: argparse.Namespace) -> None:
    from hydra import compose, initialize_config_dir

    from r1zero.config import register_configs, to_run_config
    from r1zero.env import setup_environment
    from r1zero.train import CONF_DIR, run

    setup_environment()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    run_dir = args.run_dir or str(out.with_suffix("")) + "_run"
    resume = [f"checkpoint.every={args.resume_every}", "checkpoint.resume=true"] if args.resume_every else []
    overrides = [*BASE_OVERRIDES, f"run_dir={run_dir}", *resume, *args.overrides]
    register_configs()
    with initialize_config_dir(config_dir=CONF_DIR, version_base=None):
        cfg = to_run_config(compose("config", overrides=overrides))
    meta = {
        "case": args.case,
        "model": cfg.model.name,
        "precision": f"{ROLLOUT_LABEL.get(cfg.rollout.dtype, cfg.rollout.dtype)}/{cfg.learner.precision}",
        "rollout_dtype": cfg.rollout.dtype,
        "learner_precision": cfg.learner.precision,
        "lr": cfg.learner.lr,
        "temperature": cfg.rollout.temperature,
        "block_size": args.block_size,
        "random_advantages": args.random_advantages,
        "noise_rel": args.noise_rel if args.case == "noisy_param" else None,
        "overrides": overrides,
        "load_avg_start": load_average(),
    }
    rec = Recorder(out, meta)
    if args.resume_every:
        resume_records(rec, Path(run_dir))
    install_hooks(rec, args)
    run(cfg)
    rec.meta["done"] = True
    rec.save()
    last = rec.steps[-1]["stats"] if rec.steps else {}
    print(f"[gap study] {out}: {len(rec.steps)} steps, last step {last}")


def cmd_sweep(args: argparse.Namespace) -> None:
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for model in args.models:
        for label in args.precisions:
            rollout_dtype, learner_precision = PRECISIONS[label]
            for case in args.cases:
                steps = args.correct_steps if case == "correct" else args.fault_steps
                out = out_dir / f"{model}-{label.replace('/', '_')}-{case}.json"
                if out.exists() and json.loads(out.read_text())["meta"].get("done"):
                    continue
                command = [
                    sys.executable, __file__, "run", "--case", case, "--out", str(out),
                    "--block-size", str(args.block_size),
                ]  # fmt: skip
                if model in ("tiny", "small"):
                    command.append("--random-advantages")
                command += [
                    "--", f"model={model}", f"steps={steps}", f"rollout.dtype={rollout_dtype}",
                    f"learner.precision={learner_precision}", *args.overrides,
                ]  # fmt: skip
                print("[gap study]", " ".join(command), flush=True)
                subprocess.run(command, check=False)


# ---------------------------------------------------------------------------------------------- report
def _fmt(x: float) -> str:
    return "-" if x != x else f"{x:.2g}" if x < 0.01 else f"{x:.3f}" if x < 10 else f"{x:.1f}"


def _limits(meta: dict[str, Any]) -> tuple[Any, Any]:
    """(the default limits by the run's precision, the old default: a max limit alone) for this run."""
    from r1zero.config import LearnerConfig, RolloutConfig, RunConfig
    from r1zero.sync import as_gap_limits

    cfg = RunConfig(
        rollout=RolloutConfig(dtype=meta["rollout_dtype"]),
        learner=LearnerConfig(precision=meta["learner_precision"]),
    )
    fp32 = meta["rollout_dtype"] == "float32" and meta["learner_precision"] == "fp32"
    return cfg.sync_limits, as_gap_limits(0.01 if fp32 else 1.0)


def _first_caught(rows: list[dict[str, Any]], limits: Any, offset: int) -> str:
    """The first check (1-based step or push number) whose gap breaks `limits`, or "-"."""
    from r1zero.sync import gap_violation

    for k, row in enumerate(rows):
        if gap_violation(row["stats"]["max"], row["stats"]["mean"], limits) is not None:
            return str(k + offset)
    return "-"


def _label(meta: dict[str, Any]) -> str:
    return f"{meta['model']} | {meta['precision'].replace('float32', 'fp32')} | {meta['lr']:g}"


def cmd_report(args: argparse.Namespace) -> None:
    """Markdown tables. Correct syncs: each statistic's median and max over the steps (probes). Faults: the
    statistics of the first faulty check (step 2 for the per-step check: step 1 samples from the weights both
    sides loaded from disk; push 1 for the probe) and the last one, and the first check each criterion catches
    (new: `RunConfig.sync_limits` for the run's precision; old: the max limit alone, 0.01 fp32 / 1.0 bf16)."""
    runs = [json.loads(Path(p).read_text()) for p in args.files]
    order = {c: i for i, c in enumerate(CASES)}
    runs.sort(
        key=lambda r: (r["meta"]["model"], r["meta"]["precision"], r["meta"]["lr"], order[r["meta"]["case"]])
    )
    shown = ("max", "mean", "p50", "p90", "p99", "row_mean_max")
    for check, key, skip in (("per-step check", "steps", 1), ("probe after each push", "probes", 0)):
        print(f"\n### Correct syncs, {check}: median / max over the run\n")
        print(f"| model | rollout/learner | lr | n | {' | '.join(shown)} |")
        print("|" + "---|" * (4 + len(shown)))
        for r in runs:
            m, rows = r["meta"], r[key]
            if m["case"] != "correct" or not rows:
                continue
            cells = []
            for s in shown:
                values = sorted(x["stats"][s] for x in rows)
                cells.append(f"{_fmt(values[len(values) // 2])} / {_fmt(values[-1])}")
            print(f"| {_label(m)} | {len(rows)} | {' | '.join(cells)} |")
        print(f"\n### Faults, {check}: first faulty check / last; first check caught (new / old criterion)\n")
        print(f"| model | rollout/learner | lr | case | n | {' | '.join(shown)} | caught new / old |")
        print("|" + "---|" * (6 + len(shown)))
        for r in runs:
            m, rows = r["meta"], r[key][skip:]
            if m["case"] == "correct" or not rows:
                continue
            new, old = _limits(m)
            cells = [f"{_fmt(rows[0]['stats'][s])} / {_fmt(rows[-1]['stats'][s])}" for s in shown]
            caught = f"{_first_caught(rows, new, skip + 1)} / {_first_caught(rows, old, skip + 1)}"
            print(f"| {_label(m)} | {m['case']} | {len(rows)} | {' | '.join(cells)} | {caught} |")
    print("\nn: faulty checks counted (per-step check: steps 2..; probe: pushes 1..). Load average per run:")
    for r in runs:
        m = r["meta"]
        print(
            f"- {_label(m)} {m['case']}: {m.get('seconds', 0):.0f} s, load {m['load_avg_start']:.1f} -> "
            f"{m.get('load_avg_end', float('nan')):.1f}"
        )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="one training run with recorders")
    p_run.add_argument("--case", choices=CASES, default="correct")
    p_run.add_argument("--out", required=True, help="JSON file for the recorded gaps")
    p_run.add_argument("--run-dir", default=None)
    p_run.add_argument("--block-size", type=int, default=0, help="vLLM KV block size (0: the engine default)")
    p_run.add_argument("--random-advantages", action="store_true")
    p_run.add_argument("--noise-rel", type=float, default=0.01)
    p_run.add_argument(
        "--resume-every",
        type=int,
        default=0,
        help="checkpoint every k steps and resume a killed run (0: off)",
    )
    p_run.add_argument("overrides", nargs="*", help="Hydra overrides for the run (after --)")
    p_sweep = sub.add_parser("sweep", help="a grid of runs, one process each")
    p_sweep.add_argument("--models", nargs="+", default=["tiny", "small"])
    p_sweep.add_argument("--precisions", nargs="+", default=list(PRECISIONS), choices=list(PRECISIONS))
    p_sweep.add_argument("--cases", nargs="+", default=list(CASES), choices=CASES)
    p_sweep.add_argument("--correct-steps", type=int, default=20)
    p_sweep.add_argument("--fault-steps", type=int, default=6)
    p_sweep.add_argument("--block-size", type=int, default=32)
    p_sweep.add_argument("--out-dir", required=True)
    p_sweep.add_argument("overrides", nargs="*", help="extra Hydra overrides for every run (after --)")
    p_report = sub.add_parser("report", help="markdown tables from saved runs")
    p_report.add_argument("files", nargs="+")
    args = parser.parse_args(argv)
    {"run": cmd_run, "sweep": cmd_sweep, "report": cmd_report}[args.command](args)


if __name__ == "__main__":
    main()
