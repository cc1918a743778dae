"""A few long-lived math-verify checker processes with a hard per-call deadline (used by `rewards/math.py`).

Why processes and not threads: math-verify bounds its time with `signal.alarm`, which only works in the main
thread and cannot interrupt C code; a process can always be killed. Why not `concurrent.futures`: a pool cannot kill
one stuck task, and `multiprocessing` spawn re-imports the caller's `__main__`. Each checker is a plain subprocess
speaking JSON lines over pipes (protocol in `_math_worker.py`).

Timing contract of `CheckerPool.check`: the checker gets `timeout_s` for the job; past it the checker is killed, a
replacement starts at once (in the background) and the call returns False. Waiting for a free checker (other
threads are using them all) or for the very first start-up is not counted in `timeout_s`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from pathlib import Path

logger = logging.getLogger(__name__)

_WORKER_CMD = "from r1zero.rewards._math_worker import main; main()"
_PACKAGE_ROOT = str(Path(__file__).resolve().parents[2])


class CheckerDied(RuntimeError):
    """A checker process exited or never became ready."""


class _Checker:
    """One checker process: owned by one thread at a time (the pool hands it out)."""

    def __init__(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_PACKAGE_ROOT, env.get("PYTHONPATH", "")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _WORKER_CMD],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            start_new_session=True,  # no Ctrl-C tracebacks from checkers; they exit when our pipe closes
        )
        self.ready = False
        self._buf = b""
        self._next_id = 0

    def _readline(self, deadline: float) -> dict | None:
        """Next JSON reply, None past the deadline; CheckerDied on EOF."""
        assert self.proc.stdout is not None  # started with stdout=PIPE
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            readable, _, _ = select.select([fd], [], [], remaining)
            if not readable:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                raise CheckerDied(f"checker exited with code {self.proc.poll()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def wait_ready(self, timeout_s: float) -> None:
        if self.ready:
            return
        reply = self._readline(time.monotonic() + timeout_s)
        if reply is None or not reply.get("ready"):
            raise CheckerDied(f"checker not ready after {timeout_s:.0f} s (is math-verify installed?)")
        self.ready = True

    def request(self, pred: str, gold: str, timeout_s: float) -> bool | None:
        """True/False from math-verify; None if no answer within timeout_s (the caller then kills us)."""
        deadline = time.monotonic() + timeout_s
        self._next_id += 1
        # The checker stops itself a little before our deadline, so that it usually survives a slow answer.
        job = {"id": self._next_id, "pred": pred, "gold": gold, "budget": 0.8 * timeout_s}
        assert self.proc.stdin is not None  # started with stdin=PIPE
        try:
            self.proc.stdin.write((json.dumps(job) + "\n").encode())
            self.proc.stdin.flush()
        except OSError as exc:  # BrokenPipeError: it died
            raise CheckerDied(str(exc)) from exc
        while True:
            reply = self._readline(deadline)
            if reply is None:
                return None
            if reply.get("id") == self._next_id:
                return bool(reply.get("ok"))

    def kill(self) -> None:
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(OSError):
                if stream is not None:
                    stream.close()
        if self.proc.poll() is None:
            self.proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):  # else a zombie the OS reaps later
            self.proc.wait(timeout=5)


class CheckerPool:
    """`workers` checker processes shared by all threads of this process; forked children start their own."""

    def __init__(self, workers: int = 2, startup_timeout_s: float = 120.0) -> None:
        self.workers = workers
        self.startup_timeout_s = startup_timeout_s
        self._cond = threading.Condition()
        self._idle: list[_Checker] = []
        self._live = 0
        self._pid = -1
        self._failed_starts = 0
        atexit.register(self.close)

    def _fill(self) -> None:
        """Under the lock: forget a parent's checkers after fork, then spawn up to `workers`."""
        if self._pid != os.getpid():  # the checkers (if any) belong to the parent process: leave them alone
            self._idle, self._live, self._pid = [], 0, os.getpid()
        if self._failed_starts >= 3:
            raise CheckerDied("math-verify checker failed to start 3 times (is math-verify installed?)")
        while self._live < self.workers:
            self._idle.append(_Checker())
            self._live += 1

    def start(self, wait: bool = False) -> None:
        """Spawn missing checkers; with wait=True block until every idle checker is ready."""
        with self._cond:
            self._fill()
            if not wait:
                return
            waiting, self._idle = self._idle, []  # ours while we wait, so no other thread reads their pipes
        for checker in waiting:
            try:
                checker.wait_ready(self.startup_timeout_s)
            except BaseException:
                self._release(checker, healthy=False)
                raise
            self._release(checker, healthy=True)

    def _acquire(self) -> _Checker:
        with self._cond:
            self._fill()
            while not self._idle:
                self._cond.wait()
            ready = [c for c in self._idle if c.ready]
            checker = ready[0] if ready else self._idle[0]
            self._idle.remove(checker)
        return checker

    def _release(self, checker: _Checker, healthy: bool) -> None:
        if not healthy:
            checker.kill()
        with self._cond:
            try:
                if self._pid != os.getpid():
                    return
                if healthy:
                    self._idle.append(checker)
                else:
                    self._live -= 1
                    self._fill()  # replace it now, so that the new one boots while the others serve
            finally:
                self._cond.notify_all()

    def check(self, pred: str, gold: str, timeout_s: float) -> bool:
        """math-verify's `verify(parse(gold), parse(pred))`, False past `timeout_s` (the checker is then killed).

        Raises CheckerDied only if checkers cannot start at all (math-verify missing or broken).
        """
        checker = self._acquire()
        try:
            checker.wait_ready(self.startup_timeout_s)
        except (CheckerDied, ValueError) as exc:
            with self._cond:
                self._failed_starts += 1
            self._release(checker, healthy=False)
            raise CheckerDied(str(exc)) from exc
        except BaseException:  # KeyboardInterrupt etc.: do not leak the checker
            self._release(checker, healthy=False)
            raise
        with self._cond:
            self._failed_starts = 0
        try:
            ok = checker.request(pred, gold, timeout_s)
        except (CheckerDied, ValueError):  # it crashed on this input (e.g. killed by the OS): a wrong answer
            logger.warning("math-verify checker died on an input; restarting it")
            self._release(checker, healthy=False)
            return False
        except BaseException:  # interrupted mid-request: its reply would be out of step, so replace it
            self._release(checker, healthy=False)
            raise
        if ok is None:
            logger.debug("math-verify checker ran past %.2f s; killed and restarted", timeout_s)
        self._release(checker, healthy=ok is not None)
        return bool(ok)

    def close(self) -> None:
        """Stop the idle checkers (all of them when no call is in flight); later calls start new ones."""
        with self._cond:
            if self._pid != os.getpid():
                return
            idle, self._idle = self._idle, []
            self._live -= len(idle)
        for checker in idle:
            checker.kill()
