"""Tasks: data rows -> Example (question, gold answer, reward metadata) -> Prompt (template applied)."""

from r1zero.tasks.registry import LOADERS, TASKS, assert_disjoint, load_examples
from r1zero.tasks.templates import TEMPLATES, build_prompt

__all__ = ["LOADERS", "TASKS", "TEMPLATES", "assert_disjoint", "build_prompt", "load_examples"]
