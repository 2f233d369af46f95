"""Feeds of closed bars for the live loop.

A feed answers one question, ``bars(since)``: the bars it has whose open time is at or after
``since``, the one still forming included. The loop takes a bar only once it is closed, its open
time plus the bar length plus the feed's grace at or before the loop's clock
(:func:`closed`), and a bar stamped after that clock tells it the clock runs behind the feed.
Rows are a long frame
(``time`` in int64 nanoseconds UTC, the bar's open time; ``symbol``; ``open, high, low, close,
volume``). What the loop does with duplicates, revisions and late bars is the loop's business
(:mod:`ffe_gym.live.loop`); a feed only reports what it sees. A transient failure (a network
error, an exchange's error reply) raises :class:`FeedError`, which the loop retries with backoff.

* :class:`FileFeed`: a CSV or Parquet file that another program appends to, in any long layout
  :func:`~ffe_gym.data.load_market` reads (``date``/``time``/``timestamp``,
  ``symbol``/``tic``/``ticker``, OHLC, volume). A last CSV line without its newline is still
  being written and is left for the next poll.
* :class:`CcxtFeed`: a ccxt exchange's public OHLCV (``fetch_ohlcv``; no keys), e.g. Binance.
* :class:`AlpacaFeed`: Alpaca's market data (alpaca-py), stocks or crypto; the keys are read
  from ``ALPACA_API_KEY`` and ``ALPACA_SECRET_KEY`` and never written anywhere.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from ffe_gym.data import DataError
from ffe_gym.data.loaders import _split_table, _time_index

COLUMNS = ("time", "symbol", "open", "high", "low", "close", "volume")


class FeedError(RuntimeError):
    """A transient failure of a feed: the loop retries it with backoff, and counts it."""


class Feed(Protocol):
    """What the live loop reads bars from."""

    symbols: tuple[str, ...]
    bar_seconds: float
    grace_seconds: float

    def bars(self, since: int | None) -> pd.DataFrame: ...


def empty_bars() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "time" else "object" if c ==
                                      "symbol" else "float64") for c in COLUMNS})


def since_rows(frame: pd.DataFrame, since: int | None) -> pd.DataFrame:
    """The rows opened at or after ``since``, in time then symbol order."""
    if since is not None:
        frame = frame[frame["time"].to_numpy() >= since]
    return frame.sort_values(["time", "symbol"], kind="stable").reset_index(drop=True)


def closed(frame: pd.DataFrame, now: pd.Timestamp, bar_seconds: float,
           grace_seconds: float) -> pd.DataFrame:
    """The rows of ``frame`` whose bar has closed, grace included, by ``now``."""
    length = round((bar_seconds + grace_seconds) * 1e9)
    return frame[frame["time"].to_numpy() + length <= pd.Timestamp(now).value]


class FileFeed:
    """Bars from a file another program appends to.

    :param path: a CSV or Parquet file in a long layout.
    :param bar_seconds: the bar length (a bar stamped t closes at t + bar_seconds).
    :param grace_seconds: how long after its close a bar is still allowed to change.
    :param symbols: the symbols to trade (default: every symbol in the file at the start).
    """

    def __init__(self, path: str | Path, bar_seconds: float, grace_seconds: float = 0.0,
                 symbols: Sequence[str] | None = None) -> None:
        self.path = Path(path)
        self.name = str(self.path)
        self.bar_seconds = float(bar_seconds)
        self.grace_seconds = float(grace_seconds)
        self.symbols = tuple(symbols) if symbols else tuple(sorted(self._read()["symbol"]
                                                                   .unique()))

    def _read(self) -> pd.DataFrame:
        try:
            if self.path.suffix.lower() in (".parquet", ".pq"):
                table = pd.read_parquet(self.path)
            else:
                text = self.path.read_text()
                text = text[: text.rfind("\n") + 1]  # a line still being written waits
                table = pd.read_csv(io.StringIO(text))
        except FileNotFoundError:
            raise DataError("no such file", file=str(self.path)) from None
        except (OSError, ValueError) as exc:  # a torn read while the writer replaces the file
            raise FeedError(f"{self.path}: cannot read ({exc})") from None
        rows = []
        for sym, frame in _split_table(table, str(self.path)).items():
            index = _time_index(frame, str(self.path), sym)
            lower = {str(c).lower(): c for c in frame.columns}
            missing = [c for c in ("open", "high", "low", "close") if c not in lower]
            if missing:
                raise DataError(f"missing column {missing[0]!r}", file=str(self.path),
                                symbol=sym)
            volume = (frame[lower["volume"]].to_numpy(float) if "volume" in lower
                      else np.full(len(frame), np.nan))
            rows.append(pd.DataFrame({
                "time": index.as_unit("ns").asi8, "symbol": str(sym),
                **{c: frame[lower[c]].to_numpy(float) for c in ("open", "high", "low",
                                                                "close")},
                "volume": volume}))
        return pd.concat(rows, ignore_index=True) if rows else empty_bars()

    def bars(self, since: int | None) -> pd.DataFrame:
        frame = self._read()
        return since_rows(frame[frame["symbol"].isin(self.symbols)], since)


class CcxtFeed:
    """A ccxt exchange's public OHLCV bars (no API keys).

    :param exchange: a ccxt exchange id (``"binance"``) or an exchange object.
    :param symbols: ccxt symbols (``"BTC/USDT"``).
    :param timeframe: ccxt's timeframe (``"1h"``).
    :param grace_seconds: how long after its close a bar is still allowed to change.
    :param limit: bars asked per request.
    :param options: passed to the exchange's constructor (``{"enableRateLimit": True}``).
    """

    def __init__(self, exchange: str | Any, symbols: Sequence[str], timeframe: str = "1h",
                 grace_seconds: float = 10.0, limit: int = 500,
                 options: dict[str, Any] | None = None) -> None:
        import ccxt

        self.ccxt = ccxt
        self.exchange = (getattr(ccxt, exchange)({"enableRateLimit": True, **(options or {})})
                         if isinstance(exchange, str) else exchange)
        self.symbols = tuple(symbols)
        self.timeframe = timeframe
        self.bar_seconds = float(self.exchange.parse_timeframe(timeframe))
        self.name = f"ccxt:{self.exchange.id}"
        self.grace_seconds = float(grace_seconds)
        self.limit = int(limit)

    def bars(self, since: int | None) -> pd.DataFrame:
        frames = []
        for sym in self.symbols:
            rows = self._fetch(sym, since)
            if rows:
                a = np.asarray(rows, dtype=float)
                frames.append(pd.DataFrame({
                    "time": (a[:, 0].astype(np.int64) * 1_000_000), "symbol": sym,
                    "open": a[:, 1], "high": a[:, 2], "low": a[:, 3], "close": a[:, 4],
                    "volume": a[:, 5]}))
        frame = pd.concat(frames, ignore_index=True) if frames else empty_bars()
        return since_rows(frame, since)

    def _fetch(self, symbol: str, since: int | None) -> list[list[float]]:
        """Every bar from ``since`` on, page by page."""
        out: list[list[float]] = []
        start = None if since is None else since // 1_000_000
        while True:
            try:
                page = self.exchange.fetch_ohlcv(symbol, self.timeframe, since=start,
                                                 limit=self.limit)
            except (self.ccxt.BadRequest, self.ccxt.AuthenticationError) as exc:  # permanent
                raise DataError(f"{type(exc).__name__}: {str(exc)[:200]}",
                                file=f"ccxt:{self.exchange.id}", symbol=symbol) from None
            except (self.ccxt.NetworkError, self.ccxt.ExchangeError) as exc:
                raise FeedError(f"{self.exchange.id} {symbol}: {type(exc).__name__}: "
                                f"{str(exc)[:200]}") from None
            out.extend(page)
            if len(page) < self.limit or not page:
                return out
            start = int(page[-1][0]) + 1


class AlpacaFeed:
    """Alpaca's historical bars (alpaca-py's data clients), polled.

    :param symbols: Alpaca symbols (``AAPL``; crypto ``BTC/USD``).
    :param timeframe: ``1Min``, ``5Min``, ``15Min``, ``1Hour`` or ``1Day``.
    :param crypto: use the crypto data client (no keys needed).
    :param history_days: how far back the first request reaches (the history).
    :param history_start: or from this date.
    :param grace_seconds: how long after its close a bar is still allowed to change.
    :param url: another base URL (a proxy, or a test's loopback server).
    :param data_feed: the stock data feed (``iex`` on a free account, ``sip`` paid).
    """

    def __init__(self, symbols: Sequence[str], timeframe: str = "1Hour", crypto: bool = False,
                 history_days: float = 90.0, history_start: str | None = None,
                 grace_seconds: float = 10.0, url: str | None = None,
                 data_feed: str | None = None) -> None:
        import os

        from alpaca.data.historical import CryptoHistoricalDataClient, StockHistoricalDataClient
        from alpaca.data.timeframe import TimeFrame, TimeFrameUnit

        frames = {"1Min": (1, TimeFrameUnit.Minute, 60), "5Min": (5, TimeFrameUnit.Minute, 300),
                  "15Min": (15, TimeFrameUnit.Minute, 900), "1Hour": (1, TimeFrameUnit.Hour,
                                                                      3600),
                  "1Day": (1, TimeFrameUnit.Day, 86400)}
        if timeframe not in frames:
            raise DataError(f"timeframe {timeframe!r} (allowed: {', '.join(frames)})",
                            file="alpaca")
        amount, unit, seconds = frames[timeframe]
        key, secret = os.environ.get("ALPACA_API_KEY"), os.environ.get("ALPACA_SECRET_KEY")
        if not crypto and not (key and secret):
            raise DataError("stock bars need ALPACA_API_KEY and ALPACA_SECRET_KEY in the "
                            "environment (they are read, never written)", file="alpaca")
        self.timeframe = TimeFrame(amount, unit)
        client = CryptoHistoricalDataClient if crypto else StockHistoricalDataClient
        self.client = client(key, secret, url_override=url) if (key and secret) else client(
            url_override=url)
        self.crypto, self.data_feed = crypto, data_feed
        self.symbols = tuple(symbols)
        self.bar_seconds = float(seconds)
        self.grace_seconds = float(grace_seconds)
        self.history = pd.Timedelta(days=history_days)
        self.history_start = history_start
        self.name = "alpaca" + (" crypto" if crypto else "")

    def bars(self, since: int | None) -> pd.DataFrame:
        from alpaca.common.exceptions import APIError
        from alpaca.data.requests import CryptoBarsRequest, StockBarsRequest

        if since is not None:
            start = pd.Timestamp(since, tz="UTC")
        elif self.history_start is not None:
            start = pd.Timestamp(self.history_start, tz="UTC")
        else:
            start = pd.Timestamp.now(tz="UTC") - self.history
        start = start.to_pydatetime()
        args = {"symbol_or_symbols": list(self.symbols), "timeframe": self.timeframe,
                "start": start}
        try:
            if self.crypto:
                barset = self.client.get_crypto_bars(CryptoBarsRequest(**args))
            else:
                if self.data_feed:
                    args["feed"] = self.data_feed
                barset = self.client.get_stock_bars(StockBarsRequest(**args))
        except APIError as exc:
            code = getattr(exc, "status_code", None)
            if code is not None and code < 500 and code != 429:
                raise DataError(f"Alpaca refused the request (HTTP {code}): {str(exc)[:200]}",
                                file="alpaca") from None
            raise FeedError(f"alpaca: HTTP {code}: {str(exc)[:200]}") from None
        except OSError as exc:  # requests' connection errors are OSErrors
            raise FeedError(f"alpaca: {type(exc).__name__}: {str(exc)[:200]}") from None
        frame = barset.df
        if frame.empty:
            return empty_bars()
        frame = frame.reset_index()
        return since_rows(pd.DataFrame({
            "time": pd.DatetimeIndex(frame["timestamp"]).tz_convert("UTC").as_unit("ns").asi8,
            "symbol": frame["symbol"].astype(str),
            **{c: frame[c].to_numpy(float) for c in ("open", "high", "low", "close",
                                                      "volume")}}), since)
