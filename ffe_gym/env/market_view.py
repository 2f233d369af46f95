"""MarketView: a policy's read-only, causal view of the market.

Classic portfolio methods need price relatives over a lookback of their own, longer than the
observation's feature window. A :class:`MarketView` is bound to one book of an env: every
accessor returns rows up to the book's current bar (the decision bar, whose close is known)
and nothing later, as read-only arrays. :func:`ffe_gym.evaluation.rollout` hands one to a
policy that defines ``bind_market(view)``; ``PortfolioEnv.market_view()`` makes one by hand.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ffe_gym.data import MarketData
from ffe_gym.portfolio import Portfolio
from ffe_gym.portfolio import layout as L


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


class MarketView:
    """Prices and volumes of bars ``<= bar`` of one book.

    :param market: the env's market.
    :param portfolio: the env's engine; ``book`` selects which book's clock bounds the view.
    """

    def __init__(self, market: MarketData, portfolio: Portfolio, book: int = 0) -> None:
        self._md = market
        self._pf = portfolio
        self._book = book
        self.peeked = False  # hindsight_close was called
        self.symbols = market.symbols
        self.periods_per_year = market.periods_per_year

    @property
    def bar(self) -> int:
        """The current (decision) bar: the last row any accessor returns."""
        return int(self._pf.clock[self._book, L.BAR])

    def _rows(self, a: np.ndarray, lookback: int | None) -> np.ndarray:
        end = self.bar + 1
        start = 0 if lookback is None else max(0, end - int(lookback))
        return _readonly(a[start:end])

    def close(self, lookback: int | None = None) -> np.ndarray:
        """(k, N) closes of the last ``lookback`` bars up to now (all bars when None)."""
        return self._rows(self._md.close, lookback)

    def open(self, lookback: int | None = None) -> np.ndarray:
        return self._rows(self._md.open, lookback)

    def high(self, lookback: int | None = None) -> np.ndarray:
        return self._rows(self._md.high, lookback)

    def low(self, lookback: int | None = None) -> np.ndarray:
        return self._rows(self._md.low, lookback)

    def volume(self, lookback: int | None = None) -> np.ndarray:
        return self._rows(self._md.volume, lookback)

    def tradable(self, lookback: int | None = None) -> np.ndarray:
        return self._rows(self._md.tradable, lookback)

    def index(self, lookback: int | None = None) -> pd.DatetimeIndex:
        end = self.bar + 1
        start = 0 if lookback is None else max(0, end - int(lookback))
        return self._md.index[start:end]

    def hindsight_close(self) -> np.ndarray:
        """(k, N) closes from the current bar to the end of the book's episode: the FUTURE.

        Only for labelled hindsight bounds (BCRP): calling it sets ``peeked``, the rollout
        records it in ``EpisodeResult.hindsight``, and the comparison refuses the result of an
        agent that used it without ``hindsight: true`` in its experiment entry."""
        self.peeked = True
        end = int(self._pf.clock[self._book, L.END])
        return _readonly(self._md.close[self.bar:end + 1])

    def relatives(self, since: int) -> np.ndarray:
        """Price relatives ``close[bar] / close[since]`` (N,): the move since an earlier bar."""
        if not 0 <= since <= self.bar:
            raise ValueError(f"since must be a bar in 0..{self.bar} (the current bar), "
                             f"got {since}")
        c = self._md.close
        return c[self.bar] / c[since]
