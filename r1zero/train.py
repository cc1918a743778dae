"""r1zero-train: turn a base model into a reasoner by pure RL (GRPO), one readable loop.

    r1zero-train                                   # the CPU default run (see README)
    r1zero-train model=tiny task=countdown steps=5
    r1zero-train experiment=countdown_qwen2.5_3b   # a full recipe from conf/experiment/
    torchrun --nproc_per_node 2 -m r1zero.train model=tiny   # data parallel (README: "Scaling out")

Per step: sample prompts -> generate G completions each (vLLM) -> score (rule-based rewards) -> group-relative
advantages (optionally drop zero-variance groups) -> one learner step (DeepSpeed) -> push the new weights into
the rollout engine and verify them -> log -> checkpoint -> (evaluate).
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
from dataclasses import asdict
from pathlib import Path
from typing import Any

from r1zero.config import RunConfig, register_configs, to_run_config
from r1zero.env import setup_environment

log = logging.getLogger("r1zero")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


class GracefulStop:
    """First Ctrl-C (or SIGTERM): finish the current step, checkpoint, exit 0. Second Ctrl-C: abort now."""

    def __init__(self) -> None:
        self.requested = False
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
        log.warning("stop requested: finishing this step, then saving a checkpoint (Ctrl-C again to abort)")

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def build_prompts(examples: list[Any], cfg: RunConfig, tokenizer: Any) -> list[Any]:
    from r1zero.tasks.templates import build_prompt

    fewshot = [(turn[0], turn[1]) for turn in cfg.task.fewshot]
    return [
        build_prompt(
            e,
            template=cfg.task.template,
            tokenizer=tokenizer,
            system_prompt=cfg.task.system_prompt,
            fewshot=fewshot,
        )
        for e in examples
    ]


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
    import torch
    from transformers import AutoTokenizer

    from r1zero import checkpoint as ckpt
    from r1zero import distributed, dp
    from r1zero.aha import FirstSeenTracker, aha_step_metrics
    from r1zero.algo import filter_zero_variance_groups, group_advantages, overlong_penalty
    from r1zero.distributed import phase
    from r1zero.eval import aggregate, evaluate_model
    from r1zero.learner.learner import Learner
    from r1zero.logging import build_loggers
    from r1zero.models import resolve_model
    from r1zero.parts import PhaseTimer, PromptSampler, rollout_metrics, sample_rows, score_completions
    from r1zero.rollout.base import SamplingSettings, build_engine, tokenize_prompts
    from r1zero.sync import make_probe, push_weights, verify_sync
    from r1zero.tasks.registry import assert_disjoint, load_examples

    # ---- setup: determinism, processes, run directory, data, models
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    distributed.init_process_group(cfg.dist.timeout_s, cfg.dist.backend)
    rank, world = distributed.rank(), distributed.world_size()
    cfg.check_world_size(world)
    shard = dp.current_shard(cfg.rollout.tensor_parallel_size if cfg.rollout.engine == "vllm" else 1)
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    # The resume point, decided before anything heavy is built: rank 0 looks (and verifies), all ranks follow.
    latest: Path | None = None
    if cfg.checkpoint.resume:
        latest = distributed.broadcast_object(ckpt.find_latest_checkpoint(run_dir) if rank == 0 else None)
    elif (run_dir / "checkpoints").exists():
        raise ValueError(
            f"{run_dir} already holds checkpoints and checkpoint.resume=false: pick another run_dir"
        )
    meta = ckpt.load_meta(latest) if latest is not None else None
    if latest is not None and meta is not None:
        dp.check_resume_world_size(meta, world, latest)  # fails here, before anything heavy is built
    if rank == 0:
        from omegaconf import OmegaConf

        ckpt.atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
    model_path = resolve_model(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    task = cfg.task
    train_examples = load_examples(
        task.name, split="train", n=task.num_train if not task.train_path else None, seed=cfg.seed,
        path=task.train_path, **task.kwargs,
    )  # fmt: skip
    eval_examples = (
        load_examples(
            task.name, split="test", n=task.num_eval, seed=cfg.seed, path=task.eval_path, **task.kwargs
        )
        if task.num_eval > 0
        else []
    )
    assert_disjoint(train_examples, eval_examples)
    eval_prompts = build_prompts(eval_examples, cfg, tokenizer)
    with phase("setup", 0):
        learner = Learner(
            model_path, cfg.learner, cfg.algo, total_steps=cfg.steps, max_response_len=cfg.rollout.max_new_tokens,
            trust_remote_code=cfg.model.trust_remote_code,
        )  # fmt: skip
        engine = build_engine(
            model_path, cfg.rollout, seed=cfg.seed, trust_remote_code=cfg.model.trust_remote_code
        )
        release.append(engine.close)
    sampler = PromptSampler(len(train_examples), seed=cfg.seed)  # the same global batches on every rank
    G, B = cfg.rollout.group_size, cfg.rollout.prompts_per_step
    (own_lo, own_hi), (gen_lo, gen_hi) = shard.own(B), shard.generated(B)
    rows = slice(own_lo * G, own_hi * G)  # this rank's rows of the step's N completions

    # ---- resume from the latest valid checkpoint in run_dir
    start_step, wandb_id, history = 0, None, {}
    first_seen = FirstSeenTracker()
    if latest is not None and meta is not None:
        with phase("setup", meta["step"]):
            learner.load_state(latest)
            ckpt.load_rng_state(latest / f"rng_rank{rank}.pt")
            sampler.load_state(meta["extra"]["sampler"])
            start_step, wandb_id, history = (
                meta["step"],
                meta["extra"].get("wandb_id"),
                meta["extra"].get("history", {}),
            )
            push_weights(engine, learner.named_parameters_for_sync(), version=start_step)
        log.info("resumed from %s (step %d)", latest, start_step)
    loggers = build_loggers(
        cfg.log, run_dir, asdict(cfg), rank=rank, run_id=wandb_id, resume_step=start_step if latest else -1,
        total_steps=cfg.steps,
    )  # fmt: skip

    def save(step: int) -> None:
        def write(folder: Path) -> None:
            learner.save_state(folder)
            ckpt.save_rng_state(folder / f"rng_rank{rank}.pt")

        extra = {
            "sampler": sampler.state(),
            "wandb_id": getattr(loggers, "run_id", None),
            "history": history,
            "first_seen": first_seen.state_dict(),
            "world_size": world,
        }
        dp.save_checkpoint(run_dir, step, write, extra=extra, keep_last=cfg.checkpoint.keep_last)

    def run_eval(step: int) -> dict[str, float]:
        """Each engine replica evaluates its share of the problems; the records are gathered."""
        max_new = cfg.eval.max_new_tokens or cfg.rollout.max_new_tokens
        lo, hi = shard.replica_split(len(eval_prompts))
        _, records = evaluate_model(
            engine, eval_prompts[lo:hi], task, n=cfg.eval.n, temperature=cfg.eval.temperature,
            max_new_tokens=max_new, seed=cfg.seed, index_offset=lo,
        )  # fmt: skip
        metrics = aggregate(dp.gather_records(records, shard), [1]) | {"eval/n": float(cfg.eval.n)}
        history.setdefault("eval", []).append({"step": step, **metrics})
        return metrics

    eval_on = cfg.eval.every > 0 or cfg.eval.at_start_and_end
    if eval_on and eval_prompts and start_step == 0:
        with phase("eval", 0):
            loggers.log(run_eval(0), step=0)

    # ---- the loop
    step = start_step
    with GracefulStop() as stop:
        for step in range(start_step + 1, cfg.steps + 1):
            timer = PhaseTimer()
            with timer("rollout"), phase("rollout", step):
                batch = [train_examples[i] for i in sampler.next(B)]  # the global batch (same on every rank)
                prompts = build_prompts(batch, cfg, tokenizer)  # [B]
                tokenize_prompts(
                    tokenizer, prompts, cfg.rollout.max_prompt_tokens
                )  # fail early on long prompts
                sampling = SamplingSettings.from_config(
                    cfg.rollout, seed=cfg.seed * 1_000_003 + step, index_offset=gen_lo
                )  # prompt i of the global batch gets the same seed whichever rank samples it
                generated = engine.generate(prompts[gen_lo:gen_hi], sampling)  # prompt-major
                generated = dp.with_prompt_offset(generated, gen_lo)  # prompt_index: global
                completions = generated[(own_lo - gen_lo) * G : (own_hi - gen_lo) * G]  # [N / W], this rank's
            with timer("reward"), phase("reward", step):
                scored = score_completions(task, prompts, completions)
                own_rewards = torch.tensor(scored.totals, dtype=torch.float32)  # [N / W]
                if cfg.algo.overlong_buffer > 0:
                    lengths = torch.tensor([len(c.token_ids) for c in completions])  # [N / W]
                    own_rewards = own_rewards + overlong_penalty(
                        lengths,
                        cfg.rollout.max_new_tokens,
                        cfg.algo.overlong_buffer,
                        cfg.algo.overlong_penalty,
                    )  # [N / W]
                # The whole step on every rank: advantages and metrics exactly as in one process.
                all_completions, all_scored, all_rewards = dp.gather_step(
                    completions, scored, own_rewards.tolist()
                )
                rewards = torch.tensor(all_rewards, dtype=torch.float32)  # [N]
                advantages = group_advantages(rewards, G, normalize=cfg.algo.advantage_normalize)  # [N]
                keep = torch.ones(len(all_completions), dtype=torch.bool)  # [N]
                dropped_groups = 0
                if cfg.algo.dynamic_sampling:
                    keep, dropped = filter_zero_variance_groups(rewards, G)  # [N], 0-dim
                    dropped_groups = int(dropped)
                if cfg.algo.mask_truncated:
                    keep &= torch.tensor([not c.truncated for c in all_completions])
            sequences = [(c.prompt_token_ids, c.token_ids) for c in completions]
            metrics = rollout_metrics(all_completions, all_scored, G)
            metrics |= aha_step_metrics(
                all_scored.texts,
                [len(c.token_ids) for c in all_completions],
                all_scored.components.get("correct", [0.0] * len(all_completions)),
                [c.truncated for c in all_completions],
            )
            first_seen.update(step, metrics)
            own: dict[str, float] = {}  # this rank's scalars, combined over ranks below
            with timer("learner"), phase("learner", step):
                engine.sleep()
                if bool(keep.any()):  # global, so that every rank takes part in the step's collectives
                    own |= learner.train_step(
                        sequences,
                        advantages[rows],
                        rollout_logprobs=[c.logprobs or [] for c in completions],
                        loss_mask=keep[rows],
                        max_rollout_gap=cfg.sync_threshold if cfg.sync.check_step_logprobs else None,
                    )
                engine.wake()
            with timer("sync"), phase("sync", step):
                own["sync/push_s"] = push_weights(engine, learner.named_parameters_for_sync(), version=step)
                probe_now = step in (start_step + 1, cfg.steps) or step % cfg.sync.verify_every == 0
                if cfg.sync.verify and probe_now:
                    probe = make_probe(generated, cfg.sync.probe_size)  # the same on a replica's tp ranks
                    own |= verify_sync(engine, learner.logprobs, probe, max_abs_diff=cfg.sync_threshold)
            own |= timer.metrics()
            with phase("metrics", step):
                loss_tokens = sum(len(c.token_ids) for c, k in zip(completions, keep[rows]) if k)
                combined, stop_now = dp.reduce_rank_metrics(own, loss_tokens, stop.requested)
            metrics |= combined
            n_tokens = sum(len(c.token_ids) for c in all_completions)
            metrics["perf/rollout_tokens_per_s"] = n_tokens / max(1e-9, timer.seconds["rollout"])
            metrics["algo/advantage_abs_mean"] = float(advantages.abs().mean())
            metrics["algo/dropped_groups"] = float(dropped_groups)
            metrics["algo/loss_rows"] = float(keep.sum())
            metrics["train/step"] = float(step)
            if step == 1:
                history["first"] = {k: v for k, v in metrics.items() if k.startswith("reward/")}
            history["last"] = {k: v for k, v in metrics.items() if k.startswith("reward/")}
            if cfg.eval.every > 0 and step % cfg.eval.every == 0 and step != cfg.steps:
                with phase("eval", step):
                    metrics |= run_eval(step)
            loggers.log(metrics, step=step)
            if cfg.log.samples_every > 0 and step % cfg.log.samples_every == 0:
                rows_shown = sample_rows(prompts, all_completions, all_scored, cfg.log.num_samples)
                loggers.log_samples(rows_shown, step=step)
            last = step == cfg.steps or stop_now
            if (cfg.checkpoint.every > 0 and step % cfg.checkpoint.every == 0) or last:
                with phase("checkpoint", step):
                    save(step)
            if stop_now:
                log.warning(
                    "stopped after step %d; checkpoint saved in %s; rerun the same command to resume",
                    step,
                    run_dir,
                )
                break

    # ---- the end: final evaluation, export, summary
    summary: dict[str, Any] = {"run_dir": str(run_dir), "steps_done": step, "history": history}
    if step == cfg.steps:
        if eval_on and eval_prompts:
            with phase("eval", step):
                final = run_eval(step)
            loggers.log(final, step=step)
        if cfg.checkpoint.save_final_model:
            with phase("checkpoint", step):
                learner.save_pretrained(run_dir / "final_model", tokenizer_path=model_path)
            summary["final_model"] = str(run_dir / "final_model")
    loggers.close()
    engine.close()
    if rank == 0:
        ckpt.atomic_write_json(run_dir / "summary.json", summary)
        log.info(format_summary(summary))
    return summary


def format_summary(summary: dict[str, Any]) -> str:
    """The closing lines of a run: start vs end reward and held-out accuracy, where things are."""
    history = summary.get("history", {})
    first, last = history.get("first", {}), history.get("last", {})
    lines = [f"run finished: {summary['steps_done']} steps, run directory {summary['run_dir']}"]
    if first and last:
        lines.append(
            f"  train reward  {first.get('reward/mean', 0):.3f} -> {last.get('reward/mean', 0):.3f}   "
            f"accuracy {first.get('reward/accuracy', 0):.3f} -> {last.get('reward/accuracy', 0):.3f}"
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
        job_run_dir(dict_cfg)
        cfg = to_run_config(dict_cfg)
        started = time.time()
        run(cfg)
        log.info("wall time %.0f s", time.time() - started)

    _entry()


if __name__ == "__main__":
    main()
