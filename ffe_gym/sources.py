"""The project files a piece of code runs, found by reading its imports.

A job's identity and numba's on-disk cache both stand for "the code this result came from".
Hashing every file of both packages would make a comment anywhere invalidate every result and
every compiled function; hashing only what runs keeps them until something they use changes.

:meth:`Sources.closure` follows imports statically, from given modules through the ``ffe_gym``
and ``ffe_agents`` packages: ``import`` and ``from ... import`` lines anywhere in a file
(inside functions too), relative imports, and ``importlib.import_module("a.literal")``, read
as text. Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py``, so those are in
the closure too.
Modules named by a ``"module:attr"`` string (a policy, a feature, a reward) are not followed
from the code that resolves them; a job adds the ones its config and agent name
(:func:`named_modules`).

A module names the non-Python files it runs or reads with a module-level ``RUNTIME_FILES``
tuple of paths relative to its folder (the LLM sidecar's script and ``package.json``); they are
part of its :meth:`Sources.digest`.

``tests/test_sources.py`` runs a job of each policy kind under a tracer and checks that every
project file it executed or opened is in the job's closure.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

PACKAGES = ("ffe_gym", "ffe_agents")
RUNTIME = "RUNTIME_FILES"
_NAMED = re.compile(r"((?:ffe_gym|ffe_agents)(?:\.\w+)*):\w+")
# import statements, read as text (a regular expression is ~20x faster than ast and this runs
# at every start of a process that caches compiled code); a line in a docstring that looks
# like an import only adds a module, never hides one
_IMPORT = re.compile(r"^[ \t]*import[ \t]+([\w. \t,]+)", re.MULTILINE)
_FROM = re.compile(r"^[ \t]*from[ \t]+(\.*[\w.]*)[ \t]+import[ \t]+(\([^)]*\)|[^\n#]+)",
                   re.MULTILINE)
_DYNAMIC = re.compile(r"import_module\(\s*[\"']([\w.]+)[\"']")


class Sources:
    """The source files of the project's packages.

    :param roots: top-level package name -> its folder (``ffe_gym``, ``ffe_agents``).
    """

    def __init__(self, roots: Mapping[str, Path]) -> None:
        self.roots = {k: Path(v) for k, v in roots.items()}
        # what a module's file imports and which files exist are read once per instance (the
        # bytes hashed are read at every digest)
        self._imports: dict[str, frozenset[str]] = {}
        self._paths: dict[str, Path | None] = {}
        self._runtime: dict[Path, tuple[str, ...]] = {}

    def path(self, module: str) -> Path | None:
        """The file of a project module (a package's ``__init__.py``); None outside."""
        if module not in self._paths:
            self._paths[module] = self._find(module)
        return self._paths[module]

    def _find(self, module: str) -> Path | None:
        top, _, rest = module.partition(".")
        root = self.roots.get(top)
        if root is None:
            return None
        base = root.joinpath(*rest.split(".")) if rest else root
        if (base / "__init__.py").is_file():
            return base / "__init__.py"
        if rest and base.with_name(base.name + ".py").is_file():
            return base.with_name(base.name + ".py")
        return None

    def imports(self, module: str) -> frozenset[str]:
        """The project modules ``module``'s file imports (with their parent packages)."""
        if module in self._imports:
            return self._imports[module]
        path = self.path(module)
        found: set[str] = set()
        if path is not None:
            package = module if path.name == "__init__.py" else module.rpartition(".")[0]
            text = path.read_text()
            for m in _IMPORT.finditer(text):
                found.update(_names(m.group(1)))
            for m in _FROM.finditer(text):
                base = _absolute(m.group(1).lstrip("."), len(m.group(1)) -
                                 len(m.group(1).lstrip(".")), package)
                found.add(base)
                found.update(f"{base}.{n}" for n in _names(m.group(2)))
            found.update(_DYNAMIC.findall(text))
        out = set()
        for name in found:
            parts = name.split(".")
            for k in range(1, len(parts) + 1):
                prefix = ".".join(parts[:k])
                if self.path(prefix) is not None:
                    out.add(prefix)
        self._imports[module] = frozenset(out - {module})
        return self._imports[module]

    def closure(self, modules: Iterable[str]) -> list[str]:
        """Every project module that importing ``modules`` can run, sorted."""
        todo = [m for m in modules if self.path(m) is not None]
        todo += [p for m in list(todo) for p in _parents(m) if self.path(p) is not None]
        seen: set[str] = set()
        while todo:
            m = todo.pop()
            if m not in seen:
                seen.add(m)
                todo.extend(self.imports(m) - seen)
        return sorted(seen)

    def files(self, modules: Iterable[str]) -> list[Path]:
        """The files of :meth:`closure` and the ``RUNTIME_FILES`` its modules name."""
        out: list[Path] = []
        for m in self.closure(modules):
            path = self.path(m)
            assert path is not None
            out.append(path)
            if path not in self._runtime:
                self._runtime[path] = runtime_files(path)
            out += [path.parent / f for f in self._runtime[path]]
        return out

    def digest(self, modules: Iterable[str]) -> str:
        """SHA-256 over the relative path and bytes of every file of :meth:`files`."""
        h = hashlib.sha256()
        for path in self.files(modules):
            h.update(self.relative(path).encode() + b"\0")
            h.update(path.read_bytes() + b"\0")
        return h.hexdigest()

    def relative(self, path: Path) -> str:
        """``path`` as ``<package>/<path inside it>``."""
        for name, root in self.roots.items():
            if path.is_relative_to(root):
                return f"{name}/{path.relative_to(root).as_posix()}"
        raise ValueError(f"{path} is not a file of {', '.join(self.roots)}")


def runtime_files(path: Path) -> tuple[str, ...]:
    """A module's ``RUNTIME_FILES``: a module-level tuple of string literals."""
    source = path.read_bytes()
    if RUNTIME.encode() not in source:
        return ()
    for node in ast.parse(source).body:
        if (isinstance(node, ast.Assign) and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name) and node.targets[0].id == RUNTIME):
            value = ast.literal_eval(node.value)
            if not (isinstance(value, tuple) and all(isinstance(v, str) for v in value)):
                raise ValueError(f"{path}: {RUNTIME} must be a tuple of relative paths")
            return value
    return ()


def named_modules(*values: Any) -> set[str]:
    """The project modules named by ``"module:attr"`` strings anywhere in nested values (a
    config's custom feature or reward, an agent's policy)."""
    out: set[str] = set()

    def walk(v: Any) -> None:
        if isinstance(v, str):
            out.update(m.group(1) for m in _NAMED.finditer(v))
        elif isinstance(v, Mapping):
            for k, x in v.items():
                walk(k)
                walk(x)
        elif isinstance(v, list | tuple | set):
            for x in v:
                walk(x)

    for v in values:
        walk(v)
    return out


@functools.cache
def project() -> Sources:
    """The installed packages' sources (``ffe_agents`` located, not imported)."""
    from importlib.util import find_spec

    roots = {"ffe_gym": Path(__file__).resolve().parent}
    agents = find_spec("ffe_agents")
    if agents is not None and agents.submodule_search_locations:
        roots["ffe_agents"] = Path(next(iter(agents.submodule_search_locations))).resolve()
    return Sources(roots)


@functools.cache
def digest_of(modules: tuple[str, ...]) -> str:
    """:meth:`Sources.digest` of the installed project, cached per process."""
    return project().digest(modules)


def _absolute(module: str | None, level: int, package: str) -> str:
    if level == 0:
        return module or ""
    parts = package.split(".")
    base = ".".join(parts[: len(parts) - level + 1])
    return f"{base}.{module}" if module else base


def _names(text: str) -> list[str]:
    """The names of an import list: ``a.b as c, d`` or ``(x, y as z,)``."""
    out = []
    for part in text.strip().strip("()").replace("\\", " ").split(","):
        name = part.split("#")[0].strip().split(" as ")[0].strip()
        if name and name != "*":
            out.append(name)
    return out


def _parents(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:k]) for k in range(1, len(parts))]
