"""Journal: what one book did over a run (equity curve, exposure, fills) and its metrics.

The engine reports each step in reusable buffers; a journal copies what one book needs after
each step, outside the kernel. It is the raw material of backtest tables, ``EpisodeResult`` and
trade logs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from ffe_gym.metrics import compute_metrics
from ffe_gym.portfolio import layout as L
from ffe_gym.portfolio.book import Portfolio

TRADE_COLUMNS = ("time", "bar", "asset", "action", "units", "price", "fee", "pnl", "net_pnl",
                 "return_pct", "reason")


@dataclass
class Journal:
    """Per-bar equity and gross exposure (starting value first) and every fill of book ``b``."""

    portfolio: Portfolio
    book: int = 0
    bars: list[int] = field(default_factory=list)
    equity: list[float] = field(default_factory=list)
    gross: list[float] = field(default_factory=list)
    _fills: list[np.ndarray] = field(default_factory=list)

    def start(self) -> None:
        """Record the starting point (call right after ``Portfolio.reset``)."""
        pf, b = self.portfolio, self.book
        self.bars[:] = [int(pf.bar[b])]
        self.equity[:] = [float(pf.equity[b])]
        self.gross[:] = [float(pf.acct[b, L.GROSS])]
        self._fills.clear()

    def record(self) -> None:
        """Record the step just taken."""
        pf, b = self.portfolio, self.book
        n = int(pf.n_curve[b])
        if n:
            last = int(pf.bar[b])
            self.bars.extend(range(last - n + 1, last + 1))
            self.equity.extend(pf.curve[b, :n].tolist())
            self.gross.extend(pf.gross_curve[b, :n].tolist())
        if pf.n_fills[b]:
            self._fills.append(pf.fills[b, : pf.n_fills[b]].copy())

    @property
    def fills(self) -> np.ndarray:
        """(n, NFILL) array of every fill so far (fields ``layout.F_*``)."""
        if not self._fills:
            return np.zeros((0, L.NFILL))
        return np.concatenate(self._fills)

    def trades(self) -> pd.DataFrame:
        """The trade log: one row per fill, in time order.

        ``action`` is BUY or SELL; ``pnl`` is realised on fill prices for closing fills;
        ``return_pct`` is that P&L over the entry value of the closed units.
        """
        f = self.fills
        md = self.portfolio.market
        closing = f[:, L.F_CLOSING] == 1.0
        units = f[:, L.F_UNITS]
        price = f[:, L.F_PRICE]
        pnl = f[:, L.F_PNL]
        with np.errstate(divide="ignore", invalid="ignore"):
            entry = price + pnl / units  # pnl = -units * (price - entry) for a closing fill
            ret = np.where(closing, pnl / np.abs(units * entry) * 100.0, np.nan)
        bars = f[:, L.F_BAR].astype(int)
        return pd.DataFrame({
            "time": md.index[bars] if len(bars) else pd.DatetimeIndex([], tz="UTC"),
            "bar": bars,
            "asset": [md.symbols[int(i)] for i in f[:, L.F_ASSET]],
            "action": np.where(units > 0, "BUY", "SELL"),
            "units": units,
            "price": price,
            "fee": f[:, L.F_FEE],
            "pnl": np.where(closing, pnl, np.nan),
            "net_pnl": np.where(closing, f[:, L.F_NET], np.nan),
            "return_pct": ret,
            "reason": [L.REASON_NAMES[int(k)] for k in f[:, L.F_REASON]],
        }, columns=list(TRADE_COLUMNS))

    def metrics(self, risk_free: float = 0.0) -> dict[str, float | int | None]:
        """:func:`ffe_gym.metrics.compute_metrics` of this run (``risk_free``: annual rate)."""
        f = self.fills
        closing = f[:, L.F_CLOSING] == 1.0
        traded = float(np.abs(f[:, L.F_UNITS] * f[:, L.F_PRICE]).sum())
        return compute_metrics(np.asarray(self.equity), self.portfolio.market.periods_per_year,
                               trade_pnls=f[closing, L.F_NET], traded_notional=traded,
                               gross_exposure=np.asarray(self.gross), risk_free=risk_free,
                               fills=len(f))
