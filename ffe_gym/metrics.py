"""Performance metrics of one equity curve, with their conventions written down.

Conventions (the same as empyrical's, which the tests compare against):

* ``equity`` is the per-bar curve including the starting value: ``equity[0]`` is the equity at
  the first decision bar, ``equity[k]`` at the close of the k-th bar after it.
* Returns are simple per-bar returns ``r_k = equity[k] / equity[k-1] - 1``. The risk-free rate
  (``risk_free``, a constant annual rate, default 0) enters the Sharpe and Sortino ratios as a
  per-bar rate ``(1 + risk_free) ** (1 / ppy) - 1`` subtracted from every return.
* Annualisation uses ``periods_per_year`` of the data (8760 for 24/7 hourly, 252 for daily
  stocks, ...): ``years = len(r) / periods_per_year``.
* ``volatility = std(r, ddof=1) * sqrt(ppy)``; with ``x = r - rf_bar``:
  ``sharpe = mean(x) / std(x, ddof=1) * sqrt(ppy)``, and 0 for a riskless curve
  (``std(x) = 0``: a book that stayed in cash, whatever the risk-free rate, since cash here
  earns nothing and risks nothing), so every run has a defined Sharpe ratio;
  ``sortino = mean(x) * ppy / (sqrt(mean(min(x, 0)^2)) * sqrt(ppy))``.
* ``cagr = (equity[-1] / equity[0]) ** (1 / years) - 1``.
* ``max_drawdown`` is the most negative ``equity / running peak - 1`` (a number <= 0);
  ``calmar = cagr / |max_drawdown|``.
* ``var_95`` and ``cvar_95`` are historical, per bar, reported as the returns themselves
  (negative numbers are losses): VaR is the 5th percentile of r; CVaR is the mean of the
  ``floor((n - 1) * 0.05) + 1`` smallest returns.
* Trade statistics use closing fills' P&L net of their fees (entry fees pro rata):
  ``trades`` counts closing fills, ``win_rate = wins / trades``; ``profit_factor = gross wins
  / gross losses``. ``fills`` counts every fill, openings and closings.
* ``turnover`` is traded notional over mean equity for the whole run (2.0 = the book was bought
  and sold once); ``turnover_per_year`` divides by years. ``exposure`` is the mean of gross
  exposure / equity over bars.

A figure that is undefined (a ratio with a zero denominator, too few bars) is ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

METRIC_NAMES = (
    "total_return", "cagr", "volatility", "sharpe", "sortino", "max_drawdown", "calmar",
    "var_95", "cvar_95", "trades", "fills", "win_rate", "profit_factor", "avg_win", "avg_loss",
    "turnover", "turnover_per_year", "exposure", "bars", "final_equity",
)


def _ratio(a: float, b: float) -> float | None:
    return float(a / b) if b != 0 and np.isfinite(a) and np.isfinite(b) else None


def returns_of(equity: np.ndarray) -> np.ndarray:
    """Simple per-bar returns of an equity curve."""
    e = np.asarray(equity, dtype=np.float64)
    return e[1:] / e[:-1] - 1.0


def sharpe_ratio(returns: np.ndarray, periods_per_year: float) -> float | None:
    r = np.asarray(returns, dtype=np.float64)
    if len(r) < 2:
        return None
    sd = r.std(ddof=1)
    return _ratio(r.mean() * math.sqrt(periods_per_year), sd)


def max_drawdown(equity: np.ndarray) -> float:
    e = np.asarray(equity, dtype=np.float64)
    peak = np.maximum.accumulate(e)
    return float((e / peak - 1.0).min())


def compute_metrics(equity: Sequence[float] | np.ndarray, periods_per_year: float, *,
                    trade_pnls: Sequence[float] | np.ndarray | None = None,
                    traded_notional: float | None = None,
                    gross_exposure: Sequence[float] | np.ndarray | None = None,
                    risk_free: float = 0.0, fills: int | None = None,
                    ) -> dict[str, float | int | None]:
    """All metrics of one run.

    :param equity: per-bar equity curve including the starting value.
    :param periods_per_year: bars per year of the data.
    :param trade_pnls: net P&L of each closing fill.
    :param traded_notional: sum of |units * price| over all fills.
    :param gross_exposure: per-bar gross exposure aligned with ``equity``.
    :param risk_free: constant annual risk-free rate for the Sharpe and Sortino ratios.
    :param fills: number of fills, openings and closings.
    """
    e = np.asarray(equity, dtype=np.float64)
    if e.ndim != 1 or len(e) < 1:
        raise ValueError("equity must be a non-empty 1-D curve")
    r = returns_of(e)
    n = len(r)
    years = n / periods_per_year
    out: dict[str, float | int | None] = dict.fromkeys(METRIC_NAMES)
    out["bars"] = n
    out["final_equity"] = float(e[-1])
    growth = e[-1] / e[0]
    out["total_return"] = float(growth - 1.0)
    if n >= 1 and growth > 0:
        out["cagr"] = float(growth ** (1.0 / years) - 1.0)
    if n >= 2:
        sd = r.std(ddof=1)
        out["volatility"] = float(sd * math.sqrt(periods_per_year))
        x = r - ((1.0 + risk_free) ** (1.0 / periods_per_year) - 1.0) if risk_free else r
        out["sharpe"] = sharpe_ratio(x, periods_per_year) if x.std(ddof=1) > 0 else 0.0
        downside = math.sqrt(np.mean(np.minimum(x, 0.0) ** 2)) * math.sqrt(periods_per_year)
        out["sortino"] = _ratio(x.mean() * periods_per_year, downside)
    out["max_drawdown"] = max_drawdown(e)
    if out["cagr"] is not None and out["max_drawdown"] != 0:
        out["calmar"] = _ratio(out["cagr"], abs(out["max_drawdown"]))
    if n >= 1:
        out["var_95"] = float(np.percentile(r, 5.0))
        k = int((n - 1) * 0.05)
        out["cvar_95"] = float(np.partition(r, k)[: k + 1].mean())
    pnl = np.asarray(trade_pnls if trade_pnls is not None else [], dtype=np.float64)
    out["trades"] = len(pnl)
    out["fills"] = fills
    if len(pnl):
        wins, losses = pnl[pnl > 0], pnl[pnl <= 0]
        out["win_rate"] = float(len(wins) / len(pnl))
        out["profit_factor"] = _ratio(wins.sum(), -losses.sum())
        out["avg_win"] = float(wins.mean()) if len(wins) else None
        out["avg_loss"] = float(losses.mean()) if len(losses) else None
    if traded_notional is not None:
        out["turnover"] = _ratio(traded_notional, float(e.mean()))
        if out["turnover"] is not None and years > 0:
            out["turnover_per_year"] = out["turnover"] / years
    if gross_exposure is not None:
        g = np.asarray(gross_exposure, dtype=np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(e > 0, g / e, np.nan)
        out["exposure"] = float(np.nanmean(ratio)) if np.isfinite(ratio).any() else None
    return out
