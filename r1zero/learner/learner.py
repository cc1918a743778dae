"""The learner: response logprobs over packed micro-batches and one exact GRPO optimizer step per call."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from r1zero import distributed
from r1zero.algo import loss_normalizer, micro_batch_loss
from r1zero.config import AlgoConfig, LearnerConfig
from r1zero.learner import lora
from r1zero.learner.batching import (
    PackedBatch,
    TokenSequence,
    pack,
    packed_lengths,
    plan_micro_batches,
    response_layout,
)
from r1zero.learner.engine import (
    attach_packed_forward,
    build_engine,
    clip_gradients,
    gathered,
    learner_clips,
    load_model,
)
from r1zero.learner.tally import StepTally, StepTensors, checked_rollout_logprobs
from r1zero.sync import check_rollout_gap

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
log = logging.getLogger(__name__)


def _is_zero3(engine: object) -> bool:
    return bool(getattr(engine, "zero_optimization_stage", lambda: 0)() == 3)


class Learner:
    """Owns the policy (DeepSpeed engine or plain torch), the optional frozen reference model, and the step."""

    def __init__(
        self,
        model_path: str,
        cfg: LearnerConfig,
        algo: AlgoConfig,
        *,
        total_steps: int,
        max_response_len: int,
        temperature: float = 1.0,
        trust_remote_code: bool = False,
    ) -> None:
        """total_steps: RL steps of the run (the LR schedule's horizon); temperature: the rollout's sampling
        temperature, which the learner's logprobs use too (logits / T), so that the ratio, the truncated-IS
        weights and the per-step sync check compare the distribution that was sampled from."""
        if temperature <= 0:
            raise ValueError(
                f"the learner scores at the sampling temperature, which must be > 0; got {temperature}"
            )
        self.cfg, self.algo, self.max_response_len = cfg, algo, max_response_len
        self.temperature = temperature
        self.device = (
            torch.device("cuda", distributed.local_rank())
            if torch.cuda.is_available()
            else torch.device("cpu")
        )
        dtype = DTYPES[cfg.precision]
        model = load_model(
            model_path,
            dtype=dtype,
            gradient_checkpointing=cfg.gradient_checkpointing,
            trust_remote_code=trust_remote_code,
        )
        # LoRA: PEFT adapters train, the base weights stay frozen (r1zero.learner.lora).
        self.lora = cfg.lora_rank > 0
        if self.lora:
            model = lora.apply_lora(
                model, rank=cfg.lora_rank, alpha=cfg.lora_alpha, dropout=cfg.lora_dropout,
                target_modules=cfg.lora_target_modules,
            )  # fmt: skip
        self.trainable_params, self.total_params = lora.parameter_counts(model)
        log.info("learner: %d trainable of %d parameters (%.2f%%)", self.trainable_params, self.total_params,
                 100.0 * self.trainable_params / max(1, self.total_params))  # fmt: skip
        attach_packed_forward(model, cfg.logprob_chunk_size)
        self.engine = build_engine(
            model, cfg, total_steps=total_steps, world_size=distributed.world_size(),
            updates_per_step=algo.num_iterations,
        )  # fmt: skip
        self.clips = learner_clips(cfg, distributed.world_size())  # else the engine clips and keeps the norm
        self.grad_norm = 0.0
        self.last_lr = cfg.lr
        self.module = self.engine.module
        if cfg.backend == "torch":
            self.module.to(self.device)
        self.ref_model = None
        # The KL term's reference: with adapters, the policy with its adapters off (no second copy); else a frozen
        # copy, loaded only when the term is on.
        self.has_reference = algo.kl_coef > 0
        if self.has_reference and not self.lora:
            ref = load_model(
                model_path, dtype=dtype, gradient_checkpointing=False, trust_remote_code=trust_remote_code,
                trainable=False,
            )  # fmt: skip
            attach_packed_forward(ref, cfg.logprob_chunk_size)
            self.ref_model = ref.to(self.device)

    # ------------------------------------------------------------------------------------------ forward
    def _forward(
        self, model: Any, batch: PackedBatch, width: int, temperature: float
    ) -> tuple[Tensor, Tensor]:
        """Response logprobs and entropy [n, width] of logits / temperature for one packed micro-batch, through
        the root module (see `attach_packed_forward`)."""
        logprobs, entropy = model(
            input_ids=batch.input_ids,
            position_ids=batch.position_ids,
            target_pos=batch.target_pos,
            labels=batch.labels,
            temperature=temperature,
            layout=batch.layout,
        )  # [M], [M]
        return batch.unpack(logprobs, width), batch.unpack(entropy, width)  # [n, width] each

    def _plan(self, sequences: Sequence[TokenSequence], rows: Sequence[int]) -> list[list[int]]:
        """The micro-batches over `rows` (indices into sequences), in order: lists of sequence indices, at most
        learner.micro_batch_size sequences and learner.micro_batch_tokens packed tokens each."""
        plan = plan_micro_batches(
            packed_lengths(sequences, rows, self.cfg.share_prompts),
            self.cfg.micro_batch_size,
            self.cfg.micro_batch_tokens or None,
        )
        return [[rows[j] for j in part] for part in plan]

    def _packed(self, sequences: Sequence[TokenSequence], plan: list[list[int]]) -> list[PackedBatch]:
        """Each micro-batch of `plan`, packed on the host once per step (token ids and small layout tensors; a
        group-row mask is built on the device when first used). The caller moves one at a time to the device, so
        only the micro-batch being computed is there, and several passes (fillers, algo.num_iterations) reuse
        the packing."""
        return [pack(sequences, part, share_prompts=self.cfg.share_prompts) for part in plan]

    @torch.no_grad()
    def logprobs(
        self, sequences: Sequence[TokenSequence], *, reference: bool = False, temperature: float = 1.0
    ) -> list[Tensor]:
        """Per-token logprobs of each response under logits / temperature of the current policy (or the reference
        model): list of [R_i]. Temperature 1 (the default) is what the engines' `score` reports (sync probe).
        Under ZeRO-3 every rank must call this together: each forward gathers the policy's parameters with all
        ranks, so a rank with fewer micro-batches runs filler forwards until the busiest rank is done."""
        if reference and not self.has_reference:
            raise ValueError("no reference model: algo.kl_coef is 0")
        model = self.ref_model if reference and not self.lora else self.module
        out: list[Tensor] = [torch.empty(0)] * len(sequences)
        host = self._packed(sequences, self._plan(sequences, range(len(sequences))))
        passes = len(host)
        if model is self.module and _is_zero3(self.engine):
            passes = int(distributed.all_reduce_max(float(passes)))
        spare = host[0] if host else pack([([0], [0])], [0])  # a rank with nothing to score still joins
        with contextlib.ExitStack() as scoring:
            if reference and self.lora:
                scoring.enter_context(lora.reference_mode(self.module))
            if self.cfg.lora_dropout > 0:  # scoring is deterministic: the adapters' dropout off
                scoring.enter_context(_eval_mode(model))
            self._score(model, host, spare, passes, out, temperature)
        return out

    def _score(
        self, model: Any, host: list[PackedBatch], spare: PackedBatch, passes: int, out: list[Tensor],
        temperature: float,
    ) -> None:  # fmt: skip
        """`passes` scoring forwards over the packed micro-batches `host` (then fillers: `spare`) into out."""
        for i in range(passes):
            filler = i >= len(host)  # a filler gathers like the others; its result is dropped
            batch = (spare if filler else host[i]).to(self.device)
            width = int(batch.response_len.max()) if len(batch.rows) else 0
            logprobs, _ = self._forward(model, batch, width, temperature)  # [n, width]
            for local, row in enumerate([] if filler else batch.rows):
                out[row] = logprobs[local, : int(batch.response_len[local])].float().cpu()

    def _padded_logprobs(self, sequences: Sequence[TokenSequence], *, reference: bool = False) -> Tensor:
        """[N, T] logprobs at the sampling temperature (old or reference policy), zero-padded."""
        per_row = self.logprobs(sequences, reference=reference, temperature=self.temperature)
        return response_layout([t.tolist() for t in per_row])[0]  # [N, T]

    # ------------------------------------------------------------------------------------------ step
    def train_step(
        self,
        sequences: Sequence[TokenSequence],
        advantages: Tensor,
        *,
        rollout_logprobs: Sequence[Sequence[float]] | None = None,
        loss_mask: Tensor | None = None,
        max_rollout_gap: float | tuple[float, float] | None = None,
    ) -> dict[str, float]:
        """One RL step (num_iterations optimizer steps) over N sequences with advantages [N].

        rollout_logprobs: the engine's sampling logprobs per response, at the sampling temperature (needed for
        old_logprobs_source=rollout and for the truncated-IS correction; they also feed the free sync check).
        loss_mask: [N] bool, rows that take part in the loss; rows outside it are not forwarded at all and do
        not count in the normaliser (every aggregation, over all micro-batches and ranks).
        max_rollout_gap: the free sync check. The engine sampled these tokens with the weights the learner holds
        before this step, so the first pass's logprobs must match the engine's; a gap beyond the limits (a
        `r1zero.sync.GapLimits` (max, mean) pair such as `RunConfig.sync_limits`, or a bare number limiting the
        max alone), on any rank, raises SyncVerificationError before the optimizer step, so samples from wrong
        weights never update the policy (the run must stop then: this step's gradients are left accumulated).
        None: the gap is only reported.
        """
        start = time.perf_counter()
        step = self._step_tensors(sequences, advantages, rollout_logprobs, loss_mask)
        # Only rows with loss are forwarded. A rank with none still runs one (fully masked) row: its backward
        # joins the gradient all-reduce with zeros, and the others do not wait for it.
        keep = [True] * len(sequences) if loss_mask is None else loss_mask.bool().tolist()  # [N]
        active = [i for i, kept in enumerate(keep) if kept] or [0]
        host = self._packed(sequences, self._plan(sequences, active))
        # Every rank runs the same number of micro-batches (ZeRO-3 gathers parameters in each forward, and the
        # gradient all-reduce waits for every rank's boundary backward): a rank with fewer loss rows repeats its
        # first micro-batch with no loss tokens (a zero gradient).
        passes = int(distributed.all_reduce_max(float(len(host))))
        tally = StepTally(self.device, len(sequences))
        for iteration in range(self.algo.num_iterations):
            for i in range(passes):
                real = i < len(host)  # a filler pass has no loss tokens
                batch = host[i if real else 0].to(self.device)
                self._micro_step(batch, step, tally, check_gap=iteration == 0 and real, real=real)
                self.engine.set_gradient_accumulation_boundary(i == passes - 1)
                self.engine.backward(tally.last_loss * step.world)
            if iteration == 0 and max_rollout_gap is not None:
                gaps = tally.row_gap if step.rollout is not None else None
                check_rollout_gap(gaps, tally.gap_sum, step.real_mask, max_rollout_gap)
            if self.clips:
                self.grad_norm = clip_gradients(self.module, self.cfg.max_grad_norm)
            if iteration == 0:  # the LR of this step's updates
                self.last_lr = float(self.engine.lr_scheduler.get_last_lr()[0])
            with torch.profiler.record_function("r1zero::optimizer"):
                self.engine.step()
        tally.gap_tokens = float(step.real_mask[active].sum())
        return self._step_metrics(tally, step, start)

    def _step_tensors(
        self,
        sequences: Sequence[TokenSequence],
        advantages: Tensor,
        rollout_logprobs: Sequence[Sequence[float]] | None,
        loss_mask: Tensor | None,
    ) -> StepTensors:
        """The step's per-row tensors, moved to the device once (micro-batches slice them there: no host copy per
        micro-batch), with the step's global loss normaliser."""
        algo, device = self.algo, self.device
        resp_lens = [len(r) for _, r in sequences]
        _, real_mask = response_layout([[1.0] * k for k in resp_lens])  # [N, T]
        keep = torch.ones(len(sequences), dtype=torch.bool) if loss_mask is None else loss_mask.bool()  # [N]
        response_mask = real_mask & keep.unsqueeze(-1)  # [N, T] the loss tokens
        rollout_lp = checked_rollout_logprobs(
            rollout_logprobs, resp_lens, algo.tis_cap, algo.old_logprobs_source
        )
        # The normaliser of the whole step (all micro-batches, all ranks): exact gradient accumulation.
        local_norm = float(loss_normalizer(response_mask, algo.loss_aggregation, self.max_response_len))
        global_norm = distributed.all_reduce_sum(local_norm)  # every rank joins, even one with no loss rows
        old_lp = None  # [N, T]; None: one on-policy pass takes its own (detached) logprobs, no extra forward
        if algo.old_logprobs_source == "rollout":
            old_lp = rollout_lp
        elif algo.num_iterations > 1:
            old_lp = self._padded_logprobs(sequences)
        ref_lp = self._padded_logprobs(sequences, reference=True) if self.has_reference else None

        def moved(values: Tensor | None) -> Tensor | None:
            return None if values is None else values.to(device, non_blocking=True)

        return StepTensors(
            advantages=advantages.to(device, non_blocking=True),  # [N]
            response_mask=response_mask.to(device, non_blocking=True),  # [N, T]
            real_mask=real_mask.to(device, non_blocking=True),  # [N, T]
            loss_tokens=response_mask.sum(dim=1).tolist(),  # [N] on the host, for the token counts
            normalizer=torch.tensor(global_norm if global_norm > 0 else 1.0, device=device),
            old=moved(old_lp), rollout=moved(rollout_lp), ref=moved(ref_lp),
            world=distributed.world_size() if self.cfg.backend == "deepspeed" else 1,
        )  # fmt: skip

    def _micro_step(
        self, batch: PackedBatch, step: StepTensors, tally: StepTally, *, check_gap: bool, real: bool
    ) -> None:
        """Forward one micro-batch and compute its share of the step's loss (left in tally.last_loss for the
        caller's backward); add its metrics and, on the first pass, its gap to the engine's logprobs."""
        algo = self.algo
        rows = batch.row_index  # [n] on the device
        width = int(batch.response_len.max()) if len(batch.rows) else 0

        def cut(values: Tensor | None) -> Tensor | None:
            return None if values is None else values[rows, :width]  # [n, t]

        mask = step.response_mask[rows, :width]  # [n, t]
        if not real:
            mask = torch.zeros_like(mask)  # a filler pass: no loss tokens
        logprobs, entropy = self._forward(self.module, batch, width, self.temperature)  # [n, t]
        if check_gap and step.rollout is not None:
            with torch.no_grad():
                gap = (logprobs - cut(step.rollout)).abs() * cut(step.real_mask)  # type: ignore[operator]
                tally.row_gap[rows] = gap.amax(dim=1) if gap.numel() else 0.0
                tally.gap_sum = tally.gap_sum + gap.sum()
        out = micro_batch_loss(
            logprobs, step.advantages[rows], mask, step.normalizer,
            old_logprobs=cut(step.old), rollout_logprobs=cut(step.rollout), ref_logprobs=cut(step.ref),
            clip_low=algo.clip_low, clip_high=algo.clip_high, tis_cap=algo.tis_cap,
            kl_coef=algo.kl_coef, kl_kind=algo.kl_kind, aggregation=algo.loss_aggregation,
            max_response_len=self.max_response_len,
        )  # fmt: skip
        weight = sum(step.loss_tokens[r] for r in batch.rows) if real else 0  # loss tokens, on the host
        tally.add(out, (entropy * mask).sum().detach(), weight, batch if real else None)

    def _step_metrics(self, tally: StepTally, step: StepTensors, start: float) -> dict[str, float]:
        """The step's loss/*, perf/* and sync/step_* scalars. loss/policy, loss/kl, loss/total: the step's
        aggregated values (mean over the num_iterations passes), so loss/total = loss/policy + kl_coef * loss/kl;
        other loss/* are token means over the loss tokens."""
        iterations = self.algo.num_iterations
        total = max(1.0, float(sum(step.loss_tokens)) * iterations)
        values = {k: float(v) for k, v in tally.sums.items()}  # the step's one wait for the device
        out = {f"loss/{k}": v / total for k, v in values.items() if k not in ("policy", "kl", "total")}
        for name in ("policy", "kl", "total"):
            out[f"loss/{name}"] = values.get(name, 0.0) / iterations
        out["loss/grad_norm"] = (
            self.grad_norm if self.clips else float(self.engine.get_global_grad_norm() or 0.0)
        )
        out["loss/lr"] = self.last_lr
        out["perf/learner_tokens"] = float(tally.tokens)
        if step.rollout is not None:
            row_gap = tally.row_gap
            out["sync/step_logprob_max_abs_diff"] = float(row_gap.max()) if row_gap.numel() else 0.0
            out["sync/step_logprob_mean_abs_diff"] = float(tally.gap_sum) / max(1.0, tally.gap_tokens)
        out["perf/learner_packed_tokens"] = float(tally.packed_tokens)
        out["perf/learner_pad_tokens"] = float(tally.pad_tokens)
        out["perf/learner_tokens_per_s"] = out["perf/learner_packed_tokens"] / max(
            1e-9, time.perf_counter() - start
        )
        return out

    # ------------------------------------------------------------------------------------------ weights
    def named_parameters_for_sync(self) -> Iterator[tuple[str, Tensor]]:
        """Full parameters one at a time under the model's own names (ZeRO-3: gathered per parameter, never the
        whole model at once); with adapters, the merged weights (`lora.merged_parameters`)."""
        zero3 = _is_zero3(self.engine)
        if self.lora:
            yield from lora.merged_parameters(self.module, zero3=zero3)
            return
        for name, param in self.module.named_parameters():
            with gathered([param], zero3):
                yield name, param.data

    def save_pretrained(self, path: str | Path, tokenizer_path: str | None = None) -> None:
        """Export the policy as a Hugging Face folder (rank 0 writes; loadable by transformers and vLLM). With
        adapters: the merged model, and the PEFT adapter folder in path/adapter."""
        path = Path(path)
        writer = distributed.rank() == 0
        state = {}  # rank 0's host copy; the other ranks only join the gathers (ZeRO-3) and keep nothing
        for name, tensor in self.named_parameters_for_sync():
            if writer:
                state[name] = tensor.detach().to("cpu", copy=True)
        adapter = lora.adapter_state(self.module, zero3=_is_zero3(self.engine)) if self.lora else None
        if writer:
            base = self.module.get_base_model() if self.lora else self.module
            base.save_pretrained(path, state_dict=state, safe_serialization=True)
            if adapter is not None:
                lora.save_adapter(self.module, adapter, path / "adapter")
            if tokenizer_path is not None:
                from transformers import AutoTokenizer

                AutoTokenizer.from_pretrained(tokenizer_path).save_pretrained(path)

    def save_state(self, directory: str | Path) -> None:
        """Model + optimizer + scheduler state (DeepSpeed layout or a torch file) under directory/learner; with
        adapters only they are saved of the model (the frozen base is the model folder the run started from)."""
        self.engine.save_checkpoint(str(directory), tag="learner", exclude_frozen_parameters=self.lora)

    def load_state(self, directory: str | Path) -> None:
        self.engine.load_checkpoint(str(directory), tag="learner", load_module_strict=not self.lora)

    def parameter_metrics(self) -> dict[str, float]:
        """perf/trainable_params and perf/total_params (with adapters, the adapters and the base + adapters)."""
        return {
            "perf/trainable_params": float(self.trainable_params),
            "perf/total_params": float(self.total_params),
        }


@contextlib.contextmanager
def _eval_mode(model: Any) -> Iterator[None]:
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)
