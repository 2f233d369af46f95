"""numba's on-disk cache of compiled functions, kept in step with every source file it uses.

numba keys a cached function on the contents of the one file that defines it, not on the files
of the functions it calls and inlines (numba PR 8396, unmerged). The env's compiled step
(``env/stepping.py``) inlines the engine's (``portfolio/kernel.py``) and the layout's constants,
so after a change to the kernel alone (a ``git pull``, an edit) a new process would load the
step compiled from the old kernel and apply the old rules without a word. Every module of the
package that caches numba functions therefore ends with ``fresh_cache(globals())``: when the
sources the module can run (its own file and every module of the package it imports, directly
or not: :class:`~ffe_gym.sources.Sources`), hashed together, differ from those its cache was
written from, its cached code is dropped and each function compiles once again. A change in a
module the compiled code never imports (a report, a command) keeps every cache.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from .sources import Sources

RECORD = "{module}.sources"  # beside the module's numba cache files: the sources' digest


@functools.cache
def _sources(top: str, package: Path) -> Sources:
    return Sources({top: package})


def sources_digest(package: Path, module: str) -> str:
    """SHA-256 of the sources ``module`` can run within its top-level ``package`` folder."""
    return _sources(module.partition(".")[0], package).digest([module])


def cached_dispatchers(namespace: dict[str, Any]) -> list[Any]:
    """The numba dispatchers with an on-disk cache defined in a module's namespace."""
    from numba.core.registry import CPUDispatcher

    module = namespace["__name__"]
    return [f for f in namespace.values()
            if isinstance(f, CPUDispatcher) and f.py_func.__module__ == module
            and f.stats.cache_path is not None]


def fresh_cache(namespace: dict[str, Any]) -> int:
    """Drop the module's cached compiled code unless it was written from the current sources;
    call at the end of a module that defines ``@njit(cache=True)`` functions, before any of
    them runs. Returns how many functions' caches were dropped (0: the cache is current).

    An unwritable cache directory is numba's case too: it then compiles in memory."""
    dispatchers = cached_dispatchers(namespace)
    if not dispatchers:
        return 0
    name = namespace["__name__"]
    top = sys.modules[name.partition(".")[0]]  # the top-level package, imported first
    digest = sources_digest(Path(top.__file__).resolve().parent, name)
    module = name.rsplit(".", 1)[-1]
    dropped = 0
    for folder in sorted({d.stats.cache_path for d in dispatchers}):
        record = Path(folder) / RECORD.format(module=module)
        try:
            if record.read_text() == digest:
                continue
        except OSError:  # no record yet (a new checkout, or a cache numba has not written)
            pass
        for d in dispatchers:
            if d.stats.cache_path == folder:
                d._cache.flush()  # numba's own reset (Dispatcher.recompile uses it)
                dropped += 1
        try:
            record.write_text(digest)
        except OSError:
            pass
    return dropped
