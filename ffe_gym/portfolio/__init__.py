"""The trading engine: batched books, numba kernel, attribution. No gymnasium here.

:class:`Portfolio` holds all accounting for B books in dense arrays and steps them with one
numba kernel (:mod:`~ffe_gym.portfolio.kernel`); one book and 256 run the same code::

    from ffe_gym import Portfolio, default_market

    pf = Portfolio(default_market(), n_books=1)
    pf.reset(start=300)
    pf.step_signals(direction=[1, 0, -1, 0, 0], confidence=[0.9, 0, 0.6, 0, 0])  # or step_weights
    pf.equity, pf.attribution(), pf.refusals(), pf.step_fills()

The rules are written in plain Python in :mod:`~ffe_gym.portfolio.specification` (read it top
to bottom to know what a step does) and declared once each, with their keys, refusal reason
and "off" value, in :mod:`~ffe_gym.portfolio.rules`. No result depends on the order of the
assets: where a rule must choose among assets it goes by conviction, then symbol, and
openings that together overdraw are scaled by one factor.

Invariants, tested under thousands of random steps: equity = cash + sum(units x close);
equity - initial = realised + unrealised - fees - borrow, summed over assets; the maintenance
margin holds at every close (so cash >= 0 without borrowing) unless the book is ruined or holds
a position in a closed market; a refused opening changes nothing; B books stepped together
equal the same books stepped one by one. No fill happens at a carried (stale) price: the
portfolio stop sells a closed market's position at its next real open (``pending_liquidation``).

Correlation and VaR read the market's shared tables (:mod:`~ffe_gym.portfolio.statistics`)
where they fit, else scan the held assets only, so memory is O(T x N) for the data plus
O(B x N) for the books. The compiled modules (``kernel``, ``summary``) load when a
:class:`Portfolio` is first used.
"""

from ffe_gym.portfolio import layout
from ffe_gym.portfolio.book import AssetAttribution, Portfolio, build_params, simple_returns

__all__ = ["AssetAttribution", "Portfolio", "build_params", "correlation_factor", "layout",
           "simple_returns"]


def __getattr__(name: str):
    if name == "correlation_factor":
        from ffe_gym.portfolio.kernel import correlation_factor

        return correlation_factor
    raise AttributeError(name)
