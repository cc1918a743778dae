"""File and hub loaders: formats, gold extraction, and errors that name the file and the row."""

import json
import sys
import types
from pathlib import Path

import pytest

from r1zero.tasks.gsm8k import extract_gsm8k_answer
from r1zero.tasks.math import extract_math_answer
from r1zero.tasks.registry import load_examples


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_countdown_jsonl(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "cd.jsonl", [{"nums": [44, 19, 35], "target": 98}, {"nums": [1, 2], "target": 3}]
    )
    examples = load_examples("countdown", split="train", n=None, seed=0, path=str(path))
    assert [ex.meta for ex in examples] == [
        {"numbers": [44, 19, 35], "target": 98},
        {"numbers": [1, 2], "target": 3},
    ]
    assert examples[0].answer == "98" and examples[0].uid == "countdown/cd.jsonl#1"
    assert examples[0].question.startswith(
        "Using the numbers [44, 19, 35], create an equation that equals 98."
    )


def test_countdown_parquet(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "cd.parquet"
    pq.write_table(pa.table({"nums": [[44, 19, 35], [1, 2, 3, 4]], "target": [98, 10]}), path)
    examples = load_examples("countdown", split="train", n=None, seed=0, path=str(path))
    assert [ex.meta["numbers"] for ex in examples] == [[44, 19, 35], [1, 2, 3, 4]]
    assert [ex.meta["target"] for ex in examples] == [98, 10]


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [
        ('{"nums": [1, 2], "target": ', "invalid JSON"),
        ({"nums": [1, 2]}, "missing field 'target'"),
        ({"nums": [1, 2], "target": "3"}, "must be an integer"),
        ({"nums": [1, "2"], "target": 3}, "must hold integers"),
        ({"nums": 12, "target": 3}, "non-empty list"),
        ([1, 2, 3], "expected a JSON object"),
    ],
)
def test_countdown_bad_row_names_file_and_row(tmp_path: Path, bad_row, message: str) -> None:
    # Row 1 is good, row 2 is blank (skipped but counted as a line), row 3 is bad.
    path = tmp_path / "broken.jsonl"
    path.write_text(
        json.dumps({"nums": [1, 2], "target": 3})
        + "\n\n"
        + (bad_row if isinstance(bad_row, str) else json.dumps(bad_row))
        + "\n"
    )
    with pytest.raises(ValueError, match=message) as info:
        load_examples("countdown", split="train", n=None, seed=0, path=str(path))
    assert "broken.jsonl" in str(info.value) and "row 3" in str(info.value)


def test_json_array_file_and_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "cd.json"
    path.write_text(json.dumps([{"nums": [1, 2], "target": 3}, {"nums": [1], "target": None}]))
    with pytest.raises(ValueError, match=r"cd\.json: row 2: .*must be an integer"):
        load_examples("countdown", split="train", n=None, seed=0, path=str(path))
    (tmp_path / "cd.csv").write_text("nums,target\n")
    with pytest.raises(ValueError, match="unsupported"):
        load_examples("countdown", split="train", n=None, seed=0, path=str(tmp_path / "cd.csv"))
    with pytest.raises(FileNotFoundError):
        load_examples("countdown", split="train", n=None, seed=0, path=str(tmp_path / "missing.jsonl"))


def test_subsample_is_seeded_and_in_file_order(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "cd.jsonl", [{"nums": [i, 1], "target": i + 1} for i in range(1, 21)])
    a = load_examples("countdown", split="train", n=5, seed=7, path=str(path))
    assert a == load_examples("countdown", split="train", n=5, seed=7, path=str(path))
    rows = [int(ex.uid.rsplit("#", 1)[1]) for ex in a]
    assert len(rows) == 5 and rows == sorted(rows)


@pytest.mark.parametrize(
    ("answer", "gold"),
    [
        ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),
        ("#### 1,000", "1000"),
        ("#### -5", "-5"),
        ("#### $18", "18"),
        ("18", "18"),  # already extracted
    ],
)
def test_gsm8k_answer_extraction(answer: str, gold: str) -> None:
    assert extract_gsm8k_answer(answer) == gold


def test_gsm8k_file_and_bad_rows(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "gsm.jsonl",
        [
            {"question": "Q1?", "answer": "work\n#### 72"},
            {"question": "Q2?", "answer": 5},  # a bare number is accepted
        ],
    )
    examples = load_examples("gsm8k", split="test", n=None, seed=0, path=str(path))
    assert [(ex.question, ex.answer) for ex in examples] == [("Q1?", "72"), ("Q2?", "5")]
    assert examples[0].uid == "gsm8k/gsm.jsonl#1"
    bad = write_jsonl(
        tmp_path / "gsm_bad.jsonl",
        [{"question": "Q1?", "answer": "#### 1"}, {"question": "Q2?", "answer": "#### many"}],
    )
    with pytest.raises(ValueError, match=r"gsm_bad\.jsonl: row 2: answer is not a number"):
        load_examples("gsm8k", split="test", n=None, seed=0, path=str(bad))
    bad = write_jsonl(tmp_path / "gsm_q.jsonl", [{"answer": "#### 1"}])
    with pytest.raises(ValueError, match=r"gsm_q\.jsonl: row 1: missing field 'question'"):
        load_examples("gsm8k", split="test", n=None, seed=0, path=str(bad))


@pytest.mark.parametrize(
    ("solution", "gold"),
    [
        ("So the answer is $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("First \\boxed{1}, finally \\boxed{\\{1, 2\\}}.", "\\{1, 2\\}"),  # the last box, braces balanced
        ("$\\boxed{\\text{(A)}}$", "\\text{(A)}"),
    ],
)
def test_math_answer_extraction(solution: str, gold: str) -> None:
    assert extract_math_answer(solution) == gold


def test_math_file_and_bad_rows(tmp_path: Path) -> None:
    path = write_jsonl(
        tmp_path / "math.jsonl",
        [
            {"problem": "P1", "solution": "so $\\boxed{3}$", "level": "Level 1"},
            {
                "problem": "P2",
                "solution": "long \\boxed{4}",
                "answer": "5",
            },  # an answer field wins over the solution
            {"question": "P3", "answer": "x+1"},
        ],
    )
    examples = load_examples("math", split="test", n=None, seed=0, path=str(path))
    assert [(ex.question, ex.answer) for ex in examples] == [("P1", "3"), ("P2", "5"), ("P3", "x+1")]
    assert examples[0].meta == {"level": "Level 1"}
    bad = write_jsonl(
        tmp_path / "math_bad.jsonl",
        [{"problem": "P1", "answer": "1"}, {"problem": "P2", "solution": "no box"}],
    )
    with pytest.raises(ValueError, match=r"math_bad\.jsonl: row 2: .*boxed"):
        load_examples("math", split="test", n=None, seed=0, path=str(bad))
    bad = write_jsonl(tmp_path / "math_type.jsonl", [{"problem": 7, "answer": "1"}])
    with pytest.raises(ValueError, match=r"math_type\.jsonl: row 1: .*non-empty string"):
        load_examples("math", split="test", n=None, seed=0, path=str(bad))


def test_hub_path_is_lazy_and_uses_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stand-in `datasets` module: the loader imports it only when no path is given.
    calls = []

    def load_dataset(name, config, split):
        calls.append((name, config, split))
        return [{"question": "Q?", "answer": "so\n#### 12"}]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    examples = load_examples("gsm8k", split="test", n=None, seed=0)
    assert calls == [("openai/gsm8k", "main", "test")]
    assert examples[0].answer == "12"


def test_hub_failure_explains_offline(monkeypatch: pytest.MonkeyPatch) -> None:
    def load_dataset(name, config, split):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(RuntimeError, match="path="):
        load_examples("math", split="test", n=None, seed=0)


def test_tasks_import_without_heavy_packages() -> None:
    import subprocess

    code = (
        "import sys, r1zero.tasks, r1zero.rewards; "
        "heavy = [m for m in ('torch', 'vllm', 'deepspeed', 'wandb', 'datasets', 'math_verify', 'reasoning_gym') "
        "if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
