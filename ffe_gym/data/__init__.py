"""Market data: the aligned panel, loaders, calendar alignment, synthetic market, splits."""

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
