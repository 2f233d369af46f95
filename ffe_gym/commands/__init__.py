"""Command implementations behind ``scripts/*.py`` and the ``ffe-gym`` console script."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any


def run_command(run: Callable[[Any], Any], args: Any) -> int:
    """Run a command; bad data, config or policy names end in one line and exit code 2."""
    from ffe_gym.config import ConfigError
    from ffe_gym.data import DataError
    from ffe_gym.evaluation.policy import PolicyError

    try:
        code = run(args)
    except (DataError, ConfigError, PolicyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code if isinstance(code, int) else 0
