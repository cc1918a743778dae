"""Each checkout runs its own code (issue 17): two clones set up one after the other (a developer's tree, then a CI
clone) share the cached dependency layer, yet each clone's ./.venv/bin commands load that clone's r1zero and
conf/, setting either up again leaves the other alone, and deleting one clone leaves the other working. The cached layer exists already (this suite runs after scripts/setup.sh), so each setup here only
builds the thin per-checkout layer: seconds."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _clone(dest: Path, steps: int) -> Path:
    """A copy of this working tree's tracked files (uncommitted edits included), with the CPU default's `steps`
    changed so that the two clones differ in one config default."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    experiment = dest / "conf/experiment/cpu_default.yaml"
    text = experiment.read_text()
    assert "\nsteps: 60\n" in text
    experiment.write_text(text.replace("\nsteps: 60\n", f"\nsteps: {steps}\n"))
    return dest


def _env() -> dict[str, str]:
    # No PYTHONPATH (this test process may have one) and no venv of ours activated: a user's plain shell.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if ".venv" not in p)
    return env


def _setup(clone: Path) -> None:
    subprocess.run(["bash", "scripts/setup.sh"], cwd=clone, env=_env(), check=True, capture_output=True)


def _configured_steps(clone: Path, cwd: Path) -> int:
    """`r1zero-train --cfg job` from this clone's .venv, run from another folder: which conf/ did it read?"""
    out = subprocess.run(
        [str(clone / ".venv/bin/r1zero-train"), "--cfg", "job"],
        cwd=cwd, env=_env(), check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    lines = [line for line in out.splitlines() if line.startswith("steps:")]
    assert len(lines) == 1, out
    return int(lines[0].split(":")[1])


def _imported_from(clone: Path, cwd: Path) -> Path:
    """Where this clone's interpreter finds `r1zero`, with the current
    directory removed from sys.path."""
    code = "import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; import r1zero; print(r1zero.__file__)"
    out = subprocess.run(
        [str(clone / ".venv/bin/python"), "-c", code],
        cwd=cwd, env=_env(), check=True, capture_output=True, text=True,
    ).stdout  # fmt: skip
    return Path(out.strip().splitlines()[-1]).resolve()


def _tool_interpreter(clone: Path, tool: str) -> str:
    first = (clone / ".venv/bin" / tool).read_text(errors="replace").splitlines()[0]
    return first.removeprefix("#!")


@pytest.mark.skipif(sys.platform != "linux", reason="setup.sh targets Linux")
def test_two_clones_each_run_their_own_code(tmp_path: Path) -> None:
    a = _clone(tmp_path / "a", steps=11)
    b = _clone(tmp_path / "b", steps=22)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    _setup(a)
    assert _configured_steps(a, elsewhere) == 11
    _setup(b)  # the second setup must not change what clone a runs
    assert _configured_steps(a, elsewhere) == 11
    assert _configured_steps(b, elsewhere) == 22
    _setup(a)  # re-running setup in a developer's tree (a) leaves a CI clone set up after it (b) alone
    assert _configured_steps(b, elsewhere) == 22
    assert _configured_steps(a, elsewhere) == 11
    assert _imported_from(a, elsewhere) == (a / "r1zero/__init__.py").resolve()
    assert _imported_from(b, elsewhere) == (b / "r1zero/__init__.py").resolve()
    # The tools the tests call run on the clone's own interpreter, not the shared layer's.
    for tool in ("pytest", "mypy", "torchrun"):
        assert _tool_interpreter(a, tool) == str(a / ".venv/bin/python"), tool
    # Both clones share the cached dependency layer; neither holds a copy of it.
    assert (a / ".venv/.r1zero-shared").read_text() == (b / ".venv/.r1zero-shared").read_text()
    assert not (a / ".venv").is_symlink()

    shutil.rmtree(b)  # deleting a clone leaves the other one working
    assert _configured_steps(a, elsewhere) == 11
    assert _imported_from(a, elsewhere) == (a / "r1zero/__init__.py").resolve()
