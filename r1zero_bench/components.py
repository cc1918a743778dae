"""r1zero's phases against raw references, side by side in one process on the same requests.

- rollout:  the loop's rollout phase (build prompts, tokenize, `VLLMEngine.generate`) vs a bare
            `vllm.LLM.generate` of the same token prompts with the same SamplingParams, on the same LLM instance
            (prefix cache reset before each, as after every weight push in training). Same seeds: both produce
            the same tokens, which is checked.
- learner:  `Learner.train_step` vs plain transformers + torch AdamW over the same (prompt + response)
            sequences, no padding (packed with restarting position ids, or one sequence at a time; the faster is
            the reference), logits only at response positions, the same micro-batch size, clip and token-mean
            loss. Before timing, both compute logprobs of the same sequences and must agree.
- sync:     weight push and verification seconds, alone.
Repetitions alternate which side runs first, so drift in machine load hits both alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

from r1zero_bench.loops import compose_config, peak_rss_mib, step_prompts
from r1zero_bench.stats import count_tokens, median

TokenPair = tuple[list[int], list[int]]


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


class RawLearner:
    """The reference learner: a Hugging Face causal LM and torch AdamW, nothing else.

    Each micro-batch of `micro_batch_size` consecutive sequences is fed without padding, either packed into one
    row with position ids restarting at 0 (transformers then derives a block-diagonal causal mask) or one
    sequence at a time; logits are computed at response positions only; loss = token-mean of -A * ratio with
    ratio = exp(logp - logp.detach()) (on-policy, one pass: the PPO clip is inactive, as in ours).
    """

    def __init__(self, model_path: str, learner_cfg: Any, layout: str) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[learner_cfg.precision]  # as ours
        model: Any = AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype, attn_implementation="sdpa")
        model.config.use_cache = False
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device)
        self.cfg, self.layout = learner_cfg, layout
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=learner_cfg.lr, betas=(learner_cfg.adam_beta1, learner_cfg.adam_beta2),
            eps=learner_cfg.adam_eps, weight_decay=learner_cfg.weight_decay,
        )  # fmt: skip

    def _rows(self, sequences: Sequence[TokenPair]) -> list[list[TokenPair]]:
        if self.layout == "separate":
            return [[s] for s in sequences]
        size = self.cfg.micro_batch_size
        return [list(sequences[i : i + size]) for i in range(0, len(sequences), size)]

    def _logprobs(self, row: Sequence[TokenPair]) -> Any:
        """Response-token logprobs of the sequences of one packed row, concatenated: [sum R_i]."""
        import torch

        ids: list[int] = []
        positions: list[int] = []
        targets: list[int] = []
        labels: list[int] = []
        for prompt, response in row:
            offset = len(ids)
            ids += prompt + response
            positions += range(len(prompt) + len(response))
            targets += range(offset + len(prompt) - 1, offset + len(prompt) + len(response) - 1)
            labels += response
        device = self.device
        hidden = self.model.model(
            input_ids=torch.tensor([ids], device=device),
            position_ids=torch.tensor([positions], device=device),
        ).last_hidden_state[0]  # [S, H]
        logits = self.model.lm_head(hidden[torch.tensor(targets, device=device)]).float()  # [M, V]
        return (
            logits.log_softmax(-1).gather(1, torch.tensor(labels, device=device)[:, None]).squeeze(1)
        )  # [M]

    def logprobs(self, sequences: Sequence[TokenPair]) -> list[Any]:
        import torch

        out = []
        with torch.no_grad():
            for row in self._rows(sequences):
                flat = self._logprobs(row)
                out += list(flat.cpu().split([len(r) for _, r in row]))
        return out

    def train_step(self, sequences: Sequence[TokenPair], advantages: Any) -> None:
        """One optimizer step; advantages: [N] (tensor or list)."""
        import torch

        total = sum(len(r) for _, r in sequences)
        start = 0
        for row in self._rows(sequences):
            lp = self._logprobs(row)  # [M]
            adv = torch.cat(
                [torch.full((len(r),), float(advantages[start + k])) for k, (_, r) in enumerate(row)]
            ).to(self.device)  # [M]
            start += len(row)
            loss = -(adv * torch.exp(lp - lp.detach())).sum() / total
            loss.backward()
        if self.cfg.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.device.type == "cuda":
            torch.cuda.synchronize()  # the clock reads finished work


def _alternating(reps: int, a: Callable[[], Any], b: Callable[[], Any]) -> tuple[list[float], list[float]]:
    """Time a and b `reps` times each, a first on even repetitions and b first on odd ones."""
    ta: list[float] = []
    tb: list[float] = []
    for k in range(reps):
        for fn, times in ((a, ta), (b, tb)) if k % 2 == 0 else ((b, tb), (a, ta)):
            times.append(_timed(fn)[0])
    return ta, tb


def components(overrides: list[str], warmup: int, reps: int, workdir: str) -> dict[str, Any]:
    """Rollout, learner and sync measurements (see the module docstring)."""
    import torch
    from transformers import AutoTokenizer

    from r1zero import distributed
    from r1zero.algo import group_advantages
    from r1zero.learner.learner import Learner
    from r1zero.models import resolve_model
    from r1zero.rollout.base import SamplingSettings, request_seed, step_seed, tokenize_prompts
    from r1zero.rollout.engines import build_engine
    from r1zero.sync import make_probe, push_weights, verify_sync
    from r1zero.tasks.templates import build_prompts

    cfg = compose_config(overrides)
    if cfg.cpu_threads > 0:
        torch.set_num_threads(cfg.cpu_threads)
    torch.manual_seed(cfg.seed)
    distributed.init_process_group()
    model_path = resolve_model(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    n = warmup + reps
    prompts = step_prompts(cfg, tokenizer, 1)[0]
    examples = [p.example for p in prompts]
    learner = Learner(
        model_path, cfg.learner, cfg.algo, total_steps=10 * n, max_response_len=cfg.rollout.max_new_tokens
    )
    engine = build_engine(model_path, cfg.rollout, seed=cfg.seed)
    llm = engine._llm  # type: ignore[attr-defined]  # the very LLM instance the engine drives: same weights, KV cache and scheduler
    import vllm

    # ---- rollout: our phase vs bare LLM.generate, identical requests
    sampling = SamplingSettings.from_config(cfg.rollout, seed=step_seed(cfg.seed, 1))
    ids = tokenize_prompts(tokenizer, prompts, cfg.rollout.max_prompt_tokens)
    requests = [{"prompt_token_ids": p} for p in ids]
    params = [
        vllm.SamplingParams(
            n=sampling.n, max_tokens=sampling.max_new_tokens, temperature=sampling.temperature,
            top_p=sampling.top_p, top_k=max(sampling.top_k, 0), seed=request_seed(sampling.seed or 0, i),
            logprobs=0, detokenize=False,
        )
        for i in range(len(ids))
    ]  # fmt: skip
    outputs: dict[str, Any] = {}

    def ours() -> None:
        llm.reset_prefix_cache()
        start = time.perf_counter()
        batch = build_prompts(examples, cfg.task, tokenizer)  # the loop's rollout phase, as in r1zero.train
        tokenize_prompts(tokenizer, batch, cfg.rollout.max_prompt_tokens)
        outputs["ours"] = engine.generate(batch, sampling)
        outputs["ours_s"] = time.perf_counter() - start

    def raw() -> None:
        llm.reset_prefix_cache()
        start = time.perf_counter()
        outputs["raw"] = llm.generate(requests, params, use_tqdm=False)
        outputs["raw_s"] = time.perf_counter() - start

    ours_s: list[float] = []
    raw_s: list[float] = []
    for k in range(n):
        for fn in (ours, raw) if k % 2 == 0 else (raw, ours):
            fn()
        if k >= warmup:
            ours_s.append(outputs["ours_s"])
            raw_s.append(outputs["raw_s"])
    completions = outputs["ours"]
    raw_tokens = [list(o.token_ids) for r in outputs["raw"] for o in sorted(r.outputs, key=lambda o: o.index)]
    same_tokens = raw_tokens == [c.token_ids for c in completions]

    # ---- learner: ours vs plain transformers, same sequences
    sequences = [(list(c.prompt_token_ids), list(c.token_ids)) for c in completions]
    rewards = torch.rand(
        len(sequences), generator=torch.Generator().manual_seed(0)
    )  # [N]: any non-zero signal
    advantages = group_advantages(rewards, cfg.rollout.group_size)  # [N]
    refs = {layout: RawLearner(model_path, cfg.learner, layout) for layout in ("packed", "separate")}
    ours_lp = learner.logprobs(sequences)
    agreement = {
        layout: max(float((a - b.float()).abs().max()) for a, b in zip(ours_lp, ref.logprobs(sequences)))
        for layout, ref in refs.items()
    }

    step_metrics: dict[str, float] = {}

    def ours_step() -> None:
        step_metrics.update(
            learner.train_step(
                sequences, advantages, rollout_logprobs=[c.logprobs or [] for c in completions]
            )
        )

    ref_times = {}
    for layout, ref in refs.items():
        ref_times[layout] = _alternating(n, ours_step, partial(ref.train_step, sequences, advantages))
    best = min(refs, key=lambda layout: median(ref_times[layout][1][warmup:]))
    learner_ours = [t for layout in refs for t in ref_times[layout][0][warmup:]]

    # ---- sync: push + verify, alone
    push_s: list[float] = []
    verify_s: list[float] = []
    probe = make_probe(completions, cfg.sync.probe_size)
    for k in range(n):
        start = time.perf_counter()
        push_weights(engine, learner.named_parameters_for_sync(), version=k + 1)
        t_push = time.perf_counter() - start
        verify_sync(engine, learner.logprobs, probe, max_abs_diff=cfg.sync_threshold)
        t_verify = time.perf_counter() - start - t_push
        if k >= warmup:
            push_s.append(t_push)
            verify_s.append(t_verify)
    engine.close()
    counts = count_tokens(sequences, cfg.learner.micro_batch_size, cfg.learner.share_prompts)
    tokens = counts.__dict__ | {  # what the learner really fed (its own count), padding included
        "packed": int(step_metrics["perf/learner_packed_tokens"]),
        "padding": int(step_metrics.get("perf/learner_pad_tokens", 0)),
    }
    return {
        "rollout": {
            "ours_s": ours_s,
            "raw_s": raw_s,
            "same_tokens": same_tokens,
            "completion_tokens": sum(len(c.token_ids) for c in completions),
        },
        "learner": {
            "ours_s": learner_ours,
            "raw_s": {layout: times[1][warmup:] for layout, times in ref_times.items()},
            "reference": best,
            "max_abs_logprob_diff": agreement,
            "tokens": tokens,
            "micro_batch_size": cfg.learner.micro_batch_size,
        },
        "sync": {
            "push_s": push_s,
            "verify_s": verify_s,
            "probe_tokens": sum(len(p) + len(r) for p, r in probe),
        },
        "model_config": _shape_fields(model_path),
        "peak_rss_mib": peak_rss_mib(),
    }


def _shape_fields(model_path: str) -> dict[str, Any]:
    """The config.json fields `ModelShape.from_config` reads (for the FLOP estimate)."""
    import json
    from pathlib import Path

    config = json.loads((Path(model_path) / "config.json").read_text())
    keys = ("num_hidden_layers", "hidden_size", "intermediate_size", "num_attention_heads",
            "num_key_value_heads", "head_dim", "vocab_size")  # fmt: skip
    return {k: config[k] for k in keys if k in config}


# ---------------------------------------------------------------------------------------------- memory

LOGPROB_PROBE = """
import os, resource, sys, torch
from r1zero.algo import hidden_to_logprobs
torch.manual_seed(0)
M, H, V = int(sys.argv[3]), 576, 49152  # SmolLM2-135M's hidden size and vocabulary
dtype = getattr(torch, sys.argv[2])
hidden = (torch.randn(M, H) / 24).to(dtype).requires_grad_()
weight = torch.randn(V, H).to(dtype).requires_grad_()
labels = torch.randint(0, V, (M,))
before = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
if sys.argv[1] == "naive":
    log_p = torch.log_softmax((hidden @ weight.t()).float(), dim=-1)  # [M, V]
    logprobs = log_p.gather(1, labels[:, None]).squeeze(1)  # [M]
    with torch.no_grad():
        entropy = -(log_p.exp() * log_p).sum(-1)  # [M]
    del log_p
else:
    logprobs, entropy = hidden_to_logprobs(hidden, weight, labels, chunk_size=int(sys.argv[1]))
logprobs.sum().backward()
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - before)
"""


def logprob_peak_bytes(variant: str, rows: int, dtype: str = "float32", threads: int = 2) -> int:
    """Peak extra resident memory of logprob + entropy, forward and backward, in a fresh process, over its
    resident memory just before the pass (glibc's mmap threshold pinned so freed big buffers go back at once).
    variant: "naive" (full log_softmax) or a chunk size ("512"). Also the instrument of
    tests/unit/test_algo_memory.py."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}  # not r1zero.env's heap reuse
    env.update(MALLOC_MMAP_THRESHOLD_="65536", OMP_NUM_THREADS=str(threads))
    out = subprocess.run(
        [sys.executable, "-c", LOGPROB_PROBE, variant, dtype, str(rows)],
        env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    return int(out.stdout.strip().splitlines()[-1])


def logprob_memory(rows: int, chunk_size: int, threads: int, workdir: str | None = None) -> dict[str, Any]:
    """Naive vs chunked peak memory of logprob + entropy at SmolLM2's vocabulary (workdir: unused)."""
    naive = logprob_peak_bytes("naive", rows, threads=threads)
    chunked = logprob_peak_bytes(str(chunk_size), rows, threads=threads)
    return {"rows": rows, "vocab": 49152, "hidden": 576, "chunk_size": chunk_size, "naive_bytes": naive,
            "chunked_bytes": chunked}  # fmt: skip
