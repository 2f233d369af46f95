"""Evaluate any policy on a window; see ``--help``."""

import sys

from ffe_gym.commands.evaluate import main

if __name__ == "__main__":
    sys.exit(main())
