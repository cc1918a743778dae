"""From the workers' raw results to the summary numbers, the targets and the printed table (pure functions)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from r1zero_bench.stats import (
    TARGETS,
    ModelShape,
    check_targets,
    fmt,
    learner_flops,
    median,
    ratio,
    render_table,
)

NAN = float("nan")
NOISY = 0.05  # share of the machine's CPU taken by other processes during a measurement that makes it suspect


def _ok(part: Mapping[str, Any] | None) -> Mapping[str, Any]:
    return part if part and part.get("ok") else {}


def merge_rounds(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """One loop measurement from several rounds of it (r1zero and TRL alternate round by round): timed steps
    pooled, phase medians and token counts as the median over rounds, peaks and CPU noise as the worst round.
    Failed rounds are left out; with none left, the first failure is returned."""
    good = [r for r in rounds if r.get("ok")]
    if not good:
        return rounds[0] if rounds else {"ok": False, "error": "not run"}
    merged: dict[str, Any] = dict(good[0])
    merged["step_s"] = [t for r in good for t in r.get("step_s", [])]
    merged["step_s_median"] = median(merged["step_s"])
    merged["rounds"] = len(good)
    for key in ("completion_tokens_per_step", "generate_and_score_s"):
        if key in merged:
            merged[key] = median([r[key] for r in good if r.get(key) is not None])
    if "phases" in merged:
        keys = {k for r in good for k in r.get("phases", {})}
        merged["phases"] = {
            k: median([r["phases"][k] for r in good if k in r.get("phases", {})]) for k in keys
        }
    for key in ("peak_rss_mib", "foreign_cpu_share", "worker_s"):
        values = [r[key] for r in good if r.get(key) is not None]
        if values:
            merged[key] = max(values) if key != "worker_s" else sum(values)
    return merged


def summarize_model(per: Mapping[str, Any]) -> dict[str, Any]:
    """Summary numbers of one model from its workers' results (missing or failed parts give NaN)."""
    loop, trl, comp = _ok(per.get("r1zero")), _ok(per.get("trl")), _ok(per.get("components"))
    out: dict[str, Any] = {}
    step = loop.get("step_s_median", NAN)
    out["r1zero_step_s"] = step
    out["precision"] = loop.get("settings", {}).get("precision", "-")
    out["trl_step_s"] = trl.get("step_s_median", NAN)
    out["trl_generate_s"] = trl.get("generate_and_score_s", NAN)
    out["trl_train_s"] = out["trl_step_s"] - out["trl_generate_s"]
    out["speedup_vs_trl"] = ratio(out["trl_step_s"], step)
    out["r1zero_completion_tokens"] = loop.get("completion_tokens_per_step", NAN)
    out["trl_completion_tokens"] = trl.get("completion_tokens_per_step", NAN)
    phases = loop.get("phases", {})
    for name in ("rollout", "reward", "learner", "sync"):
        out[f"loop_{name}_s"] = phases.get(f"perf/{name}_s", NAN)
    out["sync_push_s"] = phases.get("sync/push_s", NAN)
    out["sync_verify_s"] = phases.get("sync/verify_seconds", NAN)
    # The probe runs after every verify_every-th push (the per-step check is part of the learner's pass): its
    # cost per step is verify / verify_every.
    every = loop.get("settings", {}).get("sync_verify_every", 1)
    probe = out["sync_verify_s"] / every if every else 0.0
    out["sync_amortized_s"] = out["sync_push_s"] + (probe if probe == probe else 0.0)
    out["sync_fraction"] = ratio(out["sync_amortized_s"], step)
    out["r1zero_peak_rss_mib"] = loop.get("peak_rss_mib", NAN)
    out["trl_peak_rss_mib"] = trl.get("peak_rss_mib", NAN)

    rollout = comp.get("rollout", {})
    out["rollout_ours_s"] = median(rollout.get("ours_s", []))
    out["rollout_raw_s"] = median(rollout.get("raw_s", []))
    out["rollout_efficiency"] = ratio(out["rollout_raw_s"], out["rollout_ours_s"])
    out["rollout_same_tokens"] = rollout.get("same_tokens")

    learner = comp.get("learner", {})
    tokens = learner.get("tokens", {})
    reference = learner.get("reference")
    raw_times = learner.get("raw_s", {})
    out["learner_reference"] = reference
    out["learner_ours_s"] = median(learner.get("ours_s", []))
    for layout, times in raw_times.items():
        out[f"learner_raw_{layout}_s"] = median(times)
    out["learner_raw_s"] = median(raw_times.get(reference, [])) if reference else NAN
    out["learner_efficiency"] = ratio(out["learner_raw_s"], out["learner_ours_s"])
    naive, packed, targets = (tokens.get(k, 0) for k in ("naive", "packed", "targets"))
    computed = packed + tokens.get("padding", 0)  # ours: real packed tokens + the padding of uneven rows
    out["learner_naive_tokens"], out["learner_packed_tokens"] = naive, packed
    out["learner_ours_tokens_per_s"] = ratio(naive, out["learner_ours_s"])
    out["learner_raw_tokens_per_s"] = ratio(naive, out["learner_raw_s"])
    out["learner_padding_fraction"] = ratio(tokens.get("padding", 0), computed) if computed else NAN
    out["padded_layout_waste"] = 1.0 - ratio(naive, tokens["padded"]) if tokens.get("padded") else NAN
    out["learner_max_abs_logprob_diff"] = max(learner.get("max_abs_logprob_diff", {}).values(), default=NAN)
    if comp.get("model_config") and naive:
        shape = ModelShape.from_config(comp["model_config"])
        ours_flops = learner_flops(shape, tokens=computed, head_rows=targets, head_passes=4)
        raw_flops = learner_flops(shape, tokens=naive, head_rows=targets, head_passes=3)
        out["learner_ours_gflop"], out["learner_raw_gflop"] = ours_flops / 1e9, raw_flops / 1e9
        out["learner_ours_gflops"] = ratio(ours_flops / 1e9, out["learner_ours_s"])
        out["learner_raw_gflops"] = ratio(raw_flops / 1e9, out["learner_raw_s"])
    shares = [w.get("foreign_cpu_share", NAN) for w in per.values() if isinstance(w, Mapping)]
    out["foreign_cpu_share"] = max((x for x in shares if x == x), default=NAN)
    sync = comp.get("sync", {})
    out["sync_push_alone_s"] = median(sync.get("push_s", []))
    out["sync_verify_alone_s"] = median(sync.get("verify_s", []))
    return out


def summarize(results: Mapping[str, Any]) -> dict[str, Any]:
    """{"models": {name: numbers}, "memory": {...}, "target_model": name, "targets": {key: met?}}."""
    models = {name: summarize_model(per) for name, per in results.get("models", {}).items()}
    summary: dict[str, Any] = {"models": models}
    memory = _ok(results.get("memory"))
    if memory:
        summary["memory"] = {
            "naive_mib": memory["naive_bytes"] / 2**20,
            "chunked_mib": memory["chunked_bytes"] / 2**20,
            "rows": memory.get("rows"),
            "logprob_memory_ratio": ratio(memory["chunked_bytes"], memory["naive_bytes"]),
        }
    target_model = "small" if "small" in models else next(reversed(models), None)
    if target_model is not None:
        summary["target_model"] = target_model
        # The targets are for the small model; each precision measured ("small", "small bf16") is judged.
        base = target_model.split(" ")[0]
        for name in [n for n in models if n.split(" ")[0] == base]:
            values = dict(models[name])
            values["logprob_memory_ratio"] = summary.get("memory", {}).get("logprob_memory_ratio", NAN)
            summary.setdefault("targets_by_model", {})[name] = check_targets(values)
        summary["targets"] = summary["targets_by_model"][target_model]
    return summary


ROWS: list[tuple[str, str]] = [
    ("precision", "precision, both sides"),
    ("r1zero_step_s", "r1zero s/step (wall, median)"),
    ("trl_step_s", "TRL GRPOTrainer s/step"),
    ("speedup_vs_trl", "speed-up vs TRL (TRL s / r1zero s)"),
    ("r1zero_completion_tokens", "completion tokens/step r1zero"),
    ("trl_completion_tokens", "completion tokens/step TRL"),
    ("loop_rollout_s", "r1zero loop: rollout s"),
    ("loop_learner_s", "r1zero loop: learner s"),
    ("loop_sync_s", "r1zero loop: sync s (median step)"),
    ("trl_generate_s", "TRL: generation + reward s"),
    ("trl_train_s", "TRL: rest of the step (training) s"),
    ("rollout_ours_s", "rollout phase s (ours)"),
    ("rollout_raw_s", "raw vllm LLM.generate s"),
    ("rollout_efficiency", "rollout efficiency (raw / ours)"),
    ("learner_ours_s", "learner step s (ours)"),
    ("learner_raw_s", "raw transformers step s (best layout)"),
    ("learner_efficiency", "learner efficiency (raw s / ours s)"),
    ("learner_ours_tokens_per_s", "learner tok/s, every P+R token: ours"),
    ("learner_raw_tokens_per_s", "learner tok/s, every P+R token: raw"),
    ("learner_naive_tokens", "tokens fed: raw (every P+R)"),
    ("learner_packed_tokens", "tokens fed: ours (packed, shared prompts)"),
    ("learner_ours_gflops", "learner GFLOP/s actually computed: ours"),
    ("learner_raw_gflops", "learner GFLOP/s actually computed: raw"),
    ("learner_padding_fraction", "padding share of ours' learner tokens"),
    ("padded_layout_waste", "padding share a padded batch would have"),
    ("sync_push_s", "sync: weight push s"),
    ("sync_verify_s", "sync: probe verification s (when it runs)"),
    ("sync_amortized_s", "sync s per step (push + probe / verify_every)"),
    ("sync_fraction", "sync share of a step"),
    ("r1zero_peak_rss_mib", "peak RSS MiB, r1zero run"),
    ("trl_peak_rss_mib", "peak RSS MiB, TRL run"),
    ("foreign_cpu_share", "CPU taken by other processes (worst worker)"),
]


def _halt_poll(env: Mapping[str, Any]) -> str:
    """ "; guest halt polling 0 ns" where the machine is a VM with the haltpoll driver, else ""."""
    ns = env.get("guest_halt_poll_ns")
    return "" if ns is None else f"; guest halt polling {ns} ns"


def render_report(results: Mapping[str, Any]) -> str:
    """The printed report: environment, settings, one table (a column per model, targets on the last)."""
    env, summary = results.get("environment", {}), results.get("summary", {})
    models: dict[str, dict[str, Any]] = summary.get("models", {})
    names = list(models)
    target_model = summary.get("target_model")
    targets = {t.key: t for t in TARGETS}
    met = summary.get("targets", {})
    lines = [
        f"r1zero-bench {env.get('date', '')}: {env.get('cpus')} CPUs ({env.get('machine')}; "
        f"{env.get('vector_features', 'vector features not recorded')}{_halt_poll(env)}), "
        + ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items()),
        f"load average at start {fmt(env.get('load_average_start', [NAN])[0])}, "
        f"at end {fmt(env.get('load_average_end', [NAN])[0])}",
    ]
    settings = _ok(results.get("models", {}).get(target_model, {}).get("r1zero")).get("settings")
    if settings:
        lines.append("settings (both sides): " + ", ".join(f"{k} {v}" for k, v in settings.items()))
    trl = [_ok(per.get("trl")).get("generation") for per in results.get("models", {}).values()]
    attempt = results.get("trl_vllm_attempt")
    if any(trl):
        lines.append(f"TRL generation: {next(g for g in trl if g)}")
    if attempt and not attempt.get("ok"):
        lines.append(f"TRL use_vllm=True vllm_mode=colocate failed here: {attempt.get('error')}")
    judged: dict[str, dict[str, bool | None]] = summary.get("targets_by_model", {})
    header = ["metric", *names, f"target ({', '.join(judged) or '-'})"]
    words = {True: "met", False: "MISSED", None: "-"}
    rows = []
    for key, label in ROWS:
        target = targets.get(key)
        verdict = ""
        if target is not None and any(key in v for v in judged.values()):
            verdicts = [
                words[v[key]] + (f" ({name})" if len(judged) > 1 else "")
                for name, v in judged.items()
                if key in v
            ]
            verdict = f"{'>=' if target.at_least else '<='} {fmt(target.limit)}: " + ", ".join(verdicts)
        rows.append([label, *(models[n].get(key, NAN) for n in names), verdict])
    memory = summary.get("memory")
    if memory:
        target = targets["logprob_memory_ratio"]
        verdict = {True: "met", False: "MISSED", None: "-"}[met.get("logprob_memory_ratio")]
        label = (
            f"logprob+entropy peak, {memory.get('rows')} rows, V=49152: chunked {fmt(memory['chunked_mib'])} MiB / "
            f"naive {fmt(memory['naive_mib'])} MiB"
        )
        rows.append(
            [label, *([fmt(memory["logprob_memory_ratio"])] * len(names)), f"<= {target.limit}: {verdict}"]
        )
    lines += ["", render_table(header, rows)]
    notes = []
    busy = {
        f"{model}/{part}": worker["foreign_cpu_share"]
        for model, per in results.get("models", {}).items()
        for part, worker in per.items()
        if isinstance(worker, Mapping) and worker.get("foreign_cpu_share", 0.0) > NOISY
    }
    if busy:
        notes.append(
            "WARNING: other processes took a share of the CPU during "
            + ", ".join(f"{k} ({v:.0%})" for k, v in busy.items())
            + ": those numbers are not clean; re-run on a quiet machine"
        )
    for name, numbers in models.items():
        if numbers.get("rollout_same_tokens") is False:
            notes.append(
                f"{name}: raw vLLM and ours produced different tokens (rollout times not comparable)"
            )
        diff = numbers.get("learner_max_abs_logprob_diff", NAN)
        if diff == diff and diff > 1e-3:
            notes.append(f"{name}: raw and ours learner logprobs differ by up to {fmt(diff)}")
    return "\n".join(lines + notes)
