"""Splits of a panel in time: by date, by fraction, and walk-forward folds with an embargo.

Windows are half-open bar ranges ``[start, stop)`` on the full panel, so that features and
rolling statistics at a window's first bar can use the bars before it (they are in the past).
The embargo between train, validation and test must cover the longest lookback (features,
correlation and VaR windows) so that no bar used to fit a model is inside a test feature window.
"""

from __future__ import annotations

from dataclasses import dataclass

from ffe_gym.data.market import DataError, MarketData


@dataclass(frozen=True)
class Window:
    """Half-open bar range ``[start, stop)``."""

    start: int
    stop: int

    def __len__(self) -> int:
        return self.stop - self.start

    def of(self, md: MarketData) -> MarketData:
        return md.slice(self.start, self.stop)


@dataclass(frozen=True)
class Fold:
    """One walk-forward fold: train, validation and test windows in that order in time."""

    index: int
    train: Window
    validation: Window
    test: Window


def split_by_fraction(md: MarketData, fraction: float) -> tuple[Window, Window]:
    """``[0, f*T)`` and ``[f*T, T)``."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    cut = round(md.n_bars * fraction)
    return Window(0, cut), Window(cut, md.n_bars)


def split_by_date(md: MarketData, date: str) -> tuple[Window, Window]:
    """Bars before ``date`` and bars at or after it."""
    cut = md.locate(date)
    if cut in (0, md.n_bars):
        raise DataError(f"split date {date} is outside the data "
                        f"({md.index[0]} .. {md.index[-1]})", file=md.source)
    return Window(0, cut), Window(cut, md.n_bars)


def walk_forward(n_bars: int, *, n_folds: int, train: int, validation: int, test: int,
                 embargo: int, anchored: bool = False) -> list[Fold]:
    """Walk-forward folds whose test windows tile the end of the data.

    Each fold is ``train | embargo | validation | embargo | test``; fold k+1's test window
    follows fold k's. ``anchored`` grows the training window from bar 0 instead of sliding it.

    :raises DataError: when the folds do not fit in ``n_bars``.
    """
    if min(n_folds, train, validation, test) < 1 or embargo < 0:
        raise ValueError("n_folds, train, validation and test must be >= 1 and embargo >= 0")
    span = train + validation + test + 2 * embargo
    need = span + (n_folds - 1) * test
    if need > n_bars:
        raise DataError(f"{n_folds} folds of train={train}, validation={validation}, "
                        f"test={test}, embargo={embargo} need {need} bars; the data has {n_bars}")
    offset = n_bars - need
    folds = []
    for k in range(n_folds):
        s = offset + k * test
        tr = Window(0 if anchored else s, s + train)
        va = Window(tr.stop + embargo, tr.stop + embargo + validation)
        te = Window(va.stop + embargo, va.stop + embargo + test)
        folds.append(Fold(k, tr, va, te))
    return folds
