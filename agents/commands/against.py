"""The engine and env figures of this tree's kernel against a committed kernel, in one process.

A change to the decision step (``ffe_gym/portfolio/kernel.py``, ``ffe_gym/env/stepping.py``)
is measured against the same two files at a git revision (``HEAD`` by default): they are
loaded from ``git show`` as separate modules, compiled in memory, and each figure is taken
from the two kernels in turn, ``repeats`` times, so that drift of the machine (a busy
neighbour, a CPU clock) falls on both alike. Used by ``scripts/benchmark.py --sections
against --against REV``. The two kernels must have the same entry points
(``step_books``, ``step_signal_books``, ``load_signals``, ``book_views``, ``book_sizes``,
``step_observe``, ``step_observe_threaded``): a kernel whose call signature changed cannot be
compared this way, and the run says so.
"""

from __future__ import annotations

import importlib.util
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

FILES = {"kernel": "ffe_gym/portfolio/kernel.py", "stepping": "ffe_gym/env/stepping.py"}


def _committed_source(root: Path, rev: str, path: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(root), "show", f"{rev}:{path}"],
                             capture_output=True, text=True, check=False)
    except FileNotFoundError as e:
        raise SystemExit("--against needs git on PATH") from e
    if out.returncode != 0:
        raise SystemExit(f"--against {rev}: git show {rev}:{path} failed: "
                         f"{out.stderr.strip() or out.returncode}")
    return out.stdout


def load_committed(rev: str, folder: Path) -> tuple[ModuleType, ModuleType]:
    """The kernel and the env's fused step at ``rev``, as modules compiled in memory (no
    on-disk cache: it would be keyed on these temporary files)."""
    import ffe_gym

    root = Path(ffe_gym.__file__).resolve().parent.parent
    tag = "_ffe_against"
    modules = []
    for name, path in FILES.items():
        text = _committed_source(root, rev, path)
        text = text.replace("cache=True", "cache=False")
        text = "\n".join(line for line in text.split("\n")
                         if not line.startswith("fresh_cache(globals())"))
        text = text.replace("from ffe_gym.portfolio.kernel import", f"from {tag}_kernel import")
        file = folder / f"{tag}_{name}.py"
        file.write_text(text)
        spec = importlib.util.spec_from_file_location(f"{tag}_{name}", file)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        modules.append(module)
    return modules[0], modules[1]


def _engine(kernel: ModuleType, n_assets: int, n_books: int, seconds: float) -> float:
    """Book-steps per second of ``Portfolio.step_signals`` with this kernel module."""
    from ffe_agents.commands.benchmark import bench_engine

    return bench_engine(n_assets, n_books, seconds, kernel=kernel)["book_steps_per_s"]


def _with_stepping(stepping: ModuleType, measure: Callable[[], float]) -> float:
    """``measure()`` with the env bound to this module's fused step."""
    from ffe_gym.env import stepping as current

    saved = current.step_observe, current.step_observe_threaded
    current.step_observe = stepping.step_observe
    current.step_observe_threaded = stepping.step_observe_threaded
    try:
        return measure()
    finally:
        current.step_observe, current.step_observe_threaded = saved


def section_against(rev: str, seconds: float, repeats: int = 5) -> list[dict[str, Any]]:
    """Each figure for the kernel at ``rev`` and this tree's, interleaved ``repeats`` times."""
    from ffe_agents.commands.benchmark import bench_env, bench_vector_env
    from ffe_gym.env import stepping as this_stepping
    from ffe_gym.portfolio import kernel as this_kernel

    with tempfile.TemporaryDirectory(prefix="ffe-against-") as tmp:
        committed = load_committed(rev, Path(tmp))
        current = (this_kernel, this_stepping)
        figures: list[tuple[str, Callable[[tuple[ModuleType, ModuleType]], float]]] = [
            ("engine N=10 B=1 book-steps/s", lambda m: _engine(m[0], 10, 1, seconds)),
            ("engine N=10 B=256 book-steps/s", lambda m: _engine(m[0], 10, 256, seconds)),
            ("engine N=100 B=1 book-steps/s", lambda m: _engine(m[0], 100, 1, seconds)),
            ("env N=10 steps/s",
             lambda m: _with_stepping(m[1], lambda: bench_env(10, seconds))),
            ("env N=100 steps/s",
             lambda m: _with_stepping(m[1], lambda: bench_env(100, seconds))),
            ("vector env n=256 N=10 env-steps/s",
             lambda m: _with_stepping(m[1], lambda: bench_vector_env(256, 10, seconds))),
        ]
        rows = []
        for name, f in figures:
            try:
                f(committed)  # compile and warm both before the clock
                f(current)
            except Exception as e:  # numba's typing error: another call signature
                raise SystemExit(f"--against {rev}: {name}: the committed kernel cannot be "
                                 f"called as this tree's ({type(e).__name__}: "
                                 f"{str(e).splitlines()[0][:200]})") from e
            before, after = [], []
            for _ in range(repeats):
                before.append(f(committed))
                after.append(f(current))
            rows.append({"figure": name, "before": before, "after": after,
                         "ratio": statistics.median(after) / statistics.median(before)})
        return rows
