"""Sweep a trained agent's hyperparameters on Ray Tune (validation data only); see ``--help``."""

import sys

from ffe_gym.commands.sweep import main

if __name__ == "__main__":
    sys.exit(main())
