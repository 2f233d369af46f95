"""Audit a policy (placebo, permuted assets, causality); see ``--help``."""

import sys

from ffe_gym.commands.audit import main

if __name__ == "__main__":
    sys.exit(main())
