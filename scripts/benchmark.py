"""Throughput figures for the engine (and, as they land, the environments and agents)."""

import sys

from ffe_agents.commands.benchmark import main

if __name__ == "__main__":
    sys.exit(main())
