"""The trading engine: batched books, numba kernel, attribution. No gymnasium here.

The compiled modules (``kernel``, ``summary``) load when a :class:`Portfolio` is first used.
"""

from ffe_gym.portfolio import layout
from ffe_gym.portfolio.book import AssetAttribution, Portfolio, build_params, simple_returns

__all__ = ["AssetAttribution", "Portfolio", "build_params", "correlation_factor", "layout",
           "simple_returns"]


def __getattr__(name: str):
    if name == "correlation_factor":
        from ffe_gym.portfolio.kernel import correlation_factor

        return correlation_factor
    raise AttributeError(name)
