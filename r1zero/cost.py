"""What a run cost: device-hours, tokens and money, per phase, as `cost/*` metrics. Pure arithmetic on scalars.

Device-hours are wall time x devices: GPU-hours on GPUs (one GPU per process), core-hours on CPU (the cores the
run keeps busy). Money is device-hours x a rate: by default $2 per GPU-hour, the rate DeepSeek priced its H800
hours at, and $0.05 per CPU core-hour (of the order of an on-demand cloud vCPU-hour in 2025; set your own in
`cost.usd_per_cpu_core_hour`). Phases are the training loop's (`perf/<phase>_s`: rollout, reward, learner, sync);
"other" is the rest of the wall time (setup, evaluation, checkpoints) when the wall time is known.

DeepSeek's published figure: the DeepSeek-V3 technical report gives 2.788M H800 GPU-hours at $2 per GPU-hour,
$5.576M, for V3's official training run (the base model that R1-Zero was then trained from by RL).
"""

from __future__ import annotations

from collections.abc import Mapping

DEEPSEEK_V3_GPU_HOURS = 2.788e6
DEEPSEEK_USD_PER_GPU_HOUR = 2.0
DEEPSEEK_V3_USD = DEEPSEEK_V3_GPU_HOURS * DEEPSEEK_USD_PER_GPU_HOUR  # $5.576M


def devices_used(gpu: bool, world_size: int, threads_per_rank: int, cpu_cores: int) -> int:
    """Devices billed: one GPU per process on GPU; on CPU the cores kept busy (processes x threads, at most
    the machine's cores). Example: CPU, 1 process x 2 threads on 2 cores -> 2; 2 x 2 on 2 cores -> 2; GPU, 8 -> 8."""
    if gpu:
        return max(1, world_size)
    return max(1, min(cpu_cores, world_size * max(1, threads_per_rank)))


def accumulate(
    totals: Mapping[str, float],
    phase_seconds: Mapping[str, float],
    *,
    tokens_generated: float,
    tokens_trained: float,
) -> dict[str, float]:
    """Running totals after one more step (a new dict; JSON-able, so it can ride in the checkpoint).

    Example: {} + ({"rollout": 2.0, "learner": 3.0}, 100 generated, 80 trained) -> {"rollout_s": 2.0,
    "learner_s": 3.0, "tokens_generated": 100.0, "tokens_trained": 80.0}; the same step again doubles each.
    """
    out = dict(totals)
    for phase, seconds in phase_seconds.items():
        out[f"{phase}_s"] = out.get(f"{phase}_s", 0.0) + float(seconds)
    out["tokens_generated"] = out.get("tokens_generated", 0.0) + float(tokens_generated)
    out["tokens_trained"] = out.get("tokens_trained", 0.0) + float(tokens_trained)
    return out


def cost_metrics(
    phase_seconds: Mapping[str, float],
    *,
    gpu: bool,
    devices: int,
    tokens_generated: float,
    tokens_trained: float,
    usd_per_gpu_hour: float = DEEPSEEK_USD_PER_GPU_HOUR,
    usd_per_cpu_core_hour: float = 0.05,
    wall_s: float | None = None,
) -> dict[str, float]:
    """The cost/* figures of `phase_seconds` (phase -> seconds of wall time) on `devices` GPUs or CPU cores.

    Example: {"rollout": 1800, "learner": 5400} s on 8 GPUs at $2, 4M tokens generated, wall 7920 s ->
    cost/rollout_device_hours 4.0 (0.5 h x 8), cost/learner_device_hours 12.0, cost/other_device_hours 1.6
    (720 s x 8), cost/device_hours 17.6, cost/usd 35.2 (rollout 8.0, learner 24.0, other 3.2),
    cost/usd_per_million_tokens_generated 8.8, cost/deepseek_v3_fraction 35.2 / 5.576e6 = 6.31e-6.
    tokens_trained: the response tokens the loss was computed on (each pass counted), as perf/learner_tokens.
    """
    rate = usd_per_gpu_hour if gpu else usd_per_cpu_core_hour
    phases = {name: float(seconds) for name, seconds in phase_seconds.items()}
    busy = sum(phases.values())
    if wall_s is not None and wall_s > busy:
        phases["other"] = wall_s - busy
    total_s = sum(phases.values())
    out: dict[str, float] = {}
    for name, seconds in phases.items():
        out[f"cost/{name}_device_hours"] = seconds / 3600 * devices
        out[f"cost/{name}_usd"] = seconds / 3600 * devices * rate
    device_hours = total_s / 3600 * devices
    usd = device_hours * rate
    out |= {
        "cost/wall_s": total_s,
        "cost/devices": float(devices),
        "cost/gpu": 1.0 if gpu else 0.0,
        "cost/usd_per_device_hour": rate,
        "cost/device_hours": device_hours,
        "cost/usd": usd,
        "cost/tokens_generated": float(tokens_generated),
        "cost/tokens_trained": float(tokens_trained),
        "cost/deepseek_v3_fraction": usd / DEEPSEEK_V3_USD,
    }
    if tokens_generated > 0:
        out["cost/usd_per_million_tokens_generated"] = usd / tokens_generated * 1e6
    return out


def cost_from_totals(
    totals: Mapping[str, float],
    *,
    gpu: bool,
    devices: int,
    usd_per_gpu_hour: float = DEEPSEEK_USD_PER_GPU_HOUR,
    usd_per_cpu_core_hour: float = 0.05,
    wall_s: float | None = None,
) -> dict[str, float]:
    """`cost_metrics` of the running totals that `accumulate` keeps."""
    phases = {key[:-2]: value for key, value in totals.items() if key.endswith("_s")}
    return cost_metrics(
        phases,
        gpu=gpu,
        devices=devices,
        tokens_generated=totals.get("tokens_generated", 0.0),
        tokens_trained=totals.get("tokens_trained", 0.0),
        usd_per_gpu_hour=usd_per_gpu_hour,
        usd_per_cpu_core_hour=usd_per_cpu_core_hour,
        wall_s=wall_s,
    )


def _unit(cost: Mapping[str, float]) -> str:
    return "GPU-hours" if cost.get("cost/gpu", 0.0) >= 1 else "CPU core-hours"


def phase_rows(cost: Mapping[str, float]) -> list[tuple[str, float, float, float]]:
    """(phase, device-hours, USD, share of the total) for each phase in `cost`, largest first."""
    total = cost.get("cost/device_hours", 0.0)
    rows = [
        (
            key[len("cost/") : -len("_device_hours")],
            value,
            cost.get(key.replace("_device_hours", "_usd"), 0.0),
        )
        for key, value in cost.items()
        if key.endswith("_device_hours") and key != "cost/device_hours"
    ]
    return [
        (name, hours, usd, hours / total if total else 0.0)
        for name, hours, usd in sorted(rows, key=lambda r: -r[1])
    ]


def deepseek_comparison(cost: Mapping[str, float]) -> str:
    """One sentence relating the run to DeepSeek's published figure.

    Example: $35.20 -> "$35.20 is 6.3e-06 of DeepSeek-V3's published $5.576M (2.788M H800 GPU-hours at $2 per
    GPU-hour; the base model R1-Zero was trained from): DeepSeek's budget would pay for 158,409 such runs."
    """
    usd = cost.get("cost/usd", 0.0)
    money = f"${usd:,.2f}" if usd >= 1 else f"${usd:.3g}"
    runs = f": DeepSeek's budget would pay for {DEEPSEEK_V3_USD / usd:,.0f} such runs" if usd > 0 else ""
    return (
        f"{money} is {usd / DEEPSEEK_V3_USD:.2g} of DeepSeek-V3's published $5.576M (2.788M H800 GPU-hours at "
        f"$2 per GPU-hour; the base model R1-Zero was trained from){runs}."
    )


def format_cost(cost: Mapping[str, float]) -> list[str]:
    """The cost lines of the end-of-run summary.

    Example (2 CPU cores, rollout 156 s, learner 252 s, wall 493 s): "  cost  0.274 CPU core-hours x $0.05 =
    $0.01369  (learner 0.14, rollout 0.0867, other 0.0472)", then the tokens and the DeepSeek comparison.
    """
    if "cost/usd" not in cost:
        return []
    phases = ", ".join(f"{name} {hours:.3g}" for name, hours, _, _ in phase_rows(cost))
    return [
        f"  cost  {cost['cost/device_hours']:.3g} {_unit(cost)} x ${cost['cost/usd_per_device_hour']:g} = "
        f"${cost['cost/usd']:.4g}  ({phases})",
        f"  tokens  {cost.get('cost/tokens_generated', 0):,.0f} generated, {cost.get('cost/tokens_trained', 0):,.0f} "
        "trained",
        f"  {deepseek_comparison(cost)}",
    ]
