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

Custom features: a name ``"package.module:function"`` in ``env.features.names`` is a user
feature. ``function(market)`` gets the :class:`~ffe_gym.data.MarketData` (``open``, ``high``,
``low``, ``close``, ``volume`` and ``tradable`` as (T, N) arrays, ``index``, ``symbols``) and
returns a (T, N) float array; its row t may use rows <= t only (the causal contract). It is
stored and clipped like the built-in ones (NaN and inf become 0), and an optional integer
attribute ``function.lookback`` (bars until its window is full) joins the env's warm-up. When
the env is built the contract is checked: the feature is recomputed on copies of the market
whose rows after a sampled bar t are perturbed (prices and volumes scaled by random factors),
and a feature whose rows <= t change is refused, by name, as is one that raises or returns
another shape.

Computed with numba kernels over the (T, N) panel, column by column, in float64 and stored as
float32 (the pandas formulation they replace, rolling().std() and ewm(adjust=False), is the
reference in tests/test_features.py). A rolling window skips missing values (a NaN volume) and
needs two of them; exponential averages start at the first bar.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import replace

import numpy as np
from numba import njit

from ffe_gym.config import ConfigError, FeatureConfig
from ffe_gym.data.market import MarketData
from ffe_gym.jit_cache import fresh_cache


def lookback(cfg: FeatureConfig) -> int:
    """Bars after which every feature's window is full (a custom feature's ``lookback``
    attribute included)."""
    custom = [int(getattr(load_feature(n), "lookback", 0)) for n in cfg.names if ":" in n]
    return max(cfg.volatility_window, cfg.rsi_window, cfg.macd_slow + cfg.macd_signal,
               cfg.volume_window, *custom) + 1


def load_feature(name: str) -> Callable[[MarketData], np.ndarray]:
    """The callable behind a ``"module:function"`` feature name."""
    module, _, attr = name.partition(":")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"env.features.names: cannot load feature {name!r} ({exc})") from None
    if not callable(fn):
        raise ConfigError(f"env.features.names: {name!r} is not callable")
    return fn


def _evaluate(fn: Callable[[MarketData], np.ndarray], name: str, md: MarketData) -> np.ndarray:
    try:
        out = fn(md)
    except Exception as exc:
        raise ConfigError(f"env.features.names: feature {name!r} raised "
                          f"{type(exc).__name__}: {exc}") from exc
    try:
        a = np.asarray(out, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"env.features.names: feature {name!r} did not return a float "
                          f"array ({exc})") from None
    if a.shape != md.close.shape:
        raise ConfigError(f"env.features.names: feature {name!r} returned shape {a.shape}, "
                          f"expected (T, N) = {md.close.shape}")
    return a


def perturbed_after(md: MarketData, t: int, rng: np.random.Generator) -> MarketData:
    """A copy of ``md`` whose rows after t have new prices (one random factor per bar and
    asset scales open, high, low and close alike) and new volumes."""
    f = np.ones_like(md.close)
    f[t + 1:] = np.exp(rng.normal(0.0, 0.05, f[t + 1:].shape))
    g = np.ones_like(md.volume)
    g[t + 1:] = rng.uniform(0.2, 5.0, g[t + 1:].shape)
    return replace(md, open=md.open * f, high=md.high * f, low=md.low * f, close=md.close * f,
                   volume=md.volume * g)


def custom_feature(name: str, md: MarketData, checks: int = 2) -> np.ndarray:
    """A custom feature's (T, N) values, after checking its causal contract on ``checks``
    sampled bars (module doc). :raises ConfigError: naming the feature."""
    fn = load_feature(name)
    base = _evaluate(fn, name, md)
    T = md.n_bars
    rng = np.random.default_rng(0)
    for t in sorted({int(x) for x in rng.integers(T // 4, max(T // 4 + 1, 3 * T // 4),
                                                   checks)}):
        if t >= T - 1:
            continue
        other = _evaluate(fn, name, perturbed_after(md, t, rng))
        a, b = base[:t + 1], other[:t + 1]
        same = np.isclose(a, b, rtol=1e-9, atol=1e-12) | (np.isnan(a) & np.isnan(b))
        if not same.all():
            row, col = np.argwhere(~same)[0]
            raise ConfigError(
                f"env.features.names: feature {name!r} is not causal: changing the bars after "
                f"{md.index[t]} (row {t}) changed its value at row {row} "
                f"({md.index[row]}), asset {md.symbols[col]} ({a[row, col]!r} -> "
                f"{b[row, col]!r}); row t may use rows <= t only")
    return base


@njit(cache=True)
def _rolling_moments(x, w, mean, std):
    """Mean and sample std (ddof 1) of the last ``w`` rows ending at t, NaN skipped; NaN with
    fewer than two values. Sliding sums of deviations from a shift c (the window's mean), with
    the sums recomputed exactly every ``w`` rows, so no cancellation builds up: O(T) per
    column. Rows outer, columns inner: the (T, N) arrays are read in memory order."""
    T, N = x.shape
    c = np.zeros(N)
    s1 = np.zeros(N)
    s2 = np.zeros(N)
    n = np.zeros(N, dtype=np.int64)
    for t in range(T):
        lo = t - w + 1 if t - w + 1 > 0 else 0
        if t % w == 0:  # exact: the window's mean as the shift, then the sums around it
            n[:] = 0
            s1[:] = 0.0
            for s in range(lo, t + 1):
                for i in range(N):
                    v = x[s, i]
                    if v == v:
                        n[i] += 1
                        s1[i] += v
            for i in range(N):
                c[i] = s1[i] / n[i] if n[i] else 0.0
                s1[i] = 0.0
                s2[i] = 0.0
            for s in range(lo, t + 1):
                for i in range(N):
                    v = x[s, i]
                    if v == v:
                        s1[i] += v - c[i]
                        s2[i] += (v - c[i]) * (v - c[i])
        else:
            for i in range(N):
                v = x[t, i]
                if v == v:
                    n[i] += 1
                    s1[i] += v - c[i]
                    s2[i] += (v - c[i]) * (v - c[i])
                if lo > 0:
                    v = x[lo - 1, i]
                    if v == v:
                        n[i] -= 1
                        s1[i] -= v - c[i]
                        s2[i] -= (v - c[i]) * (v - c[i])
        for i in range(N):
            if n[i] < 2:
                mean[t, i] = np.nan
                std[t, i] = np.nan
                continue
            d = s1[i] / n[i]
            var = (s2[i] - s1[i] * d) / (n[i] - 1)
            mean[t, i] = c[i] + d
            std[t, i] = np.sqrt(var) if var > 0.0 else 0.0


@njit(cache=True)
def _ewm(x, alpha, out):
    """y[0] = x[0], y[t] = (1 - alpha) y[t-1] + alpha x[t] (pandas' adjust=False)."""
    T, N = x.shape
    out[0] = x[0]
    for t in range(1, T):
        for i in range(N):
            out[t, i] = (1.0 - alpha) * out[t - 1, i] + alpha * x[t, i]


@njit(cache=True)
def _rsi(close, n, out):
    """Wilder RSI / 100 - 0.5: EWMs (alpha 1/n) of gains and losses of close-to-close moves."""
    T, N = close.shape
    a = 1.0 / n
    g = np.zeros(N)
    lo = np.zeros(N)
    for t in range(T):
        for i in range(N):
            d = close[t, i] - close[t - 1, i] if t > 0 else 0.0
            up = d if d > 0.0 else 0.0
            dn = -d if d < 0.0 else 0.0
            if t == 0:
                g[i], lo[i] = up, dn
            else:
                g[i] = (1.0 - a) * g[i] + a * up
                lo[i] = (1.0 - a) * lo[i] + a * dn
            total = g[i] + lo[i]
            out[t, i] = (g[i] / total if total > 0.0 else 0.5) - 0.5


@njit(cache=True)
def _store(work, clip, feats, k):
    """NaN and inf to 0, clip to +-clip, into feats[:, :, k] as float32."""
    T, N = work.shape
    for t in range(T):
        for i in range(N):
            v = work[t, i]
            if not np.isfinite(v):
                v = 0.0
            elif v > clip:
                v = clip
            elif v < -clip:
                v = -clip
            feats[t, i, k] = v


def compute_features(md: MarketData, cfg: FeatureConfig) -> np.ndarray:
    """(T, N, F) float32 features of ``md`` in the order of ``cfg.names`` (read-only)."""
    close = np.ascontiguousarray(md.close, dtype=np.float64)
    T, N = close.shape
    log_ret = np.zeros((T, N))
    log_ret[1:] = np.diff(np.log(close), axis=0)
    feats = np.empty((T, N, len(cfg.names)), dtype=np.float32)
    work = np.empty((T, N))
    spare = np.empty((T, N))
    for k, name in enumerate(cfg.names):
        if name == "log_return":
            np.multiply(log_ret, 100.0, out=work)
        elif name == "range":
            with np.errstate(divide="ignore", invalid="ignore"):
                np.multiply(np.log(md.high / md.low), 100.0, out=work)
        elif name == "volatility":
            _rolling_moments(log_ret, cfg.volatility_window, spare, work)
            work *= 100.0
        elif name == "rsi":
            _rsi(close, cfg.rsi_window, work)
        elif name == "macd":
            fast = np.empty((T, N))
            slow = np.empty((T, N))
            _ewm(close, 2.0 / (cfg.macd_fast + 1.0), fast)
            _ewm(close, 2.0 / (cfg.macd_slow + 1.0), slow)
            macd = fast - slow
            _ewm(macd, 2.0 / (cfg.macd_signal + 1.0), slow)  # the signal line
            np.divide(100.0 * (macd - slow), close, out=work)
        elif name == "volume_z":
            vol = np.ascontiguousarray(md.volume, dtype=np.float64)
            _rolling_moments(vol, cfg.volume_window, spare, work)
            with np.errstate(divide="ignore", invalid="ignore"):
                np.divide(vol - spare, work, out=work)  # sd 0 or undefined: 0 below
        elif ":" in name:
            work[:] = custom_feature(name, md)
        else:  # pragma: no cover - FeatureConfig validates names
            raise ValueError(name)
        _store(work, float(cfg.clip), feats, k)
    feats.flags.writeable = False
    return feats


fresh_cache(globals())  # the compiled code on disk must come from these sources (jit_cache)
