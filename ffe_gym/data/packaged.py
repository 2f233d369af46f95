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

``data.source: skfolio`` reads the daily panel that the ``skfolio`` portfolio-optimisation
library ships in its wheel (``pip install 'ffe-gym[classic]'``): ``skfolio.datasets.
load_sp500_dataset()``, 20 S&P 500 constituents (AAPL, AMD, BAC, BBY, CVX, GE, HD, JNJ, JPM,
KO, LLY, MRK, MSFT, PEP, PFE, PG, RRC, UNH, WMT, XOM), and ``load_sp500_index()`` (SP500, the
index), 1990-01-02 .. 2022-12-28, 8,313 days, no gaps. The stocks are adjusted closes
(dividends and splits included), close only, rounded by the package to 3 decimals (early
prices such as AAPL's 0.264 in 1990 move in steps of 0.4%). They are **a survivor-selected
universe**: 20 names known in hindsight to be large in 2022, so every agent's absolute return
is inflated alike and only comparisons within a table mean anything. SP500 is a price index
(no dividends), so against the adjusted stocks it understates the index's total return.

The arch indices are price indices (``Adj Close == Close``): no dividends. WTI has missing days
(``.`` in FRED's file, NaN after the loader); they go through the normal validation and calendar
path like any other missing bar. WTI is close-only: open = high = low = close, so under
``execution.price: next_open`` an order fills at the next close and its stops act on closes.
The panel's ``close_only`` names such symbols, and every report says so.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Iterable
from dataclasses import dataclass

import pandas as pd

from ffe_gym.data.market import DataError, MarketData


@dataclass(frozen=True)
class PackagedSeries:
    module: str  # importable module whose ``loader()`` returns a DataFrame
    title: str
    close_column: str | None = None  # close-only series: the column holding the price
    loader: str = "load"


_SKFOLIO_STOCKS = ("AAPL", "AMD", "BAC", "BBY", "CVX", "GE", "HD", "JNJ", "JPM", "KO", "LLY",
                   "MRK", "MSFT", "PEP", "PFE", "PG", "RRC", "UNH", "WMT", "XOM")


PACKAGES: dict[str, dict[str, PackagedSeries]] = {
    "arch": {
        "SPX": PackagedSeries("arch.data.sp500", "S&P 500 index (price, no dividends)"),
        "IXIC": PackagedSeries("arch.data.nasdaq", "NASDAQ Composite index (price, no dividends)"),
        "WTI": PackagedSeries("arch.data.wti", "WTI crude oil spot, FRED DCOILWTICO (close only)",
                              close_column="DCOILWTICO"),
    },
    "skfolio": {
        **{s: PackagedSeries("skfolio.datasets", f"{s} (adjusted close, close only)",
                             close_column=s, loader="load_sp500_dataset")
           for s in _SKFOLIO_STOCKS},
        "SP500": PackagedSeries("skfolio.datasets", "S&P 500 index (price, no dividends)",
                                close_column="SP500", loader="load_sp500_index"),
    },
}
# what a packaged source gives when no symbols are named (skfolio: the 20 stocks, not the
# index, which is a reference line rather than something to trade beside its members)
DEFAULT_SYMBOLS = {"skfolio": _SKFOLIO_STOCKS}


@functools.lru_cache(maxsize=8)
def _load(module: str, loader: str) -> pd.DataFrame:
    return getattr(importlib.import_module(module), loader)()


def is_packaged(source: str) -> bool:
    return source in PACKAGES


def packaged_frames(source: str, symbols: Iterable[str] | None = None
                    ) -> tuple[dict[str, pd.DataFrame], dict[str, str], tuple[str, ...]]:
    """Per-symbol frames of a packaged source, the loader behind each, and the close-only ones.

    :raises DataError: for an unknown symbol, or when the package is not installed.
    """
    table = PACKAGES[source]
    wanted = list(symbols) if symbols is not None else list(DEFAULT_SYMBOLS.get(source, table))
    unknown = [s for s in wanted if s not in table]
    if unknown:
        raise DataError(f"unknown symbol {unknown[0]!r} (available: {', '.join(table)})",
                        file=f"packaged source {source!r}", symbol=unknown[0])
    frames, files, close_only = {}, {}, []
    for sym in wanted:
        series = table[sym]
        try:
            frame = _load(series.module, series.loader)
        except ImportError:
            extra = {"arch": "eval", "skfolio": "classic"}.get(source)
            how = f"pip install 'ffe-gym[{extra}]'" if extra else f"pip install {source}"
            raise DataError(f"the packaged source {source!r} needs the {source} package "
                            f"({how})", file=series.module, symbol=sym) from None
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
        files[sym] = f"{series.module}.{series.loader}()"
    return frames, files, tuple(close_only)


def describe_packaged(md: MarketData) -> str:
    """One line naming the series of a packaged panel."""
    name = next((n for n in PACKAGES if md.source == f"packaged:{n}"), None)
    if name == "skfolio":
        stocks = [s for s in md.symbols if s in _SKFOLIO_STOCKS]
        out = (f"{len(stocks)} S&P 500 stocks from skfolio.datasets (adjusted closes: "
               "dividends and splits included; close only; a SURVIVOR-SELECTED universe, "
               "known in hindsight to be large in 2022: absolute returns are inflated alike, "
               "compare within the table only)") if stocks else ""
        if "SP500" in md.symbols:
            out += ("; " if out else "") + "SP500: S&P 500 index (price, no dividends)"
        return out
    table = PACKAGES.get(name, {})
    return "; ".join(f"{s}: {table[s].title}" for s in md.symbols if s in table)
