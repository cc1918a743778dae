"""Issue #33: the loop reads top to bottom as named parts. Every function in train.py, session.py and collect.py,
and Learner.train_step, is at most 60 lines (decorators and docstring included)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "r1zero"
MAX_LINES = 60


def _functions(path: Path) -> dict[str, int]:
    """qualified name -> lines, for every function and method in `path` (nested ones too)."""
    lengths: dict[str, int] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                name = f"{prefix}{child.name}"
                if not isinstance(child, ast.ClassDef):
                    first = min([child.lineno, *(d.lineno for d in child.decorator_list)])
                    lengths[name] = int(child.end_lineno or child.lineno) - first + 1
                visit(child, f"{name}.")

    visit(ast.parse(path.read_text()), "")
    return lengths


def test_the_counter_counts_decorators_and_nested_functions(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "@dec\ndef f():\n    def g():\n        pass\n    return g\n\n\nclass C:\n    def m(self):\n        pass\n"
    )
    assert _functions(source) == {"f": 5, "f.g": 2, "C.m": 2}


@pytest.mark.parametrize("module", ["train.py", "session.py", "collect.py"])
def test_every_loop_function_is_short(module: str) -> None:
    lengths = _functions(PACKAGE / module)
    assert lengths, module
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}


def test_train_step_is_short() -> None:
    assert _functions(PACKAGE / "learner" / "learner.py")["Learner.train_step"] <= MAX_LINES
