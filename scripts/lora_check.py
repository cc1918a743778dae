"""Full fine-tuning against LoRA on one batch, side by side: learner step time, optimizer-state memory, trainable
parameters, and the weight push into a real rollout engine (every parameter vs only the adapted ones).

    python scripts/lora_check.py                          # the CPU default's model and batch shape
    python scripts/lora_check.py --rank 8 --steps 6       # another rank, more timed steps
    python scripts/lora_check.py --model tiny --engine hf # a quick run of the same code

The batch: --prompts prompts x --group-size responses of random tokens (prompt --prompt-len, responses up to
--response-len), random advantages; each learner takes --warmup untimed then --steps timed optimizer steps, the
two alternating step by step (so a busy machine slows both alike). Push: the learner's weights streamed into the
engine --steps times each way. Prints one table of medians and the ratios.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time


def optimizer_state_bytes(optimizer: object) -> int:
    """Bytes of tensor state the optimizer keeps (AdamW: two moments per trained parameter, plus step counters); a
    DeepSpeed engine's optimizer wraps the torch one (`.optimizer`), whose state is counted."""
    import torch

    inner = getattr(optimizer, "optimizer", optimizer)
    return sum(
        value.numel() * value.element_size()
        for per_param in getattr(inner, "state", {}).values()
        for value in per_param.values()
        if isinstance(value, torch.Tensor)
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--model", default="smollm2-135m", help="a model reference (r1zero.models.resolve_model)"
    )
    parser.add_argument("--rank", type=int, default=16)
    parser.add_argument("--alpha", type=float, default=32.0)
    parser.add_argument(
        "--targets", nargs="*", default=None, help="learner.lora_target_modules (default: all)"
    )
    parser.add_argument("--prompts", type=int, default=4)
    parser.add_argument("--group-size", type=int, default=4)
    parser.add_argument("--prompt-len", type=int, default=90)
    parser.add_argument("--response-len", type=int, default=32)
    parser.add_argument("--micro-batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--engine", default="vllm", choices=["vllm", "hf", "none"])
    args = parser.parse_args()

    from r1zero.env import setup_environment

    setup_environment()  # before torch loads: the training loop's OpenMP and allocator settings apply here too
    import torch

    from r1zero import distributed
    from r1zero.config import AlgoConfig, LearnerConfig, RolloutConfig
    from r1zero.learner import lora
    from r1zero.learner.learner import Learner
    from r1zero.models import resolve_model

    distributed.init_process_group()
    path = resolve_model(args.model)
    from transformers import AutoConfig

    top = min(5000, AutoConfig.from_pretrained(path).vocab_size - 1)  # random token ids the model has
    rng = random.Random(0)
    sequences = []
    for _ in range(args.prompts):
        prompt = [rng.randint(10, top) for _ in range(args.prompt_len)]
        for _ in range(args.group_size):
            sequences.append(
                (prompt, [rng.randint(10, top) for _ in range(rng.randint(8, args.response_len))])
            )
    advantages = torch.randn(len(sequences), generator=torch.Generator().manual_seed(0))  # [N]

    def build(rank: int) -> Learner:
        cfg = LearnerConfig(
            lr=1e-5, micro_batch_size=args.micro_batch_size, lora_rank=rank, lora_alpha=args.alpha,
            lora_target_modules=args.targets if rank else None,
        )  # fmt: skip
        return Learner(path, cfg, AlgoConfig(), total_steps=100, max_response_len=args.response_len)

    learners = {"full": build(0), f"lora r{args.rank}": build(args.rank)}
    times: dict[str, list[float]] = {name: [] for name in learners}
    for step in range(args.warmup + args.steps):
        for name, learner in learners.items():
            start = time.perf_counter()
            learner.train_step(sequences, advantages)
            if step >= args.warmup:
                times[name].append(time.perf_counter() - start)

    pushes: dict[str, list[float]] = {}
    if args.engine != "none":
        from r1zero.rollout.engines import build_engine
        from r1zero.sync import push_weights

        engine = build_engine(path, RolloutConfig(engine=args.engine, dtype="float32"), seed=0)
        adapted = learners[f"lora r{args.rank}"]
        ways = {
            "every parameter (merged)": lambda: adapted.named_parameters_for_sync(),
            "adapted weights only": lambda: lora.merged_parameters(
                adapted.module, zero3=False, adapted_only=True
            ),
        }
        for step in range(args.warmup + args.steps):
            for way, named in ways.items():
                seconds = push_weights(engine, named(), version=step + 1)
                if step >= args.warmup:
                    pushes.setdefault(way, []).append(seconds)
        engine.close()

    print(f"\nmodel {args.model}, {len(sequences)} sequences ({args.prompts} x {args.group_size}), prompt "
          f"{args.prompt_len}, responses <= {args.response_len} tokens, {args.steps} timed steps, medians")  # fmt: skip
    print(f"{'learner':<14}{'step s':>10}{'trainable':>14}{'total':>14}{'optimizer MiB':>16}")
    base_step = statistics.median(times["full"])
    base_state = optimizer_state_bytes(learners["full"].engine.optimizer)
    for name, learner in learners.items():
        state = optimizer_state_bytes(learner.engine.optimizer)
        print(f"{name:<14}{statistics.median(times[name]):>10.3f}{learner.trainable_params:>14,}"
              f"{learner.total_params:>14,}{state / 2**20:>16.1f}")  # fmt: skip
    name = f"lora r{args.rank}"
    print(f"LoRA / full: step time {statistics.median(times[name]) / base_step:.2f}x, optimizer state "
          f"{optimizer_state_bytes(learners[name].engine.optimizer) / base_state:.2%}")  # fmt: skip
    for way, seconds in pushes.items():
        print(f"push, {way:<26}{statistics.median(seconds):>8.3f} s")


if __name__ == "__main__":
    main()
