"""Forward testing: any policy trades a paper book on live bars, with the backtest's own step.

``ffe-gym live`` (:mod:`ffe_gym.commands.live`) runs :class:`LiveLoop` on a feed
(:mod:`~ffe_gym.live.feeds`: a ccxt exchange's public bars, Alpaca's market data, or a file
another program appends to), keeping everything in a journal (:mod:`~ffe_gym.live.journal`)
from which the book is rebuilt at every bar, so a restart after any kill neither repeats nor
skips a bar. Optionally the book's fills go to Alpaca's paper-trading API as orders
(:mod:`~ffe_gym.live.broker`).
"""

from ffe_gym.live.feeds import CcxtFeed, Feed, FeedError, FileFeed
from ffe_gym.live.journal import LiveJournal
from ffe_gym.live.loop import LiveError, LiveLoop

__all__ = ["CcxtFeed", "Feed", "FeedError", "FileFeed", "LiveError", "LiveJournal",
           "LiveLoop"]
