"""Backtest on the embedded synthetic default or your data; see ``--help``."""

import sys

from ffe_gym.commands.backtest import main

if __name__ == "__main__":
    sys.exit(main())
