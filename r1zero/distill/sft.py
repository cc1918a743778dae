"""r1zero-sft: supervised fine-tuning on prompt/completion JSONL (an `r1zero-sample` set or any such file), loss
on the completion tokens only. TRL's `SFTTrainer` does the training (it masks the prompt of a prompt/completion
row by default); this module adds what r1zero's other stages have: a Hydra config, checked data, JSONL/W&B
metrics, resume from the latest checkpoint, and a Hugging Face folder that r1zero-train and r1zero-eval load.

    r1zero-sft model.name=smollm2-135m data_path=runs/sample/arithmetic-seed0/train.jsonl steps=40
    torchrun --nproc_per_node 2 -m r1zero.distill.sft ... zero_stage=2       # DeepSpeed ZeRO via the HF Trainer

Writes run_dir/final_model (model + tokenizer), run_dir/metrics.jsonl (sft/* per logged step), run_dir/data.json
(rows read, kept, skipped by reason), run_dir/checkpoints/checkpoint-N (resume: rerun the same command).
`r1zero-eval model.name=RUN_DIR` and `r1zero-train model.name=RUN_DIR/final_model` take the result.
trl is imported only inside functions (a dependency, but heavy: the other stages never import it).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from r1zero.config import LogConfig, ModelConfig
from r1zero.env import setup_environment

log = logging.getLogger("r1zero")
CONF_DIR = str(Path(__file__).resolve().parent.parent.parent / "conf")
BAD_ROW_MODES = ("skip", "fail")
PRECISIONS = ("fp32", "bf16")
LR_SCHEDULES = ("constant", "cosine", "linear")


@dataclass
class SftRunConfig:
    # The student: a preset, a model folder, a training run directory (its final_model) or a hub id.
    model: ModelConfig = field(default_factory=ModelConfig)
    # Prompt/completion JSONL: conversational (message lists) or plain strings, as r1zero-sample writes.
    data_path: str = "???"
    # Optimizer steps (None: `epochs` passes over the data).
    steps: int | None = None
    epochs: float = 1.0
    # Rows per device per micro-batch, and micro-batches per optimizer step.
    batch_size: int = 8
    grad_accum: int = 1
    lr: float = 1.0e-5
    # HF scheduler name: constant, cosine or linear (after warmup_steps of linear warmup).
    lr_schedule: str = "constant"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    # Rows whose prompt + completion exceed this many tokens are bad rows (never silently truncated).
    max_length: int = 1024
    # Bad rows (not JSON, missing prompt/completion, empty completion, over max_length): skip and count them, or
    # fail naming the file and line.
    on_bad_row: str = "skip"
    # fp32, or bf16 (a GPU).
    precision: str = "fp32"
    # DeepSpeed ZeRO stage through the HF Trainer (None: no DeepSpeed).
    zero_stage: int | None = None
    gradient_checkpointing: bool = False
    # Save a resumable checkpoint every k optimizer steps (0: only the final model).
    save_every: int = 50
    keep_last: int = 2
    # Resume from the latest checkpoint in run_dir/checkpoints.
    resume: bool = True
    # Metrics: JSONL always, W&B when log.wandb.
    log: LogConfig = field(default_factory=LogConfig)
    seed: int = 0
    run_dir: str = "runs/sft/${model.name}-seed${seed}"
    # The recipe's name (conf/experiment/distill/), recorded with the config in run_dir; metadata only.
    experiment: str | None = None

    def __post_init__(self) -> None:
        checks = [
            (
                self.on_bad_row in BAD_ROW_MODES,
                f"on_bad_row must be one of {BAD_ROW_MODES}; got {self.on_bad_row!r}",
            ),
            (self.precision in PRECISIONS, f"precision must be one of {PRECISIONS}; got {self.precision!r}"),
            (self.lr_schedule in LR_SCHEDULES, f"lr_schedule must be one of {LR_SCHEDULES}"),
            (self.steps is None or self.steps >= 1, f"steps must be None or >= 1; got {self.steps}"),
            (self.epochs > 0, f"epochs must be > 0; got {self.epochs}"),
            (self.batch_size >= 1 and self.grad_accum >= 1, "batch_size and grad_accum must be >= 1"),
            (self.lr > 0, f"lr must be > 0; got {self.lr}"),
            (self.max_length >= 2, f"max_length must be >= 2; got {self.max_length}"),
            (self.zero_stage in (None, 0, 1, 2, 3), f"zero_stage must be null or 0-3; got {self.zero_stage}"),
            (self.save_every >= 0 and self.keep_last >= 1, "save_every must be >= 0 and keep_last >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)


# ---------------------------------------------------------------------------------------------- data


def _is_messages(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in value
        )
    )


def row_problem(row: Any) -> str | None:
    """Why a parsed JSONL row cannot be trained on, or None. Both fields strings, or both message lists.

    {"prompt": "Q", "completion": ""} -> "empty completion"; {"prompt": "Q"} -> "missing completion".
    """
    if not isinstance(row, dict):
        return "not a JSON object"
    for key in ("prompt", "completion"):
        if key not in row or row[key] is None:
            return f"missing {key}"
    prompt, completion = row["prompt"], row["completion"]
    if isinstance(prompt, str) and isinstance(completion, str):
        return None if completion.strip() else "empty completion"
    if _is_messages(prompt) and isinstance(completion, list):
        if not _is_messages(completion) or completion[-1]["role"] != "assistant":
            return "completion must be a list of messages ending with an assistant turn"
        return None if all(m["content"].strip() for m in completion) else "empty completion"
    return "prompt and completion must both be strings or both be lists of {role, content} messages"


def row_tokens(row: dict[str, Any], tokenizer: Any) -> int:
    """Tokens of prompt + completion as the trainer will see them (chat template for message lists)."""
    if isinstance(row["prompt"], str):
        return (
            len(tokenizer(row["prompt"] + row["completion"], add_special_tokens=False)["input_ids"]) + 1
        )  # + eos
    ids = tokenizer.apply_chat_template(row["prompt"] + row["completion"], tokenize=True, return_dict=True)
    return len(ids["input_ids"])


def load_rows(
    path: str | Path, tokenizer: Any, *, max_length: int, on_bad_row: str = "skip"
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The trainable rows of a JSONL file (prompt and completion only) and a summary {read, kept, skipped}.

    on_bad_row "fail" raises ValueError("FILE:LINE: reason") at the first bad row; "skip" counts it by reason.
    Blank lines are ignored.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SFT data file {path} does not exist")
    rows: list[dict[str, Any]] = []
    skipped: Counter[str] = Counter()
    first_bad: dict[str, int] = {}
    read = 0
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            read += 1
            try:
                row = json.loads(line)
                problem = row_problem(row)
            except json.JSONDecodeError as e:
                problem = f"not valid JSON ({e.msg})"
            if problem is None and row_tokens(row, tokenizer) > max_length:
                problem = f"longer than max_length={max_length} tokens"
            if problem is None:
                rows.append({"prompt": row["prompt"], "completion": row["completion"]})
                continue
            if on_bad_row == "fail":
                raise ValueError(f"{path}:{number}: {problem} (on_bad_row=skip skips such rows)")
            skipped[problem] += 1
            first_bad.setdefault(problem, number)
    summary = {
        "path": str(path),
        "read": read,
        "kept": len(rows),
        "skipped": dict(skipped),
        "first_line": first_bad,
    }
    if skipped:
        log.warning("%s: skipped %d of %d rows: %s", path, sum(skipped.values()), read, dict(skipped))
    if not rows:
        raise ValueError(f"{path}: no trainable rows ({read} read, skipped: {dict(skipped)})")
    return rows, summary


# ---------------------------------------------------------------------------------------------- training


def latest_checkpoint(folder: Path) -> Path | None:
    """The HF Trainer checkpoint with the highest step whose trainer_state.json was written (complete), or None."""
    found = []
    for path in folder.glob("checkpoint-*"):
        suffix = path.name.split("-")[-1]
        if suffix.isdigit() and (path / "trainer_state.json").exists():
            found.append((int(suffix), path))
    return max(found)[1] if found else None


def deepspeed_config(stage: int | None, precision: str) -> dict[str, Any] | None:
    """A ZeRO config the HF Trainer fills in ("auto" values from the SFT settings); None without DeepSpeed."""
    if stage is None:
        return None
    return {
        "zero_optimization": {"stage": stage, "stage3_gather_16bit_weights_on_model_save": True},
        "bf16": {"enabled": precision == "bf16"},
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
    }


def build_trainer(
    cfg: SftRunConfig, rows: list[dict[str, Any]], model_path: str, callbacks: list[Any]
) -> Any:
    """TRL SFTTrainer over `rows` with completion-only loss; the checkpoints go to run_dir/checkpoints."""
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from r1zero.env import has_cuda

    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    dtype = torch.bfloat16 if cfg.precision == "bf16" else torch.float32
    model = AutoModelForCausalLM.from_pretrained(
        model_path, dtype=dtype, trust_remote_code=cfg.model.trust_remote_code
    )
    args = SFTConfig(
        output_dir=str(Path(cfg.run_dir) / "checkpoints"),
        max_steps=cfg.steps if cfg.steps is not None else -1,
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.grad_accum,
        learning_rate=cfg.lr,
        lr_scheduler_type=cfg.lr_schedule if cfg.lr_schedule != "constant" else "constant_with_warmup",
        warmup_steps=cfg.warmup_steps,
        weight_decay=cfg.weight_decay,
        max_grad_norm=cfg.max_grad_norm,
        max_length=cfg.max_length,
        completion_only_loss=True,
        bf16=cfg.precision == "bf16",
        use_cpu=not has_cuda(),
        deepspeed=deepspeed_config(cfg.zero_stage, cfg.precision),
        gradient_checkpointing=cfg.gradient_checkpointing,
        logging_steps=1,
        save_strategy="steps" if cfg.save_every > 0 else "no",
        save_steps=max(cfg.save_every, 1),
        save_total_limit=cfg.keep_last,
        report_to="none",
        seed=cfg.seed,
        dataset_num_proc=None,
    )
    return SFTTrainer(
        model=model, args=args, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
        callbacks=callbacks,
    )  # fmt: skip


def metric_callback(loggers: Any) -> Any:
    """A TrainerCallback that sends the Trainer's logs to r1zero's loggers as sft/* at the optimizer step."""
    from transformers import TrainerCallback

    class _ToLoggers(TrainerCallback):
        def on_log(
            self, args: Any, state: Any, control: Any, logs: dict[str, Any] | None = None, **kw: Any
        ) -> None:
            if state.is_world_process_zero and logs and "train_runtime" not in logs:  # not the closing totals
                metrics = {f"sft/{k}": v for k, v in logs.items() if isinstance(v, (int, float))}
                loggers.log(metrics | {"train/step": float(state.global_step)}, step=state.global_step)

    return _ToLoggers()


def run_sft(cfg: SftRunConfig, callbacks: list[Any] | None = None) -> dict[str, Any]:
    """Fine-tune cfg.model on cfg.data_path; resumes from run_dir's latest checkpoint; returns the summary.

    callbacks: extra transformers TrainerCallbacks (tests use one to interrupt a run)."""
    setup_environment()
    from omegaconf import OmegaConf
    from transformers import AutoTokenizer

    from r1zero import distributed
    from r1zero.checkpoint import atomic_write_json, atomic_write_text
    from r1zero.eval import resolve_eval_model
    from r1zero.logging import build_loggers, to_json_value

    distributed.apply_launcher_env()
    rank = distributed.rank()
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    model_path = resolve_eval_model(cfg.model.name)
    tokenizer = AutoTokenizer.from_pretrained(model_path, trust_remote_code=cfg.model.trust_remote_code)
    rows, data = load_rows(cfg.data_path, tokenizer, max_length=cfg.max_length, on_bad_row=cfg.on_bad_row)
    resume_from = latest_checkpoint(run_dir / "checkpoints") if cfg.resume else None
    resume_step = int(resume_from.name.split("-")[-1]) if resume_from else -1
    wandb_file = run_dir / "wandb_id.txt"
    run_id = wandb_file.read_text().strip() if resume_from and wandb_file.exists() else None
    if rank == 0:
        atomic_write_text(run_dir / "config.yaml", OmegaConf.to_yaml(OmegaConf.structured(cfg)))
        atomic_write_json(run_dir / "data.json", data)
    loggers = build_loggers(
        cfg.log,
        run_dir,
        asdict(cfg),
        rank=rank,
        run_id=run_id,
        resume_step=resume_step,
        total_steps=cfg.steps,
    )
    if rank == 0 and getattr(loggers, "run_id", None):
        atomic_write_text(wandb_file, str(loggers.run_id))
    try:
        trainer = build_trainer(cfg, rows, model_path, [metric_callback(loggers), *(callbacks or [])])
        if resume_from:
            log.info("resuming from %s", resume_from)
        result = trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        trainer.save_model(str(run_dir / "final_model"))
    finally:
        loggers.close()
    summary = {
        "run_dir": str(run_dir), "final_model": str(run_dir / "final_model"), "model_path": model_path,
        "steps_done": trainer.state.global_step, "resumed_from": str(resume_from) if resume_from else None,
        "train_loss": result.training_loss, "data": data,
    }  # fmt: skip
    if rank == 0:
        trainer.processing_class.save_pretrained(str(run_dir / "final_model"))
        atomic_write_json(run_dir / "summary.json", to_json_value(summary))
        log.info(
            "SFT done: %d steps, loss %.4f -> %s",
            summary["steps_done"],
            result.training_loss,
            run_dir / "final_model",
        )
    return summary


def register_configs() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="sft_schema", node=SftRunConfig)


def to_sft_config(cfg: Any) -> SftRunConfig:
    """DictConfig (from Hydra) -> validated SftRunConfig."""
    from omegaconf import OmegaConf

    obj = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SftRunConfig), cfg))
    assert isinstance(obj, SftRunConfig)
    return obj


def main() -> None:
    """Console entry point: Hydra composes conf/sft.yaml + overrides into an SftRunConfig, then `run_sft`."""
    import hydra

    from r1zero import distributed

    setup_environment()
    register_configs()
    distributed.apply_launcher_env()

    @hydra.main(version_base=None, config_path=CONF_DIR, config_name="sft")
    def _entry(dict_cfg: Any) -> None:
        logging.getLogger("r1zero").setLevel(logging.INFO if distributed.rank() == 0 else logging.WARNING)
        from r1zero.console import quiet_console

        quiet_console()
        run_sft(to_sft_config(dict_cfg))

    _entry()


if __name__ == "__main__":
    main()
