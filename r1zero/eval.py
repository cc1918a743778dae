"""r1zero-eval: pass@k, maj@k, length, format and reflection rate of a model on a task's held-out split.

    r1zero-eval                                             # the tiny model on Countdown's test split
    r1zero-eval model.name=runs/countdown-tiny-seed0 n=8 k=[1,4,8]   # a run directory: its final_model
    r1zero-eval task=gsm8k task.train_path=... task.eval_path=... temperature=0 n=1   # greedy

Writes out_dir/results.json (metrics + the resolved config) and out_dir/completions.jsonl (one line per problem
with its n samples). The prompts are built exactly as in training (`r1zero.tasks.templates.build_prompts`), from the same
task settings and seed, and the held-out problems are checked against the training split (`assert_disjoint`).
Deterministic given `seed`: each problem's samples use a seed derived from it and the problem's index.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from r1zero.aha import count_phrases, reflection_stats
from r1zero.config import ModelConfig, RolloutConfig, TaskConfig
from r1zero.env import setup_environment
from r1zero.parts import Scored, score_completions
from r1zero.passk import maj_at_k, majority_vote, pass_at_k
from r1zero.rewards.format import extract_answer
from r1zero.rollout.base import SamplingSettings
from r1zero.rollout.engines import build_engine
from r1zero.types import Completion, Example, Prompt

log = logging.getLogger("r1zero")
CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@dataclass
class EvalRunConfig:
    # model.name: a preset, a model folder, or a training run directory (its final_model folder is used).
    model: ModelConfig = field(default_factory=ModelConfig)
    # The task as in training (name, template, kwargs, paths, num_train); use the training run's values.
    task: TaskConfig = field(default_factory=TaskConfig)
    # Engine settings only (engine, dtype, max_prompt_tokens, gpu_memory_utilization, ...): the sampling
    # fields below replace its temperature / top_p / max_new_tokens / group_size.
    rollout: RolloutConfig = field(default_factory=RolloutConfig)
    # "test" (held out; task.eval_path for file tasks) or "train" (task.train_path).
    split: str = "test"
    # Problems to evaluate; None uses task.num_eval.
    num_problems: int | None = None
    # Samples per problem; pass@k and maj@k need k <= n.
    n: int = 4
    # 0 is greedy decoding (then n must be 1).
    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 256
    # Data seed (use the training run's seed, so the splits match) and sampling seed.
    seed: int = 0
    # k values for pass@k and maj@k; those above n are skipped.
    k: list[int] = field(default_factory=lambda: [1, 2, 4])
    out_dir: str = "runs/eval/${task.name}-${split}-seed${seed}"
    # Load the training split with the same task settings and fail if a held-out problem occurs in it.
    check_disjoint: bool = True

    def __post_init__(self) -> None:
        checks = [
            (self.split in ("train", "test"), f"split must be train or test; got {self.split!r}"),
            (self.num_problems is None or self.num_problems >= 1, "num_problems must be None or >= 1"),
            (self.n >= 1, f"n must be >= 1; got {self.n}"),
            (self.temperature >= 0, f"temperature must be >= 0; got {self.temperature}"),
            (
                self.temperature > 0 or self.n == 1,
                "temperature 0 (greedy) gives n identical samples: use n=1",
            ),
            (0 < self.top_p <= 1, f"top_p must be in (0, 1]; got {self.top_p}"),
            (self.max_new_tokens >= 1, f"max_new_tokens must be >= 1; got {self.max_new_tokens}"),
            (
                len(self.k) > 0 and all(k >= 1 for k in self.k),
                f"k must be a non-empty list of ints >= 1; got {self.k}",
            ),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# ---------------------------------------------------------------------------------------------- evaluation


def problem_record(
    index: int, example: Example, completions: Sequence[Completion], scored: Scored, ks: Sequence[int]
) -> dict[str, Any]:
    """One problem's line of completions.jsonl: its n samples (`completions` and their `scored` slice) with
    extracted answers and correctness, pass@k and maj@k for each k in ks, and the majority answer of all n."""
    texts, rewards, components = scored.texts, scored.totals, scored.components
    answers = [extract_answer(t) for t in texts]
    correct = [v >= 1.0 for v in components.get("correct", [0.0] * len(texts))]
    fmt = [v >= 1.0 for v in components.get("format", [0.0] * len(texts))]
    n, c = len(texts), sum(correct)
    winner = majority_vote(answers, n)
    return {
        "index": index,
        "uid": example.uid,
        "question": example.question,
        "gold": example.answer,
        "n": n,
        "num_correct": c,
        "pass@k": {str(k): pass_at_k(n, c, k) for k in ks},
        "maj@k": {str(k): maj_at_k(answers, correct, k) for k in ks},
        "majority_answer": None if winner is None else answers[winner],
        "samples": [
            {
                "text": text,
                "answer": answers[j],
                "correct": correct[j],
                "format": fmt[j],
                "reward": rewards[j],
                "length": len(comp.token_ids),
                "finish_reason": comp.finish_reason,
                "reflection_words": sum(count_phrases(text).values()),
            }
            for j, (comp, text) in enumerate(zip(completions, texts))
        ],
    }


def aggregate(records: Sequence[dict[str, Any]], ks: Sequence[int]) -> dict[str, float]:
    """eval/* metrics over problem records: pass@k and maj@k averaged over problems, the rest over samples.

    eval/accuracy is the fraction of correct samples (= eval/pass@1 when every problem has n samples).
    """
    samples = [s for r in records for s in r["samples"]]
    count = max(len(samples), 1)
    refl = reflection_stats(
        [s["text"] for s in samples], [s["length"] for s in samples], [float(s["correct"]) for s in samples]
    )
    metrics = {
        "eval/accuracy": sum(s["correct"] for s in samples) / count,
        "eval/format_rate": sum(s["format"] for s in samples) / count,
        "eval/reward_mean": sum(s["reward"] for s in samples) / count,
        "eval/length_mean": sum(s["length"] for s in samples) / count,
        "eval/truncated_frac": sum(s["finish_reason"] == "length" for s in samples) / count,
        "eval/reflection_per_1k_tokens": refl.get("reflection_per_1k_tokens", 0.0),
        "eval/reflection_frac": refl.get("reflection_frac", 0.0),
        "eval/num_problems": float(len(records)),
    }
    for kind in ("pass", "maj"):
        for k in ks:
            values = [r[f"{kind}@k"][str(k)] for r in records]
            metrics[f"eval/{kind}@{k}"] = sum(values) / max(len(values), 1)
    return metrics


def collective_engine(engine: Any) -> bool:
    """True for an engine whose calls every learner rank must make together: disaggregated mode's RemoteEngine
    (r1zero.rollout.remote; the one with `submit`, as r1zero.collect tells it): `submit` all-gathers the ranks'
    prompts and `fetch` broadcasts the samples. A colocated engine serves its own rank alone."""
    return getattr(engine, "submit", None) is not None


def evaluate_model(
    engine: Any,
    prompts: Sequence[Prompt],
    task: TaskConfig,
    *,
    n: int,
    temperature: float,
    max_new_tokens: int,
    seed: int,
    top_p: float = 1.0,
    ks: Sequence[int] = (1,),
    index_offset: int = 0,
) -> tuple[dict[str, float], list[dict[str, Any]]]:
    """Sample n completions per prompt with `engine`, score them; returns (eval/* metrics, per-problem records).

    ks above n are dropped. temperature 0 is greedy. Deterministic given seed (per-prompt seeds, see
    `r1zero.rollout.base.request_seed`). index_offset: the global index of prompts[0] when `prompts` is one
    rank's share of the problems (seeds and record indices as if all were evaluated in one call).
    A rank with no problems returns ({}, []); on a collective engine (`collective_engine`) it still calls
    `generate`, so that its next collective does not pair with the other ranks' inside the engine.
    """
    ks = sorted({k for k in ks if k <= n})
    if not prompts and not collective_engine(engine):
        return {}, []
    sampling = SamplingSettings(
        n=n,
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        seed=seed,
        index_offset=index_offset,
    )
    completions = engine.generate(prompts, sampling)  # [len(prompts) * n], prompt-major
    if not prompts:
        return {}, []
    scored = score_completions(task, prompts, completions)
    records = []
    for i, prompt in enumerate(prompts):
        rows = slice(i * n, (i + 1) * n)  # prompt i's n samples
        part = Scored(
            scored.texts[rows], scored.totals[rows], {k: v[rows] for k, v in scored.components.items()}
        )
        records.append(problem_record(index_offset + i, prompt.example, completions[rows], part, ks))
    return aggregate(records, ks) | {"eval/n": float(n)}, records


# ---------------------------------------------------------------------------------------------- the CLI's run


def resolve_eval_model(ref: str) -> str:
    """`resolve_model`, plus: a training run directory (no config.json, a final_model/ inside) -> its final_model."""
    from r1zero.models import resolve_model

    folder = Path(ref).expanduser()
    if (
        folder.is_dir()
        and not (folder / "config.json").exists()
        and (folder / "final_model" / "config.json").exists()
    ):
        return resolve_model(str(folder / "final_model"))
    return resolve_model(ref)


def load_eval_examples(cfg: EvalRunConfig) -> list[Example]:
    """The problems of `cfg.split`; for the test split, checked against the training split when it can be.

    The training split is loaded exactly as `r1zero-train` loads it (same task settings and seed). With exactly
    one of task.train_path / task.eval_path set, the run's training data is not known here: a warning, no check.
    """
    from r1zero.tasks.registry import assert_disjoint, load_examples, training_examples

    task = cfg.task
    n = cfg.num_problems or task.num_eval
    path = task.eval_path if cfg.split == "test" else task.train_path
    examples = load_examples(task.name, split=cfg.split, n=n, seed=cfg.seed, path=path, **task.kwargs)
    if cfg.split == "test" and cfg.check_disjoint:
        if (task.train_path is None) == (task.eval_path is None):
            assert_disjoint(training_examples(task, cfg.seed), examples)
        else:
            log.warning("only one of task.train_path / task.eval_path is set: train/test overlap not checked")
    return examples


def run_eval(cfg: EvalRunConfig, engine: Any = None) -> dict[str, Any]:
    """Evaluate `cfg.model` and write out_dir/results.json and out_dir/completions.jsonl; returns the results.

    engine: an already built rollout engine holding the model (kept open; its max_new_tokens must cover
    cfg.max_new_tokens); None builds one from cfg.rollout and closes it after.
    """
    setup_environment()
    from transformers import AutoTokenizer

    from r1zero.checkpoint import atomic_write_json, atomic_write_text
    from r1zero.logging import to_json_value
    from r1zero.tasks.templates import build_prompts

    started = time.time()
    out_dir = Path(cfg.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model_path = resolve_eval_model(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    examples = load_eval_examples(cfg)
    prompts = build_prompts(examples, cfg.task, tokenizer)
    ks = sorted({k for k in cfg.k if k <= cfg.n})
    if len(ks) < len(set(cfg.k)):
        log.warning("k values above n=%d skipped: %s", cfg.n, sorted({k for k in cfg.k if k > cfg.n}))
    owned = engine is None
    if owned:
        engine = build_engine(
            model_path, replace(cfg.rollout, max_new_tokens=cfg.max_new_tokens), seed=cfg.seed
        )
    try:
        metrics, records = evaluate_model(
            engine, prompts, cfg.task, n=cfg.n, temperature=cfg.temperature, top_p=cfg.top_p,
            max_new_tokens=cfg.max_new_tokens, seed=cfg.seed, ks=ks,
        )  # fmt: skip
    finally:
        if owned:
            engine.close()
    lines = "".join(json.dumps(to_json_value(r), ensure_ascii=False) + "\n" for r in records)
    atomic_write_text(out_dir / "completions.jsonl", lines)
    results = {
        "metrics": metrics,
        "model_path": model_path,
        "split": cfg.split,
        "ks": ks,
        "time_s": time.time() - started,
        "config": asdict(cfg),
    }
    atomic_write_json(out_dir / "results.json", to_json_value(results))
    log.info(format_results(metrics, out_dir))
    return results


def format_results(metrics: dict[str, float], out_dir: Path) -> str:
    """`pass@1 0.250 | pass@4 0.500 | maj@4 0.250 | format 0.90 | len 57 | reflection/1k 3.1` + where the files are."""
    parts = [
        f"{name[5:]} {value:.3f}"
        for name, value in metrics.items()
        if name.startswith(("eval/pass@", "eval/maj@"))
    ]
    parts += [
        f"format {metrics.get('eval/format_rate', 0):.2f}",
        f"len {metrics.get('eval/length_mean', 0):.0f}",
        f"reflection/1k {metrics.get('eval/reflection_per_1k_tokens', 0):.1f}",
    ]
    return (
        " | ".join(parts) + f"\n  results: {out_dir}/results.json   completions: {out_dir}/completions.jsonl"
    )


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="eval_schema", node=EvalRunConfig)


def to_eval_config(cfg: Any) -> EvalRunConfig:
    """DictConfig (from Hydra) -> validated EvalRunConfig."""
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(EvalRunConfig), cfg))
    assert isinstance(obj, EvalRunConfig)
    return obj


def main() -> None:
    """Console entry point: Hydra composes conf/eval.yaml + overrides into an EvalRunConfig, then `run_eval`."""
    import hydra

    setup_environment()
    register_configs()

    @hydra.main(version_base=None, config_path=CONF_DIR, config_name="eval")
    def _entry(dict_cfg: Any) -> None:
        logging.getLogger("r1zero").setLevel(logging.INFO)
        from r1zero.console import quiet_console

        quiet_console()
        run_eval(to_eval_config(dict_cfg))

    _entry()


if __name__ == "__main__":
    main()
