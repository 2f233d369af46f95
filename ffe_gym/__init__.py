"""ffe-gym: a multi-asset portfolio as a Gymnasium environment.

Public names: :class:`Config` and :func:`load_config`, :class:`MarketData` and the loaders,
:class:`Portfolio` (the engine) and :func:`compute_metrics`. Importing has no side effects
beyond registering the environments (no warning filters, no global RNG, no file I/O).
"""

from gymnasium.envs.registration import register

from ffe_gym.config import Config, ConfigError, load_config
from ffe_gym.data import DataError, MarketData, default_market, load_market, synthetic_market
from ffe_gym.metrics import compute_metrics
from ffe_gym.portfolio import Portfolio

__version__ = "0.1.0"

register(
    id="ffe/Portfolio-v0",
    entry_point="ffe_gym.env.portfolio_env:PortfolioEnv",
    vector_entry_point="ffe_gym.env.vector_env:PortfolioVectorEnv",
)

__all__ = [
    "Config", "ConfigError", "DataError", "MarketData", "Portfolio", "__version__",
    "compute_metrics", "default_market", "load_config", "load_market", "synthetic_market",
]
