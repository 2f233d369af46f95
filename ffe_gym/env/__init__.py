"""The engine as Gymnasium environments: PortfolioEnv (one book), PortfolioVectorEnv (n books),
and SB3VecEnv (stable-baselines3's VecEnv over the vector env; imports SB3 when used)."""

from ffe_gym.env.portfolio_env import PortfolioEnv
from ffe_gym.env.vector_env import PortfolioVectorEnv

__all__ = ["PortfolioEnv", "PortfolioVectorEnv", "SB3VecEnv"]


def __getattr__(name: str):
    if name == "SB3VecEnv":
        from ffe_gym.env.sb3 import SB3VecEnv

        return SB3VecEnv
    raise AttributeError(name)
