"""The learner path on one GPU: tokens/s, model FLOPs utilisation, peak memory and where the step goes, packed vs
padded micro-batches, at one or several response lengths.

    python scripts/gpu_learner_check.py                       # Qwen2.5-0.5B shape, random init, bf16, cuda
    python scripts/gpu_learner_check.py --response-len 256 1024 4096   # the sweep
    python scripts/gpu_learner_check.py --shape tiny --steps 2  # a CPU run of the same code (about a minute)

Random-init weights of the chosen shape (no download), B prompts x G responses of random tokens with varying
response lengths, one optimizer step per repetition. Two learners over the same sequences:
  packed: r1zero's Learner (ZeRO-0 DeepSpeed engine on one device, bf16 with fp32 optimizer state, the G responses
          sharing one prompt copy in one unpadded row, grouped attention: r1zero.learner.attention);
  padded: the usual baseline, one [N, longest P+R] right-padded batch through transformers with an attention mask.
MFU = 6 x body params x (real P+R tokens) / seconds / the device's measured bf16 matmul rate (big square matmuls,
same run), i.e. useful work only: padding and the prompt copies the packed learner skips count as waste.
Shares of one profiled step (device time on a GPU, CPU time on CPU; inclusive): attention = sdpa's forward and
backward ops (not the gathers around them); head = the output head's forward ("r1zero::head") and backward (the
packed learner's chunked-logprob node; the padded one's bmm, log-softmax and gather nodes); optimizer = the
optimizer step ("r1zero::optimizer").
Prints one table and writes JSON (--out).
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from typing import Any

SHAPES: dict[str, dict[str, Any]] = {
    # Qwen2.5-0.5B's config.json (the architecture only; weights are random).
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14,
                         num_key_value_heads=2, vocab_size=151936, tie_word_embeddings=True),
    # r1zero's `small` preset (r1zero.models.PRESETS), a ~30M-param Qwen2.
    "small": dict(hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=16,
                  num_key_value_heads=4, vocab_size=8192, tie_word_embeddings=True),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, vocab_size=512, tie_word_embeddings=True),
}  # fmt: skip


def matmul_rate(device: Any, dtype: Any, size: int, reps: int) -> float:
    """Measured FLOP/s of a size x size x size matmul (the peak to divide by)."""
    import torch

    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    start = time.perf_counter()
    for _ in range(reps):
        a @ b
    sync(device)
    return 2.0 * size**3 * reps / (time.perf_counter() - start)


def sync(device: Any) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def make_sequences(vocab: int, prompts: int, group: int, prompt_len: int, response_len: int, seed: int):
    """B x G (prompt, response) pairs; responses of response_len/4 .. response_len tokens."""
    rng = random.Random(seed)
    out = []
    for _ in range(prompts):
        prompt = [rng.randrange(10, vocab) for _ in range(prompt_len)]
        for _ in range(group):
            length = rng.randint(max(1, response_len // 4), response_len)
            out.append((prompt, [rng.randrange(10, vocab) for _ in range(length)]))
    return out


class PaddedLearner:
    """Right-padded [N, S] micro-batches with an attention mask, logits at response positions, token-mean
    on-policy policy-gradient loss, torch AdamW (fused), bf16 weights with an fp32 copy like the packed side."""

    def __init__(self, model: Any, lr: float, micro_batch_size: int) -> None:
        import torch

        self.model, self.micro_batch_size = model, micro_batch_size
        self.optimizer = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)

    def train_step(self, sequences: list[tuple[list[int], list[int]]], advantages: Any) -> None:
        import torch

        device = next(self.model.parameters()).device
        total = sum(len(r) for _, r in sequences)
        for lo in range(0, len(sequences), self.micro_batch_size):
            part = sequences[lo : lo + self.micro_batch_size]
            width = max(len(p) + len(r) for p, r in part)
            ids = torch.zeros(len(part), width, dtype=torch.long)
            mask = torch.zeros(len(part), width, dtype=torch.long)
            rows, cols, labels, adv = [], [], [], []
            for i, (prompt, response) in enumerate(part):
                seq = prompt + response
                ids[i, : len(seq)] = torch.tensor(seq)
                mask[i, : len(seq)] = 1
                for j, token in enumerate(response):
                    rows.append(i)
                    cols.append(len(prompt) - 1 + j)
                    labels.append(token)
                    adv.append(float(advantages[lo + i]))
            hidden = self.model.model(
                input_ids=ids.to(device), attention_mask=mask.to(device)
            ).last_hidden_state
            picked = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]  # [M, H]
            with torch.profiler.record_function(
                "r1zero::head"
            ):  # einsum: its backward is the step's only bmm
                logits = torch.einsum("mh,vh->mv", picked, self.model.lm_head.weight)  # [M, V]
                logp = logits.float().log_softmax(-1)  # [M, V]
                logp = logp.gather(1, torch.tensor(labels, device=device)[:, None]).squeeze(1)  # [M]
            ratio = torch.exp(logp - logp.detach())
            loss = -(torch.tensor(adv, device=device) * ratio).sum() / total
            loss.backward()
        with torch.profiler.record_function("r1zero::optimizer"):
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)


def step_shares(step: Any, device: Any) -> dict[str, float]:
    """Shares of one profiled step's time spent in attention, the output head and the optimizer (see the module
    doc for what each counts)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        with torch.profiler.record_function("r1zero::step"):
            step()
        sync(device)
    times: dict[str, float] = {"attention": 0.0, "head": 0.0, "optimizer": 0.0, "step": 0.0}
    for event in prof.key_averages():
        name = event.key
        spent = getattr(event, "device_time_total", 0.0) if device.type == "cuda" else event.cpu_time_total
        if name.startswith("autograd::engine"):
            continue  # wrappers around the backward nodes counted below
        if name == "aten::scaled_dot_product_attention" or (
            "ScaledDotProduct" in name and "Backward" in name
        ):
            times["attention"] += spent
        elif name == "r1zero::head" or name.startswith("_ChunkedLinearLogprobsBackward"):
            times["head"] += spent
        elif name in ("BmmBackward0", "LogSoftmaxBackward0", "GatherBackward0"):
            times["head"] += spent  # the padded learner's head (its einsum is the step's only bmm)
        elif name in ("r1zero::optimizer", "r1zero::step"):
            times[name.split("::")[1]] += spent
    total = max(times.pop("step"), 1e-9)
    return {name: spent / total for name, spent in times.items()}


def measure(step: Any, device: Any, steps: int, real: int, body: int, peak: float) -> dict[str, Any]:
    """Median step time over `steps` after 2 warm-ups, tokens/s, MFU, peak memory, and one profiled step's shares."""
    import torch

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    times = []
    for k in range(2 + steps):
        sync(device)
        start = time.perf_counter()
        step()
        sync(device)
        if k >= 2:
            times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    peak_memory = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None
    return {
        "step_s": seconds,
        "tokens_per_s": real / seconds,
        "mfu": 6.0 * body * real / seconds / peak,
        "peak_memory_gib": peak_memory,
        "shares": step_shares(step, device),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default="qwen2.5-0.5b")
    parser.add_argument("--prompts", type=int, default=16)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=256)
    parser.add_argument(
        "--response-len",
        type=int,
        nargs="+",
        default=[1024],
        help="longest response (shortest is 1/4); several: a sweep",
    )
    parser.add_argument("--micro-batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=5, help="timed steps per learner (after 2 warm-up)")
    parser.add_argument("--out", default="gpu_learner_check.json")
    args = parser.parse_args()

    from r1zero.env import setup_environment

    setup_environment()
    import torch
    from transformers import AutoModelForCausalLM, Qwen2Config

    from r1zero import distributed
    from r1zero.config import AlgoConfig, LearnerConfig
    from r1zero.learner.learner import Learner

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    distributed.init_process_group()
    peak = matmul_rate(device, torch.bfloat16, 8192 if device.type == "cuda" else 1024, 20)
    config = Qwen2Config(**SHAPES[args.shape])
    torch.manual_seed(0)
    results: dict[str, Any] = {
        "shape": args.shape,
        "device": str(device),
        "peak_bf16_flops": peak,
        "runs": [],
    }
    with tempfile.TemporaryDirectory() as folder:
        model = AutoModelForCausalLM.from_config(config)
        body = sum(
            p.numel() for n, p in model.named_parameters() if "embed_tokens" not in n and "lm_head" not in n
        )
        model.to(torch.bfloat16).save_pretrained(folder)
        del model
        learner_cfg = LearnerConfig(
            backend="deepspeed", zero_stage=0, precision="bf16", micro_batch_size=args.micro_batch_size
        )
        packed = Learner(
            folder, learner_cfg, AlgoConfig(), total_steps=100, max_response_len=max(args.response_len)
        )
        padded_model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).to(device)
        padded = PaddedLearner(padded_model, 1e-6, args.micro_batch_size)
        for response_len in args.response_len:
            sequences = make_sequences(
                config.vocab_size, args.prompts, args.group_size, args.prompt_len, response_len, seed=0
            )
            advantages = torch.randn(len(sequences))
            real = sum(len(p) + len(r) for p, r in sequences)
            widest = max(len(p) + len(r) for p, r in sequences)
            run: dict[str, Any] = {"response_len": response_len, "sequences": len(sequences), "real_tokens": real,
                                   "padded_waste": 1.0 - real / (len(sequences) * widest), "learners": {}}  # fmt: skip
            steps = {
                "packed": lambda s=sequences, a=advantages: packed.train_step(s, a),
                "padded": lambda s=sequences, a=advantages: _autocast(
                    device, lambda: padded.train_step(s, a)
                ),
            }
            for name, step in steps.items():
                run["learners"][name] = measure(step, device, args.steps, real, body, peak)
            learners = run["learners"]
            run["packed_over_padded"] = (
                learners["packed"]["tokens_per_s"] / learners["padded"]["tokens_per_s"]
            )
            results["runs"].append(run)
    print_table(args.shape, device, peak, results["runs"])
    with open(args.out, "w") as f:
        json.dump(results, f, indent=1)


def print_table(shape: str, device: Any, peak: float, runs: list[dict[str, Any]]) -> None:
    print(f"{shape} on {device}, bf16 matmul peak {peak / 1e12:.1f} TFLOP/s")
    print(
        "| response len | learner | s/step | real tokens/s | MFU | peak GiB | attention | head | optimizer |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for run in runs:
        for name, r in run["learners"].items():
            memory = f"{r['peak_memory_gib']:.1f}" if r["peak_memory_gib"] is not None else "-"
            shares = " | ".join(f"{r['shares'][k]:.0%}" for k in ("attention", "head", "optimizer"))
            print(f"| {run['response_len']} | {name} | {r['step_s']:.3f} | {r['tokens_per_s']:.0f} | "
                  f"{r['mfu']:.1%} | {memory} | {shares} |")  # fmt: skip
    for run in runs:
        print(f"response len {run['response_len']}: {run['sequences']} sequences, {run['real_tokens']} real tokens "
              f"(padded: {run['padded_waste']:.0%} padding); packed / padded tokens/s "
              f"{run['packed_over_padded']:.2f}x")  # fmt: skip


def _autocast(device: Any, fn: Any) -> Any:
    """The padded side's mixed precision: fp32 weights and optimizer, bf16 matmuls (what HF Trainer does)."""
    import torch

    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        return fn()


if __name__ == "__main__":
    main()
