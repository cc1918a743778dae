"""One step's training samples: sample prompts, generate G completions each, score them, and (DAPO dynamic
sampling) keep sampling until the batch holds B groups whose rewards differ.

Every rank runs this with the same global batch (r1zero.dp): it generates its shard of the prompts, scores its
own rows, and the scores are gathered so that advantages and metrics are exactly those of one process.
Dynamic sampling gathers the completions themselves too: the B kept groups are split over the ranks afresh, so
a rank may train on groups another rank generated.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import Any

import torch

from r1zero import dp
from r1zero.aha import aha_step_metrics
from r1zero.algo import filter_zero_variance_groups, group_advantages, overlong_penalty
from r1zero.config import RunConfig
from r1zero.distributed import phase
from r1zero.parts import PhaseTimer, PromptSampler, Scored, rollout_metrics, score_completions
from r1zero.rollout.base import RolloutEngine, SamplingSettings, step_seed, tokenize_prompts
from r1zero.tasks.templates import build_prompts
from r1zero.types import Completion, Example, Prompt

log = logging.getLogger("r1zero")


@dataclass
class StepSamples:
    """What the learner trains on this step, and what the logs show.

    prompts [K]: the trained groups' prompts (each completion's prompt_index points here); K = B unless dynamic
        sampling ran out of rounds. completions [K * G], scored, rewards [K * G] (final: overlong penalty
        included), advantages [K * G], keep [K * G] (the loss rows): the whole step, on every rank.
    own: this rank's rows of `completions`, with token ids and sampling logprobs; own_advantages, own_keep: theirs.
        A rank left without groups (dynamic sampling found fewer than W) gets a copy of group 0 with no loss rows.
    generated: what this rank's engine generated in the last round (the sync probe draws from it).
    metrics: reward/*, rollout/* and aha/* over EVERY completion sampled this step, algo/* of the trained batch,
        perf/rollout_tokens_per_s or perf/rollout_wait_s (`rollout_rate_metrics`).
    tokens_generated: the tokens of every completion sampled this step (each round, every rank): what was paid for.
    """

    prompts: list[Prompt]
    completions: list[Completion]
    scored: Scored
    rewards: torch.Tensor
    advantages: torch.Tensor
    keep: torch.Tensor
    own: list[Completion]
    own_advantages: torch.Tensor
    own_keep: torch.Tensor
    generated: list[Completion]
    metrics: dict[str, float]
    tokens_generated: int


@dataclass
class Sampled:
    """One round's prompts [B] and their completions [B * G] (global, prompt-major), scores and final rewards."""

    prompts: list[Prompt]
    completions: list[Completion]
    scored: Scored
    rewards: list[float]


def select_rows(scored: Scored, rows: list[int]) -> Scored:
    """The rows `rows` of a Scored. Example: totals [1, 0, 1], rows [2, 0] -> totals [1, 1]."""
    return Scored(
        [scored.texts[i] for i in rows],
        [scored.totals[i] for i in rows],
        {name: [values[i] for i in rows] for name, values in scored.components.items()},
    )


def concat(parts: list[Sampled]) -> Sampled:
    """Rounds -> one Sampled, prompt indices renumbered to point into the concatenated prompts."""
    prompts: list[Prompt] = []
    completions: list[Completion] = []
    rows: list[Scored] = []
    rewards: list[float] = []
    for part in parts:
        offset = len(prompts)
        prompts += part.prompts
        completions += [
            dataclasses.replace(c, prompt_index=c.prompt_index + offset) for c in part.completions
        ]
        rows.append(part.scored)
        rewards += part.rewards
    components: dict[str, list[float]] = {}
    for s in rows:
        for name, values in s.components.items():
            components.setdefault(name, []).extend(values)
    scored = Scored([t for s in rows for t in s.texts], [t for s in rows for t in s.totals], components)
    return Sampled(prompts, completions, scored, rewards)


def keep_varied_groups(sampled: Sampled, group_size: int) -> Sampled:
    """Only the groups whose final rewards are not all equal (the ones that carry a gradient), renumbered.
    Example: rewards [1, 1, 0, 1], G = 2 -> the second group alone."""
    keep, _ = filter_zero_variance_groups(torch.tensor(sampled.rewards), group_size)  # [N] bool
    groups = [g for g in range(len(sampled.prompts)) if bool(keep[g * group_size])]
    rows = [g * group_size + j for g in groups for j in range(group_size)]
    completions = [
        dataclasses.replace(sampled.completions[r], prompt_index=new)
        for new, g in enumerate(groups)
        for r in range(g * group_size, (g + 1) * group_size)
    ]
    return Sampled(
        [sampled.prompts[g] for g in groups],
        completions,
        select_rows(sampled.scored, rows),
        [sampled.rewards[r] for r in rows],
    )


def first_groups(sampled: Sampled, count: int, group_size: int) -> Sampled:
    """The first `count` groups (DAPO keeps the first B varied groups and drops the surplus)."""
    rows = list(range(min(count, len(sampled.prompts)) * group_size))
    return Sampled(
        sampled.prompts[:count], sampled.completions[: len(rows)], select_rows(sampled.scored, rows),
        sampled.rewards[: len(rows)],
    )  # fmt: skip


def policy_lag_metrics(versions: list[int], step: int) -> dict[str, float]:
    """How many policy versions behind step `step`'s samples are: the learner holds version step - 1, so a
    sample drawn with version v lags step - 1 - v (0 in colocated mode). Example: versions [2, 3], step 4 ->
    mean 0.5, max 1."""
    lags = [step - 1 - v for v in versions] or [0]
    return {
        "rollout/policy_version_lag": sum(lags) / len(lags),
        "rollout/policy_version_lag_max": float(max(lags)),
    }


def rollout_rate_metrics(tokens: int, rollout_s: float, max_staleness: int) -> dict[str, float]:
    """perf/* of the step's rollout phase (`tokens`: every round's, `rollout_s`: the phase's wall time).

    k = 0: the learner waited while every token was generated, so tokens / seconds is the rollout's rate
    (perf/rollout_tokens_per_s). k >= 1: the first round was generated while the learner trained the step before,
    and the phase only times the learner's wait for it (about 0 s when the workers keep up): a rate over it would
    be meaningless, so the phase is logged as that wait (perf/rollout_wait_s). Example: 2048 tokens in 4 s,
    k = 0 -> 512 tokens/s; k = 1 -> wait 4 s.
    """
    if max_staleness >= 1:
        return {"perf/rollout_wait_s": rollout_s}
    return {"perf/rollout_tokens_per_s": tokens / max(1e-9, rollout_s)}


def zero_std_fraction(rewards: list[float], group_size: int) -> float:
    """Fraction of groups whose rewards are all equal. Example: [1, 1, 0, 1], G = 2 -> 0.5."""
    groups = [rewards[i : i + group_size] for i in range(0, len(rewards), group_size)]
    return sum(max(g) == min(g) for g in groups) / len(groups) if groups else 0.0


@dataclass
class Request:
    """One round's generation, requested (maybe ahead of its step) and not yet collected: the sampler's example
    indices [B], the prompts, their sampling settings, and the engine's ticket (None: generate on collection)."""

    indices: list[int]
    prompts: list[Prompt]
    sampling: SamplingSettings
    ticket: Any = None


class Collector:
    """Draws prompts from the sampler and turns them into one step's `StepSamples` (see the module doc).

    max_staleness k (disaggregated mode, an engine with `submit`/`fetch`: r1zero.roles.RemoteEngine): before the
    learner trains step s, the first round of step s + k is requested, so the workers sample it while the
    learner trains; its samples then come from weights at most k versions older than colocated mode's. k = 0:
    every round is requested when its step needs it, exactly as colocated. Requests in flight are part of the
    checkpoint (`pending_state`): a resumed run requests them again, so no prompt is skipped or repeated, each
    when it enters the resumed run's window (a run resumed with a smaller k keeps the smaller bound).
    """

    def __init__(
        self,
        cfg: RunConfig,
        engine: RolloutEngine,
        sampler: PromptSampler,
        examples: list[Example],
        tokenizer: Any,
        shard: dp.Shard,
        max_staleness: int = 0,
    ) -> None:
        self.cfg, self.engine, self.sampler, self.examples = cfg, engine, sampler, examples
        self.tokenizer, self.shard, self.max_staleness = tokenizer, shard, max_staleness
        self.pending: dict[int, Request] = {}  # step -> its first round, requested ahead
        # step -> example indices in flight at the checkpoint, not requested again yet (`load_pending`)
        self.deferred: dict[int, list[int]] = {}

    def _request(self, step: int, round_index: int, indices: list[int] | None = None) -> Request:
        """Draw the round's prompts (unless given) and, on an engine that can, send them off now."""
        cfg, B = self.cfg, self.cfg.rollout.prompts_per_step
        gen_lo, gen_hi = self.shard.generated(B)
        indices = self.sampler.next(B) if indices is None else indices
        prompts = build_prompts([self.examples[i] for i in indices], cfg.task, self.tokenizer)
        tokenize_prompts(self.tokenizer, prompts, cfg.rollout.max_prompt_tokens)  # fail early on long prompts
        # Prompt i of round r gets the same seed whichever rank samples it (round 0: i's own index).
        sampling = SamplingSettings.from_config(
            cfg.rollout, seed=step_seed(cfg.seed, step), index_offset=round_index * B + gen_lo
        )
        request = Request(indices, prompts, sampling)
        submit = getattr(self.engine, "submit", None)
        if submit is not None:
            request.ticket = submit(
                prompts[gen_lo:gen_hi], sampling, label=f"step {step} round {round_index}", step=step
            )
        return request

    def _generated(self, request: Request) -> list[Completion]:
        gen_lo, gen_hi = self.shard.generated(self.cfg.rollout.prompts_per_step)
        if request.ticket is not None:
            completions = self.engine.fetch(request.ticket)  # type: ignore[attr-defined]
        else:
            completions = self.engine.generate(request.prompts[gen_lo:gen_hi], request.sampling)
        return dp.with_prompt_offset(completions, gen_lo)

    def queue_ahead(self, step: int) -> None:
        """Request the first rounds of steps step + 1 .. step + max_staleness (those not requested yet)."""
        for ahead in range(step + 1, min(step + self.max_staleness, self.cfg.steps) + 1):
            if ahead not in self.pending:
                self.pending[ahead] = self._request(ahead, 0, self.deferred.pop(ahead, None))

    def pending_state(self) -> dict[str, list[int]]:
        """The first rounds drawn ahead, for the checkpoint: step -> example indices (requested or deferred)."""
        drawn = {step: request.indices for step, request in self.pending.items()} | self.deferred
        return {str(step): indices for step, indices in sorted(drawn.items())}

    def load_pending(self, state: dict[str, list[int]], *, step: int) -> None:
        """A run resumed after `step` requests again what was in flight at its checkpoint (the same prompts),
        each step only once it is within max_staleness of the learner, as `queue_ahead` would have: the engine
        holds version `step` now, so sending all at once would let step + j lag j - 1 versions whatever k is now.
        Example: a k=3 run's steps 3, 4, 5 resumed after step 2 with k=1: step 3 now, 4 after step 3 is collected,
        5 after step 4 (lags 0, 1, 1, never 2); with k=0 each when it is collected (on-policy)."""
        self.deferred = {int(ahead): list(indices) for ahead, indices in state.items()}
        self.queue_ahead(step)
        if self.deferred:
            log.info(
                "roles.max_staleness=%d: steps %s (in flight at the checkpoint) are requested as they come "
                "within %d steps of the learner", self.max_staleness, sorted(self.deferred), self.max_staleness,
            )  # fmt: skip

    def _round(
        self, step: int, round_index: int, timer: PhaseTimer
    ) -> tuple[Sampled, list[Completion], list[Completion]]:
        """One round of B prompts (requested ahead or now) generated, scored and gathered: (the round, this rank's
        own rows [N / W] with token ids, what this rank generated). Time goes to the timer's "rollout" (drawing
        the prompts and waiting for the samples) and "reward" phases."""
        B, G = self.cfg.rollout.prompts_per_step, self.cfg.rollout.group_size
        (own_lo, own_hi), (gen_lo, _) = self.shard.own(B), self.shard.generated(B)
        with timer("rollout"), phase("rollout", step):
            request = self.pending.pop(step, None) if round_index == 0 else None
            indices = self.deferred.pop(step, None) if round_index == 0 else None
            request = request or self._request(step, round_index, indices)
            generated = self._generated(request)
            own = generated[(own_lo - gen_lo) * G : (own_hi - gen_lo) * G]  # [N / W]
        with timer("reward"), phase("reward", step):
            return self._score(request.prompts, own, generated)

    def _score(
        self, prompts: list[Prompt], own: list[Completion], generated: list[Completion]
    ) -> tuple[Sampled, list[Completion], list[Completion]]:
        cfg = self.cfg
        scored = score_completions(cfg.task, prompts, own)
        rewards = torch.tensor(scored.totals, dtype=torch.float32)  # [N / W]
        if cfg.algo.overlong_buffer > 0:
            lengths = torch.tensor([len(c.token_ids) for c in own])  # [N / W]
            rewards = rewards + overlong_penalty(
                lengths, cfg.rollout.max_new_tokens, cfg.algo.overlong_buffer, cfg.algo.overlong_penalty
            )  # [N / W]
        # Dynamic sampling may train a rank on rows another rank generated: then gather the token ids too.
        completions, all_scored, all_rewards = dp.gather_step(
            own, scored, rewards.tolist(), light=not cfg.algo.dynamic_sampling
        )
        return Sampled(prompts, completions, all_scored, all_rewards), own, generated

    def collect(self, step: int, timer: PhaseTimer) -> StepSamples:
        cfg, B, G = self.cfg, self.cfg.rollout.prompts_per_step, self.cfg.rollout.group_size
        rounds = 1 + (cfg.algo.max_sampling_rounds if cfg.algo.dynamic_sampling else 0)
        seen: list[Sampled] = []
        pool: list[Sampled] = []
        for round_index in range(rounds):
            sampled, own, generated = self._round(step, round_index, timer)
            seen.append(sampled)
            if not cfg.algo.dynamic_sampling:
                break
            pool.append(keep_varied_groups(sampled, G))
            if sum(len(p.prompts) for p in pool) >= B:
                break
        everything = concat(seen)
        if cfg.algo.dynamic_sampling:
            batch = first_groups(concat(pool), B, G)
            own, own_rows = self._own_rows(batch)
            if len(batch.prompts) < B:
                log.warning(
                    "step %d: dynamic sampling found %d of %d groups with varied rewards in %d rounds "
                    "(algo.max_sampling_rounds=%d); training on those", step, len(batch.prompts), B, rounds,
                    cfg.algo.max_sampling_rounds,
                )  # fmt: skip
        else:
            batch = everything
            own_lo, own_hi = self.shard.own(B)
            own_rows = slice(own_lo * G, own_hi * G)
        rewards = torch.tensor(batch.rewards, dtype=torch.float32)  # [K * G]
        advantages = group_advantages(rewards, G, normalize=cfg.algo.advantage_normalize)  # [K * G]
        keep = torch.ones(len(batch.completions), dtype=torch.bool)  # [K * G]
        if cfg.algo.mask_truncated:
            keep &= torch.tensor([not c.truncated for c in batch.completions], dtype=torch.bool)
        own_advantages, own_keep = advantages[own_rows], keep[own_rows]
        if not own:  # fewer kept groups than ranks: this rank joins the step with a masked copy of group 0
            own = batch.completions[:G]
            own_advantages, own_keep = torch.zeros(len(own)), torch.zeros(len(own), dtype=torch.bool)
        metrics = self._metrics(everything, batch, advantages, keep, len(seen))
        metrics |= policy_lag_metrics([c.policy_version for c in everything.completions], step)
        tokens = sum(len(c.token_ids) for c in everything.completions)  # every round, not only the kept batch
        metrics |= rollout_rate_metrics(tokens, timer.seconds.get("rollout", 0.0), self.max_staleness)
        self.queue_ahead(step)  # the workers sample ahead while the learner trains this step
        return StepSamples(
            batch.prompts, batch.completions, batch.scored, rewards, advantages, keep, own, own_advantages,
            own_keep, generated, metrics, tokens,
        )  # fmt: skip

    def _own_rows(self, batch: Sampled) -> tuple[list[Completion], slice]:
        """This rank's share of the K kept groups (whole groups: K // W, the first K % W ranks one more)."""
        G, world, rank = self.cfg.rollout.group_size, self.shard.world, self.shard.rank
        groups = len(batch.prompts)
        lo, hi = rank * groups // world, (rank + 1) * groups // world
        return batch.completions[lo * G : hi * G], slice(lo * G, hi * G)

    def _metrics(
        self, everything: Sampled, batch: Sampled, advantages: torch.Tensor, keep: torch.Tensor, rounds: int
    ) -> dict[str, float]:
        G = self.cfg.rollout.group_size
        metrics = rollout_metrics(everything.completions, everything.scored, G)
        metrics |= aha_step_metrics(
            everything.scored.texts,
            [len(c.token_ids) for c in everything.completions],
            everything.scored.components.get("correct", [0.0] * len(everything.completions)),
            [c.truncated for c in everything.completions],
        )
        loss_rows = keep.bool()
        metrics |= {
            # over the rows that carry loss (the ones the advantages act on)
            "algo/advantage_abs_mean": float(advantages[loss_rows].abs().mean())
            if bool(loss_rows.any())
            else 0.0,
            "algo/loss_rows": float(loss_rows.sum()),
            # groups whose FINAL rewards (overlong penalty included) are all equal: no gradient from them
            "algo/zero_std_group_frac": zero_std_fraction(everything.rewards, G),
            "algo/dropped_groups": float(len(everything.prompts) - len(batch.prompts)),
            "algo/trained_groups": float(len(batch.prompts)),
            "algo/prompts_sampled": float(len(everything.prompts)),
            "algo/sampling_rounds": float(rounds),
        }
        return metrics
