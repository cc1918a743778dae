"""r1zero-report RUN_DIR: plots and one self-contained HTML page from a run's JSONL files alone (no W&B).

    r1zero-report runs/countdown-tiny-seed0              # -> runs/countdown-tiny-seed0/report/report.html
    r1zero-report runs/countdown-tiny-seed0 --out /tmp/r

Reads RUN_DIR/metrics.jsonl (rows {"step", "time", **metrics}) and RUN_DIR/samples.jsonl (rows {"step",
"prompt", "completion", "answer", "reward", "correct", "length", "finish_reason"}). Writes one PNG per plot
(reward and held-out accuracy, response length, reflection rate, entropy and KL, time per phase) and
report.html with the plots embedded as base64 data URIs, what the run cost (`cost/*` from RUN_DIR/summary.json,
else the last metrics row that has them), the first step each reflection phrase appeared, the aha
candidates (`r1zero.aha.aha_candidates`) and a few sample completions from early, middle and late steps with the
reflection words marked. A plot whose metrics are missing is skipped with a note. Model text is hostile input:
everything from the files is HTML-escaped before any markup is added.
"""

from __future__ import annotations

import argparse
import base64
import html
import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from r1zero.aha import DEFAULT_LEXICON, aha_candidates, find_phrases, first_seen_from_history
from r1zero.cost import deepseek_comparison, phase_rows

log = logging.getLogger(__name__)

MAX_SAMPLE_CHARS = 6000  # characters of a sample completion shown in the page
NUM_SAMPLES = 5
PHASES = ("rollout", "reward", "learner", "sync")

Rows = list[dict[str, Any]]
Series = tuple[list[int], list[float]]


# ---------------------------------------------------------------------------------------------- reading


def read_jsonl(path: Path) -> Rows:
    """The dict rows of a JSONL file; a missing file gives [], unparseable lines (a crash mid-write) are skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def run_cost(run_dir: Path, rows: Rows) -> dict[str, float]:
    """The run's cost/* figures: summary.json's "cost" (the whole run), else the last metrics row with cost/usd."""
    try:
        summary = json.loads((run_dir / "summary.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        summary = {}
    if isinstance(summary, dict) and isinstance(summary.get("cost"), dict) and "cost/usd" in summary["cost"]:
        return {k: float(v) for k, v in summary["cost"].items() if _is_finite_number(v)}
    last = next((r for r in reversed(rows) if _is_finite_number(r.get("cost/usd"))), {})
    return {k: float(v) for k, v in last.items() if k.startswith("cost/") and _is_finite_number(v)}


def cost_html(cost: dict[str, float]) -> str:
    """The "What it cost" section: per-phase device-hours and money, tokens, and DeepSeek's published figure."""
    if "cost/usd" not in cost:
        return "<h2>What it cost</h2><p class='note'>no cost/* figures in summary.json or metrics.jsonl</p>"
    unit = "GPU-hours" if cost.get("cost/gpu", 0.0) >= 1 else "CPU core-hours"
    rows = [(n, f"{h:.4g}", f"${u:.4g}", f"{share:.0%}") for n, h, u, share in phase_rows(cost)]
    rows.append(("total", f"{cost['cost/device_hours']:.4g}", f"${cost['cost/usd']:.4g}", "100%"))
    tokens = f"{cost.get('cost/tokens_generated', 0):,.0f} tokens generated, {cost.get('cost/tokens_trained', 0):,.0f} trained"
    return (
        f"<h2>What it cost</h2><p>{cost.get('cost/devices', 0):g} devices x {cost.get('cost/wall_s', 0):.0f} s "
        f"at ${cost.get('cost/usd_per_device_hour', 0):g} per {unit[:-1]}; {escape(tokens)}.</p>"
        + _table(["phase", unit, "USD", "share"], rows)
        + f"<p>{escape(deepseek_comparison(cost))}</p>"
    )


def _is_finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def series(rows: Rows, key: str) -> Series:
    """(steps, values) of `key` over the rows with an int step and a finite number; the last row of a step wins."""
    by_step: dict[int, float] = {}
    for row in rows:
        step, value = row.get("step"), row.get(key)
        if isinstance(step, int) and isinstance(value, (int, float)) and _is_finite_number(value):
            by_step[step] = float(value)
    steps = sorted(by_step)
    return steps, [by_step[s] for s in steps]


def smooth(values: Sequence[float]) -> list[float]:
    """Trailing moving average over max(1, len // 25) points (identity for short runs)."""
    window = max(1, len(values) // 25)
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


# ---------------------------------------------------------------------------------------------- plots


def _figure(ncols: int = 1) -> tuple[Any, list[Any]]:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator

    fig = Figure(figsize=(8 if ncols == 1 else 11, 4.2), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # Agg, never a GUI backend or pyplot's global state
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    for ax in axes:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    return fig, axes


def _line(ax: Any, data: Series, label: str, **kwargs: Any) -> None:
    steps, values = data
    if len(values) >= 50:  # faint raw curve, smoothed on top
        ax.plot(steps, values, alpha=0.25, color=kwargs.get("color"))
        values = smooth(values)
    ax.plot(steps, values, label=label, marker="o" if len(values) < 20 else None, markersize=3, **kwargs)


def plot_reward(rows: Rows, candidates: Sequence[dict[str, Any]] = ()) -> tuple[Any, str | None]:
    reward, acc, held_out = (
        series(rows, "reward/mean"),
        series(rows, "reward/accuracy"),
        series(rows, "eval/accuracy"),
    )
    if not (reward[0] or acc[0] or held_out[0]):
        return None, "no reward/mean, reward/accuracy or eval/accuracy rows"
    fig, (ax,) = _figure()
    if reward[0]:
        _line(ax, reward, "train reward (mean)", color="C0")
    if acc[0]:
        _line(ax, acc, "train accuracy", color="C1")
    if held_out[0]:
        ax.plot(*held_out, "s-", color="C3", label="held-out accuracy (eval/accuracy)")
    ax.set_title("Reward and accuracy")
    ax.legend(loc="best", fontsize=8)
    return fig, None


def plot_length(rows: Rows, candidates: Sequence[dict[str, Any]] = ()) -> tuple[Any, str | None]:
    mean = series(rows, "rollout/length/mean")
    if not mean[0]:
        return None, "no rollout/length/mean rows"
    fig, (ax,) = _figure()
    p10, p90 = series(rows, "rollout/length/p10"), series(rows, "rollout/length/p90")
    band = sorted(set(p10[0]) & set(p90[0]))
    if band:
        lo, hi = dict(zip(*p10)), dict(zip(*p90))
        ax.fill_between(
            band, [lo[s] for s in band], [hi[s] for s in band], alpha=0.2, color="C0", label="p10-p90"
        )
    _line(ax, mean, "mean", color="C0")
    for key, label, color in (
        ("mean_correct", "mean (correct)", "C2"),
        ("mean_incorrect", "mean (incorrect)", "C3"),
    ):
        data = series(rows, f"rollout/length/{key}")
        if data[0]:
            _line(ax, data, label, color=color, linestyle="--")
    ax.set_ylabel("tokens")
    ax.set_title("Response length")
    ax.legend(loc="best", fontsize=8)
    return fig, None


def plot_reflection(rows: Rows, candidates: Sequence[dict[str, Any]] = ()) -> tuple[Any, str | None]:
    overall = series(rows, "aha/reflection_per_1k_tokens")
    if not overall[0]:
        return None, "no aha/reflection_per_1k_tokens rows"
    fig, (ax,) = _figure()
    _line(ax, overall, "all", color="C0")
    for suffix, color in (("correct", "C2"), ("incorrect", "C3")):
        data = series(rows, f"aha/reflection_per_1k_tokens_{suffix}")
        if data[0]:
            _line(ax, data, suffix, color=color, linestyle="--")
    for i, cand in enumerate(candidates):
        ax.axvline(
            cand["step"], color="C4", alpha=0.6, linestyle=":", label="aha candidate" if i == 0 else None
        )
    ax.set_ylabel("reflection words per 1k tokens")
    ax.set_title("Reflection rate (inside <think>)")
    ax.legend(loc="best", fontsize=8)
    return fig, None


def plot_entropy_kl(rows: Rows, candidates: Sequence[dict[str, Any]] = ()) -> tuple[Any, str | None]:
    entropy = series(rows, "loss/entropy")
    kls = [(k, series(rows, k)) for k in ("loss/approx_kl_old", "loss/kl")]
    kls = [(k, d) for k, d in kls if d[0]]
    if not entropy[0] and not kls:
        return None, "no loss/entropy, loss/approx_kl_old or loss/kl rows"
    fig, (ax_e, ax_k) = _figure(ncols=2)
    if entropy[0]:
        _line(ax_e, entropy, "loss/entropy", color="C0")
    ax_e.set_title("Policy entropy" if entropy[0] else "Policy entropy (not logged)")
    for i, (key, data) in enumerate(kls):
        _line(ax_k, data, key, color=f"C{i + 1}")
    ax_k.set_title("KL" if kls else "KL (not logged)")
    for ax in (ax_e, ax_k):
        if ax.lines:
            ax.legend(loc="best", fontsize=8)
    return fig, None


def plot_time(rows: Rows, candidates: Sequence[dict[str, Any]] = ()) -> tuple[Any, str | None]:
    phases = {p: dict(zip(*series(rows, f"perf/{p}_s"))) for p in PHASES}
    phases = {p: v for p, v in phases.items() if v}
    if not phases:
        return None, "no perf/{rollout,reward,learner,sync}_s rows"
    steps = sorted(set().union(*phases.values()))
    fig, (ax,) = _figure()
    ax.stackplot(
        steps, *[[v.get(s, 0.0) for s in steps] for v in phases.values()], labels=list(phases), alpha=0.8
    )
    ax.set_ylabel("seconds")
    ax.set_title("Time per step, by phase")
    ax.legend(loc="upper left", fontsize=8)
    return fig, None


# ---------------------------------------------------------------------------------------------- HTML


# C0 control characters other than tab / newline / carriage return (not allowed in HTML) -> U+FFFD.
_CONTROL = {c: "\ufffd" for c in range(32) if chr(c) not in "\t\n\r"} | {127: "\ufffd"}


def escape(text: str) -> str:
    """`html.escape` (quotes too), and control characters replaced by U+FFFD."""
    return html.escape(text).translate(_CONTROL)


def highlight(text: str) -> str:
    """Escaped `text` (see `escape`) with the reflection words of its think block wrapped in <mark>.

    The text is cut into (plain, match) pieces on the RAW string and each piece is escaped on its own, so no
    match can land inside an escape sequence and no model text becomes markup.
    `highlight("<think>Wait <b></think>") -> "&lt;think&gt;<mark>Wait</mark> &lt;b&gt;&lt;/think&gt;"`.
    """
    out, pos = [], 0
    for start, end, phrase in find_phrases(text):
        out.append(escape(text[pos:start]))
        out.append(f'<mark title="{escape(phrase)}">{escape(text[start:end])}</mark>')
        pos = end
    out.append(escape(text[pos:]))
    return "".join(out)


def pick_samples(samples: Rows, count: int = NUM_SAMPLES) -> list[tuple[str, dict[str, Any]]]:
    """Up to `count` (label, row) pairs: one row from each of `count` steps spread from the first logged step to
    the last (labels early / middle / late); within a step the correct row with the most reflection words,
    else the row with the most reflection words, first in file order on ties."""
    steps = sorted(
        {
            r["step"]
            for r in samples
            if isinstance(r.get("step"), int) and isinstance(r.get("completion"), str)
        }
    )
    if not steps:
        return []
    chosen = sorted({steps[round(q * (len(steps) - 1) / max(count - 1, 1))] for q in range(count)})
    picked = []
    for step in chosen:
        rows = [r for r in samples if r.get("step") == step and isinstance(r.get("completion"), str)]
        best = max(rows, key=lambda r: (_num(r.get("correct")) >= 1.0, len(find_phrases(r["completion"]))))
        position = steps.index(step) / max(len(steps) - 1, 1)
        label = "early" if position < 1 / 3 else "middle" if position < 2 / 3 else "late"
        picked.append((label, best))
    return picked


def _num(value: Any) -> float:
    return (
        float(value)
        if isinstance(value, (int, float)) and not isinstance(value, bool)
        else float(bool(value))
    )


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _sample_html(label: str, row: dict[str, Any]) -> str:
    text = row["completion"]
    cut = f" … ({len(text) - MAX_SAMPLE_CHARS} more characters)" if len(text) > MAX_SAMPLE_CHARS else ""
    fields = (("gold", "answer"), ("reward", "reward"), ("correct", "correct"), ("tokens", "length"))
    facts = ", ".join(f"{name} {escape(str(row.get(key)))}" for name, key in fields)
    facts += f", finish {escape(str(row.get('finish_reason')))}"
    return (
        f"<div class='sample'><h3>{label}: step {escape(str(row.get('step')))}</h3><p>{facts}</p>"
        f"<details><summary>prompt</summary><pre>{escape(str(row.get('prompt', '')))}</pre></details>"
        f"<pre>{highlight(text[:MAX_SAMPLE_CHARS])}{escape(cut)}</pre></div>"
    )


SUMMARY_KEYS = (
    "reward/mean",
    "reward/accuracy",
    "eval/accuracy",
    "rollout/length/mean",
    "aha/reflection_per_1k_tokens",
    "loss/entropy",
    "perf/step_s",
    "cost/usd",
)


def summary_table(rows: Rows) -> str:
    """First and last logged value (with their steps) of a few headline metrics."""
    table = []
    for key in SUMMARY_KEYS:
        steps, values = series(rows, key)
        if steps:
            table.append((key, f"{values[0]:.4g} (step {steps[0]})", f"{values[-1]:.4g} (step {steps[-1]})"))
    if not table:
        return f"<p class='note'>{len(rows)} metric rows, none with the headline metrics</p>"
    return _table(["metric", "first", "last"], table)


_CSS = (
    "body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em}"
    "img{max-width:100%;border:1px solid #ddd}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}"
    "pre{white-space:pre-wrap;word-break:break-word;background:#f6f6f6;padding:.6em}"
    "mark{background:#ffe066}.note{color:#a60}"
)


def render_html(
    run_dir: Path, images: dict[str, bytes], notes: dict[str, str], first_seen: dict[str, int],
    candidates: Sequence[dict[str, Any]], picked: Sequence[tuple[str, dict[str, Any]]], rows: Rows,
    window: int, cost: dict[str, float] | None = None,
) -> str:  # fmt: skip
    """The page: plots (base64 data URIs), first-seen table, aha candidates, sample completions."""
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>r1zero report: {escape(run_dir.name)}</title>",
        f"<style>{_CSS}</style></head><body><h1>r1zero report: {escape(str(run_dir))}</h1>",
        summary_table(rows),
        cost_html(cost or {}),
        "<h2>Plots</h2>",
    ]
    for name in PLOTS:
        if name in images:
            data = base64.b64encode(images[name]).decode("ascii")
            parts.append(f"<h3>{escape(name)}</h3><img alt='{name}' src='data:image/png;base64,{data}'>")
        else:
            parts.append(f"<p class='note'>{escape(name)}: skipped ({escape(notes.get(name, ''))})</p>")
    lexicon = ", ".join(
        f"{name} (<code>{escape(pattern)}</code>)" for name, pattern in DEFAULT_LEXICON.items()
    )
    parts.append("<h2>First step each reflection phrase appeared</h2>")
    parts.append(f"<p>Counted inside the think block, whole words, any case: {lexicon}.</p>")
    if first_seen:
        ordered = sorted(first_seen.items(), key=lambda kv: (kv[1], kv[0]))
        parts.append(_table(["phrase", "first step"], ordered))
    else:
        parts.append("<p class='note'>no aha/count/* metrics with a non-zero count</p>")
    parts.append(f"<h2>Aha candidates (window {window} steps)</h2>")
    if candidates:
        parts.append(_table(["step", "why"], [(c["step"], c["reason"]) for c in candidates]))
    elif not any("aha/reflection_frac" in r and "reward/accuracy" in r for r in rows):
        parts.append("<p class='note'>needs aha/reflection_frac and reward/accuracy in metrics.jsonl</p>")
    else:
        parts.append("<p>none: no step where the reflection rate and the accuracy rose together</p>")
    parts.append("<h2>Sample completions</h2>")
    parts += [_sample_html(label, row) for label, row in picked] or [
        "<p class='note'>no samples.jsonl rows</p>"
    ]
    parts.append("</body></html>")
    return "\n".join(parts)


# name -> plot(metric rows, aha candidates) -> (figure, None) or (None, why it was skipped)
PLOTS: dict[str, Callable[[Rows, Sequence[dict[str, Any]]], tuple[Any, str | None]]] = {
    "reward": plot_reward,
    "length": plot_length,
    "reflection": plot_reflection,
    "entropy_kl": plot_entropy_kl,
    "time": plot_time,
}


def render_png(
    plot: Callable[[Rows, Sequence[dict[str, Any]]], tuple[Any, str | None]],
    rows: Rows,
    candidates: Sequence[dict[str, Any]],
) -> tuple[bytes | None, str]:
    """(PNG bytes, "") or (None, why the plot was skipped). Never raises: a report does not die on one odd metric."""
    try:
        fig, note = plot(rows, candidates)
        if fig is None:
            return None, note or "no data"
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        return buf.getvalue(), ""
    except Exception as e:
        log.exception("plot %s failed", getattr(plot, "__name__", plot))
        return None, f"failed: {type(e).__name__}: {e}"


def make_report(run_dir: str | Path, out_dir: str | Path | None = None, *, window: int = 10) -> Path:
    """Write the PNGs and report.html into out_dir (default RUN_DIR/report); returns the HTML path."""
    run_dir = Path(run_dir)
    out = Path(out_dir) if out_dir is not None else run_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    samples = read_jsonl(run_dir / "samples.jsonl")
    candidates = aha_candidates(rows, window=window)
    images: dict[str, bytes] = {}
    notes: dict[str, str] = {}
    for name, plot in PLOTS.items():
        png, note = render_png(plot, rows, candidates)
        if png is None:
            notes[name] = note
        else:
            images[name] = png
            (out / f"{name}.png").write_bytes(png)
    page = render_html(
        run_dir, images, notes, first_seen_from_history(rows), candidates, pick_samples(samples), rows, window,
        run_cost(run_dir, rows),
    )  # fmt: skip
    path = out / "report.html"
    path.write_text(page, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    parser = argparse.ArgumentParser(prog="r1zero-report", description=__doc__.split("\n")[0])
    parser.add_argument("run_dir", help="a training run directory (holds metrics.jsonl)")
    parser.add_argument("--out", default=None, help="output folder (default: RUN_DIR/report)")
    parser.add_argument("--window", type=int, default=10, help="aha_candidates window, in logged steps")
    args = parser.parse_args(argv)
    if not (Path(args.run_dir) / "metrics.jsonl").exists():
        parser.error(f"{args.run_dir}/metrics.jsonl not found")
    print(make_report(args.run_dir, args.out, window=args.window))


if __name__ == "__main__":
    main()
