"""Reading a vLLM source tree without importing it, for tests/unit/vllm_api.py.

`VllmSource` takes an installed `vllm` package folder or a wheel (its .py members read from the zip) and answers,
with Python's `ast`: what a dotted name means (following re-exports, also those under TYPE_CHECKING), what a
class has (methods, fields, `self.x = ...` in any method, inherited ones), and whether a call's keywords are
accepted (directly, as dataclass / msgspec fields, or passed on from **kwargs to a callee that takes them, the way
`LLM(**kw)` forwards to `EngineArgs`). It reads vLLM the way a reviewer would, not the way Python runs it: names
built at run time (getattr, registries) are invisible to it.
"""

from __future__ import annotations

import ast
import zipfile
from dataclasses import dataclass
from pathlib import Path

_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


@dataclass(frozen=True)
class Def:
    """A definition found in the source: kind "module" | "class" | "function" | "value" (an assignment)."""

    kind: str
    module: str
    node: ast.AST
    owner: ast.ClassDef | None = None  # the class of a method, or of a `self.x = ...` assignment


def _statements(body: list[ast.stmt]) -> list[ast.stmt]:
    """The statements of a module or class body, with those inside if / try / with blocks (not functions)."""
    out: list[ast.stmt] = []
    for node in body:
        out.append(node)
        blocks: list[list[ast.stmt]] = []
        if isinstance(node, ast.If | ast.For | ast.While):
            blocks = [node.body, node.orelse]
        elif isinstance(node, ast.With):
            blocks = [node.body]
        elif isinstance(node, ast.Try):
            blocks = [node.body, *(h.body for h in node.handlers), node.orelse, node.finalbody]
        for block in blocks:
            out += _statements(block)
    return out


def _binds(node: ast.stmt, name: str) -> bool:
    """Whether an assignment statement binds the plain name `name`."""
    targets = node.targets if isinstance(node, ast.Assign) else [node.target]  # type: ignore[attr-defined]
    return any(isinstance(t, ast.Name) and t.id == name for t in targets)


class VllmSource:
    """A vLLM source read without importing it: an installed `vllm` package folder (or the folder holding it),
    or a wheel, whose .py members are read from the zip."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._zip = zipfile.ZipFile(self.path) if self.path.suffix == ".whl" else None
        self._root = self.path.parent if self.path.name == "vllm" else self.path
        self._modules: dict[str, tuple[ast.Module, bool] | None] = {}

    def _read(self, relpath: str) -> str | None:
        if self._zip is not None:
            try:
                return self._zip.read(relpath).decode()
            except KeyError:
                return None
        file = self._root / relpath
        return file.read_text() if file.is_file() else None

    def module(self, name: str) -> tuple[ast.Module, bool] | None:
        """(parsed module, is a package) for a dotted module name, or None."""
        if name not in self._modules:
            rel = name.replace(".", "/")
            text, package = self._read(f"{rel}.py"), False
            if text is None:
                text, package = self._read(f"{rel}/__init__.py"), True
            self._modules[name] = None if text is None else (ast.parse(text), package)
        return self._modules[name]

    def version(self) -> str | None:
        found = self.resolve("vllm.__version__")
        value = getattr(found.node, "value", None) if found else None
        return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else None

    # -- name resolution

    def resolve(self, path: str) -> Def | None:
        """A dotted path (module, then names in it, then class members) to its definition."""
        parts = path.split(".")
        for i in range(len(parts), 0, -1):
            name = ".".join(parts[:i])
            loaded = self.module(name)
            if loaded is not None:
                found: Def | None = Def("module", name, loaded[0])
                for part in parts[i:]:
                    found = self.member(found, part) if found else None
                return found
        return None

    def member(self, of: Def, name: str) -> Def | None:
        if of.kind == "module":
            return self.lookup(of.module, name)
        if of.kind == "class":
            return self.class_member(of, name)
        return None

    def lookup(self, module: str, name: str, seen: frozenset[tuple[str, str]] = frozenset()) -> Def | None:
        """What `name` means at the top level of `module`, following imports (also those under TYPE_CHECKING)."""
        loaded = self.module(module)
        if loaded is None or (module, name) in seen:
            return None
        seen = seen | {(module, name)}
        tree, package = loaded
        for node in _statements(tree.body):
            if isinstance(node, (ast.ClassDef, *_FUNCTIONS)) and node.name == name:
                return Def("class" if isinstance(node, ast.ClassDef) else "function", module, node)
            if isinstance(node, ast.Assign | ast.AnnAssign) and node.value is not None and _binds(node, name):
                return Def("value", module, node)
            if isinstance(node, ast.ImportFrom):
                base = self._absolute(module, package, node.module, node.level)
                for alias in node.names:
                    if alias.name == "*" or (alias.asname or alias.name) == name:
                        wanted = name if alias.name == "*" else alias.name
                        found = self.lookup(base, wanted, seen)
                        if found is None and alias.name != "*":
                            found = self._module_def(f"{base}.{wanted}")
                        if found is not None:
                            return found
            if isinstance(node, ast.Import):
                for alias in node.names:
                    bound = alias.asname or alias.name.split(".")[0]
                    target = alias.name if alias.asname else bound
                    if bound == name and self.module(target):
                        return self._module_def(target)
        return self._module_def(f"{module}.{name}") if package else None

    def _module_def(self, name: str) -> Def | None:
        loaded = self.module(name)
        return Def("module", name, loaded[0]) if loaded else None

    @staticmethod
    def _absolute(module: str, package: bool, target: str | None, level: int) -> str:
        if level == 0:
            return target or ""
        parts = module.split(".")
        base = parts[: len(parts) - level + (1 if package else 0)]
        return ".".join([*base, target] if target else base)

    def class_member(self, cls: Def, name: str, depth: int = 0) -> Def | None:
        """A method, class-level name or `self.name` assignment of a class or of its bases (annotated ones first)."""
        node = cls.node
        assert isinstance(node, ast.ClassDef)
        for stmt in _statements(node.body):
            if isinstance(stmt, (ast.ClassDef, *_FUNCTIONS)) and stmt.name == name:
                kind = "class" if isinstance(stmt, ast.ClassDef) else "function"
                return Def(kind, cls.module, stmt, owner=node)
            if isinstance(stmt, ast.Assign | ast.AnnAssign) and _binds(stmt, name):
                return Def("value", cls.module, stmt, owner=node)
        on_self = [
            sub
            for fn in node.body
            if isinstance(fn, _FUNCTIONS) and fn.args.args
            for sub in ast.walk(fn)
            if isinstance(sub, ast.Assign | ast.AnnAssign)
            and any(
                isinstance(t, ast.Attribute) and t.attr == name and isinstance(t.value, ast.Name)
                and t.value.id == fn.args.args[0].arg
                for t in (sub.targets if isinstance(sub, ast.Assign) else [sub.target])
            )
        ]  # fmt: skip
        if on_self:
            on_self.sort(key=lambda s: not isinstance(s, ast.AnnAssign))
            return Def("value", cls.module, on_self[0], owner=node)
        if depth < 20:
            for base in node.bases:
                found = self.expr_def(cls.module, base)
                if found is not None and found.kind == "class":
                    member = self.class_member(found, name, depth + 1)
                    if member is not None:
                        return member
        return None

    def expr_def(
        self, module: str, expr: ast.expr, owner: Def | None = None, self_name: str = ""
    ) -> Def | None:
        """What an expression in `module` names: a module-level name, `X.attr`, an annotation (`"X"`, `X | None`,
        `Optional[X]`), or, inside a method of `owner`, `self` and `self.attr` (by its annotation or
        constructor call)."""
        if isinstance(expr, ast.Constant) and isinstance(expr.value, str):
            try:
                return self.expr_def(module, ast.parse(expr.value, mode="eval").body, owner, self_name)
            except SyntaxError:
                return None
        if isinstance(expr, ast.BinOp):  # X | None
            return self.expr_def(module, expr.left, owner, self_name) or self.expr_def(
                module, expr.right, owner, self_name
            )
        if isinstance(expr, ast.Subscript):  # Generic[T] as a base, Optional[X] as an annotation
            base = self.expr_def(module, expr.value, owner, self_name)
            if base is not None and base.kind == "class":
                return base
            return self.expr_def(module, expr.slice, owner, self_name)
        if isinstance(expr, ast.Name):
            if owner is not None and expr.id == self_name:
                return owner
            return self.lookup(module, expr.id)
        if isinstance(expr, ast.Attribute):
            base = self.expr_def(module, expr.value, owner, self_name)
            found = self.member(base, expr.attr) if base else None
            return self.value_type(found) if found is not None and found.kind == "value" else found
        return None

    def value_type(self, value: Def) -> Def | None:
        """The class an assignment holds: its annotation, else the class it calls (`x = Foo(...)`)."""
        node = value.node
        if isinstance(node, ast.AnnAssign):
            return self.expr_def(value.module, node.annotation)
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            found = self.expr_def(value.module, node.value.func)
            return found if found is not None and found.kind == "class" else None
        return None

    # -- call signatures

    def fields(self, cls: Def, depth: int = 0) -> dict[str, bool]:
        """Field name -> has a default, for a class without __init__ (dataclass, msgspec Struct, TypedDict)."""
        node = cls.node
        assert isinstance(node, ast.ClassDef)
        out: dict[str, bool] = {}
        for base in node.bases if depth < 20 else []:
            found = self.expr_def(cls.module, base)
            if found is not None and found.kind == "class":
                out.update(self.fields(found, depth + 1))
        for stmt in node.body:
            field = isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            if field and "ClassVar" not in ast.unparse(stmt.annotation):  # type: ignore[attr-defined]
                out[stmt.target.id] = stmt.value is not None  # type: ignore[attr-defined]
        return out

    def call_problems(self, target: Def, keywords: tuple[str, ...], positional: int) -> list[str]:
        """What is wrong with calling `target` with `positional` arguments and these keywords (empty: nothing)."""
        if target.kind == "class":
            init = self.class_member(target, "__init__")
            if init is None or init.kind != "function":
                fields = self.fields(target)
                unset = [f for f, default in fields.items() if not default and f not in keywords]
                return [f"no field {k!r}" for k in keywords if k not in fields] + [
                    f"requires field {f!r}" for f in unset[positional:]
                ]
            target = init
        if target.kind != "function":
            return [f"is a {target.kind}, not something to call"]
        fn = target.node
        assert isinstance(fn, _FUNCTIONS)
        args = fn.args
        bound = 1 if target.owner is not None and not _is_static(fn) else 0
        params = [*args.posonlyargs, *args.args][bound:]
        problems = []
        if positional > len(params) and args.vararg is None:
            problems.append(f"takes {len(params)} positional arguments, the engine passes {positional}")
        required = params[: len(params) - len(args.defaults)]
        problems += [f"requires {p.arg!r}" for p in required[positional:] if p.arg not in keywords]
        problems += [
            f"requires keyword {p.arg!r}"
            for p, default in zip(args.kwonlyargs, args.kw_defaults)
            if default is None and p.arg not in keywords
        ]
        problems += [f"has no parameter {k!r}" for k in keywords if not self.accepts(target, k)]
        return problems

    def accepts(self, target: Def, keyword: str, depth: int = 0) -> bool:
        """Whether a call to `target` takes `keyword`: a parameter, a field, or passed on from **kwargs."""
        if target.kind == "class":
            init = self.class_member(target, "__init__")
            if init is None or init.kind != "function":
                return keyword in self.fields(target)
            target = init
        fn = target.node
        if not isinstance(fn, _FUNCTIONS):
            return False
        args = fn.args
        if keyword in {p.arg for p in [*args.args, *args.kwonlyargs]}:
            return True
        if args.kwarg is None or depth > 5:
            return False
        owner = Def("class", target.module, target.owner) if target.owner is not None else None
        self_name = args.args[0].arg if owner is not None and args.args else ""
        for call in ast.walk(fn):  # calls that pass **kwargs on
            if isinstance(call, ast.Call) and any(
                k.arg is None and isinstance(k.value, ast.Name) and k.value.id == args.kwarg.arg
                for k in call.keywords
            ):
                callee = self.expr_def(target.module, call.func, owner, self_name)
                if callee is not None and self.accepts(callee, keyword, depth + 1):
                    return True
        return False


def _is_static(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "staticmethod" for d in fn.decorator_list)


def names_own_logger(tree: ast.AST) -> bool:
    """Whether a module makes its logger with `init_logger(__name__)` or `logging.getLogger(__name__)`."""
    return any(
        isinstance(node, ast.Call)
        and (getattr(node.func, "id", None) or getattr(node.func, "attr", None))
        in ("init_logger", "getLogger")
        and node.args
        and isinstance(node.args[0], ast.Name)
        and node.args[0].id == "__name__"
        for node in ast.walk(tree)
    )
