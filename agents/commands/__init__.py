"""Commands that need the agents (``ffe-gym train``)."""
