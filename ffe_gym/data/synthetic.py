"""Seeded synthetic markets: correlated assets with volatility regimes, and planted signals.

Everything built here is labelled synthetic: symbols start with ``SYN_`` and
``MarketData.source`` starts with ``synthetic:``. It is the embedded default dataset and the
test fixture; it shows that the machinery works, not that any strategy would earn money.

Model: a two-state Markov regime (calm / turbulent, turbulent multiplies volatility), one common
factor plus idiosyncratic Student-t shocks (unit variance), a small drift per asset. Intrabar
open/high/low are drawn around the close-to-close path so that high >= max(open, close) and
low <= min(open, close) hold exactly.

Planted presets (for learnability tests: a learner that works finds the signal, one with a
shifted observation, a misaligned reward or a broken action mapping does not). Each asset's log
return in bar t is ``mu * s[t, i] + sigma * noise`` with ``sigma`` = 0.4%; every bar opens at
the previous close, so a decision filled at the next open earns exactly that bar's return. What
``s`` is, and the oracle that reads it from the observation (``ffe_agents.oracles``):

* ``trend``: ``s`` = +-1, kept from bar to bar and flipped with probability 1% a bar;
  ``mu`` = 0.15%. Oracle: the sign of the summed ``log_return`` over the window.
* ``alternating``: ``s`` is a square wave, +1 for ``HALF_PERIOD`` bars then -1 for as many,
  each asset with its own phase; ``mu`` = 0.3%. Oracle: the phase that best matches the
  window's ``log_return`` pattern, continued one bar.
* ``lead``: ``s`` = +-1 at random each bar, announced one bar ahead by the volume: bar t's
  volume is ``exp(0.5 * s[t+1])`` times noise; ``mu`` = 0.4%. Oracle: the sign of ``volume_z``.
* ``noise``: ``s`` = 0 (no signal, zero drift). Oracle: cash; nothing can beat it but luck.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from ffe_gym.data.calendar import align
from ffe_gym.data.market import MarketData, infer_periods_per_year


@dataclass(frozen=True)
class Preset:
    """Parameters of one kind of market (per-bar figures)."""

    prefix: str
    weekdays_only: bool
    vol: tuple[float, float]  # per-bar volatility range across assets (calm regime)
    beta: tuple[float, float]  # loading on the common factor
    drift: float  # per-bar drift scale
    start_price: tuple[float, float]
    turbulence: float = 2.5
    p_stay_calm: float = 0.995
    p_stay_turbulent: float = 0.98


PRESETS = {
    "crypto": Preset("SYN_C", False, (0.005, 0.009), (0.55, 0.9), 2e-5, (20.0, 40_000.0)),
    "fx": Preset("SYN_F", True, (0.0008, 0.0015), (0.2, 0.7), 2e-6, (0.8, 1.6)),
}


PLANTED = {"trend": 0.0015, "alternating": 0.003, "lead": 0.004, "noise": 0.0}
PLANTED_SIGMA = 0.004
HALF_PERIOD = 4
FLIP = 0.01  # trend: probability that a trend flips in a bar


def planted_signal(kind: str, n_bars: int, n_assets: int,
                   rng: np.random.Generator) -> np.ndarray:
    """The planted direction ``s`` (T, N) of a planted preset (module doc)."""
    if kind == "trend":
        s = np.empty((n_bars, n_assets))
        s[0] = rng.choice([-1.0, 1.0], n_assets)
        flips = rng.random((n_bars, n_assets)) < FLIP
        for t in range(1, n_bars):
            s[t] = np.where(flips[t], -s[t - 1], s[t - 1])
        return s
    if kind == "alternating":
        phase = rng.integers(0, 2 * HALF_PERIOD, n_assets)
        t = np.arange(n_bars)[:, None] + phase[None, :]
        return np.where((t // HALF_PERIOD) % 2 == 0, 1.0, -1.0)
    if kind == "lead":
        return rng.choice([-1.0, 1.0], (n_bars, n_assets))
    return np.zeros((n_bars, n_assets))


def _planted(kind: str, n_assets: int, n_bars: int, rng: np.random.Generator,
             start: str) -> dict[str, np.ndarray]:
    s = planted_signal(kind, n_bars, n_assets, rng)
    noise = rng.standard_normal((n_bars, n_assets))
    log_ret = PLANTED[kind] * s + PLANTED_SIGMA * noise
    log_ret[0] = 0.0
    close = 100.0 * np.exp(np.cumsum(log_ret, axis=0))
    open_ = np.vstack([np.full((1, n_assets), 100.0), close[:-1]])
    wick = np.abs(rng.normal(0.0, 0.5 * PLANTED_SIGMA, (2, n_bars, n_assets)))
    high = np.maximum(open_, close) * np.exp(wick[0])
    low = np.minimum(open_, close) * np.exp(-wick[1])
    volume = 1000.0 * np.exp(0.2 * rng.standard_normal((n_bars, n_assets)))
    if kind == "lead":  # bar t's volume announces the sign of bar t + 1
        volume[:-1] *= np.exp(0.5 * s[1:])
    return {"open": open_, "high": high, "low": low, "close": close, "volume": volume}


def _calendar(n_bars: int, weekdays_only: bool, start: str) -> pd.DatetimeIndex:
    t0 = pd.Timestamp(start, tz="UTC")
    if not weekdays_only:
        return pd.date_range(t0, periods=n_bars, freq="h")
    # enough hours to hold n_bars weekday bars, then keep Monday..Friday
    idx = pd.date_range(t0, periods=int(n_bars * 7 / 5) + 200, freq="h")
    return idx[idx.day_of_week < 5][:n_bars]


def _frames(preset: Preset, n_assets: int, n_bars: int, rng: np.random.Generator,
            start: str, first: int = 1) -> dict[str, pd.DataFrame]:
    index = _calendar(n_bars, preset.weekdays_only, start)
    regime = np.empty(n_bars, dtype=bool)  # True = turbulent
    u = rng.random(n_bars)
    state = False
    for t in range(n_bars):
        stay = preset.p_stay_turbulent if state else preset.p_stay_calm
        state = state if u[t] < stay else not state
        regime[t] = state
    mult = np.where(regime, preset.turbulence, 1.0)
    df = 5.0
    scale = np.sqrt((df - 2.0) / df)  # unit-variance Student-t
    factor = rng.standard_t(df, n_bars) * scale
    idio = rng.standard_t(df, (n_bars, n_assets)) * scale
    beta = rng.uniform(*preset.beta, n_assets)
    vol = rng.uniform(*preset.vol, n_assets)
    drift = rng.normal(0.0, preset.drift, n_assets)
    shocks = beta * factor[:, None] + np.sqrt(1.0 - beta**2) * idio
    log_ret = drift + vol * mult[:, None] * shocks - 0.5 * (vol * mult[:, None]) ** 2
    log_ret[0] = 0.0
    p0 = np.exp(rng.uniform(*np.log(preset.start_price), n_assets))
    close = p0 * np.exp(np.cumsum(log_ret, axis=0))
    prev = np.vstack([p0[None, :], close[:-1]])
    sig = vol * mult[:, None]
    open_ = prev * np.exp(rng.normal(0.0, 0.1, (n_bars, n_assets)) * sig)
    hi = np.maximum(open_, close) * np.exp(np.abs(rng.normal(0.0, 0.5, (n_bars, n_assets))) * sig)
    lo = np.minimum(open_, close) * np.exp(-np.abs(rng.normal(0.0, 0.5, (n_bars, n_assets))) * sig)
    volume = 1000.0 * np.exp(rng.normal(0.0, 0.3, (n_bars, n_assets))
                             + 0.5 * np.abs(log_ret) / sig)
    return {
        f"{preset.prefix}{first + j}": pd.DataFrame(
            {"open": open_[:, j], "high": hi[:, j], "low": lo[:, j], "close": close[:, j],
             "volume": volume[:, j]}, index=index)
        for j in range(n_assets)
    }


def synthetic_market(n_assets: int = 5, n_bars: int = 8760, preset: str = "crypto",
                     seed: int = 0, start: str = "2022-01-03") -> MarketData:
    """A seeded synthetic hourly market.

    :param n_assets: number of assets N.
    :param n_bars: number of bars T (for ``mixed``, the 24/7 calendar's length).
    :param preset: ``crypto`` (24/7), ``fx`` (weekdays only) or ``mixed`` (crypto and fx assets
        aligned on the union calendar: fx cells are carried forward and not tradable on
        weekends); or a planted preset, ``trend``, ``alternating``, ``lead`` or ``noise``
        (24/7; module doc).
    :param seed: the only source of randomness.
    """
    rng = np.random.default_rng(seed)
    label = f"synthetic:{preset}(n={n_assets},bars={n_bars},seed={seed})"
    if preset in ("crypto", "fx"):
        frames = _frames(PRESETS[preset], n_assets, n_bars, rng, start)
        sym = list(frames)
        index = frames[sym[0]].index
        stack = {f: np.column_stack([frames[s][f].to_numpy() for s in sym])
                 for f in ("open", "high", "low", "close", "volume")}
        return MarketData(symbols=tuple(sym), index=index, tradable=np.ones((n_bars, n_assets),
                          dtype=bool), periods_per_year=infer_periods_per_year(index),
                          source=label, counts={s: {} for s in sym}, **stack)
    if preset in PLANTED:
        stack = _planted(preset, n_assets, n_bars, rng, start)
        index = _calendar(n_bars, False, start)
        sym = tuple(f"SYN_{preset.upper()}{j + 1}" for j in range(n_assets))
        return MarketData(symbols=sym, index=index,
                          tradable=np.ones((n_bars, n_assets), dtype=bool),
                          periods_per_year=infer_periods_per_year(index), source=label,
                          counts={s: {} for s in sym}, **stack)
    if preset == "mixed":
        if n_assets < 2:
            raise ValueError("the mixed preset needs at least 2 assets (crypto and fx)")
        n_fx = max(1, n_assets // 3)
        n_crypto = n_assets - n_fx
        frames = _frames(PRESETS["crypto"], n_crypto, n_bars, rng, start)
        frames |= _frames(PRESETS["fx"], n_fx, int(n_bars * 5 / 7), rng, start)
        return align(frames, "union", max_fill_bars=72, min_bars=2, source=label)
    raise ValueError(f"unknown preset {preset!r} (allowed: crypto, fx, mixed, "
                     f"{', '.join(PLANTED)})")
