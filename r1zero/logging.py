"""Metric sinks: JSONL files (always), W&B (optional), a progress line; only rank 0 writes.

Every sink is a `MetricLogger`: `log(metrics, step)`, `log_samples(rows, step)`, `close()`. Metric names are
namespaced (`reward/mean`, `loss/policy`, `perf/step_s`); values may be floats, ints, 0-d tensors or numpy
scalars (converted here, so the training loop never calls `.item()` itself).

Resume: `metrics.jsonl` may hold steps past the checkpoint a run resumes from (it crashed after logging k+3 but
saved at k). `JsonlLogger(run_dir, resume_step=k)` drops those lines, so steps k+1.. are not logged twice.
W&B continues the same run (its id is stored in the checkpoint), plotted against `train/step`; the rows it
already has past k stay there (W&B cannot delete logged history offline).

wandb is imported only inside `WandbLogger`: this module imports without it.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from r1zero.checkpoint import atomic_write_text
from r1zero.config import LogConfig

log = logging.getLogger(__name__)

STEP_KEY = "train/step"


class MetricLogger(Protocol):
    def log(self, metrics: dict[str, Any], step: int) -> None: ...

    def log_samples(self, rows: list[dict[str, Any]], step: int) -> None: ...

    def close(self) -> None: ...


def to_python(value: Any) -> Any:
    """Tensors / numpy values -> python numbers or lists (recursively through dicts and lists).

    torch.tensor(0.5) -> 0.5; np.float32(2) -> 2.0; {"a": torch.tensor([1, 2])} -> {"a": [1, 2]}.
    """
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        value = value.tolist()  # torch tensors (also with grad or on GPU), numpy arrays and scalars
    if isinstance(value, dict):
        return {str(k): to_python(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_python(v) for v in value]
    return value


def to_json_value(value: Any) -> Any:
    """`to_python`, then non-finite floats -> None (JSON has no NaN) and unknown objects -> str."""
    value = to_python(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: to_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_json_value(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


# ---------------------------------------------------------------------------------------------- JSONL


def truncate_jsonl(path: Path, max_step: int) -> int:
    """Atomically rewrite `path` keeping only lines with step <= max_step (and lines without a step).

    Unparseable lines (a write cut by a crash) are dropped too. Returns the number of lines dropped.
    """
    if not path.exists():
        return 0
    kept, dropped = [], 0
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            keep = not (isinstance(row, dict) and isinstance(row.get("step"), int) and row["step"] > max_step)
        except json.JSONDecodeError:
            keep = False
        if keep:
            kept.append(line + "\n")
        else:
            dropped += 1
    if dropped:
        atomic_write_text(path, "".join(kept))
    return dropped


def _open_append(path: Path) -> Any:
    """Open for appending; first end a line cut short by a crash, so the next line starts on its own."""
    f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open across calls, closed in close()
    if path.stat().st_size > 0:
        with open(path, "rb") as r:
            r.seek(-1, 2)
            if r.read(1) != b"\n":
                f.write("\n")
                f.flush()
    return f


class JsonlLogger:
    """run_dir/metrics.jsonl: {"step", "time", **metrics} per line; run_dir/samples.jsonl: {"step", **row}.

    Each line is flushed when written (a crashed process loses nothing; no fsync, so a power cut may).
    `resume_step=k` first drops lines with step > k from both files; a fresh start that must ignore an older
    run's lines passes -1. None appends as is.
    """

    def __init__(self, run_dir: str | Path, resume_step: int | None = None) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self.samples_path = self.run_dir / "samples.jsonl"
        if resume_step is not None:
            for path in (self.metrics_path, self.samples_path):
                if n := truncate_jsonl(path, resume_step):
                    log.info("dropped %d lines past step %d from %s", n, resume_step, path)
        self._metrics = _open_append(self.metrics_path)
        self._samples = _open_append(self.samples_path)

    @staticmethod
    def _write(f: Any, row: dict[str, Any]) -> None:
        f.write(json.dumps(to_json_value(row), allow_nan=False) + "\n")
        f.flush()

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._write(self._metrics, {"step": step, "time": time.time(), **metrics})

    def log_samples(self, rows: list[dict[str, Any]], step: int) -> None:
        for row in rows:
            self._write(self._samples, {"step": step, **row})

    def close(self) -> None:
        self._metrics.close()
        self._samples.close()


# ---------------------------------------------------------------------------------------------- W&B


class WandbLogger:
    """One W&B run, resumable by id; metrics are plotted against `train/step`, samples logged as a Table.

    `mode` ("online" / "offline" / "disabled") overrides WANDB_MODE; None leaves it to the environment.
    """

    def __init__(
        self,
        cfg: LogConfig,
        run_dir: str | Path,
        run_config: dict[str, Any],
        run_id: str | None = None,
    ) -> None:
        import wandb

        self._wandb = wandb
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        self._run = wandb.init(
            project=cfg.project,
            entity=cfg.entity,
            group=cfg.group,
            tags=list(cfg.tags) or None,
            config=run_config,
            dir=str(run_dir),
            id=run_id,
            resume="allow",
        )
        # Plot everything against our step, not W&B's internal counter (which a resumed run does not rewind).
        self._run.define_metric(STEP_KEY)
        self._run.define_metric("*", step_metric=STEP_KEY)

    @property
    def run_id(self) -> str:
        return self._run.id

    def log(self, metrics: dict[str, Any], step: int) -> None:
        self._run.log({**to_python(metrics), STEP_KEY: step})

    def log_samples(self, rows: list[dict[str, Any]], step: int) -> None:
        if not rows:
            return
        columns = list(dict.fromkeys(k for row in rows for k in row))  # union of keys, first-seen order
        cells = [[_table_cell(row.get(c)) for c in columns] for row in rows]
        table = self._wandb.Table(columns=["step", *columns], data=[[step, *r] for r in cells])
        self._run.log({"samples/table": table, STEP_KEY: step})

    def close(self) -> None:
        self._run.finish()


def _table_cell(value: Any) -> Any:
    value = to_python(value)
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(to_json_value(value))


# ---------------------------------------------------------------------------------------------- progress line


def _eta(seconds: float) -> str:
    """45 -> "45s"; 1860 -> "31m"; 7500 -> "2h05m"."""
    if seconds < 60:
        return f"{seconds:.0f}s"
    if seconds < 3600:
        return f"{seconds / 60:.0f}m"
    return f"{int(seconds // 3600)}h{int(seconds % 3600 // 60):02d}m"


_PROGRESS_FIELDS = (  # (metric key, label, format)
    ("reward/mean", "reward", "{:.2f}"),
    ("reward/correct_mean", "correct", "{:.2f}"),
    ("rollout/length/mean", "len", "{:.0f}"),
    ("aha/reflection_frac", "reflect", "{:.2f}"),
    ("eval/accuracy", "held-out acc", "{:.3f}"),
)


def format_progress(step: int, total: int | None, metrics: dict[str, Any]) -> str:
    """One line, e.g. `step 12/200 | reward 0.41 | correct 0.38 | len 57 | 9.8 s/step | eta 31m`.

    Fields whose metric is absent are left out; eta = (total - step) * perf/step_s.
    """
    metrics = to_python(metrics)
    parts = [f"step {step}/{total}" if total else f"step {step}"]
    for key, label, fmt in _PROGRESS_FIELDS:
        if isinstance(metrics.get(key), (int, float)):
            parts.append(f"{label} {fmt.format(metrics[key])}")
    step_s = metrics.get("perf/step_s")
    if isinstance(step_s, (int, float)) and math.isfinite(step_s):
        parts.append(f"{step_s:.1f} s/step")
        if total:
            parts.append(f"eta {_eta(max(total - step, 0) * step_s)}")
    return " | ".join(parts)


class StdoutLogger:
    """A `format_progress` line every `every` steps (and at the last), through stdlib logging (Hydra's handlers)."""

    def __init__(self, total_steps: int | None, every: int = 1) -> None:
        self.total_steps = total_steps
        self.every = every

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if self.every > 0 and (step % self.every == 0 or step == self.total_steps):
            log.info(format_progress(step, self.total_steps, metrics))

    def log_samples(self, rows: list[dict[str, Any]], step: int) -> None:
        pass

    def close(self) -> None:
        pass


# ---------------------------------------------------------------------------------------------- fan-out


class NullLogger:
    """What ranks other than 0 get."""

    run_id: str | None = None

    def log(self, metrics: dict[str, Any], step: int) -> None:
        pass

    def log_samples(self, rows: list[dict[str, Any]], step: int) -> None:
        pass

    def close(self) -> None:
        pass


class MultiLogger:
    """Sends every call to each logger; `run_id` is the W&B run id when one of them is a WandbLogger."""

    def __init__(self, loggers: Sequence[MetricLogger]) -> None:
        self.loggers = list(loggers)

    @property
    def run_id(self) -> str | None:
        return next((lg.run_id for lg in self.loggers if isinstance(lg, WandbLogger)), None)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        for lg in self.loggers:
            lg.log(metrics, step)

    def log_samples(self, rows: list[dict[str, Any]], step: int) -> None:
        for lg in self.loggers:
            lg.log_samples(rows, step)

    def close(self) -> None:
        """Close every logger, even if one raises (the first error is re-raised after)."""
        error: BaseException | None = None
        for lg in self.loggers:
            try:
                lg.close()
            except Exception as e:
                error = error or e
        if error is not None:
            raise error


def build_loggers(
    cfg: LogConfig,
    run_dir: str | Path,
    run_config: dict[str, Any],
    *,
    rank: int,
    run_id: str | None = None,
    resume_step: int | None = None,
    total_steps: int | None = None,
) -> MultiLogger:
    """JSONL + progress line (+ W&B when cfg.wandb) on rank 0; a MultiLogger of one NullLogger elsewhere.

    run_id: the W&B id from the checkpoint being resumed (None: a new run). resume_step: see JsonlLogger.
    total_steps: for the progress line; defaults to run_config["steps"].
    """
    if rank != 0:
        return MultiLogger([NullLogger()])
    if total_steps is None:
        total_steps = run_config.get("steps")
    loggers: list[MetricLogger] = [
        JsonlLogger(run_dir, resume_step=resume_step),
        StdoutLogger(total_steps, every=cfg.print_every),
    ]
    if cfg.wandb:
        loggers.append(WandbLogger(cfg, run_dir, run_config, run_id))
    return MultiLogger(loggers)
