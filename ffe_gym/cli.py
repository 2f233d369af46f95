"""The ``ffe-gym`` console script: ``ffe-gym <command> [args]``."""

from __future__ import annotations

import importlib
import sys

COMMANDS = {  # name: (module, one line of what it does)
    "audit": ("ffe_gym.commands.audit",
              "does a policy use its input, depend on the asset order, read the future?"),
    "backtest": ("ffe_gym.commands.backtest", "run one policy over a date range, no training"),
    "benchmark": ("ffe_agents.commands.benchmark", "print throughput figures"),
    "compare": ("ffe_gym.commands.compare",
                "the comparison grid: agents x windows x seeds vs a reference, with a report"),
    "evaluate": ("ffe_gym.commands.evaluate", "evaluate a policy or a trained run on a window"),
    "live": ("ffe_gym.commands.live", "trade a paper book on live bars (forward testing)"),
    "sweep": ("ffe_gym.commands.sweep", "a Ray Tune hyperparameter sweep on fold 0"),
    "train": ("ffe_agents.commands.train",  # named, not imported: ffe_gym never imports agents
              "train a stable-baselines3 agent on ffe/Portfolio-v0"),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {doc}" for name, (_, doc) in COMMANDS.items()]
    return ("usage: ffe-gym <command> [args...]   (ffe-gym <command> --help for its options;"
            " ffe-gym --version)\n"
            "\ncommands:\n" + "\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "--version":
        from ffe_gym import __version__

        print(f"ffe-gym {__version__}")
        return 0
    if not argv or argv[0] in ("-h", "--help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    if argv[0] not in COMMANDS:
        print(f"ffe-gym: unknown command {argv[0]!r} (commands: {', '.join(COMMANDS)})",
              file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[argv[0]][0])
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    sys.exit(main())
