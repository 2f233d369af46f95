"""User features for tests/test_features.py: one causal, the rest broken on purpose."""

from __future__ import annotations

import numpy as np


def momentum_5(md) -> np.ndarray:
    """100 x log(close[t] / close[t-5]); 0 for the first 5 bars."""
    out = np.zeros_like(md.close)
    out[5:] = 100.0 * np.log(md.close[5:] / md.close[:-5])
    return out


momentum_5.lookback = 5


def centred_mean(md) -> np.ndarray:
    """A centred 5-bar mean of closes: reads two bars ahead."""
    c = md.close
    out = np.full_like(c, np.nan)
    for t in range(2, len(c) - 2):
        out[t] = c[t - 2:t + 3].mean(axis=0)
    return out / c - 1.0


def whole_sample_z(md) -> np.ndarray:
    """A z-score against the whole sample's mean: every row sees the future."""
    c = md.close
    return (c - c.mean(axis=0)) / c.std(axis=0)


def wrong_shape(md) -> np.ndarray:
    return md.close[:, 0]


def raises(md) -> np.ndarray:
    raise ValueError("no data for this")


not_callable = 3
