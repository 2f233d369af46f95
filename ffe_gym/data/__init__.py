"""Market data: the aligned panel, loaders, calendar alignment, synthetic market, splits.

:class:`MarketData` is an immutable panel: ``symbols`` (N), a UTC ``DatetimeIndex`` (T), float64
(T, N) arrays ``open``, ``high``, ``low``, ``close``, ``volume``, a ``tradable`` mask and
``periods_per_year`` inferred from the calendar (24/7 hourly 8760, 24/5 hourly 6240, daily
stocks 252, daily crypto 365)::

    from ffe_gym.data import load_market, synthetic_market, walk_forward

    md = load_market("arch")                       # real daily SPX, IXIC, WTI inside arch
    md = load_market("prices/", calendar="union")  # a folder or file, CSV or Parquet
    md = load_market(df)                           # a DataFrame (layouts below)
    md = synthetic_market(n_assets=5, n_bars=8760, preset="crypto", seed=0)  # labelled SYNTHETIC
    folds = walk_forward(md.n_bars, n_folds=3, train=4000, validation=1000, test=1000,
                         embargo=300)

**Layouts** (:func:`load_market`): one symbol per file (``time, open, high, low, close[,
volume]``; the symbol is the file stem up to a timeframe token, ``BTC_USD_H1_2020_2023.parquet``
-> ``BTC_USD``), long (``time, symbol, ...``; the symbol column may be ``symbol``, ``tic`` or
``ticker`` and the time ``date``, ``timestamp`` or ``time``, so FinRL's frame loads as it is),
close-only wide tables, one symbol's OHLCV, yfinance's (Price, Ticker) columns (``adjusted=True``
uses ``Adj Close`` and scales open, high and low to it), Alpaca's (symbol, timestamp) index,
ccxt's rows in unnamed columns 0..5, or a mapping of symbol to DataFrames or to ccxt's
``fetch_ohlcv`` lists. ``columns={...}`` renames. Nothing is downloaded by ffe-gym::

    md = load_market(yf.download(["SPY", "TLT"], auto_adjust=False), adjusted=True)
    md = load_market({s: exchange.fetch_ohlcv(s, "1h") for s in pairs})   # ccxt, as returned

**Packaged real data** (:mod:`~ffe_gym.data.packaged`): ``arch`` (S&P 500 and NASDAQ daily OHLCV
1999-2018, WTI closes) and ``skfolio`` (20 S&P 500 stocks' adjusted closes 1990-2022 and the
index), read through those packages' own loaders.

**Calendars** (:mod:`~ffe_gym.data.calendar`): ``intersection`` keeps the bars all symbols share
and folds an asset's other bars into its next kept bar (open of the first, max high, min low,
close of the last, summed volume), so a weekend crash in BTC reaches its stop on Monday's bar;
rows after the last common bar are not folded (that would be a look-ahead). ``union`` keeps
every bar; a closed market's close is carried forward, the cell marked not tradable (no orders,
no stops) and counted; a run longer than ``max_fill_bars`` is an error. A close-only symbol
(open = high = low = close) is named in ``MarketData.close_only``: a ``next_open`` order fills at
its next close and its stops act on closes.

**Errors**: :class:`DataError` names the file, symbol and first offending row for unsorted or
duplicate timestamps, non-positive, infinite or absurd prices, high < low, NaN runs beyond
``max_fill_bars``, ambiguous columns (``close`` beside ``Close``), mixed bar lengths, mixed
timestamp units or time zones, no overlap, too few bars and unknown symbols; a missing column
is named with the columns seen and the likeliest of them. Timestamps are dates or epoch numbers
whose unit (s, ms, us, ns) is read from their magnitude; naive ones are UTC; an end date without
a time includes the whole day. A missing volume keeps its bar (counted as ``volume_missing``);
missing prices drop it.
"""

from ffe_gym.data.calendar import align, decision_bars
from ffe_gym.data.loaders import from_frames, load_market, restrict_dates, validate
from ffe_gym.data.market import DataError, MarketData, infer_periods_per_year, symbol_ranks
from ffe_gym.data.splits import Fold, Window, split_by_date, split_by_fraction, walk_forward
from ffe_gym.data.synthetic import synthetic_market

__all__ = [
    "DataError",
    "Fold",
    "MarketData",
    "Window",
    "align",
    "decision_bars",
    "default_market",
    "from_frames",
    "infer_periods_per_year",
    "load_market",
    "market_from_config",
    "restrict_dates",
    "split_by_date",
    "split_by_fraction",
    "symbol_ranks",
    "synthetic_market",
    "validate",
    "walk_forward",
]


def default_market() -> MarketData:
    """The embedded default dataset: a seeded SYNTHETIC crypto-like hourly market (5 x 8760)."""
    return synthetic_market()


def market_from_config(cfg) -> MarketData:  # cfg: ffe_gym.config.DataConfig
    """Build the panel a :class:`ffe_gym.config.DataConfig` describes."""
    if cfg.source == "synthetic":
        s = cfg.synthetic
        md = synthetic_market(s.n_assets, s.n_bars, s.preset, s.seed)
        if cfg.symbols is not None:
            md = md.select(cfg.symbols)
        return restrict_dates(md, cfg.start, cfg.end, min_bars=cfg.min_bars)
    return load_market(cfg.source, symbols=cfg.symbols, calendar=cfg.calendar,
                       max_fill_bars=cfg.max_fill_bars, min_bars=cfg.min_bars,
                       start=cfg.start, end=cfg.end)
