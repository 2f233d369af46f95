"""Compare policies on an experiment grid (the main job); see ``--help``."""

import sys

from ffe_gym.commands.compare import main

if __name__ == "__main__":
    sys.exit(main())
