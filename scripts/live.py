"""Run a policy forward on live bars; see ``--help``."""

import sys

from ffe_gym.commands.live import main

if __name__ == "__main__":
    sys.exit(main())
