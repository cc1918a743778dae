"""The math-verify checker process behind `r1zero.rewards.math.math_reward` (not a public API).

Started as `python -c "from r1zero.rewards._math_worker import main; main()"`. Protocol, one JSON object per line:
    stdout (first line)  {"ready": true}                       once math-verify is imported
    stdin                {"id": 7, "pred": "...", "gold": "...", "budget": 1.2}
    stdout               {"id": 7, "ok": true}   or   {"id": 7, "ok": false, "error": "timeout"}
It exits when stdin closes (the parent died or shut it down).

Here math-verify runs in the main thread of its own process, so a signal timer can interrupt it: one
`setitimer` over parse + verify raises `_JobTimeout`, a BaseException that math-verify's broad `except Exception`
handlers do not swallow. math-verify's own per-call alarms are switched off (None). If a computation is stuck in
C code where no signal handler can run, the parent kills this process at its own deadline; an address-space limit
turns memory bombs into MemoryError instead of swapping the machine.
"""

from __future__ import annotations

import json
import logging
import os
import resource
import signal
import sys
from functools import lru_cache

MEMORY_LIMIT_BYTES = 4 << 30


class _JobTimeout(BaseException):
    """Raised by the interval timer; a BaseException so that math-verify's `except Exception` lets it through."""


def _on_alarm(signum: int, frame: object) -> None:
    raise _JobTimeout()


def _limit_memory() -> None:
    try:
        _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = MEMORY_LIMIT_BYTES if hard == resource.RLIM_INFINITY else min(MEMORY_LIMIT_BYTES, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ValueError, OSError):  # not permitted here: rely on the parent's kill
        pass


def main() -> None:
    # Keep the protocol channel private: anything a library prints goes to stderr, not into our replies.
    channel = os.fdopen(os.dup(sys.stdout.fileno()), "w", buffering=1)
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    _limit_memory()
    logging.basicConfig(level=logging.CRITICAL)
    for name in ("math_verify", "latex2sympy2_extended"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)

    from math_verify import parse, verify

    @lru_cache(maxsize=4096)
    def parse_gold(gold: str) -> list:
        return parse(gold, parsing_timeout=None)

    def check(job: dict) -> bool:
        gold = parse_gold(job["gold"])
        pred = parse(job["pred"], parsing_timeout=None)
        return bool(gold) and bool(pred) and bool(verify(gold, pred, timeout_seconds=None))

    signal.signal(signal.SIGALRM, _on_alarm)
    channel.write(json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        reply: dict[str, object] = {"id": None, "ok": False, "error": "bad job"}
        try:
            try:
                job = json.loads(line)
                reply["id"] = job["id"]
                signal.setitimer(signal.ITIMER_REAL, max(float(job["budget"]), 0.01))
                ok = check(job)
                reply.update(ok=ok, error=None)
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _JobTimeout:  # the one-shot timer fired (possibly just before the disarm above)
            reply["error"] = "timeout"
        except MemoryError:
            reply["error"] = "memory"
        except Exception as exc:  # a math-verify bug or a malformed job: a wrong answer, never a crash
            reply["error"] = type(exc).__name__
        channel.write(json.dumps(reply) + "\n")


if __name__ == "__main__":
    main()
