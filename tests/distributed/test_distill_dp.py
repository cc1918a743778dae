"""r1zero-sample under torchrun: 2 processes split the chunks (chunk c on rank c % 2) and write the same data set
as 1 process, row for row (each problem's samples are seeded by its index, whichever rank draws it)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from dist_helpers import run_checked, torchrun

pytestmark = pytest.mark.distributed

# tiny, 10 problems in chunks of 3 (4 chunks: ranks get 2 each, the last one short), 4 samples each, every rule
# that needs a right answer off (the random-init model is never right) so rows exist to compare.
ARGS = [
    "model=tiny", "task=countdown", "num_problems=10", "chunk_size=3", "n=4", "max_new_tokens=12",
    "rules.require_correct=false", "rules.require_format=false", "rules.drop_truncated=false",
    "rules.max_per_prompt=2",
]  # fmt: skip


def test_two_processes_write_what_one_writes(tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    module = ["-m", "r1zero.distill.sample"]
    run_checked([sys.executable, *module, *ARGS, f"out_dir={one}"], tmp_path / "one.log", timeout=300)
    run_checked([*torchrun("--standalone", "--nproc_per_node", "2"), *module, *ARGS, f"out_dir={two}"],
                tmp_path / "two.log", timeout=300)  # fmt: skip
    rows = {d: (d / "train.jsonl").read_text().splitlines() for d in (one, two)}
    assert len(rows[one]) > 10 and rows[one] == rows[two]
    summaries = [json.loads((d / "summary.json").read_text()) for d in (one, two)]
    for key in ("prompts", "candidates", "kept", "rejected"):
        assert summaries[0][key] == summaries[1][key], key
    assert summaries[0]["prompts"] == 10 and summaries[0]["candidates"] == 40
    assert len(list((two / "chunks").glob("*.stats.json"))) == 4
