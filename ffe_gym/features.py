"""Causal observation features, computed once per dataset as float32 (T, N, F).

Row t of every feature uses bars <= t only (rolling windows and exponential averages that end at
t; nothing is centred, nothing is filled backwards). During the warm-up, windows hold the bars
there are; a value that is undefined there (a standard deviation of one bar) is 0. Then every
value is clipped to ``+-clip``.

Features and their scale (percent where it keeps crypto and forex comparable):

* ``log_return``  100 * log(close[t] / close[t-1])
* ``range``       100 * log(high[t] / low[t])
* ``volatility``  100 * std of log returns over ``volatility_window`` bars
* ``rsi``         RSI(``rsi_window``, Wilder smoothing) / 100 - 0.5, in [-0.5, 0.5]
* ``macd``        100 * (MACD - signal line) / close[t], MACD = EMA(fast) - EMA(slow) of closes
* ``volume_z``    (volume[t] - mean) / std of volume over ``volume_window`` bars (0 if std is 0)

Pandas is used here, once per dataset, never in ``step``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ffe_gym.config import FeatureConfig
from ffe_gym.data.market import MarketData


def lookback(cfg: FeatureConfig) -> int:
    """Bars after which every feature's window is full."""
    return max(cfg.volatility_window, cfg.rsi_window, cfg.macd_slow + cfg.macd_signal,
               cfg.volume_window) + 1


def _rsi(close: pd.DataFrame, n: int) -> pd.DataFrame:
    delta = close.diff().fillna(0.0)
    gain = delta.clip(lower=0.0).ewm(alpha=1.0 / n, adjust=False).mean()
    loss = (-delta).clip(lower=0.0).ewm(alpha=1.0 / n, adjust=False).mean()
    total = gain + loss
    return (gain / total.where(total > 0)).fillna(0.5) - 0.5


def compute_features(md: MarketData, cfg: FeatureConfig) -> np.ndarray:
    """(T, N, F) float32 features of ``md`` in the order of ``cfg.names`` (read-only)."""
    close = pd.DataFrame(md.close)
    logc = np.log(close)
    log_ret = logc.diff().fillna(0.0)
    out = []
    for name in cfg.names:
        if name == "log_return":
            f = 100.0 * log_ret
        elif name == "range":
            f = 100.0 * pd.DataFrame(np.log(md.high / md.low))
        elif name == "volatility":
            f = 100.0 * log_ret.rolling(cfg.volatility_window, min_periods=2).std()
        elif name == "rsi":
            f = _rsi(close, cfg.rsi_window)
        elif name == "macd":
            fast = close.ewm(span=cfg.macd_fast, adjust=False).mean()
            slow = close.ewm(span=cfg.macd_slow, adjust=False).mean()
            macd = fast - slow
            signal = macd.ewm(span=cfg.macd_signal, adjust=False).mean()
            f = 100.0 * (macd - signal) / close
        elif name == "volume_z":
            vol = pd.DataFrame(md.volume)
            roll = vol.rolling(cfg.volume_window, min_periods=2)
            sd = roll.std()
            f = (vol - roll.mean()) / sd.where(sd > 0)
        else:  # pragma: no cover - FeatureConfig validates names
            raise ValueError(name)
        out.append(np.nan_to_num(f.to_numpy(dtype=np.float64), nan=0.0, posinf=0.0,
                                 neginf=0.0))
    feats = np.clip(np.stack(out, axis=-1), -cfg.clip, cfg.clip).astype(np.float32)
    feats.flags.writeable = False
    return feats
