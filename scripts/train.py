"""Train an SB3 agent on ffe/Portfolio-v0; see ``--help``."""

import sys

from ffe_agents.commands.train import main

if __name__ == "__main__":
    sys.exit(main())
