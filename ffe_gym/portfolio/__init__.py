"""The trading engine: batched books, numba kernel, attribution. No gymnasium here."""

from ffe_gym.portfolio import layout
from ffe_gym.portfolio.book import AssetAttribution, Portfolio, build_params, simple_returns
from ffe_gym.portfolio.kernel import correlation_factor

__all__ = ["AssetAttribution", "Portfolio", "build_params", "correlation_factor", "layout",
           "simple_returns"]
