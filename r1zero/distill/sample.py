"""r1zero-sample: rejection sampling. A teacher samples n completions per training problem, the task's reward
scores them, `r1zero.distill.rules` keeps some, and the kept ones become an SFT set.

    r1zero-sample model.name=runs/my-rl-run experiment=... n=8 rules.max_per_prompt=1 rules.prefer_shortest=true
    torchrun --nproc_per_node 2 -m r1zero.distill.sample model.name=...   # data parallel: chunks by rank

Writes out_dir/train.jsonl (one kept completion per line, prompt/completion form: with the chat template the
prompt is the message list and the completion one assistant message, so TRL and `datasets` load it as is; with
the plain-text r1zero template both are strings) and out_dir/summary.json (acceptance rate, coverage, lengths,
rejections by reason). The problems are processed in chunks of `chunk_size`; chunk c is sampled by rank
c % world and written to out_dir/chunks/ when done, so a restart skips the finished chunks (same seed, same
samples: each problem's seed derives from its index, as in r1zero-eval). The held-out split is loaded as in
training and checked disjoint from the sampled problems before anything is generated, and again on every row.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from r1zero.config import ModelConfig, RolloutConfig, TaskConfig
from r1zero.distill.rules import Candidate, RejectionRules, select_group, summarize
from r1zero.env import setup_environment
from r1zero.types import Completion, Example, Prompt

log = logging.getLogger("r1zero")
CONF_DIR = str(Path(__file__).resolve().parent.parent.parent / "conf")


@dataclass
class SampleRunConfig:
    # The teacher: a preset, a model folder, a training run directory (its final_model) or a hub id.
    model: ModelConfig = field(default_factory=ModelConfig)
    # The task as in training (its train split is sampled; its held-out split is checked and never written).
    task: TaskConfig = field(default_factory=TaskConfig)
    # Engine settings (engine, dtype, gpu_memory_utilization, ...); sampling uses the fields below.
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    # Training problems to sample (the first ones of the train split); None: task.num_train (files: all rows).
    num_problems: int | None = None
    # Completions sampled per problem.
    n: int = 4
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    # Data seed (use the training run's, so the splits match) and sampling seed.
    seed: int = 0
    # Which completions are kept (r1zero.distill.rules.RejectionRules).
    rules: RejectionRules = field(default_factory=RejectionRules)
    # Problems per chunk: the unit of restart and of data-parallel work, and one engine call (chunk_size * n
    # requests: the larger, the better the engine batches; the smaller, the less a restart redoes).
    chunk_size: int = 64
    out_dir: str = "runs/sample/${task.name}-seed${seed}"
    # The recipe's name (conf/experiment/distill/), recorded in summary.json; metadata only.
    experiment: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.num_problems is None or self.num_problems >= 1, "num_problems must be None or >= 1"),
            (self.n >= 1, f"n must be >= 1; got {self.n}"),
            (self.temperature >= 0, f"temperature must be >= 0; got {self.temperature}"),
            (
                self.temperature > 0 or self.n == 1,
                "temperature 0 (greedy) gives n identical samples: use n=1",
            ),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1]; got {self.top_p}"),
            (self.max_new_tokens >= 1, f"max_new_tokens must be >= 1; got {self.max_new_tokens}"),
            (self.chunk_size >= 1, f"chunk_size must be >= 1; got {self.chunk_size}"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# ---------------------------------------------------------------------------------------------- rows


def prompt_messages(example: Example, task: TaskConfig) -> list[dict[str, str]]:
    """The chat messages `r1zero.tasks.templates.chat_prompt` renders: [system?, (user, assistant)*, user]."""
    messages = [{"role": "system", "content": task.system_prompt}] if task.system_prompt else []
    for question, answer in task.fewshot:
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return [*messages, {"role": "user", "content": example.question}]


def sft_row(prompt: Prompt, completion: Completion, task: TaskConfig, reward: float) -> dict[str, Any]:
    """One train.jsonl line. Chat template: conversational (prompt = messages, completion = [assistant]); the
    r1zero template: plain strings (the prompt ends with its prefill, the completion is what followed it)."""
    if task.template == "chat":
        text = prompt.prefill + completion.text  # the assistant's whole turn
        row: dict[str, Any] = {
            "prompt": prompt_messages(prompt.example, task),
            "completion": [{"role": "assistant", "content": text}],
        }
    else:
        row = {"prompt": prompt.text, "completion": completion.text}
    return row | {
        "uid": prompt.example.uid,
        "question": prompt.example.question,
        "answer": prompt.example.answer,
        "reward": reward,
        "length": len(completion.token_ids),
    }


def choose(
    prompts: list[Prompt], completions: list[Completion], task: TaskConfig, n: int, rules: RejectionRules
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Score a chunk's completions [len(prompts) * n] and apply the rules per prompt: (kept rows, chunk stats)."""
    from r1zero.parts import score_completions

    scored = score_completions(task, prompts, completions)
    correct = scored.components.get("correct", [0.0] * len(completions))
    fmt = scored.components.get("format", [0.0] * len(completions))
    rows: list[dict[str, Any]] = []
    kept_per_prompt: list[int] = []
    reasons: Counter[str] = Counter()
    for p, prompt in enumerate(prompts):
        idx = range(p * n, (p + 1) * n)
        group = [
            Candidate(scored.texts[i], len(completions[i].token_ids), correct[i] >= 1.0, fmt[i] >= 1.0,
                      completions[i].truncated)
            for i in idx
        ]  # fmt: skip
        kept, why = select_group(group, rules)
        reasons += why
        kept_per_prompt.append(len(kept))
        rows += [sft_row(prompt, completions[p * n + j], task, scored.totals[p * n + j]) for j in kept]
    stats = {
        "kept_per_prompt": kept_per_prompt,
        "candidates": len(completions),
        "reasons": dict(reasons),
        "kept_lengths": [r["length"] for r in rows],
    }
    return rows, stats


# ---------------------------------------------------------------------------------------------- the run


def load_problems(cfg: SampleRunConfig) -> tuple[list[Example], set[str]]:
    """The train problems to sample and the held-out questions; raises if they overlap (`assert_disjoint`)."""
    from r1zero.tasks.registry import assert_disjoint, load_examples

    task = cfg.task
    n = None if task.train_path else (cfg.num_problems or task.num_train)
    train = load_examples(task.name, split="train", n=n, seed=cfg.seed, path=task.train_path, **task.kwargs)
    train = train[: cfg.num_problems] if cfg.num_problems else train
    held_out: list[Example] = []
    if task.num_eval > 0 and (task.eval_path is not None or task.train_path is None):
        held_out = load_examples(
            task.name, split="test", n=task.num_eval, seed=cfg.seed, path=task.eval_path, **task.kwargs
        )
    elif task.train_path is not None:
        log.warning("task.train_path is set without task.eval_path: no held-out split to check against")
    assert_disjoint(train, held_out)
    return train, {e.question for e in held_out}


def check_plan(out_dir: Path, cfg: SampleRunConfig, model_path: str, num_problems: int) -> None:
    """Finished chunks are reused only by the same plan (teacher, task, seed, sampling, rules, chunking): the
    first run writes chunks/plan.json; a restart with different settings fails instead of mixing the two."""
    from r1zero.checkpoint import atomic_write_json
    from r1zero.logging import to_json_value

    plan = to_json_value(
        {k: v for k, v in asdict(cfg).items() if k not in ("out_dir", "rollout")}
        | {"model_path": model_path, "num_problems_resolved": num_problems}
    )
    path = out_dir / "chunks" / "plan.json"
    if path.exists():
        old = json.loads(path.read_text(encoding="utf-8"))
        if old != plan:
            changed = sorted(k for k in plan if old.get(k) != plan[k])
            raise ValueError(
                f"{out_dir} holds chunks sampled with other settings ({changed}): use another out_dir"
            )
    else:
        atomic_write_json(path, plan)


def chunk_done(out_dir: Path, c: int) -> bool:
    return (out_dir / "chunks" / f"chunk-{c:05d}.stats.json").exists()


def sample_chunk(cfg: SampleRunConfig, engine: Any, prompts: list[Prompt], c: int, lo: int) -> None:
    """Generate, score and filter chunk c (problems [lo, lo + len(prompts))); write its rows, then its stats
    (the stats file marks the chunk finished)."""
    from r1zero.checkpoint import atomic_write_json, atomic_write_text
    from r1zero.rollout.base import SamplingSettings

    sampling = SamplingSettings(
        n=cfg.n, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature, top_p=cfg.top_p,
        seed=cfg.seed, index_offset=lo,
    )  # fmt: skip
    completions = engine.generate(prompts, sampling)  # [len(prompts) * n], prompt-major
    n = 1 if cfg.temperature == 0 else cfg.n
    rows, stats = choose(prompts, completions, cfg.task, n, cfg.rules)
    folder = Path(cfg.out_dir) / "chunks"
    atomic_write_text(
        folder / f"chunk-{c:05d}.jsonl", "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    )
    atomic_write_json(folder / f"chunk-{c:05d}.stats.json", stats)


def merge_chunks(out_dir: Path, num_chunks: int, held_out: set[str]) -> dict[str, Any]:
    """Concatenate the chunks into train.jsonl (refusing any held-out question) and sum their stats."""
    from r1zero.checkpoint import atomic_write_text

    lines: list[str] = []
    kept_per_prompt: list[int] = []
    candidates, reasons, lengths = 0, Counter[str](), []
    for c in range(num_chunks):
        text = (out_dir / "chunks" / f"chunk-{c:05d}.jsonl").read_text(encoding="utf-8")
        for line in text.splitlines():
            if json.loads(line)["question"] in held_out:
                raise ValueError(f"chunk {c} holds a held-out problem: {line[:200]}")
            lines.append(line + "\n")
        stats = json.loads((out_dir / "chunks" / f"chunk-{c:05d}.stats.json").read_text(encoding="utf-8"))
        kept_per_prompt += stats["kept_per_prompt"]
        candidates += stats["candidates"]
        reasons.update(stats["reasons"])
        lengths += stats["kept_lengths"]
    atomic_write_text(out_dir / "train.jsonl", "".join(lines))
    return summarize(kept_per_prompt, candidates, reasons, lengths)


def run_sample(cfg: SampleRunConfig, engine: Any = None) -> dict[str, Any]:
    """Sample, filter and write out_dir/train.jsonl + summary.json; returns the summary (on every rank).

    engine: an already built rollout engine holding the teacher (kept open); None builds one and closes it.
    """
    setup_environment()
    from transformers import AutoTokenizer

    from r1zero import distributed
    from r1zero.eval import resolve_eval_model
    from r1zero.rollout.engines import build_engine
    from r1zero.tasks.templates import build_prompts

    if distributed.world_size() > 1:
        distributed.init_process_group()
    rank, world = distributed.rank(), distributed.world_size()
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = resolve_eval_model(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    problems, held_out = load_problems(cfg)
    num_chunks = -(-len(problems) // cfg.chunk_size)
    if rank == 0:
        check_plan(out_dir, cfg, model_path, len(problems))
    distributed.barrier()
    todo = [c for c in range(num_chunks) if c % world == rank and not chunk_done(out_dir, c)]
    log.info(
        "%d problems in %d chunks; rank %d samples %d of them", len(problems), num_chunks, rank, len(todo)
    )
    owned = engine is None and bool(todo)
    if owned:
        rollout = replace(cfg.rollout, max_new_tokens=cfg.max_new_tokens)
        engine = build_engine(
            model_path, rollout, seed=cfg.seed, trust_remote_code=cfg.model.trust_remote_code
        )
    try:
        for c in todo:
            lo = c * cfg.chunk_size
            prompts = build_prompts(problems[lo : lo + cfg.chunk_size], cfg.task, tokenizer)
            sample_chunk(cfg, engine, prompts, c, lo)
            log.info("chunk %d/%d done", c + 1, num_chunks)
        return _finish(cfg, out_dir, num_chunks, held_out, model_path)
    finally:
        if (
            owned
        ):  # after the last barrier: closing a vLLM engine tears down torch.distributed's process group
            engine.close()


def _finish(
    cfg: SampleRunConfig, out_dir: Path, num_chunks: int, held_out: set[str], model_path: str
) -> dict[str, Any]:
    """Once every rank's chunks are written: rank 0 merges them into train.jsonl and summary.json."""
    from r1zero import distributed
    from r1zero.checkpoint import atomic_write_json
    from r1zero.logging import to_json_value

    distributed.barrier()
    if distributed.rank() == 0:
        summary = merge_chunks(out_dir, num_chunks, held_out) | {
            "model_path": model_path,
            "config": asdict(cfg),
        }
        atomic_write_json(out_dir / "summary.json", to_json_value(summary))
        log.info(
            "kept %d of %d completions (%.1f%%), %.0f%% of problems covered, mean length %.1f tokens -> %s",
            summary["kept"], summary["candidates"], 100 * summary["acceptance_rate"], 100 * summary["coverage"],
            summary["length_mean"], out_dir / "train.jsonl",
        )  # fmt: skip
    distributed.barrier()
    return json.loads((out_dir / "summary.json").read_text(encoding="utf-8"))


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="sample_schema", node=SampleRunConfig)


def to_sample_config(cfg: Any) -> SampleRunConfig:
    """DictConfig (from Hydra) -> validated SampleRunConfig."""
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SampleRunConfig), cfg))
    assert isinstance(obj, SampleRunConfig)
    return obj


def main() -> None:
    """Console entry point: Hydra composes conf/sample.yaml + overrides into a SampleRunConfig, then `run_sample`."""
    import hydra

    from r1zero import distributed

    setup_environment()
    register_configs()
    distributed.apply_launcher_env()

    @hydra.main(version_base=None, config_path=CONF_DIR, config_name="sample")
    def _entry(dict_cfg: Any) -> None:
        logging.getLogger("r1zero").setLevel(logging.INFO if distributed.rank() == 0 else logging.WARNING)
        from r1zero.console import quiet_console

        quiet_console()
        run_sample(to_sample_config(dict_cfg))

    _entry()


if __name__ == "__main__":
    main()
