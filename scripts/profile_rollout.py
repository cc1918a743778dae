"""Where the rollout's time goes, against the arithmetic floor of the same forward passes (issue #16, item 1).

    .venv/bin/python scripts/profile_rollout.py                  # the CPU default run's batch, eager engine
    .venv/bin/python scripts/profile_rollout.py --compiled       # rollout.enforce_eager=false (Dynamo + Inductor)
    .venv/bin/python scripts/profile_rollout.py --ops -- rollout.group_size=8   # + torch's op table; overrides
    .venv/bin/python scripts/profile_rollout.py --engine-arg block_size=128     # vLLM's CPU KV blocks (before)
    .venv/bin/python scripts/profile_rollout.py --regions    # + OpenMP parallel regions per pass, and where

Samples the prompts of the CPU default run's steps 1..N (seeded as the loop seeds them) with r1zero's vLLM
engine and times, per step: the model's forward passes (prefill and decode apart), the output head
(`compute_logits`), vLLM's sampler, and the rest of `generate` (scheduler, input preparation, outputs: Python).
The floor of each forward is `r1zero.bench.floor.roofline_seconds` at this machine's measured matrix-multiply
rate and memory bandwidth, for the tokens, sampled rows and attention pairs that forward really had. Prints a
table and one JSON line, with what one OpenMP parallel region costs here (`r1zero.cpu.parallel_region_us`: ~50
us on a VM whose idle cores halt at once, ~10 us where they poll). Run it on a quiet machine: another busy process
moves every number. `--regions` counts the OpenMP parallel regions of each pass and the time inside them
(`r1zero.bench.omp_regions`: a small C wrapper, built with the system compiler and preloaded by re-running this
script), and names the region sites that take the most time. The two rates are measured before and after the
run and the best of each is kept (a low measurement would make the floor easy); where vLLM's own matrix kernels
ran faster than torch's square product, their rate is the peak. "Matrix products alone" replays each pass's
linear layers and output head through vLLM's kernels and packed weights, back to back with nothing between them:
the part of a pass no engine change can take off (the profile runs them after the timed steps).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from r1zero.bench.omp_regions import RegionCounter, RegionTotals

# Set on the re-run, so that a preload that did not take fails instead of looping.
_PRELOADED = "R1ZERO_OMP_REGIONS_PRELOADED"


class Recorder:
    """Wraps the engine's forward, output head and sampler; keeps one record per call. With a region counter
    (`--regions`), each forward also records its OpenMP regions and the seconds inside them, and the per-site
    tally runs during forwards and heads only (not the sampler or the scheduler)."""

    def __init__(self, regions: RegionCounter | None = None) -> None:
        self.forwards: list[dict[str, float]] = []  # tokens, pairs, seconds (+ regions, region_s)
        self.heads: list[dict[str, float]] = []  # rows, seconds
        self.sampler_seconds: list[float] = []
        self.regions = regions
        self.model: Any = None  # set by attach
        self.head: Callable[[Any], Any] = lambda hidden: None

    def clear(self) -> None:
        self.forwards, self.heads = [], []
        self.sampler_seconds.clear()
        if self.regions is not None:
            self.regions.clear_sites()

    @property
    def sampler_s(self) -> float:
        return sum(self.sampler_seconds)

    def attach(self, runner: Any) -> None:
        from r1zero.bench.loops import time_method

        model = runner.get_model()
        forward, head = model.forward, model.compute_logits
        self.model, self.head = model, head  # the unwrapped head, for the matrix products alone

        def timed_forward(*args: Any, **kwargs: Any) -> Any:
            ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
            positions = kwargs["positions"] if "positions" in kwargs else args[1]
            before = self.regions.snapshot() if self.regions else None
            start = time.perf_counter()
            out = forward(*args, **kwargs)
            seconds = time.perf_counter() - start
            pairs = float((positions.flatten() + 1).sum())  # each token attends to its position + 1 keys
            record = {"tokens": float(ids.numel()), "pairs": pairs, "seconds": seconds}
            record.update(self._regions_since(before))
            self.forwards.append(record)
            return out

        def timed_head(hidden: Any, *args: Any, **kwargs: Any) -> Any:
            before = self.regions.snapshot() if self.regions else None
            start = time.perf_counter()
            out = head(hidden, *args, **kwargs)
            record = {"rows": float(hidden.shape[0]), "seconds": time.perf_counter() - start}
            record.update(self._regions_since(before))
            self.heads.append(record)
            return out

        if self.regions is None:
            model.forward, model.compute_logits = timed_forward, timed_head
        else:
            tally = self.regions
            model.forward, model.compute_logits = _tallied(tally, timed_forward), _tallied(tally, timed_head)
        self.sampler_seconds = time_method(runner.sampler, "forward")

    def _regions_since(self, before: RegionTotals | None) -> dict[str, float]:
        """The regions a call opened since `before` (nothing without a counter)."""
        if self.regions is None or before is None:
            return {}
        opened = self.regions.since(before)
        return {"regions": opened.regions, "region_s": opened.seconds, "single": opened.single_thread}


def linear_products(model: Any) -> list[tuple[Callable[[Any], Any], int]]:
    """Each linear layer of a vLLM model as (x -> its product through vLLM's own kernel and packed weight,
    in_features), in the model's order (`r1zero.bench.floor.matrix_products_seconds`)."""
    from vllm.model_executor.layers.linear import LinearBase

    def product(layer: Any) -> Callable[[Any], Any]:
        return lambda x: layer.quant_method.apply(layer, x, getattr(layer, "bias", None))

    linears: list[Any] = [m for m in model.modules() if isinstance(m, LinearBase)]
    return [(product(m), m.input_size) for m in linears]  # one rank: the whole input


def _tallied(regions: RegionCounter, method: Callable[..., Any]) -> Callable[..., Any]:
    """`method` with the per-site region tally on while it runs."""

    def tallied(*args: Any, **kwargs: Any) -> Any:
        regions.track(True)
        try:
            return method(*args, **kwargs)
        finally:
            regions.track(False)

    return tallied


def profile(args: argparse.Namespace) -> dict[str, Any]:
    from r1zero.env import setup_environment

    setup_environment()
    import torch

    from r1zero.bench.floor import (
        forward_bytes,
        forward_flops,
        matrix_products_seconds,
        measure_bandwidth,
        measure_peak_flops,
        roofline_seconds,
    )
    from r1zero.bench.loops import compose_config, step_prompts
    from r1zero.bench.omp_regions import RegionCounter
    from r1zero.bench.stats import ModelShape
    from r1zero.cpu import cpu_flags, describe_vector_features, guest_halt_poll_ns, parallel_region_us
    from r1zero.models import resolve_model
    from r1zero.rollout.base import SamplingSettings, step_seed
    from r1zero.rollout.vllm_engine import VLLMEngine, inprocess_worker

    cfg = compose_config(args.overrides)
    threads = cfg.cpu_threads if cfg.cpu_threads > 0 else os.cpu_count() or 1
    torch.set_num_threads(threads)
    dtype = "float32" if cfg.rollout.dtype in ("float32", "auto") else cfg.rollout.dtype
    peak, bandwidth = measure_peak_flops(dtype), measure_bandwidth()
    region_us = parallel_region_us()  # what waking the other core costs here (r1zero.cpu)
    model_path = resolve_model(cfg.model.name)
    shape = ModelShape.from_config(json.loads((Path(model_path) / "config.json").read_text()))
    dtype_bytes = torch.empty(0, dtype=getattr(torch, dtype)).element_size()
    started = time.perf_counter()
    extra = {k: json.loads(v) for k, v in (item.split("=", 1) for item in args.engine_arg)}
    engine = VLLMEngine.from_config(
        model_path, cfg.rollout, seed=cfg.seed, enforce_eager=not args.compiled, **extra
    )
    start_s = time.perf_counter() - started
    recorder = Recorder(RegionCounter.attach() if args.regions else None)
    recorder.attach(inprocess_worker(engine._llm).model_runner)
    prompts = step_prompts(cfg, engine.tokenizer, args.steps + 1)

    def sample(step: int) -> list[Any]:
        sampling = SamplingSettings.from_config(cfg.rollout, seed=step_seed(cfg.seed, step))
        return engine.generate(prompts[step], sampling)

    sample(0)  # warm-up, not timed
    recorder.clear()
    generate_s, generated = 0.0, 0
    profiler = _op_profiler() if args.ops else None
    with profiler or contextlib.nullcontext():
        for step in range(1, args.steps + 1):
            started = time.perf_counter()
            rows = sample(step)
            generate_s += time.perf_counter() - started
            generated += sum(len(c.token_ids) for c in rows)
    if len(recorder.heads) != len(recorder.forwards):
        raise RuntimeError(f"{len(recorder.forwards)} forwards but {len(recorder.heads)} head calls")
    pass_shapes = [(int(f["tokens"]), int(h["rows"])) for f, h in zip(recorder.forwards, recorder.heads)]
    dtype_torch = next(recorder.model.parameters()).dtype
    products_s = matrix_products_seconds(
        linear_products(recorder.model), recorder.head, shape.hidden, pass_shapes, dtype_torch
    )
    engine.close()
    # The rates once more after the run: on a shared or frequency-scaling machine one measurement can be low,
    # which would lower the floor's bar; the floor takes the best of both.
    peak, bandwidth = max(peak, measure_peak_flops(dtype)), max(bandwidth, measure_bandwidth())
    # vLLM's kernels can beat torch's square product (prefill did here, ~7%): then their rate is the peak.
    peak = max([peak] + [forward_flops(shape, m, r, 0) / s for (m, r), s in products_s.items()])

    parts: dict[str, dict[str, float]] = {
        kind: {
            "calls": 0,
            "tokens": 0,
            "seconds": 0,
            "floor": 0,
            "regions": 0,
            "single_regions": 0,
            "region_s": 0,
            "products": 0,
        }
        for kind in ("prefill", "decode")
    }
    for fwd, head, (tokens, head_rows) in zip(recorder.forwards, recorder.heads, pass_shapes):
        kind = "prefill" if tokens > head_rows else "decode"
        flops = forward_flops(shape, tokens, head_rows, int(fwd["pairs"]))
        part = parts[kind]
        part["calls"] += 1
        part["tokens"] += fwd["tokens"]
        part["seconds"] += fwd["seconds"] + head["seconds"]
        part["products"] += products_s[(tokens, head_rows)]
        part["regions"] += fwd.get("regions", 0) + head.get("regions", 0)
        part["region_s"] += fwd.get("region_s", 0) + head.get("region_s", 0)
        part["single_regions"] += fwd.get("single", 0) + head.get("single", 0)
        part["floor"] += roofline_seconds(
            flops, forward_bytes(shape, int(fwd["pairs"]), dtype_bytes), peak, bandwidth
        )
    head_s = sum(h["seconds"] for h in recorder.heads)
    model_s = sum(p["seconds"] for p in parts.values())
    floor_s = sum(p["floor"] for p in parts.values())
    n = args.steps
    result = {
        "compiled": args.compiled, "engine_start_s": round(start_s, 1), "steps": n, "threads": threads,
        "cpu": describe_vector_features(cpu_flags()), "peak_gflops": round(peak / 1e9, 1), "bandwidth_gbs": round(bandwidth / 1e9, 1),
        "omp_region_us": round(region_us, 1), "guest_halt_poll_ns": guest_halt_poll_ns(),
        "generate_s": generate_s / n, "floor_s": floor_s / n, "x_floor": generate_s / floor_s,
        "model_s": model_s / n, "head_s": head_s / n, "sampler_s": recorder.sampler_s / n,
        "overhead_s": (generate_s - model_s - recorder.sampler_s) / n,
        "generated_tokens": generated / n,
        "parts": {k: {m: v / n for m, v in p.items()} for k, p in parts.items()},
        "overrides": args.overrides, "engine_args": args.engine_arg,
    }  # fmt: skip
    if recorder.regions is not None:
        from r1zero.bench.omp_regions import name_sites

        result["region_sites"] = [
            {"site": site.name, "calls": site.calls / n, "seconds": site.seconds / n,
             "us_per_call": 1e6 * site.seconds / site.calls}
            for site in name_sites(recorder.regions.sites())[: args.ops_rows]
        ]  # fmt: skip
    _print_table(result)
    if profiler is not None:
        print(profiler.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.ops_rows))
    print(json.dumps(result))
    return result


def _op_profiler() -> Any:
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU])


def _print_table(r: dict[str, Any]) -> None:
    def row(name: str, seconds: float, floor: float | None = None, detail: str = "") -> str:
        ratio = f"{seconds / floor:5.2f}x" if floor else "      "
        floor_text = f"{floor:8.3f}" if floor is not None else " " * 8
        return f"| {name:<34} | {seconds:8.3f} | {floor_text} | {ratio} | {detail}"

    mode = "compiled (enforce_eager=false)" if r["compiled"] else "eager"
    mode += "".join(f", {arg}" for arg in r["engine_args"])
    print(
        f"\nrollout profile, {mode}, {r['steps']} steps, {r['threads']} threads, CPU {r['cpu']}; "
        f"peak {r['peak_gflops']} GFLOP/s, memory {r['bandwidth_gbs']} GB/s; engine start {r['engine_start_s']} s; "
        f"one OpenMP region {r['omp_region_us']} us (guest_halt_poll_ns {r['guest_halt_poll_ns']})"
    )
    print(f"| {'per step':<34} | {'seconds':>8} | {'floor':>8} | ratio  | detail")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|--------|-------")
    for kind in ("prefill", "decode"):
        p = r["parts"][kind]
        print(row(f"model, {kind} (forward + head)", p["seconds"], p["floor"],
                  f"{p['calls']:.1f} passes, {p['tokens']:.0f} tokens"))  # fmt: skip
    print(row("  of which output head", r["head_s"]))
    for kind in ("prefill", "decode"):
        p = r["parts"][kind]
        print(
            row(f"  {kind}'s matrix products alone", p["products"], p["floor"], "same kernels, back to back")
        )
    print(row("sampler", r["sampler_s"]))
    print(row("engine overhead (Python)", r["overhead_s"]))
    print(row("generate", r["generate_s"], r["floor_s"], f"{r['generated_tokens']:.0f} tokens generated"))
    if "region_sites" not in r:
        return
    for kind in ("prefill", "decode"):
        p = r["parts"][kind]
        if p["calls"]:
            print(
                f"{kind}: {p['regions'] / p['calls']:.0f} OpenMP regions per pass "
                f"({p['single_regions'] / p['calls']:.0f} of them on one thread); per step "
                f"{p['region_s']:.3f} s inside them, {p['seconds'] - p['region_s']:.3f} s outside"
            )
    print(f"\n| {'region site (forwards and heads)':<60} | calls/step | us/call | s/step")
    for site in r["region_sites"]:
        name = site["site"] if len(site["site"]) <= 60 else site["site"][:57] + "..."
        print(f"| {name:<60} | {site['calls']:10.0f} | {site['us_per_call']:7.1f} | {site['seconds']:.3f}")


def _preload_region_counter() -> None:
    """Re-run this script with the region counter preloaded, unless it already is."""
    from r1zero.bench.omp_regions import RegionCounter, build_shim, preload_env

    if RegionCounter.attach() is not None:
        return
    if os.environ.get(_PRELOADED):
        raise SystemExit(
            f"--regions: the region counter was preloaded (LD_PRELOAD={os.environ.get('LD_PRELOAD', '')}) but did "
            "not load; a noexec cache folder or a secure-execution Python ignores LD_PRELOAD"
        )
    env = {**preload_env(build_shim(), os.environ), _PRELOADED: "1"}
    os.execve(sys.executable, [sys.executable, *sys.argv], env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=8, help="timed steps after one warm-up (default 8)")
    parser.add_argument("--compiled", action="store_true", help="rollout.enforce_eager=false")
    parser.add_argument("--ops", action="store_true", help="also print torch's profiler table of the top ops")
    parser.add_argument(
        "--engine-arg", action="append", default=[], metavar="KEY=JSON",
        help="an extra vllm.LLM argument, e.g. block_size=128 (vLLM's CPU default, before r1zero's 32)",
    )  # fmt: skip
    parser.add_argument("--regions", action="store_true", help="count OpenMP regions per pass (needs cc)")
    parser.add_argument("--ops-rows", type=int, default=15, help="rows of the op and region-site tables")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run config (after --)")
    args = parser.parse_args(argv)
    if args.regions:
        _preload_region_counter()
    profile(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
