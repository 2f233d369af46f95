"""Command implementations behind ``scripts/*.py`` and the ``ffe-gym`` console script."""
