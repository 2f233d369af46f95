"""Small builders shared by the tests: hand-made markets and bare configs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ffe_gym.config import Config, from_dict, merge
from ffe_gym.data.market import MarketData

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ffe-h1-2020-2023"


def market(close: Any, open_: Any = None, high: Any = None, low: Any = None,
           tradable: Any = None, volume: Any = None, ppy: float = 8760.0,
           start: str = "2024-01-01") -> MarketData:
    """A panel from hand-written prices; open defaults to close, high/low envelop open/close."""
    c = np.asarray(close, dtype=float)
    if c.ndim == 1:
        c = c[:, None]

    def col(x: Any, default: np.ndarray) -> np.ndarray:
        if x is None:
            return default
        a = np.asarray(x, dtype=float)
        return a[:, None] if a.ndim == 1 else a

    o = col(open_, c)
    h = np.maximum(col(high, np.maximum(o, c)), np.maximum(o, c))
    lo = np.minimum(col(low, np.minimum(o, c)), np.minimum(o, c))
    T, N = c.shape
    tr = np.ones((T, N), bool) if tradable is None else np.asarray(tradable, bool).reshape(T, N)
    v = np.ones((T, N)) if volume is None else col(volume, None)
    return MarketData(symbols=tuple(f"A{i}" for i in range(N)),
                      index=pd.date_range(start, periods=T, freq="h", tz="UTC"),
                      open=o, high=h, low=lo, close=c, volume=v, tradable=tr,
                      periods_per_year=ppy, source="test")


BARE = {
    "portfolio": {"max_positions": None, "max_portfolio_risk": None, "max_drawdown": None,
                  "correlation_threshold": 0.7},
    "sizing": {"base": "notional", "risk_per_trade": 0.5, "min_confidence_factor": 0.0},
    "risk": {"stop_loss": None, "take_profit": None, "max_short_exposure": None,
             "max_gross_exposure": None, "ruin_floor": 0.0},
    "execution": {"price": "close", "fee_rate": 0.0, "fixed_fee": 0.0, "slippage": 0.0},
}


def bare(**sections: dict[str, Any]) -> Config:
    """Zero costs, close fills, every limit and exit off; ``sections`` switch rules back on."""
    return from_dict(Config, merge(BARE, sections))


def signals(n: int, **intents: tuple[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """``signals(3, a0=(1, 0.8))`` -> direction and confidence arrays for N = n assets."""
    d = np.zeros(n, dtype=np.int8)
    c = np.zeros(n)
    for name, (direction, conf) in intents.items():
        j = int(name[1:])
        d[j], c[j] = direction, conf
    return d, c


def book(md: MarketData, cfg: Config, start: int = 0, end: int | None = None):
    """One book of ``md`` under ``cfg``, reset at ``start``."""
    from ffe_gym.portfolio import Portfolio

    pf = Portfolio(md, cfg)
    pf.reset(start=start, end=end)
    return pf


def ensemble_rollout(cfg: dict[str, Any], md: MarketData, window: tuple[int, int]):
    """(EpisodeResult, ensemble) of one rollout of an LLM ensemble built from ``cfg``; the
    ensemble is closed (its backends' processes stopped) before this returns."""
    from ffe_agents.llm import LLMEnsemble
    from ffe_gym.evaluation import env_for, rollout

    ens = LLMEnsemble(cfg)
    try:
        return rollout(ens, env_for(ens, None, md), window=window, seed=0), ens
    finally:
        ens.close()
