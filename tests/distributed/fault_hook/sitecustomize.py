"""The fault hook of tests/distributed: R1ZERO_FAULT=RANK:PHASE:STEP[:hang] makes rank RANK, on entering PHASE at
STEP, exit at once with status 1 (`os._exit`: no cleanup, like a crash or an OOM kill) or, with `:hang`, sleep
forever (a hung rank, which a SIGTERM ends). The tests check that the other ranks then fail within dist.timeout_s.

Python imports this module at start-up in every process the tests launch (dist_helpers.child_env puts its folder
first on PYTHONPATH). It imports nothing of r1zero, so that the run still sets up its environment before torch
loads; it wraps `r1zero.distributed.phase` when that module is first imported, before any other module takes
the name.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

FAULT_ENV = "R1ZERO_FAULT"


def fault(phase_name: str, step: int, rank: int, environ: Mapping[str, str]) -> str | None:
    """What rank `rank` does on entering `phase_name` at `step`: "exit", "hang" or None (nothing asked here).

    Example: R1ZERO_FAULT="1:learner:2:hang" -> ("learner", 2, rank 1) "hang"; rank 0, or step 3, None."""
    spec = environ.get(FAULT_ENV)
    if not spec:
        return None
    parts = spec.split(":")
    if len(parts) not in (3, 4) or parts[1] != phase_name or int(parts[0]) != rank or int(parts[2]) != step:
        return None
    return "hang" if parts[3:] == ["hang"] else "exit"


def wrap_phase(distributed: Any) -> None:
    """Make `distributed.phase` act on R1ZERO_FAULT before it enters a phase. RANK in R1ZERO_FAULT is the
    launcher's: roles (r1zero.roles) name a process with set_identity just before they give it a rank in its
    role's own world, so the rank at that moment is kept."""
    original, original_identity = distributed.phase, distributed.set_identity
    launched: list[int] = []

    def set_identity(name: str) -> None:
        launched[:] = [distributed.rank()]
        original_identity(name)

    @contextlib.contextmanager
    def phase(name: str, step: int) -> Iterator[None]:
        action = fault(name, step, launched[0] if launched else distributed.rank(), os.environ)
        if action is not None:
            logging.getLogger(distributed.__name__).error(
                "%s=%s: %s %s in phase %s at step %d", FAULT_ENV, os.environ[FAULT_ENV],
                distributed.rank_name(), "hangs" if action == "hang" else "exits", name, step,
            )  # fmt: skip
            if action == "hang" and threading.current_thread() is threading.main_thread():
                # The launcher's SIGTERM ends the hung rank at once. A rank hung inside a C call would ignore it
                # too, as it ignores r1zero's graceful-stop handler, and torchrun would kill it 30 s later: the
                # tests check the other ranks' failure, not torchrun's grace period.
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
            while action == "hang":
                time.sleep(3600)
            os._exit(1)
        with original(name, step):
            yield

    distributed.phase, distributed.set_identity = phase, set_identity


class _WrapOnImport(importlib.abc.MetaPathFinder):
    """Finds r1zero.distributed as Python would, and wraps its `phase` once the module has run."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if name != "r1zero.distributed":
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = spec.loader if spec is not None else None
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            wrap_phase(module)

        loader.exec_module = exec_module  # type: ignore[method-assign]
        return spec


if os.environ.get(FAULT_ENV):
    sys.meta_path.insert(0, _WrapOnImport())
