"""Real market data that ships inside a PyPI package, read through that package's own loaders.

``data.source: arch`` reads the daily series that the ``arch`` econometrics library ships in its
wheel (nothing is copied into this project and nothing is downloaded):

=======  ==============================================  ==========================  =========
symbol   series                                          loader                      columns
=======  ==============================================  ==========================  =========
SPX      S&P 500 index, 1999-01-04 .. 2018-12-31         ``arch.data.sp500.load()``  OHLCV
IXIC     NASDAQ Composite index, 1999-01-04 .. 2018-12   ``arch.data.nasdaq.load()`` OHLCV
WTI      WTI crude oil spot (FRED ``DCOILWTICO``), 1986  ``arch.data.wti.load()``    close only
=======  ==============================================  ==========================  =========

The indices are price indices (``Adj Close == Close``): no dividends. WTI has missing days
(``.`` in FRED's file, NaN after the loader); they go through the normal validation and calendar
path like any other missing bar. WTI is close-only: open = high = low = close, so under
``execution.price: next_open`` an order fills at the next close and its stops act on closes.
The panel's ``close_only`` names such symbols, and every report says so.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from ffe_gym.data.market import DataError, MarketData


@dataclass(frozen=True)
class PackagedSeries:
    module: str  # importable module with a ``load()`` returning a DataFrame
    title: str
    close_column: str | None = None  # close-only series: the column holding the price


PACKAGES: dict[str, dict[str, PackagedSeries]] = {
    "arch": {
        "SPX": PackagedSeries("arch.data.sp500", "S&P 500 index (price, no dividends)"),
        "IXIC": PackagedSeries("arch.data.nasdaq", "NASDAQ Composite index (price, no dividends)"),
        "WTI": PackagedSeries("arch.data.wti", "WTI crude oil spot, FRED DCOILWTICO (close only)",
                              close_column="DCOILWTICO"),
    },
}


def is_packaged(source: str) -> bool:
    return source in PACKAGES


def packaged_frames(source: str, symbols: Iterable[str] | None = None
                    ) -> tuple[dict[str, pd.DataFrame], dict[str, str], tuple[str, ...]]:
    """Per-symbol frames of a packaged source, the loader behind each, and the close-only ones.

    :raises DataError: for an unknown symbol, or when the package is not installed.
    """
    table = PACKAGES[source]
    wanted = list(symbols) if symbols is not None else list(table)
    unknown = [s for s in wanted if s not in table]
    if unknown:
        raise DataError(f"unknown symbol {unknown[0]!r} (available: {', '.join(table)})",
                        file=f"packaged source {source!r}", symbol=unknown[0])
    frames, files, close_only = {}, {}, []
    for sym in wanted:
        series = table[sym]
        try:
            module = importlib.import_module(series.module)
        except ImportError:
            raise DataError(f"the packaged source {source!r} needs the {source} package "
                            f"(pip install {source})", file=series.module, symbol=sym) from None
        frame = module.load()
        if series.close_column is not None:
            if series.close_column not in frame.columns:
                raise DataError(f"no column {series.close_column!r} (have: "
                                f"{', '.join(map(str, frame.columns))})",
                                file=series.module, symbol=sym)
            close = frame[series.close_column]
            frame = pd.DataFrame({"open": close, "high": close, "low": close, "close": close},
                                 index=frame.index)
            close_only.append(sym)
        frames[sym] = frame
        files[sym] = f"{series.module}.load()"
    return frames, files, tuple(close_only)


def describe_packaged(md: MarketData) -> str:
    """One line naming the series of a packaged panel."""
    table = next((t for name, t in PACKAGES.items() if md.source == f"packaged:{name}"), {})
    return "; ".join(f"{s}: {table[s].title}" for s in md.symbols if s in table)
