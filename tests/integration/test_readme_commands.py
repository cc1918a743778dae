"""Every r1zero command the README shows runs on the CPU stack (issue #18: its eval example crashed in vLLM).

`documented_commands` reads the README's commands (fenced code blocks, `$ ` transcript lines included, and inline
code that invokes `r1zero-*`, `r1zero.train` or `scripts/train.sh`); COVERAGE must account for each one: either
the test here that runs it as written plus overrides that make it small (a tiny model, few steps) but keep its
batches larger than one vLLM scheduling pass (4,096 tokens on CPU, where #18 began), or why it cannot run on
this machine and what covers it. A command added to the README without an entry here fails
`test_every_readme_command_is_accounted_for`.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent  # this checkout's .venv/bin: its r1zero-* console scripts

# Batches beyond one vLLM pass on the tiny model: 8 prompts x 8 samples of ~81-token (arithmetic_chat) or
# ~205-token (countdown) prompts = 64 requests of ~5.2k / ~13k prompt tokens (checked below).
BIG_BATCH = ("rollout.prompts_per_step=8", "rollout.group_size=8")
SMALL = ("model=tiny", "steps=1", *BIG_BATCH)

NOT_HERE = "not run here: "
_SLURM = (
    "Slurm; train.sbatch under a stand-in srun: tests/distributed/test_faults.py, submitit: test_multiprocess"
)
DISAGGREGATED_CPU = (
    "torchrun --standalone --nproc_per_node 2 -m r1zero.train roles.mode=disaggregated cpu_threads=1"
)
# README command (as `documented_commands` normalises it) -> the test below that runs it, or why not here.
COVERAGE: dict[str, str] = {
    "bash scripts/train.sh": "test_train_sh_cpu_default",
    "bash scripts/train.sh run_dir=runs/cpu_s0 seed=0": "test_train_sh_cpu_default",
    # scripts/train.sh is setup + `exec .venv/bin/r1zero-train "$@"` (checked in that test).
    "r1zero-train": "test_train_sh_cpu_default",
    "bash scripts/train.sh model=tiny task=countdown steps=5": "test_train_sh_tiny_countdown",
    "bash scripts/test.sh": "the test command itself: .ci/run runs exactly it, this file included",
    "R1ZERO_EXTRAS=gpu,dev bash scripts/setup.sh": (
        NOT_HERE
        + "the GPU stack (vllm with CUDA torch); setup.sh's layers: test_setup_isolation.py, the GPU "
        "extra's vLLM API: tests/unit/test_vllm_api.py"
    ),
    "r1zero-report runs/cpu_s0": "test_report_and_eval_of_the_run",
    "r1zero-report runs/arithmetic-smollm2-135m-seed0": "test_report_and_eval_of_the_run",
    "r1zero-eval model.name=runs/arithmetic-smollm2-135m-seed0 task=arithmetic_chat n=8 k=[1,4,8]": (
        "test_report_and_eval_of_the_run"
    ),
    "r1zero-export runs/cpu_s0": "test_export_of_the_run",
    "r1zero-export runs/cpu_s0 --type q4_0 --chat What is 41 + 27?": "test_export_of_the_run",
    "r1zero-export RUN_DIR": "test_export_of_the_run",
    "r1zero-train -m hydra/launcher=local model=tiny steps=2 seed=0,1": "test_local_launcher_sweep",
    "r1zero-sample experiment=distill/cpu_sample": "test_distill_chain",
    "r1zero-sft experiment=distill/cpu_sft": "test_distill_chain",
    "r1zero-eval model.name=runs/distill-cpu/sft task=arithmetic_chat temperature=0 n=1 k=[1] max_new_tokens=32": (
        "test_distill_eval"
    ),
    "r1zero-train model.name=runs/distill-cpu/sft/final_model run_dir=runs/after-sft": "test_distill_chain",
    "r1zero-sample model.name=runs/my-run task=countdown n=8 rules.max_per_prompt=2 out_dir=runs/sample/countdown": (
        "test_distill_sample_countdown"
    ),
    "bash scripts/gpu_smoke.sh": (
        NOT_HERE
        + "a GPU box's check (the small model, 256-token samples); --quick runs the same steps on CPU: "
        "tests/integration/test_gpu_smoke.py"
    ),
    "bash scripts/distill_cpu_demo.sh runs/arithmetic-smollm2-135m-seed0": (
        NOT_HERE
        + "its stages, on SmolLM2 (~12 min: README's measured table); each stage runs in test_distill_chain"
    ),
    "r1zero-bench": "test_bench",
    "r1zero-bench --models small": "test_bench",
    "r1zero-bench --learning": "test_bench_learning",
    "r1zero-bench --learning --seeds 0,1,2,3": "test_bench_learning_seeds",
    "r1zero-train experiment=cpu_default_full": "test_train_cpu_default_full",
    "r1zero-train experiment=countdown_qwen2.5_7b_lora": (
        NOT_HERE + "a GPU recipe (7B); each recipe runs a step on tiny in test_experiments_smoke.py"
    ),
    "r1zero-train experiment=countdown_qwen2.5_3b": (
        NOT_HERE + "a GPU recipe (Qwen2.5-3B); each recipe runs a step on tiny in test_experiments_smoke.py"
    ),
    "torchrun --nproc_per_node 8 -m r1zero.train experiment=countdown_qwen2.5_3b rollout.prompts_per_step=64": (
        NOT_HERE + "8 GPUs; torchrun with 2 CPU processes: tests/distributed/test_multiprocess.py"
    ),
    (
        "torchrun --nnodes 2 --nproc_per_node 8 --rdzv-backend c10d --rdzv-endpoint HOST:29500 --rdzv-id myrun "
        "-m r1zero.train experiment=math_qwen2.5_7b"
    ): NOT_HERE + "2 GPU nodes; 2 torchrun nodes on CPU: tests/distributed/test_multiprocess.py",
    "sbatch --nodes 2 scripts/slurm/train.sbatch experiment=math_qwen2.5_7b": NOT_HERE + _SLURM,
    DISAGGREGATED_CPU: "test_disaggregated_cpu",
    (
        "torchrun --nproc_per_node 8 -m r1zero.train experiment=countdown_qwen2.5_3b learner=zero3 "
        "roles.mode=disaggregated roles.rollout_workers=2 rollout.tensor_parallel_size=2 "
        "rollout.prompts_per_step=60"
    ): NOT_HERE
    + "8 GPUs; learner + worker on CPU: test_disaggregated_cpu, tests/distributed/test_disaggregated.py",
    (
        "r1zero-train -m hydra/launcher=slurm hydra.launcher.partition=gpu hydra.launcher.nodes=2 "
        "experiment=countdown_qwen2.5_3b seed=0,1,2"
    ): NOT_HERE + _SLURM,
    (
        'docker run --rm --gpus all --ipc=host -v "$PWD/runs:/workspace/r1zero/runs" r1zero:gpu torchrun '
        "--nproc_per_node 8 -m r1zero.train experiment=countdown_qwen2.5_3b"
    ): NOT_HERE + "no Docker engine or GPU; the Dockerfiles are checked in tests/distributed/test_docker.py",
    'docker run --rm -v "$PWD/runs:/workspace/r1zero/runs" r1zero:cpu r1zero-train model=tiny steps=5': (
        NOT_HERE + "no Docker engine; the image installs with scripts/setup.sh (test_setup_isolation.py)"
    ),
}


_INVOKES = re.compile(r"r1zero-[a-z]+|r1zero\.train|scripts/[a-z_]+\.sh|train\.sbatch")
_INLINE_COMMAND = re.compile(r"^(bash scripts/[a-z_]+\.sh|\.venv/bin/r1zero-[a-z]+|r1zero-[a-z]+ \S)")


def _normalise(command: str) -> str:
    """Whitespace collapsed, quotes resolved as the shell does, the `.venv/bin/` of a console script dropped."""
    with contextlib.suppress(ValueError):
        command = " ".join(shlex.split(command)) if "$PWD" not in command else command
    return re.sub(r"(^|\s)\.venv/bin/(r1zero-)", r"\1\2", " ".join(command.split()))


def documented_commands(readme: str) -> dict[str, bool]:
    """The commands the README shows -> whether they are lines of a transcript ("$ cmd"): lines of fenced code
    blocks (continuations joined, comments dropped) and inline code spans that run something (`bash
    scripts/train.sh ...`, `.venv/bin/r1zero-x ...`, `r1zero-x ARGS`; a bare `r1zero-eval` in prose names the
    tool)."""
    found: dict[str, bool] = {}
    for block in re.findall(r"```[a-z]*\n(.*?)```", readme, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            transcript = line.startswith("$ ")
            command = line.removeprefix("$ ").split(" #")[0].strip()
            if command.startswith("#"):
                continue
            if _INVOKES.search(command) and not command.startswith(("docker build", "/")):
                found[_normalise(command)] = transcript
    prose = re.sub(r"```.*?```", "", readme, flags=re.S)
    for span in re.findall(r"`([^`\n]+)`", prose):
        if _INLINE_COMMAND.match(span):
            found[_normalise(span)] = False
    return found


def test_documented_commands_parser() -> None:
    readme = (
        "Run `bash scripts/train.sh` or `.venv/bin/r1zero-train` (`r1zero-eval` names the tool), then\n"
        "`r1zero-report runs/x`.\n```bash\n.venv/bin/r1zero-eval model.name=a \\\n    n=8   # comment\n"
        'docker build -t r1zero:gpu .\nls\n```\n```\n$ .venv/bin/r1zero-export /tmp/r --chat "Hi there"\n'
        "/tmp/r/gguf/r-F16.gguf  F16\n```\n"
    )
    assert documented_commands(readme) == {
        "bash scripts/train.sh": False, "r1zero-train": False, "r1zero-report runs/x": False,
        "r1zero-eval model.name=a n=8": False, "r1zero-export /tmp/r --chat Hi there": True,
    }  # fmt: skip


def test_every_readme_command_is_accounted_for() -> None:
    documented = documented_commands((ROOT / "README.md").read_text())
    commands = {c for c, transcript in documented.items() if not transcript}
    assert commands - COVERAGE.keys() == set(), "README commands without a test or a reason in COVERAGE"
    assert COVERAGE.keys() - commands == set(), "COVERAGE lists commands the README no longer shows"
    tests = {name for name in globals() if name.startswith("test_")}
    assert {v for v in COVERAGE.values() if not v.startswith((NOT_HERE, "the test command"))} <= tests
    # Each transcript command is one of the documented tools, run by a test here with other paths.
    for command in (c for c, transcript in documented.items() if transcript):
        tool = command.split()[0]
        assert any(k.split()[0] == tool and not v.startswith(NOT_HERE) for k, v in COVERAGE.items()), command


@pytest.mark.parametrize("task", ["arithmetic_chat", "countdown"])
def test_big_batch_is_more_than_one_pass(task: str) -> None:
    """The step's prompts, built as training builds them, hold more tokens than one vLLM pass."""
    from transformers import AutoTokenizer

    from r1zero.models import build_preset
    from r1zero.rollout.base import tokenize_prompts
    from r1zero.rollout.vllm_engine import CPU_MAX_NUM_BATCHED_TOKENS
    from r1zero_bench.loops import compose_config, step_prompts

    cfg = compose_config(["model=tiny", f"task={task}", *BIG_BATCH])
    tokenizer = AutoTokenizer.from_pretrained(str(build_preset("tiny")))
    prompts = step_prompts(cfg, tokenizer, 1)[0]
    assert len(prompts) == 8 and cfg.rollout.group_size == 8
    # One vLLM request per sample, each carrying its whole prompt.
    tokens = cfg.rollout.group_size * sum(len(ids) for ids in tokenize_prompts(tokenizer, prompts))
    assert tokens > CPU_MAX_NUM_BATCHED_TOKENS


# ---------------------------------------------------------------------------------------------- running them


def _run(argv: list[str], log: Path, timeout: float = 900) -> str:
    """Run a README command from the repository root; fail with its output's tail if it fails."""
    from conftest import LAUNCHER_VARS

    env = {
        k: v for k, v in os.environ.items() if k not in LAUNCHER_VARS
    }  # a user's shell, not a torchrun rank
    proc = subprocess.run(
        argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    log.write_text(proc.stdout + proc.stderr)
    if proc.returncode != 0:
        pytest.fail(f"{shlex.join(argv)} exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-4000:]}")
    return proc.stdout + proc.stderr


def _command(readme_command: str, *extra: str, paths: dict[str, Path] | None = None) -> list[str]:
    """The README command as an argv (console scripts from this checkout's .venv/bin), its `runs/...` folders
    moved to `paths`, `extra` arguments appended."""
    argv = shlex.split(readme_command)
    if argv[0].startswith("r1zero-"):
        argv[0] = str(BIN / argv[0])
    for old, new in (paths or {}).items():
        argv = [a.replace(old, str(new)) for a in argv]
    return [*argv, *extra]


def _metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`bash scripts/train.sh run_dir=runs/cpu_s0 seed=0`: the CPU default run (arithmetic_chat, greedy eval of
    64 held-out problems before and after), on the tiny model, one step of 8 x 8."""
    work = tmp_path_factory.mktemp("readme")
    run_dir = work / "cpu_s0"
    cmd = _command("bash scripts/train.sh run_dir=runs/cpu_s0 seed=0", *SMALL, paths={"runs/cpu_s0": run_dir})
    _run(cmd, work / "train.log")
    return run_dir


def test_train_sh_cpu_default(cpu_run: Path) -> None:
    assert (ROOT / "scripts/train.sh").read_text().rstrip().endswith('exec .venv/bin/r1zero-train "$@"')
    rows = _metrics(cpu_run)
    assert [r["rollout/num_completions"] for r in rows if "rollout/num_completions" in r] == [64]
    assert [(r["step"], r["eval/num_problems"]) for r in rows if "eval/accuracy" in r] == [
        (0, 64.0),
        (1, 64.0),
    ]
    assert (cpu_run / "final_model" / "config.json").exists()
    assert json.loads((cpu_run / "summary.json").read_text())["steps_done"] == 1
    # LoRA adapters train (the CPU default's since issue #32), the final model is merged, the sync check passes.
    first = next(r for r in rows if "perf/trainable_params" in r)
    assert 0 < first["perf/trainable_params"] < 0.25 * first["perf/total_params"]
    assert first["sync/step_logprob_max_abs_diff"] <= 0.01
    assert (cpu_run / "final_model" / "adapter" / "adapter_config.json").exists()


@pytest.mark.slow
def test_train_cpu_default_full(tmp_path: Path) -> None:
    """The CPU default fine-tuning every weight (no adapters), on the tiny model. Slow (~17 s, out of CI since
    issue #33): in CI, test_experiments_smoke.py runs experiment=cpu_default_full one step through the same
    r1zero.train.run, and test_train_sh_cpu_default runs the r1zero-train entry point."""
    run_dir = tmp_path / "full"
    _run(
        _command("r1zero-train experiment=cpu_default_full", *SMALL, f"run_dir={run_dir}"),
        tmp_path / "full.log",
    )
    first = next(r for r in _metrics(run_dir) if "perf/trainable_params" in r)
    assert first["perf/trainable_params"] == first["perf/total_params"]
    assert first["loss/lr"] == 1e-5
    assert (run_dir / "final_model" / "config.json").exists()
    assert not (run_dir / "final_model" / "adapter").exists()


def test_report_and_eval_of_the_run(cpu_run: Path, tmp_path: Path) -> None:
    _run(_command("r1zero-report runs/cpu_s0", paths={"runs/cpu_s0": cpu_run}), tmp_path / "report.log")
    assert (cpu_run / "report" / "report.html").exists()
    # The README's eval example as written (64 problems x 8 samples = 512 seeded requests, ~41k prompt tokens),
    # 32 new tokens instead of 256.
    readme = "r1zero-eval model.name=runs/arithmetic-smollm2-135m-seed0 task=arithmetic_chat n=8 k=[1,4,8]"
    out_dir = tmp_path / "eval"
    paths = {"runs/arithmetic-smollm2-135m-seed0": cpu_run}
    _run(_command(readme, "max_new_tokens=32", f"out_dir={out_dir}", paths=paths), tmp_path / "eval.log")
    metrics = json.loads((out_dir / "results.json").read_text())["metrics"]
    assert metrics["eval/num_problems"] == 64 and metrics["eval/n"] == 8
    assert {"eval/pass@1", "eval/pass@4", "eval/pass@8", "eval/maj@8"} <= metrics.keys()
    records = [json.loads(x) for x in (out_dir / "completions.jsonl").read_text().splitlines()]
    assert len(records) == 64 and all(len(r["samples"]) == 8 for r in records)


def test_export_of_the_run(cpu_run: Path, tmp_path: Path) -> None:
    """Both export commands as written on the run: F16 + Q8_0 by default, then Q4_0 with a first reply from
    llama.cpp (the tiny model's reply is noise; that it comes back through the chat template is the point)."""
    pytest.importorskip("xllamacpp")
    paths = {"runs/cpu_s0": cpu_run}
    _run(_command("r1zero-export runs/cpu_s0", paths=paths), tmp_path / "export.log")
    gguf = cpu_run / "gguf"
    assert {p.name for p in gguf.iterdir()} >= {"cpu_s0-F16.gguf", "cpu_s0-Q8_0.gguf", "README.md"}
    readme = 'r1zero-export runs/cpu_s0 --type q4_0 --chat "What is 41 + 27?"'
    out = _run(_command(readme, paths=paths), tmp_path / "chat.log")
    assert (gguf / "cpu_s0-Q4_0.gguf").stat().st_size > 0
    assert re.search(r"\[cpu_s0-Q4_0\.gguf\] 'What is 41 \+ 27\?' -> ", out), out[-2000:]


@pytest.mark.slow
def test_train_sh_tiny_countdown(tmp_path: Path) -> None:
    """Slow (~24 s, out of CI since issue #33): in CI, test_train_sh_cpu_default runs scripts/train.sh, and the
    tiny model on countdown trains in most of tests/distributed (dist_helpers.TINY) and in test_train_loop.py."""
    run_dir = tmp_path / "run"
    readme = "bash scripts/train.sh model=tiny task=countdown steps=5"
    _run(_command(readme, "steps=2", *BIG_BATCH, "task.num_eval=16", f"run_dir={run_dir}"), tmp_path / "log")
    rows = _metrics(run_dir)
    assert [r["rollout/num_completions"] for r in rows if "rollout/num_completions" in r] == [64, 64]


def test_local_launcher_sweep(tmp_path: Path) -> None:
    readme = "r1zero-train -m hydra/launcher=local model=tiny steps=2 seed=0,1"
    sweep = tmp_path / "sweep"
    extra = ("steps=1", *BIG_BATCH, "task.num_eval=8", f"hydra.sweep.dir={sweep}")
    _run(_command(readme, *extra), tmp_path / "log")
    for job in ("0", "1"):  # one run directory per job: the sweep folder's job number
        rows = _metrics(sweep / job)
        assert [r["rollout/num_completions"] for r in rows if "rollout/num_completions" in r] == [64]
        assert json.loads((sweep / job / "summary.json").read_text())["steps_done"] == 1
    assert len(list((sweep / ".submitit").glob("*/*_result.pkl"))) == 2, (
        "the jobs did not run through submitit"
    )


# Every rejection rule off: the random-init tiny model is never right, and the chain needs rows to train on.
KEEP_ALL = (
    "rules.require_correct=false", "rules.require_format=false", "rules.dedupe=false", "rules.drop_truncated=false"
)  # fmt: skip


@pytest.fixture(scope="module")
def distilled(cpu_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The README's first two distillation commands, the tiny CPU default run as the teacher: sample (16 problems
    x 8 samples: 128 seeded requests of ~80 prompt tokens, beyond one vLLM pass), then SFT 2 steps of the tiny
    student. Returns the README's paths: runs/distill-cpu (sample/, sft/), runs/after-sft (not yet written)."""
    tmp = tmp_path_factory.mktemp("distill")
    out = {"runs/distill-cpu": tmp / "distill-cpu", "runs/after-sft": tmp / "after-sft"}
    teacher = f"model.name={cpu_run}"
    sample = _command(
        "r1zero-sample experiment=distill/cpu_sample", teacher, "num_problems=16", "n=8", *KEEP_ALL
    )
    _run([*sample, f"out_dir={out['runs/distill-cpu']}/sample"], tmp / "sample.log")
    summary = json.loads((out["runs/distill-cpu"] / "sample" / "summary.json").read_text())
    assert (summary["candidates"], summary["kept"]) == (128, 16)  # rules.max_per_prompt=1, 16 problems
    sft = _command("r1zero-sft experiment=distill/cpu_sft", "model.name=tiny", "steps=2", "batch_size=4")
    _run(
        [
            *sft,
            f"data_path={out['runs/distill-cpu']}/sample/train.jsonl",
            f"run_dir={out['runs/distill-cpu']}/sft",
        ],
        tmp / "sft.log",
    )
    assert (out["runs/distill-cpu"] / "sft" / "final_model" / "config.json").exists()
    return out


def test_distill_chain(distilled: dict[str, Path], tmp_path: Path) -> None:
    """The README's distillation chain: sample and SFT (the `distilled` fixture), then RL from the SFT run's
    final_model."""
    readme = "r1zero-train model.name=runs/distill-cpu/sft/final_model run_dir=runs/after-sft"
    _run(_command(readme, "steps=1", *BIG_BATCH, "task.num_eval=8", paths=distilled), tmp_path / "rl.log")
    assert json.loads((distilled["runs/after-sft"] / "summary.json").read_text())["steps_done"] == 1


@pytest.mark.slow
def test_distill_eval(distilled: dict[str, Path], tmp_path: Path) -> None:
    """The README's eval of the SFT run. Slow (~12 s, out of CI since issue #33): in CI, test_report_and_eval_of_
    the_run runs r1zero-eval on a run directory (resolved to its final_model, as here), and test_distill_chain
    loads the SFT run's final_model into vLLM and the learner."""
    readme = "r1zero-eval model.name=runs/distill-cpu/sft task=arithmetic_chat temperature=0 n=1 k=[1] max_new_tokens=32"
    _run(_command(readme, f"out_dir={tmp_path / 'eval'}", paths=distilled), tmp_path / "eval.log")
    assert json.loads((tmp_path / "eval" / "results.json").read_text())["metrics"]["eval/num_problems"] == 64


@pytest.mark.slow
def test_distill_sample_countdown(cpu_run: Path, tmp_path: Path) -> None:
    """The README's free-form sample command. Slow (~8 s, out of CI since issue #33): test_distill_chain runs
    r1zero-sample in CI, and tests/unit/test_distill_rules.py the per-prompt cap."""
    readme = "r1zero-sample model.name=runs/my-run task=countdown n=8 rules.max_per_prompt=2 out_dir=runs/sample/countdown"
    paths = {"runs/my-run": cpu_run, "runs/sample/countdown": tmp_path / "countdown"}
    _run(
        _command(readme, "num_problems=4", "max_new_tokens=8", *KEEP_ALL, paths=paths),
        tmp_path / "countdown.log",
    )
    assert (
        json.loads((tmp_path / "countdown" / "summary.json").read_text())["kept"] == 8
    )  # 2 of 8 per problem


def test_bench(tmp_path: Path) -> None:
    """`r1zero-bench` and `r1zero-bench --models small`, shrunk: the tiny model, fp32, one round of one timed
    step after one warm-up, no TRL peer or memory probe, at 8 x 8 (its rollout probe seeds every request)."""
    extra = ["--models", "tiny", "--precisions", "fp32", "--rounds", "1", "--warmup", "1", "--reps", "1"]
    extra += ["--skip-trl", "--skip-memory", "--retries", "0", "--out", str(tmp_path / "bench.json")]
    extra += ["--workdir", str(tmp_path / "work")]
    for override in BIG_BATCH:
        extra += ["--override", override]
    _run(_command("r1zero-bench", *extra), tmp_path / "log")
    tiny = json.loads((tmp_path / "bench.json").read_text())["models"]["tiny"]
    # The bench records a failed measurement and goes on: each must have succeeded.
    for part in ("r1zero", "components"):
        assert tiny[part]["ok"], f"{part}: {tiny[part].get('error')}"


def _shrunk_learning(tmp_path: Path, steps: int) -> list[str]:
    """`r1zero-bench --learning` arguments that keep its workers small: the tiny model, `steps` r1zero steps, 8
    held-out problems, no retries; results in tmp_path/bench.json, worker logs in tmp_path/work."""
    return [
        "--learning-steps", str(steps), "--retries", "0", "--out", str(tmp_path / "bench.json"),
        "--workdir", str(tmp_path / "work"), "--override", "model=tiny", "--override", "task.num_eval=8",
    ]  # fmt: skip


def test_bench_learning(tmp_path: Path) -> None:
    """`r1zero-bench --learning`, shrunk: the tiny model, 2 r1zero steps, then TRL for r1zero's training seconds,
    then the base model and both trained models on the same 8 held-out problems."""
    out = _run(_command("r1zero-bench", "--learning", *_shrunk_learning(tmp_path, steps=2)), tmp_path / "log")
    result = json.loads((tmp_path / "bench.json").read_text())["learning"]
    for part in ("r1zero", "trl", "base", "r1zero_eval", "trl_eval"):
        assert result[part]["ok"], f"{part}: {result[part].get('error')}"
    r1, trl = result["r1zero"], result["trl"]
    assert r1["steps"] == 2 and r1["train_s"] > 0
    assert (
        trl["steps"] >= 1 and trl["train_s"] >= r1["train_s"]
    )  # TRL stops at the first step end past the budget
    assert all(result[p]["problems"] == 8 for p in ("base", "r1zero_eval", "trl_eval"))
    assert "| r1zero | " in out and "| trl | " in out and "x TRL's time" in out


@pytest.mark.slow
def test_bench_learning_seeds(tmp_path: Path) -> None:
    """`r1zero-bench --learning --seeds 0,1,2,3`, shrunk to two seeds of test_bench_learning's size (~3 min: slow,
    out of CI; test_bench_learning runs the same workers and tests/unit/test_bench.py the per-seed path)."""
    argv = _command("r1zero-bench --learning --seeds 0,1,2,3", *_shrunk_learning(tmp_path, steps=1))
    argv[argv.index("0,1,2,3")] = "0,1"
    out = _run(argv, tmp_path / "log")
    per_seed = json.loads((tmp_path / "bench.json").read_text())["learning"]["per_seed"]
    assert list(per_seed) == ["0", "1"]
    for seed, result in per_seed.items():
        for part in ("r1zero", "trl", "base", "r1zero_eval", "trl_eval"):
            assert result[part]["ok"], f"seed {seed}, {part}: {result[part].get('error')}"
        assert result["overrides"][-1] == f"seed={seed}" and result["r1zero"]["steps"] == 1
    assert "seed 0:" in out and "seed 1:" in out and "| mean ± SE of 2 |" in out


@pytest.mark.slow
def test_disaggregated_cpu(tmp_path: Path) -> None:
    """The README's learner + rollout worker command (max_staleness 1 by default) on the tiny model, 2 steps of
    8 x 8: the first on-policy, the second sampled while the first trained (one version behind). Slow (~16 s, out
    of CI since issue #33): in CI, tests/distributed/test_disaggregated.py's Ctrl-C test launches the same
    two-process torchrun of r1zero.train (roles.mode=disaggregated, one rollout worker, max_staleness 1,
    cpu_threads=1) and checks the same lags, first step on-policy and every later one a version behind."""
    argv = shlex.split(DISAGGREGATED_CPU)
    assert argv[0] == "torchrun"
    argv = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]  # this checkout's torchrun
    run_dir = tmp_path / "run"
    _run([*argv, "model=tiny", "steps=2", *BIG_BATCH, "eval.at_start_and_end=false", f"run_dir={run_dir}"],
         tmp_path / "train.log")  # fmt: skip
    rows = [r for r in _metrics(run_dir) if "rollout/num_completions" in r]
    assert [r["rollout/num_completions"] for r in rows] == [64, 64]
    assert [r["rollout/policy_version_lag_max"] for r in rows] == [0.0, 1.0]
    assert json.loads((run_dir / "summary.json").read_text())["steps_done"] == 2
