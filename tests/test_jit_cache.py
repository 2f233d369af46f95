"""numba's on-disk cache never serves code compiled from older sources (ffe_gym.jit_cache)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import ffe_gym

CALLEE = """
from numba import njit

from tinypkg.jit_cache import fresh_cache


@njit(cache=True)
def rule(x):
    return x + {increment}


fresh_cache(globals())
"""

CALLER = """
from numba import njit

from tinypkg.callee import rule
from tinypkg.jit_cache import fresh_cache


@njit(cache=True)
def step(x):
    return rule(x) * 10


fresh_cache(globals())
"""


def _run(root: Path) -> str:
    code = "from tinypkg.caller import step; print(step(1), sum(step.stats.cache_hits.values()))"
    r = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True,
                       timeout=300, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
    assert r.returncode == 0, r.stderr
    return r.stdout.split()


def test_a_change_in_an_inlined_callee_recompiles_its_callers(tmp_path):
    """The env's step (stepping.py) inlines the kernel (kernel.py); numba checks only the
    caller's own file, so without fresh_cache the second run below prints the old 20."""
    pkg = tmp_path / "tinypkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    for name in ("jit_cache.py", "sources.py"):
        (pkg / name).write_text((Path(ffe_gym.__file__).parent / name).read_text())
    (pkg / "caller.py").write_text(CALLER)
    (pkg / "callee.py").write_text(CALLEE.format(increment=1))
    (pkg / "report.py").write_text("# a module the compiled code never imports\n")
    assert _run(tmp_path) == ["20", "0"]  # compiled and written to the cache
    assert _run(tmp_path) == ["20", "1"]  # unchanged sources: loaded from the cache
    (pkg / "report.py").write_text("# a comment changed, in a module nothing compiled uses\n")
    assert _run(tmp_path) == ["20", "1"]  # still loaded from the cache
    (pkg / "callee.py").write_text(CALLEE.format(increment=2))
    assert _run(tmp_path) == ["30", "0"]  # the callee changed: the caller compiled again
    assert _run(tmp_path) == ["30", "1"]


def test_every_cached_numba_module_of_the_package_checks_its_cache():
    root = Path(ffe_gym.__file__).parent
    for path in sorted(root.rglob("*.py")):
        text = path.read_text()
        if re.search(r"^@njit\(.*cache=True", text, re.MULTILINE):
            assert "\nfresh_cache(globals())" in text, f"{path}: no fresh_cache(globals())"
            tail = text.rstrip().rsplit("\n", 1)[-1]
            assert tail.startswith("fresh_cache(globals())"), \
                textwrap.shorten(f"{path}: fresh_cache must come last, after {tail}", 200)
