"""One measurement in a fresh process: `python -m r1zero_bench.worker SPEC.json OUT.json`.

A fresh process per measurement keeps them apart (vLLM and DeepSpeed hold process-wide state; TRL's own vLLM
attempt may leave it broken) and makes peak RSS per measurement meaningful. SPEC: {"kind": ..., kwargs}.
"""

from __future__ import annotations

import json
import sys
import traceback
from typing import Any


def failure(exc: BaseException) -> dict[str, Any]:
    """What a failed measurement reports (its stack trace goes to the log): {"ok": False, "error": "Type: message"},
    the message's last 2,000 characters."""
    traceback.print_exc()
    return {"ok": False, "error": f"{type(exc).__name__}: {exc}"[-2000:]}


def run_spec(spec: dict[str, Any]) -> dict[str, Any]:
    from r1zero_bench import components, learning, loops

    kind = spec.pop("kind")
    workers = {
        "r1zero_loop": loops.r1zero_loop,
        "trl_loop": loops.trl_loop,
        "components": components.components,
        "logprob_memory": components.logprob_memory,
        "r1zero_learning": learning.r1zero_learning,
        "trl_learning": learning.trl_learning,
        "held_out": learning.held_out,
    }
    if kind not in workers:
        raise ValueError(f"unknown bench worker {kind!r}; known: {sorted(workers)}")
    return workers[kind](**spec)  # type: ignore[operator]


def main(argv: list[str] | None = None) -> int:
    from r1zero.env import setup_environment

    setup_environment()
    spec_path, out_path = (argv if argv is not None else sys.argv[1:])[:2]
    with open(spec_path) as f:
        spec = json.load(f)
    try:
        result: dict[str, Any] = {"ok": True, **run_spec(spec)}
    except Exception as exc:  # reported in the results, the benchmark goes on with the other measurements
        result = failure(exc)
    with open(out_path, "w") as f:
        json.dump(result, f)
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
