"""Data parallelism for the colocated loop: which prompts each rank samples, and how the ranks' results become
the metrics of the whole step.

With W ranks (each a DeepSpeed learner shard next to its own vLLM engine):
  - every rank draws the SAME global batch of B prompts (same PromptSampler seed) and takes the contiguous
    slice [r * B/W, (r+1) * B/W): each group of G completions stays on one rank;
  - prompt i of the global batch is sampled with `request_seed(step_seed, i)` whichever rank samples it, so
    W ranks sample exactly what one process sampling the whole batch would;
  - after scoring, every rank gathers the whole step's completions, rewards and texts (`gather_step`) and
    computes advantages, filters and metrics on the global batch exactly as one process would, then keeps its
    slice for the learner (whose gradients DeepSpeed averages);
  - per-rank scalars (learner, sync, timings) are combined by `combine_rank_metrics`.
vLLM tensor parallelism (tp > 1): ranks r // tp share one engine replica; the replica generates the slices of
all its ranks (identical on each of them: same requests, same seeds) and each rank keeps its own.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from r1zero import checkpoint as ckpt
from r1zero import distributed
from r1zero.parts import Scored
from r1zero.types import Completion


@dataclass(frozen=True)
class Shard:
    """Rank `rank` of `world`, vLLM tensor-parallel size `tp` (ranks r // tp share one engine replica).

    Example: world 4, tp 2, B = 8 -> rank 3 learns on prompts [6, 8) and its replica (ranks 2, 3) generates
    prompts [4, 8).
    """

    rank: int = 0
    world: int = 1
    tp: int = 1

    def own(self, num_prompts: int) -> tuple[int, int]:
        """[lo, hi) of the global batch this rank learns on (num_prompts % world == 0, checked at start)."""
        per = num_prompts // self.world
        return self.rank * per, (self.rank + 1) * per

    def generated(self, num_prompts: int) -> tuple[int, int]:
        """[lo, hi) of the global batch this rank's engine replica generates (its tp ranks' slices)."""
        per = num_prompts // self.world
        first = (self.rank // self.tp) * self.tp
        return first * per, (first + self.tp) * per

    def replica_split(self, count: int) -> tuple[int, int]:
        """[lo, hi) of `count` items (eval problems) for this rank's replica: contiguous, sizes differ by <= 1.
        Example: count 5, 2 replicas -> [0, 3) and [3, 5)."""
        return contiguous_split(count, self.world // self.tp, self.rank // self.tp)

    @property
    def replica_leader(self) -> bool:
        """True on the first rank of each engine replica (the one whose eval records count)."""
        return self.rank % self.tp == 0


def contiguous_split(count: int, parts: int, index: int) -> tuple[int, int]:
    """[lo, hi) of part `index` when `count` items are cut into `parts` contiguous parts whose sizes differ by
    <= 1 (the first count % parts one larger). Example: count 5, 2 parts -> [0, 3) and [3, 5)."""
    base, extra = divmod(count, parts)
    lo = index * base + min(index, extra)
    return lo, lo + base + (1 if index < extra else 0)


def current_shard(tp: int = 1) -> Shard:
    return Shard(distributed.rank(), distributed.world_size(), tp)


# ---------------------------------------------------------------------------------------------- one step


def with_prompt_offset(completions: Sequence[Completion], offset: int) -> list[Completion]:
    """Completions of a generate call over prompts[offset:...] -> the same with global prompt indices."""
    return [dataclasses.replace(c, prompt_index=c.prompt_index + offset) for c in completions]


def gather_step(
    completions: Sequence[Completion], scored: Scored, rewards: Sequence[float], *, light: bool = True
) -> tuple[list[Completion], Scored, list[float]]:
    """This rank's completions (global prompt indices), scores and rewards [N/W] -> the whole step's, in global
    batch order, on every rank. light: prompt ids and logprobs stay behind (the learner keeps its own rows);
    False sends them too (dynamic sampling re-splits the kept groups over the ranks)."""
    sent = (
        [dataclasses.replace(c, prompt_token_ids=[], logprobs=None) for c in completions]
        if light
        else list(completions)
    )
    parts = distributed.all_gather_object((sent, scored, list(rewards)))
    all_completions: list[Completion] = []
    texts: list[str] = []
    totals: list[float] = []
    all_rewards: list[float] = []
    components: dict[str, list[float]] = {}
    for part_completions, part_scored, part_rewards in parts:
        all_completions += part_completions
        texts += part_scored.texts
        totals += part_scored.totals
        all_rewards += part_rewards
        for name, values in part_scored.components.items():
            components.setdefault(name, []).extend(values)
    return all_completions, Scored(texts, totals, components), all_rewards


# How per-rank scalars combine into the step's value: default "first" (rank 0's own: timings, ...).
_SUM = (
    "loss/policy",
    "loss/kl",
    "loss/total",
    "perf/learner_tokens",
    "perf/learner_packed_tokens",
    "perf/learner_pad_tokens",
    "perf/learner_tokens_per_s",
)
_MAX = ("sync/max_abs_logprob_diff", "sync/step_logprob_max_abs_diff", "sync/push_s", "sync/verify_seconds")
_MEAN = ("loss/grad_norm", "loss/lr", "sync/mean_abs_logprob_diff", "sync/step_logprob_mean_abs_diff")


def combine_rank_metrics(per_rank: Sequence[dict[str, float]], weights: Sequence[float]) -> dict[str, float]:
    """Per-rank scalar metrics -> the step's, each as one process would have computed it.

    loss/* (other than below): token-weighted mean (`weights` = each rank's loss tokens), i.e. sum / total tokens
    over the whole batch. loss/policy, loss/kl, loss/total: summed (each rank's micro-batch losses are divided by
    the GLOBAL normaliser, so they add up to the step's loss). grad_norm, lr: identical on every rank (mean). Learner token
    counts and throughput: summed. sync/*: worst (max) or mean over ranks. Anything else: rank 0's value.
    Example: loss/entropy 1.0 (10 tokens) and 4.0 (30 tokens) -> (10 + 120) / 40 = 3.25.
    """
    out = dict(per_rank[0])
    total_weight = sum(weights)
    for key in per_rank[0]:
        values = [m.get(key, 0.0) for m in per_rank]
        if key in _SUM:
            out[key] = sum(values)
        elif key in _MAX:
            out[key] = max(values)
        elif key in _MEAN:
            out[key] = sum(values) / len(values)
        elif key.startswith("loss/"):
            out[key] = sum(v * w for v, w in zip(values, weights)) / total_weight if total_weight else 0.0
    return out


def reduce_rank_metrics(local: dict[str, float], weight: float, stop: bool) -> tuple[dict[str, float], bool]:
    """All-gather each rank's scalar metrics and its stop request; returns (combined metrics, any rank asked to
    stop). One small collective per step; the stop flag travels with it so that all ranks stop at the same step."""
    parts = distributed.all_gather_object((local, weight, stop))
    combined = combine_rank_metrics([p[0] for p in parts], [p[1] for p in parts])
    return combined, any(p[2] for p in parts)


def gather_records(records: list[dict[str, Any]], shard: Shard) -> list[dict[str, Any]]:
    """Eval records of each replica (split by `Shard.replica_split`) -> all of them in order, on every rank."""
    parts = distributed.all_gather_object(records if shard.replica_leader else [])
    return [record for part in parts for record in part]


# ---------------------------------------------------------------------------------------------- checkpoints


def save_checkpoint(
    run_dir: Path, step: int, write_fn: Callable[[Path], None], *, extra: dict[str, Any], keep_last: int
) -> None:
    """Every rank writes its part (DeepSpeed shard, RNG state) into one staging folder; rank 0 commits it.

    The multi-rank recipe of r1zero.checkpoint; one process: `checkpoint.save_checkpoint`. With several nodes
    run_dir must be on a filesystem they share.
    """
    if not distributed.is_initialized() or distributed.world_size() == 1:
        ckpt.save_checkpoint(run_dir, step, write_fn, extra=extra, keep_last=keep_last)
        return
    staged = ckpt.staging_dir(run_dir, step, tag="shared")  # the same name on every rank
    if distributed.rank() == 0:
        shutil.rmtree(staged, ignore_errors=True)
        staged.mkdir(parents=True)
    distributed.barrier()
    write_fn(staged)
    distributed.barrier()
    if distributed.rank() == 0:
        ckpt.commit_checkpoint(run_dir, step, staged, extra=extra, keep_last=keep_last)
    distributed.barrier()


def checkpoint_world_size(meta: dict[str, Any]) -> int:
    """The number of ranks that wrote a checkpoint: meta extra's world_size, or (older checkpoints) the number
    of per-rank RNG files it lists."""
    size = meta.get("extra", {}).get("world_size")
    if size is not None:
        return int(size)
    return max(1, sum(1 for name in meta.get("files", {}) if Path(name).name.startswith("rng_rank")))


def check_resume_world_size(meta: dict[str, Any], world_size: int, path: Path) -> None:
    """Resuming needs the world size the checkpoint was written with: DeepSpeed's ZeRO optimizer (and ZeRO-3
    parameter) shards are per rank. Raises ValueError naming both sizes and the ways out."""
    saved = checkpoint_world_size(meta)
    if saved != world_size:
        raise ValueError(
            f"{path} was written by {saved} process(es) but this run has {world_size}: DeepSpeed's ZeRO "
            f"optimizer state is sharded per rank, so resume with {saved} process(es) (e.g. torchrun "
            f"--nproc_per_node {saved} ...), or start a new run_dir from its weights (export them with "
            f"{path}/zero_to_fp32.py, or use the run's final_model/ as model.name)"
        )
