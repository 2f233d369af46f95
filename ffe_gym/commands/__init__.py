"""Command implementations behind ``scripts/*.py`` and the ``ffe-gym`` console script."""

from __future__ import annotations

import errno
import sys
from collections.abc import Callable
from typing import Any

_RESUME = "finished runs are kept; run the same command again to resume"
_FULL = (f"free some space, or point --out (or TMPDIR, for the jobs' scratch folders) at "
         f"another disk; {_RESUME}")
FOLDER_ERRORS = {  # errno -> what to do, for a failure of the file system being written
    errno.ENOSPC: _FULL,
    errno.EDQUOT: _FULL,
    errno.EFBIG: f"a file outgrew the file-size limit (ulimit -f); {_RESUME}",
    errno.EROFS: f"pass --out to a writable folder; {_RESUME}",
    errno.EACCES: f"check its permissions or pass --out to a folder you can write; {_RESUME}",
    errno.EMFILE: f"raise the open-file limit (ulimit -n) and run again; {_RESUME}",
    errno.ENFILE: f"the system's open-file table is full; close programs and run again; "
                  f"{_RESUME}",
    errno.ENAMETOOLONG: f"shorten --out, the experiment's or an agent's name; {_RESUME}",
}


EXTRAS = {  # an optional package's import name -> the extra that brings it
    "scipy": "eval", "arch": "eval", "matplotlib": "eval", "plotly": "eval",
    "stable_baselines3": "sb3", "sb3_contrib": "sb3", "torch": "sb3", "tensorboard": "sb3",
    "tqdm": "sb3", "httpx": "llm", "llama_cpp": "llm", "ray": "ray", "skfolio": "classic",
    "moviepy": "video", "ccxt": "live", "alpaca": "live",
}


def missing_extra(exc: ModuleNotFoundError) -> str | None:
    """The one-line message for an optional package that is not installed, or None."""
    top = (exc.name or "").split(".")[0]
    if top not in EXTRAS:
        return None
    return (f"this needs {top}, which is not installed: pip install 'ffe-gym[{EXTRAS[top]}]' "
            "(or 'ffe-gym[all]')")


def run_command(run: Callable[[Any], Any], args: Any) -> int:
    """Run a command; bad data, config or policy names, a damaged run folder, a missing
    optional package (named with its extra) and a failure
    of the file system (no space, read-only, too many open files, a name too long: see
    ``FOLDER_ERRORS``) end in one line and exit code 2."""
    from ffe_gym.config import ConfigError
    from ffe_gym.data import DataError
    from ffe_gym.evaluation.jobs import DamagedRun
    from ffe_gym.evaluation.policy import PolicyError
    from ffe_gym.live.loop import LiveError

    try:
        code = run(args)
    except (DataError, ConfigError, PolicyError, DamagedRun, LiveError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        message = missing_extra(exc)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in FOLDER_ERRORS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror}; {FOLDER_ERRORS[exc.errno]}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0
