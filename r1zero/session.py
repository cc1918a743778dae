"""Everything a training run holds between steps, and the parts of `r1zero.train.run` around the step loop:
open (setup + resume), checkpoint, evaluate, finish. Heavy imports happen inside the functions."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from r1zero import dp
from r1zero.aha import FirstSeenTracker
from r1zero.config import RunConfig
from r1zero.types import Prompt

log = logging.getLogger("r1zero")


@dataclass
class Session:
    """The state of one run on one rank (see `open_session`)."""

    cfg: RunConfig
    rank: int
    world: int
    shard: dp.Shard
    run_dir: Path
    model_path: str
    eval_prompts: list[Prompt]
    learner: Any  # r1zero.learner.learner.Learner
    engine: Any  # r1zero.rollout.base.RolloutEngine
    collector: Any  # r1zero.collect.Collector
    loggers: Any
    start_step: int = 0
    history: dict[str, Any] = field(default_factory=dict)
    first_seen: FirstSeenTracker = field(default_factory=FirstSeenTracker)
    # What is billed (r1zero.cost): GPUs, or the CPU cores the run keeps busy.
    gpu: bool = False
    devices: int = 1
    # Wall-clock mark for the run's cumulative wall time (history["wall_s"], kept across resumes).
    mark: float = field(default_factory=time.time)

    def add_wall_time(self) -> None:
        now = time.time()
        self.history["wall_s"] = self.history.get("wall_s", 0.0) + now - self.mark
        self.mark = now

    def cost(self) -> dict[str, float]:
        """cost/* of the run so far (device-hours, tokens, money per phase; r1zero.cost)."""
        from r1zero.cost import cost_from_totals

        return cost_from_totals(
            self.history.get("cost_totals", {}), gpu=self.gpu, devices=self.devices,
            usd_per_gpu_hour=self.cfg.cost.usd_per_gpu_hour, usd_per_cpu_core_hour=self.cfg.cost.usd_per_cpu_core_hour,
            wall_s=self.history.get("wall_s"),
        )  # fmt: skip

    @property
    def eval_at_start_and_end(self) -> bool:
        return self.cfg.eval.at_start_and_end and bool(self.eval_prompts)

    def eval_due(self, step: int) -> bool:
        """Periodic evaluation (eval.every) after `step`; the final step counts too when at_start_and_end is off."""
        every = self.cfg.eval.every
        periodic = every > 0 and step % every == 0 and bool(self.eval_prompts)
        return periodic and not (step == self.cfg.steps and self.eval_at_start_and_end)


def _resume_point(cfg: RunConfig, run_dir: Path, rank: int, world: int) -> tuple[Path | None, dict | None]:
    """The checkpoint to resume from, decided before anything heavy is built: rank 0 looks (and verifies), all
    ranks follow; a world-size change fails here."""
    from r1zero import checkpoint as ckpt
    from r1zero import distributed

    latest: Path | None = None
    if cfg.checkpoint.resume:
        latest = distributed.broadcast_object(ckpt.find_latest_checkpoint(run_dir) if rank == 0 else None)
    elif (run_dir / "checkpoints").exists():
        raise ValueError(
            f"{run_dir} already holds checkpoints and checkpoint.resume=false: pick another run_dir"
        )
    meta = ckpt.load_meta(latest) if latest is not None else None
    if latest is not None and meta is not None:
        dp.check_resume_world_size(meta, world, latest)
    return latest, meta


def _warn_about_this_cpu(cfg: RunConfig, *, on_gpu: bool, threads: int) -> None:
    """Start-up warnings about the CPU itself (r1zero.cpu): emulated bf16, idle cores that halt (measured here)."""
    from r1zero import cpu

    uses_bf16 = cfg.rollout.dtype == "bfloat16" or cfg.learner.precision == "bf16"
    messages = [cpu.bf16_warning(cpu.cpu_flags(), uses_bf16=uses_bf16, on_gpu=on_gpu)]
    poll_ns = None if on_gpu else cpu.guest_halt_poll_ns()
    # Measure (~20 ms) only where idle_wake_warning may have something to say.
    if poll_ns == 0 and threads > 1:
        messages.append(
            cpu.idle_wake_warning(cpu.parallel_region_us(), poll_ns, threads=threads, on_gpu=on_gpu)
        )
    for message in messages:
        if message:
            log.warning(message)


def open_session(
    cfg: RunConfig, release: list[Callable[[], None]], role: Any = None, bridge: Any = None
) -> Session:
    """Processes, run directory, data, learner, rollout engine, loggers; then resume from the latest valid
    checkpoint in run_dir (model, optimizer, scheduler, RNG, data position, history, aha first-seen steps).
    role, bridge: a learner rank of a disaggregated run (r1zero.roles.join_role): its engine is the workers."""
    started = time.time()
    import torch
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from r1zero import checkpoint as ckpt
    from r1zero.collect import Collector
    from r1zero.console import quiet_console
    from r1zero.cost import devices_used
    from r1zero.logging import build_loggers
    from r1zero.models import resolve_model
    from r1zero.parts import PromptSampler
    from r1zero.tasks.templates import build_prompts

    rank, world, shard = _start_process(cfg, colocated_vllm=cfg.rollout.engine == "vllm" and role is None)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    latest, meta = _resume_point(cfg, run_dir, rank, world)
    if rank == 0:
        ckpt.atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        _warn_about_this_cpu(cfg, on_gpu=torch.cuda.is_available(), threads=torch.get_num_threads())
    model_path = resolve_model(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    train_examples, eval_examples = _examples(cfg)
    learner, engine = _build_models(cfg, model_path, tokenizer, role, bridge, release)
    sampler = PromptSampler(len(train_examples), seed=cfg.seed)  # the same global batches on every rank
    resumed = _resume(latest, meta, rank, learner, engine, sampler)
    loggers = build_loggers(
        cfg.log, run_dir, asdict(cfg), rank=rank, run_id=resumed.wandb_id,
        resume_step=resumed.start_step if latest else -1, total_steps=cfg.steps,
    )  # fmt: skip
    quiet_console()  # again: DeepSpeed and vLLM installed their loggers while the learner and engine were built
    gpu = torch.cuda.is_available()
    processes = world if role is None else role.learners + role.workers
    devices = cfg.cost.devices or devices_used(gpu, processes, torch.get_num_threads(), os.cpu_count() or 1)
    collector = Collector(
        cfg, engine, sampler, train_examples, tokenizer, shard,
        max_staleness=cfg.roles.max_staleness if role is not None else 0,
    )  # fmt: skip
    collector.load_pending(resumed.pending, step=resumed.start_step)  # requests in flight at the checkpoint
    return Session(
        cfg=cfg, rank=rank, world=world, shard=shard, run_dir=run_dir, model_path=model_path,
        eval_prompts=build_prompts(eval_examples, cfg.task, tokenizer), learner=learner, engine=engine,
        collector=collector, loggers=loggers, start_step=resumed.start_step, history=resumed.history,
        first_seen=resumed.first_seen, gpu=gpu, devices=devices, mark=started,
    )  # fmt: skip


def _start_process(cfg: RunConfig, *, colocated_vllm: bool) -> tuple[int, int, Any]:
    """Threads, seed and determinism of this process; its process group. Returns (rank, world size, the data
    shard this rank samples: `dp.current_shard`, by tensor-parallel replica when it shares a colocated vLLM)."""
    import torch

    from r1zero import distributed

    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    distributed.init_process_group(cfg.dist.timeout_s, cfg.dist.backend)
    rank, world = distributed.rank(), distributed.world_size()
    cfg.check_world_size(world)
    return rank, world, dp.current_shard(cfg.rollout.tensor_parallel_size if colocated_vllm else 1)


def _examples(cfg: RunConfig) -> tuple[list[Any], list[Any]]:
    """The task's training examples and its held-out examples (task.num_eval of the test split), checked disjoint."""
    from r1zero.tasks.registry import assert_disjoint, load_examples, training_examples

    task = cfg.task
    train_examples = training_examples(task, cfg.seed)
    eval_examples = []
    if task.num_eval > 0:
        eval_examples = load_examples(
            task.name, split="test", n=task.num_eval, seed=cfg.seed, path=task.eval_path, **task.kwargs
        )
    assert_disjoint(train_examples, eval_examples)
    return train_examples, eval_examples


def _build_models(
    cfg: RunConfig, model_path: str, tokenizer: Any, role: Any, bridge: Any, release: list[Callable[[], None]]
) -> tuple[Any, Any]:
    """The learner and the rollout engine (colocated: built here; a disaggregated learner rank: the workers
    behind `RemoteEngine`). The engine's close goes on `release`."""
    from r1zero.distributed import phase
    from r1zero.learner.learner import Learner
    from r1zero.rollout.engines import build_engine

    with phase("setup", 0):
        learner = Learner(
            model_path, cfg.learner, cfg.algo, total_steps=cfg.steps, max_response_len=cfg.rollout.max_new_tokens,
            temperature=cfg.rollout.temperature, trust_remote_code=cfg.model.trust_remote_code,
        )  # fmt: skip
        if role is None:
            engine = build_engine(
                model_path, cfg.rollout, seed=cfg.seed, trust_remote_code=cfg.model.trust_remote_code
            )
        else:
            from r1zero.rollout.remote import RemoteEngine

            engine = RemoteEngine(role, bridge, tokenizer)
        release.append(engine.close)
    return learner, engine


@dataclass
class Resumed:
    """Where a run picks up: the step, the W&B run id, history, aha first-seen steps, requests in flight."""

    start_step: int = 0
    wandb_id: str | None = None
    history: dict[str, Any] = field(default_factory=dict)
    first_seen: FirstSeenTracker = field(default_factory=FirstSeenTracker)
    pending: dict[str, Any] = field(default_factory=dict)


def _resume(latest: Path | None, meta: dict[str, Any] | None, rank: int, learner: Any, engine: Any,
            sampler: Any) -> Resumed:  # fmt: skip
    """Load the checkpoint `latest` (None: a fresh run): model, optimizer and scheduler, this rank's RNG, the data
    position; push the loaded weights into the engine."""
    from r1zero import checkpoint as ckpt
    from r1zero.distributed import phase
    from r1zero.sync import push_weights

    resumed = Resumed()
    if latest is None or meta is None:
        return resumed
    with phase("setup", meta["step"]):
        learner.load_state(latest)
        ckpt.load_rng_state(latest / f"rng_rank{rank}.pt")
        extra = meta["extra"]
        sampler.load_state(extra["sampler"])
        resumed = Resumed(meta["step"], extra.get("wandb_id"), extra.get("history", {}), FirstSeenTracker(),
                          extra.get("pending_rounds", {}))  # fmt: skip
        resumed.first_seen.load_state_dict(extra.get("first_seen", {}))
        push_weights(engine, learner.named_parameters_for_sync(), version=resumed.start_step)
    log.info("resumed from %s (step %d)", latest, resumed.start_step)
    return resumed


def save_checkpoint(session: Session, step: int) -> None:
    """Model, optimizer, scheduler, RNG per rank; data position, history, aha first-seen steps, W&B id."""
    from r1zero import checkpoint as ckpt

    def write(folder: Path) -> None:
        session.learner.save_state(folder)
        ckpt.save_rng_state(folder / f"rng_rank{session.rank}.pt")

    extra = {
        "sampler": session.collector.sampler.state(),
        "pending_rounds": session.collector.pending_state(),
        "wandb_id": getattr(session.loggers, "run_id", None),
        "history": session.history,
        "first_seen": session.first_seen.state_dict(),
        "world_size": session.world,
    }
    dp.save_checkpoint(session.run_dir, step, write, extra=extra, keep_last=session.cfg.checkpoint.keep_last)


def evaluate(session: Session, step: int) -> dict[str, float]:
    """Greedy (or eval.n-sample) accuracy on the held-out problems: each engine replica takes its share."""
    from r1zero.eval import aggregate, evaluate_model

    cfg = session.cfg
    max_new = cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens
    lo, hi = session.shard.replica_split(len(session.eval_prompts))
    _, records = evaluate_model(
        session.engine, session.eval_prompts[lo:hi], cfg.task, n=cfg.eval.n, temperature=cfg.eval.temperature,
        max_new_tokens=max_new, seed=cfg.seed, index_offset=lo,
    )  # fmt: skip
    metrics = aggregate(dp.gather_records(records, session.shard), [1]) | {"eval/n": float(cfg.eval.n)}
    session.history.setdefault("eval", []).append({"step": step, **metrics})
    return metrics


def finish(session: Session, step: int) -> dict[str, Any]:
    """After the last step: final evaluation, the Hugging Face export, summary.json; closes loggers and engine."""
    from r1zero import checkpoint as ckpt
    from r1zero.distributed import phase

    cfg, run_dir = session.cfg, session.run_dir
    summary: dict[str, Any] = {"run_dir": str(run_dir), "steps_done": step, "history": session.history}
    learner = session.learner
    summary["params"] = {"trainable": learner.trainable_params, "total": learner.total_params}
    summary["aha_first_seen"] = dict(
        session.first_seen.first_seen
    )  # phrase -> first step (kept over resumes)
    if step == cfg.steps:
        if session.eval_at_start_and_end:
            with phase("eval", step):
                session.loggers.log(evaluate(session, step), step=step)
        if cfg.checkpoint.save_final_model:
            with phase("checkpoint", step):
                session.learner.save_pretrained(run_dir / "final_model", tokenizer_path=session.model_path)
            summary["final_model"] = str(run_dir / "final_model")
    session.add_wall_time()
    summary["cost"] = session.cost()  # the whole run: setup, evaluation and checkpoints count as "other"
    session.loggers.close()
    session.engine.close()
    if session.rank == 0:
        ckpt.atomic_write_json(run_dir / "summary.json", summary)
        if "final_model" in summary:  # a Hugging Face model card beside the exported weights
            from r1zero.model_card import write_model_card

            try:
                write_model_card(run_dir, run_dir / "final_model", summary=summary)
            except Exception as err:  # the card is a convenience: never fail a finished run over it
                log.warning("could not write the model card: %s", err)
    return summary
