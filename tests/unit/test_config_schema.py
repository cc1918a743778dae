"""The schema promises only what the code does: every field is read somewhere in r1zero/ (or is named here as
recipe metadata), every field is documented by a comment, and every choice list is its registry's keys.

"Read" is decided statically. A small type tracker follows config objects through r1zero's source: parameters
annotated with a config class (`cfg: RolloutConfig`), names and `self.x` attributes assigned from a typed
expression (`task = cfg.task`, `self.algo = algo`), sections of a typed object (`cfg.rollout`), constructors and
functions annotated to return one (`to_run_config(...)`), and `dataclasses.replace(x, ...)`. A field counts as
read when `.field` is taken of an object of ITS class, so `cfg.seed` on a RunConfig does not count for a
`rollout.seed`. A RunConfig property (e.g. `sync_threshold`) passes on the reads in its body when code outside
config.py reads the property.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from collections.abc import Iterable
from pathlib import Path

import pytest

from r1zero import config as config_module
from r1zero.config import REGISTRY_CHOICES, RunConfig, choices

PACKAGE = Path(config_module.__file__).resolve().parent
CONFIG_FILE = PACKAGE / "config.py"

# Fields no code needs to read, each with the reason (recipe metadata and the like). Keep this short.
NOT_READ_BY_DESIGN: dict[tuple[str, str], str] = {
    ("RunConfig", "experiment"): "recipe metadata: the conf/experiment preset's name, kept in config.yaml",
}


def _sections() -> dict[str, dict[str, str | None]]:
    """Config class name -> {field: nested config class name, or None for a plain value}."""
    out: dict[str, dict[str, str | None]] = {}
    todo = [RunConfig]
    while todo:
        cls = todo.pop()
        fields = {}
        for f in dataclasses.fields(cls):
            nested = getattr(config_module, str(f.type), None)
            is_section = dataclasses.is_dataclass(nested)
            fields[f.name] = str(f.type) if is_section else None
            if is_section:
                todo.append(nested)  # type: ignore[arg-type]
        out[cls.__name__] = fields
    return out


SECTIONS = _sections()


# ---------------------------------------------------------------------------------------------- the scanner


class _Types:
    """Which config class an expression holds, from annotations and assignments (see the module docstring)."""

    def __init__(self, classes: dict[str, dict[str, str | None]], returns: dict[str, str]) -> None:
        self.classes, self.returns = classes, returns

    def from_annotation(self, annotation: ast.expr | None) -> str | None:
        if annotation is None:
            return None
        names = set(re.findall(r"\w+", ast.unparse(annotation)))
        found = [c for c in self.classes if c in names]
        return found[0] if len(found) == 1 else None

    def of(self, node: ast.expr, env: dict[str, str]) -> str | None:
        key = ast.unparse(node)
        if key in env:
            return env[key]
        if isinstance(node, ast.Attribute):
            base = self.of(node.value, env)
            return self.classes.get(base, {}).get(node.attr) if base else None
        if isinstance(node, ast.Call):
            name = node.func.id if isinstance(node.func, ast.Name) else getattr(node.func, "attr", None)
            if name in self.classes:
                return name
            if name == "replace" and node.args:
                return self.of(node.args[0], env)
            return self.returns.get(name or "")
        return None


def _bind_assignments(nodes: Iterable[ast.AST], env: dict[str, str], types: _Types) -> None:
    """Add `name = <typed expr>` and `self.x = <typed expr>` among `nodes` to env (in place)."""
    nodes = list(nodes)
    for _ in range(3):  # a chain of assignments (a = cfg.x; b = a) settles in as many passes
        for node in nodes:
            targets: list[ast.expr] = []
            value: ast.expr | None = None
            if isinstance(node, ast.Assign):
                targets, value = node.targets, node.value
            elif isinstance(node, ast.AnnAssign) and node.value is not None:
                targets, value = [node.target], node.value
            pairs = [(t, value) for t in targets if value is not None]
            for target, val in list(pairs):  # a, b = x, y: element-wise
                if isinstance(target, ast.Tuple) and isinstance(val, ast.Tuple):
                    pairs += list(zip(target.elts, val.elts))
            for target, val in pairs:
                typ = types.of(val, env)
                if typ and isinstance(target, (ast.Name, ast.Attribute)):
                    env[ast.unparse(target)] = typ


def _function_env(
    fn: ast.FunctionDef | ast.AsyncFunctionDef, outer: dict[str, str], types: _Types
) -> dict[str, str]:
    """Typed names inside `fn`: the enclosing ones, its annotated parameters, its assignments."""
    env = dict(outer)
    args = fn.args
    for arg in [*args.posonlyargs, *args.args, *args.kwonlyargs]:
        typ = types.from_annotation(arg.annotation)
        if typ:
            env[arg.arg] = typ
    _bind_assignments(ast.walk(fn), env, types)
    return env


def _reads_in(tree: ast.AST, env: dict[str, str], types: _Types) -> set[tuple[str, str]]:
    reads = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Load):
            base = types.of(node.value, env)
            if base:
                reads.add((base, node.attr))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id == "getattr"
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
        ):
            base = types.of(node.args[0], env)
            if base:
                reads.add((base, str(node.args[1].value)))
    return reads


def _functions(tree: ast.AST) -> Iterable[ast.FunctionDef | ast.AsyncFunctionDef]:
    return (n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))


def scan_reads(sources: dict[str, str], classes: dict[str, dict[str, str | None]]) -> set[tuple[str, str]]:
    """(class, attribute) pairs read in `sources` (file name -> Python source) on objects of config `classes`.

    Other dataclasses whose fields hold config sections (eval's EvalRunConfig: model, task, rollout) are added
    to the known classes, so `cfg.rollout.dtype` counts there too.
    """
    trees = {name: ast.parse(text) for name, text in sources.items()}
    classes = dict(classes)
    for tree in trees.values():
        for node in ast.walk(tree):
            if isinstance(node, ast.ClassDef) and node.name not in classes:
                fields = {
                    s.target.id: ast.unparse(s.annotation)
                    for s in node.body
                    if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)
                }
                nested = {k: v for k, v in fields.items() if v in classes}
                if nested:
                    classes[node.name] = {k: (v if v in classes else None) for k, v in fields.items()}
    types = _Types(classes, {})
    types.returns = {
        fn.name: typ
        for tree in trees.values()
        for fn in _functions(tree)
        if (typ := types.from_annotation(fn.returns))
    }
    reads: set[tuple[str, str]] = set()
    for tree in trees.values():
        module_env: dict[str, str] = {}
        _bind_assignments(tree.body, module_env, types)  # module-level assignments (rare)
        class_envs: dict[int, dict[str, str]] = {}
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            # In a method of a known dataclass (e.g. a Session holding `cfg: RunConfig`), `self` is that class.
            shared: dict[str, str] = {"self": cls.name} if cls.name in classes else {}
            for method in _functions(cls):
                env = _function_env(method, module_env, types)
                shared |= {k: v for k, v in env.items() if k.startswith("self.")}
            for method in _functions(cls):
                class_envs[id(method)] = shared
        for fn in _functions(tree):
            env = _function_env(fn, module_env | class_envs.get(id(fn), {}), types)
            reads |= _reads_in(fn, env, types)
        reads |= _reads_in(tree, module_env, types)
    return reads


def _property_reads(classes: dict[str, dict[str, str | None]]) -> dict[tuple[str, str], set[tuple[str, str]]]:
    """(class, property) -> the field reads in the body of that @property in config.py."""
    tree = ast.parse(CONFIG_FILE.read_text())
    types = _Types(classes, {})
    out = {}
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in classes):
        for fn in cls.body:
            if isinstance(fn, ast.FunctionDef) and any(
                ast.unparse(d) == "property" for d in fn.decorator_list
            ):
                out[(cls.name, fn.name)] = _reads_in(fn, {"self": cls.name}, types)
    return out


def all_reads() -> set[tuple[str, str]]:
    sources = {str(p): p.read_text() for p in sorted(PACKAGE.rglob("*.py")) if p != CONFIG_FILE}
    reads = scan_reads(sources, SECTIONS)
    for prop, inner in _property_reads(SECTIONS).items():
        if prop in reads:
            reads |= inner
    return reads


# ---------------------------------------------------------------------------------------------- the tests


def test_scanner_tells_sections_apart() -> None:
    """The scanner itself: a read counts for the class of the object it is taken from, through the ways code
    reaches a config (annotation, assignment, self attribute, section, constructor, returning function)."""
    source = """
class Engine:
    def __init__(self, cfg: RolloutConfig, seed: int, algo: AlgoConfig) -> None:
        self.cfg = cfg
        self.seed, self.algo = seed, algo
    def go(self):
        return self.cfg.top_k, self.seed, self.algo.clip_high
def build() -> RunConfig: ...
def main(cfg: RunConfig, other):
    rollout = cfg.rollout
    algo = build().algo
    return cfg.seed, rollout.temperature, algo.kl_coef, other.top_p, getattr(cfg.learner, "lr")
"""
    reads = scan_reads({"m.py": source}, SECTIONS)
    assert {
        ("RolloutConfig", "top_k"),
        ("AlgoConfig", "clip_high"),
        ("RunConfig", "seed"),
        ("RolloutConfig", "temperature"),
        ("AlgoConfig", "kl_coef"),
        ("LearnerConfig", "lr"),
    } <= reads
    assert ("RolloutConfig", "seed") not in reads  # self.seed is the engine's own attribute
    assert ("RolloutConfig", "top_p") not in reads  # `other` is not known to be a config


def test_every_schema_field_is_read_in_r1zero() -> None:
    """A field nothing reads is a promise the code does not keep (e.g. the old `rollout.seed`). Fields added
    later pass this test as soon as code reads them."""
    reads = all_reads()
    unread = [
        f"{cls}.{name}"
        for cls, fields in SECTIONS.items()
        for name, nested in fields.items()
        if nested is None and (cls, name) not in reads and (cls, name) not in NOT_READ_BY_DESIGN
    ]
    assert not unread, f"schema fields that no code in r1zero/ reads: {unread}"
    stale = [k for k in NOT_READ_BY_DESIGN if k in reads or k[1] not in SECTIONS.get(k[0], {})]
    assert not stale, f"NOT_READ_BY_DESIGN lists fields that are read or gone: {stale}"


def test_every_field_has_a_comment_above_it() -> None:
    """The module docstring of config.py promises a comment above every field."""
    lines = CONFIG_FILE.read_text().splitlines()
    tree = ast.parse(CONFIG_FILE.read_text())
    missing = []
    for cls in (n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in SECTIONS):
        for stmt in cls.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                above = lines[stmt.lineno - 2].strip()  # lineno counts from 1: the line above
                if not above.startswith("#"):
                    missing.append(f"{cls.name}.{stmt.target.id}")
    assert not missing, f"fields without a comment above them: {missing}"


# Validated choice fields: (section, field) -> how to build the config with one value.
_BUILDERS = {
    section: cls
    for section, cls in [
        ("task", config_module.TaskConfig),
        ("rollout", config_module.RolloutConfig),
        ("algo", config_module.AlgoConfig),
        ("learner", config_module.LearnerConfig),
        ("dist", config_module.DistributedConfig),
    ]
}


def _registry(section: str, name: str) -> dict:
    module, attr = REGISTRY_CHOICES[(section, name)]
    registry = getattr(importlib.import_module(module), attr)
    assert isinstance(registry, dict), f"{module}.{attr} is not a registry dict"
    return registry


@pytest.mark.parametrize(("section", "name"), sorted(REGISTRY_CHOICES))
def test_each_choice_list_is_its_registry(section: str, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    registry = _registry(section, name)
    assert choices(section, name) == tuple(registry)
    build = _BUILDERS[section]
    for value in registry:
        assert getattr(build(**{name: value}), name) == value
    with pytest.raises(ValueError, match=rf"{section}\.{name} must be one of"):
        build(**{name: "no-such-choice"})
    # A value added to the registry is accepted at once; one removed is refused: there is no second list.
    monkeypatch.setitem(registry, "added-in-test", registry[next(iter(registry))])
    assert getattr(build(**{name: "added-in-test"}), name) == "added-in-test"
    first = next(iter(registry))
    module, attr = REGISTRY_CHOICES[(section, name)]
    monkeypatch.setattr(
        importlib.import_module(module), attr, {k: v for k, v in registry.items() if k != first}
    )
    with pytest.raises(ValueError, match=rf"{section}\.{name} must be one of"):
        build(**{name: first})


def test_every_validated_choice_field_is_covered() -> None:
    """Each `_check_choice` in config.py either reads its registry via `choices` or one of the lists kept in
    config.py because no registry exists (the code branches on those values where it uses them)."""
    calls = [
        c
        for c in ast.walk(ast.parse(CONFIG_FILE.read_text()))
        if isinstance(c, ast.Call) and ast.unparse(c.func) == "_check_choice"
    ]
    checked = {
        (ast.literal_eval(c.args[0]), ast.literal_eval(c.args[1]), ast.unparse(c.args[3])) for c in calls
    }
    via_registry = {(s, n) for s, n, allowed in checked if allowed == f"choices({s!r}, {n!r})"}
    assert via_registry == set(REGISTRY_CHOICES)
    own = {allowed for s, n, allowed in checked if (s, n) not in via_registry}
    assert own == {"OLD_LOGPROB_SOURCES", "LEARNER_BACKENDS", "DIST_BACKENDS", "ROLE_MODES"}
