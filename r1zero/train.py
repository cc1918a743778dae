"""r1zero-train: turn a base model into a reasoner by pure RL (GRPO), one readable loop.

    r1zero-train                                   # the CPU default run (see README)
    r1zero-train model=tiny task=countdown steps=5
    r1zero-train experiment=countdown_qwen2.5_3b   # a full recipe from conf/experiment/
    torchrun --nproc_per_node 2 -m r1zero.train model=tiny   # data parallel (README: "Scaling out")

Per step (`train_step`): sample prompts -> generate G completions each (vLLM) -> score (rule-based rewards) ->
group-relative advantages (DAPO dynamic sampling: keep sampling until B groups have varied rewards) -> one
learner step (DeepSpeed) -> push the new weights into the rollout engine and verify them -> log -> checkpoint ->
(evaluate). Setup, resume, checkpoints, evaluation and the end of a run live in r1zero.session; the step's
samples in r1zero.collect.
Simplifications, on purpose: rollout and learner are colocated and alternate (no asynchronous rollouts), and
each rank keeps whole groups (r1zero.dp: every rank draws the same global batch and takes its slice).
"""

from __future__ import annotations

import contextlib
import logging
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from r1zero.config import RunConfig, register_configs, to_run_config
from r1zero.console import quiet_console
from r1zero.env import setup_environment

if TYPE_CHECKING:
    from r1zero.collect import StepSamples
    from r1zero.parts import PhaseTimer
    from r1zero.session import Session

log = logging.getLogger("r1zero")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


class GracefulStop:
    """First Ctrl-C (or SIGTERM): finish the current step, checkpoint, exit 0. Second Ctrl-C: abort now."""

    def __init__(
        self, message: str = "stop requested: finishing this step, then saving a checkpoint"
    ) -> None:
        self.requested = False
        self.message = message
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> GracefulStop:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(ValueError):  # not the main thread (e.g. a test runner thread)
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        log.warning("%s (Ctrl-C again to abort)", self.message)

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run(cfg: RunConfig) -> dict[str, Any]:
    """Train according to `cfg`; returns the run summary (also written to run_dir/summary.json).

    Under torchrun/Slurm (W processes) every rank runs this same function: data parallelism as described in
    r1zero.dp (each rank samples and learns on B / W prompts; rewards and metrics cover the global batch).
    A run that fails still shuts its rollout engine down (and with it the process groups vLLM set up).
    """
    release: list[Callable[[], None]] = []
    try:
        return _run(cfg, release)
    except BaseException:
        for close in reversed(release):
            with contextlib.suppress(Exception):
                close()
        raise


def _run(cfg: RunConfig, release: list[Callable[[], None]]) -> dict[str, Any]:
    setup_environment()
    from r1zero.distributed import phase
    from r1zero.session import evaluate, finish, open_session, save_checkpoint

    role = bridge = None
    if cfg.roles.disaggregated:  # rollout workers beside learner ranks (r1zero.roles)
        from r1zero.roles import join_role
        from r1zero.rollout.worker import serve_rollouts

        role, bridge = join_role(cfg)
        if role.is_worker:
            assert bridge is not None
            # Ctrl-C reaches every process: a worker serves on until the learner has finished its step and
            # checkpointed, then says stop (a second Ctrl-C aborts, as on the learner).
            with GracefulStop(f"{role.name()}: serving until the learner has checkpointed and says stop"):
                return serve_rollouts(cfg, role, bridge, release)
        if bridge is not None:
            release.append(lambda: bridge.report_failure("the learner stopped with an error"))
    session = open_session(
        cfg, release, role=role, bridge=bridge
    )  # setup + resume from the latest checkpoint
    if session.eval_at_start_and_end and session.start_step == 0:
        with phase("eval", 0):
            session.loggers.log(evaluate(session, 0), step=0)
    step = session.start_step
    with GracefulStop() as stop:
        for step in range(session.start_step + 1, cfg.steps + 1):
            stop_now = train_step(session, step, stop.requested)
            if (
                (cfg.checkpoint.every > 0 and step % cfg.checkpoint.every == 0)
                or step == cfg.steps
                or stop_now
            ):
                with phase("checkpoint", step):
                    save_checkpoint(session, step)
            if stop_now:
                log.warning("stopped after step %d; checkpoint saved in %s; rerun the same command to resume",
                            step, session.run_dir)  # fmt: skip
                break
    summary = finish(session, step)  # final evaluation, export, summary.json
    if session.rank == 0:
        log.info(format_summary(summary))
    return summary


def train_step(session: Session, step: int, stop_requested: bool) -> bool:
    """One RL step: collect scored samples -> learn -> push the weights into the engine (verified) -> log.
    Returns True when any rank asked to stop (all ranks then stop after this same step)."""
    from r1zero import dp
    from r1zero.distributed import phase
    from r1zero.parts import PhaseTimer

    timer = PhaseTimer()
    samples = session.collector.collect(
        step, timer
    )  # generated, scored, (dynamic sampling) filtered: the batch
    metrics = samples.metrics
    session.first_seen.update(step, metrics)
    own = learn(session, step, samples, timer)  # this rank's scalars, combined over ranks below
    own |= sync_weights(session, step, samples, timer)
    own |= timer.metrics()
    with phase("metrics", step):
        loss_tokens = sum(len(c.token_ids) for c, k in zip(samples.own, samples.own_keep) if k)
        combined, stop_now = dp.reduce_rank_metrics(own, loss_tokens, stop_requested)
    metrics |= combined  # (perf/rollout_tokens_per_s came with the samples: collect.rollout_rate_metrics)
    metrics["train/step"] = float(step)
    if step == session.start_step + 1:  # the run's (or resume's) first row says what trains
        metrics |= session.learner.parameter_metrics()
    record_step(session, step, samples, metrics)
    return stop_now


def learn(session: Session, step: int, samples: StepSamples, timer: PhaseTimer) -> dict[str, float]:
    """The learner's step on this rank's samples (the engine asleep meanwhile); its loss/* and sync/step_* scalars.
    Samples drawn with older weights (disaggregated, max_staleness >= 1) differ from the learner's by the policy's
    own change, not by a sync fault: their gap is logged as the off-policy gap, not checked."""
    from r1zero.distributed import phase
    from r1zero.rollout.remote import naming_the_workers

    cfg, learner, engine = session.cfg, session.learner, session.engine
    own: dict[str, float] = {}
    on_policy = samples.metrics["rollout/policy_version_lag_max"] == 0
    with timer("learner"), phase("learner", step), naming_the_workers(engine, step - 1):
        engine.sleep()
        if bool(samples.keep.any()):  # global, so that every rank takes part in the step's collectives
            own |= learner.train_step(
                [(c.prompt_token_ids, c.token_ids) for c in samples.own],
                samples.own_advantages,
                rollout_logprobs=[c.logprobs or [] for c in samples.own],
                loss_mask=samples.own_keep,
                max_rollout_gap=cfg.sync_limits if cfg.sync.check_step_logprobs and on_policy else None,
            )
            if not on_policy:
                for stat in ("max", "mean"):
                    value = own.pop(f"sync/step_logprob_{stat}_abs_diff", None)
                    if value is not None:
                        own[f"rollout/offpolicy_logprob_{stat}_abs_diff"] = value
        engine.wake()
    return own


def sync_weights(session: Session, step: int, samples: StepSamples, timer: PhaseTimer) -> dict[str, float]:
    """Push the learner's new weights into the engine; verify them on a probe at the run's first and last steps
    and every sync.verify_every steps. Returns sync/* scalars."""
    from r1zero.distributed import phase
    from r1zero.rollout.remote import naming_the_workers
    from r1zero.sync import make_probe, push_weights, verify_sync

    cfg, learner, engine = session.cfg, session.learner, session.engine
    own: dict[str, float] = {}
    with timer("sync"), phase("sync", step), naming_the_workers(engine, step):
        own["sync/push_s"] = push_weights(engine, learner.named_parameters_for_sync(), version=step)
        if cfg.sync.verify and (
            step in (session.start_step + 1, cfg.steps) or step % cfg.sync.verify_every == 0
        ):
            probe = make_probe(samples.generated, cfg.sync.probe_size)  # the same on a replica's tp ranks
            own |= verify_sync(engine, learner.logprobs, probe, max_abs_diff=cfg.sync_threshold)
    return own


def record_step(session: Session, step: int, samples: StepSamples, metrics: dict[str, float]) -> None:
    """The step's bookkeeping: cost totals, reward windows, the evaluation when due, the metrics row and, every
    log.samples_every steps, the samples table."""
    from r1zero.cost import accumulate
    from r1zero.distributed import phase
    from r1zero.parts import sample_rows
    from r1zero.session import evaluate

    cfg, history = session.cfg, session.history
    phases = {
        name: metrics[f"perf/{name}_s"]
        for name in ("rollout", "reward", "learner", "sync")
        if f"perf/{name}_s" in metrics
    }
    history["cost_totals"] = accumulate(
        history.get("cost_totals", {}), phases, tokens_generated=samples.tokens_generated,  # every round
        tokens_trained=metrics.get("perf/learner_tokens", 0.0),
    )  # fmt: skip
    session.add_wall_time()
    metrics |= session.cost()
    reward_windows(history, {k: v for k, v in metrics.items() if k.startswith("reward/")})
    if session.eval_due(step):
        with phase("eval", step):
            metrics |= evaluate(session, step)
    session.loggers.log(metrics, step=step)
    if cfg.log.samples_every > 0 and step % cfg.log.samples_every == 0:
        rows = sample_rows(samples.prompts, samples.completions, samples.scored, cfg.log.num_samples)
        session.loggers.log_samples(rows, step=step)


REWARD_WINDOW = 10  # steps averaged at each end of a run for its "first -> last" train reward


def reward_windows(history: dict[str, Any], row: dict[str, float], window: int = REWARD_WINDOW) -> None:
    """Fold one step's reward/* metrics into history: "first" = the mean over the run's first `window` steps,
    "last" = the mean over its latest `window` steps ("first_steps" / "last_steps" keep the rows; they are saved
    with the checkpoint, so a resumed run keeps its windows). One step's batch is noisy (4 prompts on the CPU
    default: its accuracy swings between 0 and 1), a window is not.

    Example, window 2, steps with reward/mean 0, 1, 0.5: first = 0.5 (steps 1-2), last = 0.75 (steps 2-3).
    """
    first, last = history.setdefault("first_steps", []), history.setdefault("last_steps", [])
    if len(first) < window:
        first.append(row)
    last.append(row)
    del last[:-window]
    history["first"], history["last"] = _mean_rows(first), _mean_rows(last)


def _mean_rows(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for row in rows for k in row}
    return {k: sum(r[k] for r in rows if k in r) / sum(k in r for r in rows) for k in sorted(keys)}


def format_summary(summary: dict[str, Any]) -> str:
    """The closing lines of a run: start vs end reward and held-out accuracy, where things are."""
    history = summary.get("history", {})
    first, last = history.get("first", {}), history.get("last", {})
    lines = [f"run finished: {summary['steps_done']} steps, run directory {summary['run_dir']}"]
    if first and last:
        from r1zero.model_card import averaged_steps

        k = averaged_steps(history)
        lines.append(
            f"  train reward  {first.get('reward/mean', 0):.3f} -> {last.get('reward/mean', 0):.3f}   "
            f"accuracy {first.get('reward/accuracy', 0):.3f} -> {last.get('reward/accuracy', 0):.3f}   "
            f"(means of the first and the last {k} steps)"
        )
    evals = history.get("eval", [])
    if len(evals) >= 2:
        lines.append(
            f"  held-out accuracy {evals[0]['eval/accuracy']:.3f} (step {evals[0]['step']}) -> "
            f"{evals[-1]['eval/accuracy']:.3f} (step {evals[-1]['step']})"
        )
    lines.append(
        f"  metrics: {summary['run_dir']}/metrics.jsonl   samples: {summary['run_dir']}/samples.jsonl"
    )
    if "final_model" in summary:
        lines.append(f"  final model: {summary['final_model']}")
    from r1zero.cost import format_cost

    lines += format_cost(summary.get("cost", {}))
    return "\n".join(lines)


def job_run_dir(dict_cfg: Any) -> None:
    """Multirun (`-m`): give each job its own run_dir. The default run_dir only interpolates task, model and seed,
    so `-m learner.lr=1e-5,1e-6` would make two jobs share (and resume) one folder: a multirun job whose run_dir
    is still the default gets its Hydra sweep folder instead (multirun/<date>/<job number>). Set run_dir
    yourself (e.g. run_dir='runs/lr${learner.lr}-seed${seed}') to choose, and to resume a sweep by re-running it."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import OmegaConf, open_dict

    hydra_cfg = HydraConfig.get()
    if hydra_cfg.mode != RunMode.MULTIRUN:
        return
    raw = OmegaConf.to_container(dict_cfg, resolve=False)
    if isinstance(raw, dict) and raw.get("run_dir") == RunConfig.run_dir:
        with open_dict(dict_cfg):
            dict_cfg.run_dir = hydra_cfg.runtime.output_dir


def main() -> None:
    """Console entry point (also `python -m r1zero.train`, what torchrun and srun launch): Hydra composes
    conf/config.yaml + overrides into a RunConfig, then `run`."""
    import hydra

    from r1zero import distributed

    setup_environment()
    register_configs()
    distributed.apply_launcher_env()  # Slurm / submitit task -> RANK, WORLD_SIZE, ... (see r1zero.distributed)
    multirun = "-m" in sys.argv or "--multirun" in sys.argv
    if distributed.rank() != 0 and not multirun and not any("job_logging" in a for a in sys.argv):
        # Rank 0 writes the run directory's Hydra files (.hydra/, train.log); the other ranks log to stdout.
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=stdout"]

    @hydra.main(version_base=None, config_path=CONF_DIR, config_name="config")
    def _entry(dict_cfg: Any) -> None:
        distributed.apply_launcher_env()  # again: a submitit job runs only this function, in its own process
        logging.getLogger("r1zero").setLevel(logging.INFO if distributed.rank() == 0 else logging.WARNING)
        quiet_console()
        job_run_dir(dict_cfg)
        cfg = to_run_config(dict_cfg)
        started = time.time()
        try:
            run(cfg)
        except BaseException:  # Ctrl-C or error: no process group left to the interpreter's exit either
            distributed.shutdown(clean=False)
            raise
        distributed.shutdown()
        log.info("wall time %.0f s", time.time() - started)

    _entry()


if __name__ == "__main__":
    main()
