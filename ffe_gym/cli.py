"""The ``ffe-gym`` console script: ``ffe-gym <command> [args]``."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "backtest": "ffe_gym.commands.backtest",
    "benchmark": "ffe_agents.commands.benchmark",
    "compare": "ffe_gym.commands.compare",
    "evaluate": "ffe_gym.commands.evaluate",
    "sweep": "ffe_gym.commands.sweep",
    "train": "ffe_agents.commands.train",  # named, not imported: ffe_gym never imports agents
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        print("usage: ffe-gym {" + ",".join(COMMANDS) + "} [args...]", file=sys.stderr)
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    module = importlib.import_module(COMMANDS[argv[0]])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
