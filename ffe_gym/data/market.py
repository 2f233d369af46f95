"""MarketData: the immutable, aligned panel every other part of ffe-gym reads."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


class DataError(ValueError):
    """Market data that cannot be used as given. The message names file, symbol and row."""

    def __init__(self, message: str, *, file: str | None = None, symbol: str | None = None,
                 row: object | None = None) -> None:
        parts = []
        if file is not None:
            parts.append(f"file {file}")
        if symbol is not None:
            parts.append(f"symbol {symbol}")
        if row is not None:
            parts.append(f"row {row}")
        prefix = ", ".join(parts)
        super().__init__(f"{prefix}: {message}" if prefix else message)
        self.file, self.symbol, self.row = file, symbol, row


def _frozen(a: np.ndarray, dtype: type) -> np.ndarray:
    out = np.ascontiguousarray(a, dtype=dtype)
    if out is a:
        out = out.copy()
    out.flags.writeable = False
    return out


@dataclass(frozen=True, eq=False)
class MarketData:
    """An aligned OHLCV panel: T bars (rows) by N symbols (columns).

    :param symbols: the N symbol names, in column order.
    :param index: UTC ``DatetimeIndex`` of the T bars (sorted, unique).
    :param open, high, low, close, volume: float64 arrays of shape (T, N).
    :param tradable: bool (T, N); False where a market was closed and its price carried forward.
    :param periods_per_year: bars per year for annualisation (8760 for 24/7 hourly, ...).
    :param source: where the panel came from; synthetic panels say so here.
    :param counts: what alignment did (folded bars, filled bars, trimmed rows), per symbol.
    :param close_only: symbols whose source had closes only (open = high = low = close): under
        ``next_open`` fills they fill at the next close and their stops act on closes.
    """

    symbols: tuple[str, ...]
    index: pd.DatetimeIndex
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    tradable: np.ndarray
    periods_per_year: float
    source: str = "memory"
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    close_only: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        T, N = len(self.index), len(self.symbols)
        for name in ("open", "high", "low", "close", "volume"):
            arr = _frozen(getattr(self, name), np.float64)
            if arr.shape != (T, N):
                raise DataError(f"{name} has shape {arr.shape}, expected {(T, N)}")
            object.__setattr__(self, name, arr)
        tr = _frozen(self.tradable, np.bool_)
        if tr.shape != (T, N):
            raise DataError(f"tradable has shape {tr.shape}, expected {(T, N)}")
        object.__setattr__(self, "tradable", tr)
        object.__setattr__(self, "symbols", tuple(self.symbols))
        object.__setattr__(self, "close_only",
                           tuple(s for s in self.symbols if s in set(self.close_only)))
        if self.index.tz is None or str(self.index.tz) != "UTC":
            raise DataError("index must be tz-aware UTC")

    @property
    def n_bars(self) -> int:
        return len(self.index)

    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    @property
    def is_synthetic(self) -> bool:
        return self.source.startswith("synthetic")

    def slice(self, start: int, stop: int) -> MarketData:
        """Bars ``start:stop`` (positional) as a new panel."""
        sl = slice(start, stop)
        return MarketData(
            symbols=self.symbols, index=self.index[sl], open=self.open[sl], high=self.high[sl],
            low=self.low[sl], close=self.close[sl], volume=self.volume[sl],
            tradable=self.tradable[sl], periods_per_year=self.periods_per_year,
            source=self.source, counts=self.counts, close_only=self.close_only,
        )

    def select(self, symbols: list[str] | tuple[str, ...]) -> MarketData:
        """A panel with only ``symbols`` (in that order)."""
        missing = [s for s in symbols if s not in self.symbols]
        if missing:
            raise DataError(f"unknown symbol {missing[0]!r} (available: {', '.join(self.symbols)})",
                            symbol=missing[0])
        cols = [self.symbols.index(s) for s in symbols]
        return MarketData(
            symbols=tuple(symbols), index=self.index, open=self.open[:, cols],
            high=self.high[:, cols], low=self.low[:, cols], close=self.close[:, cols],
            volume=self.volume[:, cols], tradable=self.tradable[:, cols],
            periods_per_year=self.periods_per_year, source=self.source,
            counts={s: self.counts[s] for s in symbols if s in self.counts},
            close_only=self.close_only,
        )

    def locate(self, when: str | pd.Timestamp, side: str = "left") -> int:
        """Position of the first bar at or after ``when`` (``side='left'``), or after it
        (``side='right'``). A date without a time (``"2022-06-30"``) given with
        ``side='right'`` means the whole day: the position after that day's last bar, so an
        inclusive end date keeps all its bars.

        :raises DataError: for a string that is not a date.
        """
        try:
            ts = pd.Timestamp(when)
        except (ValueError, TypeError):
            raise DataError(f"{when!r} is not a date (expected YYYY-MM-DD or "
                            "YYYY-MM-DD HH:MM)") from None
        if ts is pd.NaT:
            raise DataError(f"{when!r} is not a date (expected YYYY-MM-DD or YYYY-MM-DD HH:MM)")
        ts = ts.tz_localize("UTC") if ts.tz is None else ts.tz_convert("UTC")
        if side == "right" and isinstance(when, str) and _DATE_ONLY.match(when.strip()):
            return int(self.index.searchsorted(ts + pd.Timedelta(days=1), side="left"))
        return int(self.index.searchsorted(ts, side=side))

    def digest(self) -> str:
        """SHA-256 over symbols, timestamps and all arrays: the data hash in run manifests."""
        h = hashlib.sha256()
        h.update("|".join(self.symbols).encode())
        h.update(self.index.as_unit("ns").asi8.tobytes())
        for name in ("open", "high", "low", "close", "volume", "tradable"):
            h.update(getattr(self, name).tobytes())
        return h.hexdigest()

    def describe(self) -> str:
        span = f"{self.index[0]:%Y-%m-%d %H:%M} .. {self.index[-1]:%Y-%m-%d %H:%M}"
        label = " [SYNTHETIC]" if self.is_synthetic else ""
        closes = (f"; close-only: {', '.join(self.close_only)} (a next_open order fills at the "
                  "next close; stops act on closes)" if self.close_only else "")
        gaps = calendar_gaps(self.index)
        if gaps:
            closes += (f"; {len(gaps)} gap(s) in the data, first "
                       f"{gaps[0][0][:10]}..{gaps[0][1][:10]}")
        return (f"{self.n_assets} assets x {self.n_bars} bars, {span} UTC, "
                f"{self.periods_per_year:g} bars/year, source {self.source}{label}{closes}")


def symbol_ranks(symbols: tuple[str, ...] | list[str]) -> np.ndarray:
    """Each symbol's place in sorted order (int64): what a rule or a policy that must choose
    among equals, or draw one number per asset, goes by, so that nothing depends on the
    order of the columns."""
    order = sorted(range(len(symbols)), key=lambda i: symbols[i])
    ranks = np.empty(len(symbols), dtype=np.int64)
    ranks[order] = np.arange(len(symbols))
    return ranks


def infer_periods_per_year(index: pd.DatetimeIndex) -> float:
    """Bars per year from the calendar, robust to gaps in the data.

    The median spacing gives the bar length. The weekly pattern chooses between a 24/7
    calendar (8760 hourly, 365 daily) and a weekday one (6240 hourly, 252 daily): a 24/7
    market has about 2/7 of its bars on Saturdays and Sundays, a weekday market almost none
    (forex's Sunday-evening open is a few percent). Only when the weekend share is ambiguous
    does the density of bars decide, so a missing month in a 24/7 market does not make it a
    weekday calendar.
    """
    if len(index) < 3:
        raise DataError("too few bars to infer the calendar (need at least 3)")
    ns = index.as_unit("ns").asi8
    step = float(np.median(np.diff(ns))) / 1e9  # seconds
    year = 365.0 * 86400.0
    full = year / step
    if abs(step - 86400.0) < 1.0:
        candidates = (365.0, 252.0)
    elif abs(step - 3600.0) < 1.0:
        candidates = (8760.0, 6240.0)
    else:
        candidates = (full, full * 5.0 / 7.0)
    if step < 7 * 86400.0 and ns[-1] - ns[0] >= 14 * 86400e9:  # two weeks tell the pattern
        weekend = float(np.isin(index.day_of_week, (5, 6)).mean())
        if weekend > 0.15:
            return float(candidates[0])
        if weekend < 0.05:
            return float(candidates[1])
    span_years = (ns[-1] - ns[0]) / 1e9 / year
    observed = (len(index) - 1) / span_years if span_years > 0 else full
    return float(min(candidates, key=lambda c: abs(np.log(observed / c))))


def calendar_gaps(index: pd.DatetimeIndex, min_days: float = 7.0) -> list[tuple[str, str]]:
    """Stretches without a bar of at least ``min_days`` days and 3 median bar spacings
    (weekends and ordinary holidays are shorter): (last bar before, first bar after)."""
    if len(index) < 3:
        return []
    ns = index.as_unit("ns").asi8
    d = np.diff(ns)
    limit = max(3.0 * float(np.median(d)), min_days * 86400e9)
    at = np.flatnonzero(d >= limit)
    return [(str(index[k]), str(index[k + 1])) for k in at]
