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


def run_command(run: Callable[[Any], Any], args: Any) -> int:
    """Run a command; bad data, config or policy names, a damaged run folder and a failure
    of the file system (no space, read-only, too many open files, a name too long: see
    ``FOLDER_ERRORS``) end in one line and exit code 2."""
    from ffe_gym.config import ConfigError
    from ffe_gym.data import DataError
    from ffe_gym.evaluation.jobs import DamagedRun
    from ffe_gym.evaluation.policy import PolicyError

    try:
        code = run(args)
    except (DataError, ConfigError, PolicyError, DamagedRun) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in FOLDER_ERRORS:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"error: {where}{exc.strerror}; {FOLDER_ERRORS[exc.errno]}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0
