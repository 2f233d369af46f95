"""Run manifests and atomic writes: what produced a result, recorded beside it.

A manifest names the package version, the git commit of the source (and whether it had
uncommitted changes), the data hash, the resolved config, the seeds and the command line, plus
library versions. Files are written to a temporary name and renamed, so a killed run never
leaves a half-written file behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


TEMPORARY = ".tmp-"  # a file being written: ``.tmp-<name>.<pid>.<random>``


def atomic_write(path: str | Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and a rename (a
    killed writer leaves ``.tmp-<name>.<pid>.*``, which the next comparison removes)."""
    path = Path(path)
    with named_errors(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f"{TEMPORARY}{path.name}.{os.getpid()}.",
                                   dir=path.parent)
        os.fchmod(fd, 0o666 & ~_UMASK)  # mkstemp makes 0600; a result file is like any other
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data.encode() if isinstance(data, str) else data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


@contextlib.contextmanager
def named_errors(path: str | Path) -> Iterator[None]:
    """Give an OSError raised inside without a file name (a write that found the disk full)
    the name of ``path``, so the one-line message says where."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _umask()


def write_json(path: str | Path, obj: Any) -> None:
    atomic_write(path, json.dumps(obj, indent=2, default=str, sort_keys=False) + "\n")


def write_yaml(path: str | Path, obj: Any) -> None:
    atomic_write(path, yaml.safe_dump(obj, sort_keys=False))


def git_commit(root: Path = ROOT) -> dict[str, Any]:
    """The commit of the source tree and whether it had changes; None outside a git clone."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=root, capture_output=True, text=True, timeout=10,
                               check=True).stdout.strip() != ""
        return {"commit": commit, "dirty": dirty}
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def manifest(*, config: dict[str, Any], data_hash: str, data: str, seeds: dict[str, Any],
             extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """A manifest dict for a run."""
    return {
        "package": "ffe-gym", "version": _version("ffe-gym"), "git": git_commit(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": sys.argv, "data": data, "data_hash": data_hash, "seeds": seeds,
        "config": config,
        "versions": {"python": platform.python_version(), "numpy": _version("numpy"),
                     "pandas": _version("pandas"), "gymnasium": _version("gymnasium"),
                     "stable-baselines3": _version("stable-baselines3"),
                     "torch": _version("torch")},
        **(extra or {}),
    }
