"""Read market data from frames, CSV or Parquet files and directories, validate it, align it.

Accepted layouts (columns are read by name, in any order, case-insensitive):

* one symbol per file: ``time, open, high, low, close[, volume]``; the symbol is the file stem
  up to a timeframe token (``BTC_USD_H1_2020_2023.parquet`` -> ``BTC_USD``);
* long: ``time, symbol, open, high, low, close[, volume]`` in one file (the symbol column may
  be named ``symbol``, ``tic`` (FinRL) or ``ticker``);
* wide: two column levels, (field, symbol) or (symbol, field), on a time index;
* close-only wide: ``time`` plus one column of closes per symbol (open = high = low = close,
  volume 0);
* a directory of one-symbol files;
* in memory also ccxt's ``fetch_ohlcv`` lists (a mapping of symbol -> ``[[ms, open, high,
  low, close, volume], ...]``) and frames of them with unnamed columns ``0..5``.

Timestamps may be a column named time/timestamp/date/datetime or the index. Naive timestamps are
taken as UTC. Rows are numbered from 0 in file order in error messages.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from ffe_gym.data.calendar import align
from ffe_gym.data.market import DataError, MarketData
from ffe_gym.data.packaged import is_packaged, packaged_frames

PRICES = ("open", "high", "low", "close")
TIME_COLUMNS = ("time", "timestamp", "date", "datetime")
SYMBOL_COLUMNS = ("symbol", "tic", "ticker")  # tic: FinRL's long frame
CCXT_COLUMNS = ("time", "open", "high", "low", "close", "volume")  # fetch_ohlcv's row order
SUFFIXES = (".csv", ".parquet", ".pq")
MAX_PRICE = 1e12  # above it a price is a unit or parsing error (and equity would overflow)
_TIMEFRAME = re.compile(r"_(?:[MHDW]\d+|\d+[mhdw]|daily|hourly)(?:_|$)", re.IGNORECASE)


def symbol_from_filename(path: str | Path) -> str:
    """``BTC_USD_H1_2020_2023.parquet`` -> ``BTC_USD``; ``AAPL.csv`` -> ``AAPL``."""
    stem = Path(path).stem
    m = _TIMEFRAME.search(stem)
    return stem[: m.start()] if m else stem


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file into a frame, unchanged."""
    path = Path(path)
    if not path.exists():
        raise DataError("no such file or directory", file=str(path))
    try:
        if path.suffix.lower() == ".csv":
            head = pd.read_csv(path, header=None, nrows=3, dtype=str)
            first = [str(x).strip().lower() for x in head.iloc[:, 0]]
            if len(first) >= 2 and first[:2] == ["price", "ticker"]:  # yfinance's CSV
                frame = pd.read_csv(path, header=[0, 1], index_col=0,
                                    skiprows=[2] if len(first) > 2 and first[2] in (
                                        "date", "datetime") else None)
                frame.index = pd.to_datetime(frame.index, utc=True)
                frame.columns = frame.columns.set_names([None, None])
                return frame
            return pd.read_csv(path)
        if path.suffix.lower() in (".parquet", ".pq"):
            return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"cannot read ({exc})", file=str(path)) from None
    raise DataError(f"unsupported file type {path.suffix!r} (allowed: {', '.join(SUFFIXES)})",
                    file=str(path))


EPOCH_UNITS = (("s", 1e11), ("ms", 1e14), ("us", 1e17), ("ns", float("inf")))


def epoch_unit(raw, file: str | None, symbol: str | None) -> str | None:
    """The unit of integer (or integral float) epoch timestamps, from their magnitude: seconds
    (about 1e9 today), milliseconds (1e12, ccxt), microseconds (1e15) or nanoseconds (1e18);
    None for anything else (dates as text or datetimes). Mixed magnitudes are refused."""
    values = np.asarray(raw)
    if values.dtype.kind not in "iuf" or values.size == 0:
        return None
    v = values.astype(np.float64)
    if np.isnan(v).any():
        return None  # the missing timestamp is named by the caller
    if (v <= 0).any():
        raise DataError("numeric timestamps must be positive epoch times", file=file,
                        symbol=symbol, row=int(np.argmax(v <= 0)))
    units = [next(u for u, top in EPOCH_UNITS if x < top) for x in (v.min(), v.max())]
    if units[0] != units[1]:
        raise DataError(f"numeric timestamps mix units ({units[0]} and {units[1]} by their "
                        "magnitude)", file=file, symbol=symbol)
    return units[0]


def _time_index(frame: pd.DataFrame, file: str | None, symbol: str | None) -> pd.DatetimeIndex:
    cols = {c.lower(): c for c in frame.columns if isinstance(c, str)}
    name = next((cols[c] for c in TIME_COLUMNS if c in cols), None)
    raw = frame[name] if name is not None else frame.index
    if name is None and not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError(f"no time column (expected one of {', '.join(TIME_COLUMNS)})",
                        file=file, symbol=symbol)
    unit = epoch_unit(raw, file, symbol)
    try:
        idx = pd.DatetimeIndex(pd.to_datetime(raw, utc=True, unit=unit))
    except (ValueError, TypeError) as exc:
        first = str(exc).splitlines()[0]
        raise DataError(f"timestamps do not parse ({first}); mixed naive and tz-aware "
                        "timestamps, or text that is not a date", file=file,
                        symbol=symbol) from None
    if idx.hasnans:
        row = int(np.flatnonzero(idx.isna())[0])
        raise DataError("missing timestamp", file=file, symbol=symbol, row=row)
    return idx


def _did_you_mean(wanted: str, frame: pd.DataFrame) -> str:
    """`` (have: ...; did you mean 'x'?)`` for an error naming a missing column."""
    have = [str(c) for c in frame.columns]
    close = difflib.get_close_matches(wanted, [h.lower() for h in have], n=1, cutoff=0.6)
    hint = ""
    if close:
        hint = f"; did you mean {have[[h.lower() for h in have].index(close[0])]!r}?"
    elif have and all(h.isdigit() for h in have):
        hint = ("; unnamed columns: name them (load_market(df, columns={...})), or pass "
                "ccxt's fetch_ohlcv rows as a frame of 6 columns or a mapping of lists")
    return f" (have: {', '.join(have)}{hint})"


def validate(frame: pd.DataFrame, symbol: str, *, file: str | None = None,
             max_fill_bars: int = 120) -> tuple[pd.DataFrame, int]:
    """Check one symbol's bars and return them as a float64 OHLCV frame on a UTC index.

    Rows whose prices are missing (NaN) are dropped when they come in runs of at most
    ``max_fill_bars`` (the calendar then treats them as missing bars); a longer run raises.
    A missing volume keeps its bar: the volume stays NaN (counted as ``volume_missing``), its
    volume z-score feature is 0 and the rolling volume statistics skip it.

    :returns: the clean frame and the number of NaN rows dropped.
    :raises DataError: naming file, symbol and the first offending row for unsorted or
        duplicate timestamps, non-positive prices, high < low (or high/low not containing
        open/close), negative volume, NaN runs beyond ``max_fill_bars``, missing columns.
    """
    names = [c.lower() for c in frame.columns if isinstance(c, str)]
    for field in (*PRICES, "volume", *TIME_COLUMNS):
        same = [c for c in frame.columns if isinstance(c, str) and c.lower() == field]
        if len(same) > 1:
            raise DataError(f"ambiguous column {field!r}: {len(same)} columns are named "
                            f"{', '.join(map(repr, same))} (keep one)", file=file,
                            symbol=symbol)
    lower = {c: orig for c, orig in zip(names, (c for c in frame.columns if isinstance(c, str)),
                                        strict=True)}
    missing = [c for c in PRICES if c not in lower]
    if missing:
        raise DataError(f"missing column {missing[0]!r}{_did_you_mean(missing[0], frame)}",
                        file=file, symbol=symbol)
    idx = _time_index(frame, file, symbol)
    ns = idx.asi8
    if len(ns) > 1:
        d = np.diff(ns)
        bad = np.flatnonzero(d <= 0)
        if bad.size:
            r = int(bad[0]) + 1
            what = "duplicate timestamp" if d[bad[0]] == 0 else "timestamps not sorted"
            raise DataError(f"{what} {idx[r]} (previous row {idx[r - 1]})",
                            file=file, symbol=symbol, row=r)
    out = pd.DataFrame(index=idx)
    for c in PRICES:
        try:
            out[c] = pd.to_numeric(frame[lower[c]], errors="raise").to_numpy(dtype=np.float64)
        except (ValueError, TypeError) as exc:
            raise DataError(f"column {c!r} is not numeric ({exc})", file=file,
                            symbol=symbol) from None
    vol = (pd.to_numeric(frame[lower["volume"]], errors="coerce").to_numpy(dtype=np.float64)
           if "volume" in lower else np.zeros(len(out)))
    out["volume"] = vol
    values = out.to_numpy()
    nan_rows = np.isnan(values[:, :4]).any(axis=1)  # a missing volume keeps its bar
    dropped = 0
    if nan_rows.any():
        # longest run of consecutive NaN rows
        edges = np.diff(np.concatenate([[0], nan_rows.astype(np.int8), [0]]))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        long = np.flatnonzero(stops - starts > max_fill_bars)
        if long.size:
            r = int(starts[long[0]])
            raise DataError(f"{int(stops[long[0]] - r)} consecutive rows with NaN, beyond "
                            f"max_fill_bars={max_fill_bars}", file=file, symbol=symbol,
                            row=f"{r} ({idx[r]})")
        dropped = int(nan_rows.sum())
        out = out[~nan_rows]
        values = out.to_numpy()
    rows = np.flatnonzero(~nan_rows)

    def fail(mask: np.ndarray, message: str) -> None:
        if mask.any():
            k = int(np.argmax(mask))
            raise DataError(message, file=file, symbol=symbol,
                            row=f"{int(rows[k])} ({out.index[k]})")

    o, h, lo, c, v = values.T
    fail(~np.isfinite(values[:, :4]).all(axis=1), "non-finite price (inf)")
    fail(np.isinf(v), "infinite volume")
    fail((values[:, :4] > MAX_PRICE).any(axis=1), f"absurd price (above {MAX_PRICE:.0e})")
    fail(~(values[:, :4] > 0).all(axis=1), "non-positive price")
    fail(h < lo, "high < low")
    fail(h < np.maximum(o, c), "high below open or close")
    fail(lo > np.minimum(o, c), "low above open or close")
    fail(v < 0, "negative volume")
    return out, dropped


def from_frames(frames: Mapping[str, pd.DataFrame], *, calendar: str = "intersection",
                max_fill_bars: int = 120, min_bars: int = 2,
                files: Mapping[str, str] | None = None, source: str = "memory") -> MarketData:
    """Validate and align per-symbol frames (see :func:`validate` and
    :func:`ffe_gym.data.calendar.align`). A symbol whose open, high and low equal its close on
    every row is marked close-only (``MarketData.close_only``)."""
    files = dict(files or {})
    clean = {}
    dropped = {}
    for sym, frame in frames.items():
        clean[sym], dropped[sym] = validate(frame, sym, file=files.get(sym),
                                            max_fill_bars=max_fill_bars)
        if len(clean[sym]) == 0:
            raise DataError("no bars", file=files.get(sym), symbol=sym)
    # the bar length of each symbol: a low quantile of its spacings (gaps and closed markets
    # only lengthen spacings); more than 3x apart is daily beside hourly, not missing bars
    spacing = {s: float(np.quantile(np.diff(f.index.as_unit("ns").asi8), 0.05))
               for s, f in clean.items() if len(f) >= 3}
    if spacing:
        lo, hi = min(spacing, key=spacing.get), max(spacing, key=spacing.get)
        if spacing[hi] > 3.0 * spacing[lo]:
            raise DataError(
                f"mixed bar lengths: {lo} every {pd.Timedelta(spacing[lo], 'ns')}, {hi} every "
                f"{pd.Timedelta(spacing[hi], 'ns')} ({files.get(hi, 'memory')}); resample to "
                "one bar length first", file=files.get(lo), symbol=lo)
    close_only = tuple(s for s, f in clean.items()
                       if all(np.array_equal(f[c].to_numpy(), f["close"].to_numpy())
                              for c in ("open", "high", "low")))
    md = align(clean, calendar, max_fill_bars=max_fill_bars, min_bars=min_bars, files=files,
               source=source, close_only=close_only)
    for sym, n in dropped.items():
        md.counts[sym]["nan_rows"] = n
        md.counts[sym]["volume_missing"] = int(np.isnan(clean[sym]["volume"].to_numpy()).sum())
    return md


def _split_wide(table: pd.DataFrame, file: str) -> dict[str, pd.DataFrame]:
    """Two-level columns, (field, symbol) or (symbol, field), on a time index."""
    if not isinstance(table.index, pd.DatetimeIndex):
        raise DataError("a wide table (two column levels) needs the time as its index", file=file)
    idx = _time_index(table, file, None)
    fields = {str(v).lower() for v in table.columns.get_level_values(0)}
    level = 0 if set(PRICES) <= fields else 1
    out = {}
    for sym in dict.fromkeys(table.columns.get_level_values(1 - level)):
        frame = table.xs(sym, axis=1, level=1 - level).copy()
        frame.columns = [str(c).lower() for c in frame.columns]
        frame.index = idx
        out[str(sym)] = frame
    return out


def _split_table(table: pd.DataFrame, file: str) -> dict[str, pd.DataFrame]:
    if isinstance(table.columns, pd.MultiIndex):
        if table.columns.nlevels != 2:
            raise DataError("wide tables need two column levels (field, symbol)", file=file)
        return _split_wide(table, file)
    lower = {c.lower(): c for c in table.columns if isinstance(c, str)}
    named = [lower[c] for c in SYMBOL_COLUMNS if c in lower]
    if len(named) > 1:
        raise DataError(f"two symbol columns, {named[0]!r} and {named[1]!r} (keep one)",
                        file=file)
    if named:
        col = named[0]
        return {str(s): g.drop(columns=col) for s, g in table.groupby(col, sort=False)}
    if any(c in lower for c in PRICES):  # one symbol's OHLC bars; validate names what is missing
        return {symbol_from_filename(file): table}
    # close-only wide table: time + one column per symbol
    idx = _time_index(table, file, None)
    time_cols = {lower[c] for c in TIME_COLUMNS if c in lower}
    out = {}
    for c in table.columns:
        if c in time_cols:
            continue
        close = table[c].to_numpy()
        out[str(c)] = pd.DataFrame({"time": idx, "open": close, "high": close, "low": close,
                                    "close": close})
    if not out:
        raise DataError("no price columns (expected OHLC columns, a symbol column, or one "
                        "column of closes per symbol)", file=file)
    return out


VENDOR_COLUMNS = {  # recognised short names (polygon's aggregates) -> ours
    "t": "time", "o": "open", "h": "high", "l": "low", "c": "close", "v": "volume",
}


def normalise(frame: pd.DataFrame, columns: Mapping[str, str] | None = None,
              adjusted: bool = False, where: str = "DataFrame") -> pd.DataFrame:
    """A vendor's frame in one of the accepted layouts.

    * ``columns`` renames columns (``{"Date": "time", "Last": "close"}``); polygon's ``t, o, h,
      l, c, v`` are recognised without it.
    * An index that holds the symbol (Alpaca's ``bars.df``: a (symbol, timestamp) MultiIndex)
      or the time is moved into columns.
    * ``adjusted`` uses ``Adj Close`` as the close and scales open, high and low by
      ``Adj Close / Close`` (splits and dividends), per row.
    """
    f = frame.copy()
    if columns:
        missing = [c for c in columns if c not in f.columns]
        if missing:
            raise DataError(f"columns mapping names {missing[0]!r}, which is not a column "
                            f"(have: {', '.join(map(str, f.columns))})", file=where)
        f = f.rename(columns=dict(columns))
    elif not isinstance(f.columns, pd.MultiIndex):
        names = {str(c) for c in f.columns}
        if {"t", "o", "h", "l", "c"} <= names and not names & {"open", "close", "time"}:
            f = f.rename(columns=VENDOR_COLUMNS)
    if isinstance(f.index, pd.MultiIndex) and "symbol" in (f.index.names or []):
        f = f.reset_index()
        stamp = next((n for n in f.columns if str(n).lower() in TIME_COLUMNS), None)
        if stamp is None:
            raise DataError("a (symbol, time) index needs a level named timestamp or time",
                            file=where)
    if adjusted:
        f = _adjusted(f, where)
    return f


def _adjusted(f: pd.DataFrame, where: str) -> pd.DataFrame:
    def adjust(part: pd.DataFrame) -> pd.DataFrame:
        cols = {str(c).lower(): c for c in part.columns}
        if "adj close" not in cols or "close" not in cols:
            raise DataError("adjusted needs 'Adj Close' and 'Close' columns", file=where)
        factor = part[cols["adj close"]] / part[cols["close"]]
        out = part.drop(columns=[cols["adj close"]])
        for c in ("open", "high", "low"):
            if c in cols:
                out[cols[c]] = part[cols[c]] * factor
        out[cols["close"]] = part[cols["adj close"]]
        return out

    if isinstance(f.columns, pd.MultiIndex):  # yfinance: (field, ticker) or (ticker, field)
        level = 0 if "Adj Close" in f.columns.get_level_values(0) else 1
        parts = {k: adjust(f.xs(k, axis=1, level=1 - level))
                 for k in dict.fromkeys(f.columns.get_level_values(1 - level))}
        return pd.concat(parts, axis=1).swaplevel(0, 1, axis=1) if level == 0 else \
            pd.concat(parts, axis=1)
    return adjust(f)


def frames_of(data: pd.DataFrame | Mapping[str, pd.DataFrame], *,
              columns: Mapping[str, str] | None = None, adjusted: bool = False
              ) -> dict[str, pd.DataFrame]:
    """Per-symbol frames of an in-memory source: a long frame (``time, symbol, ...``), a wide
    close-only frame, a yfinance-style frame with (field, ticker) columns, one symbol's OHLCV
    frame, or a mapping of symbol -> frame."""
    if isinstance(data, Mapping):
        return {str(k): normalise(_ccxt_frame(v, f"data[{k!r}]"), columns, adjusted,
                                  f"DataFrame of {k}")
                for k, v in data.items()}
    if isinstance(data, pd.DataFrame):
        return _split_table(normalise(_ccxt_frame(data, "DataFrame"), columns, adjusted),
                            "DataFrame")
    raise DataError(f"expected a DataFrame or a mapping of DataFrames, got "
                    f"{type(data).__name__}")


def _ccxt_frame(data: object, where: str) -> pd.DataFrame:
    """ccxt's ``fetch_ohlcv`` rows (a list of ``[ms, open, high, low, close, volume]``, or a
    frame of them with unnamed columns ``0..5``) as a named frame; other frames unchanged."""
    if isinstance(data, pd.DataFrame):
        if list(data.columns) == list(range(len(CCXT_COLUMNS))):
            return data.set_axis(list(CCXT_COLUMNS), axis=1)
        return data
    if isinstance(data, (list, tuple, np.ndarray)):
        rows = np.asarray(data, dtype=object)
        if rows.ndim != 2 or rows.shape[1] != len(CCXT_COLUMNS):
            raise DataError(f"a list of bars must be ccxt's fetch_ohlcv rows, "
                            f"[[ms, open, high, low, close, volume], ...]; got shape "
                            f"{rows.shape}", file=where)
        return pd.DataFrame(rows.tolist(), columns=list(CCXT_COLUMNS))
    raise DataError(f"expected a DataFrame or ccxt's fetch_ohlcv list, got "
                    f"{type(data).__name__}", file=where)


def load_market(source: str | Path | pd.DataFrame | Mapping[str, pd.DataFrame], *,
                symbols: Iterable[str] | None = None, calendar: str = "intersection",
                max_fill_bars: int = 120, min_bars: int = 2, start: str | None = None,
                end: str | None = None, columns: Mapping[str, str] | None = None,
                adjusted: bool = False) -> MarketData:
    """Load files, a directory, a packaged source or in-memory frames into an aligned
    :class:`MarketData`.

    :param source: a CSV/Parquet file, a directory of them, a packaged source (``arch``: see
        :mod:`ffe_gym.data.packaged`), a DataFrame (long with a ``symbol`` / ``tic`` /
        ``ticker`` column, wide close-only, yfinance-style MultiIndex columns, one symbol's
        bars, Alpaca's (symbol, timestamp) index, ccxt rows in unnamed columns 0..5) or a
        mapping of symbol -> DataFrame or -> ccxt ``fetch_ohlcv`` list.
    :param symbols: keep these (in this order); an unknown one raises :class:`DataError`.
    :param calendar: ``intersection`` or ``union``.
    :param start, end: optional inclusive date bounds applied after alignment.
    :param columns: rename columns first (``{"t": "time", ...}``); see :func:`normalise`.
    :param adjusted: use ``Adj Close`` and scale open, high and low to it.
    """
    if isinstance(source, (pd.DataFrame, Mapping)):
        frames = frames_of(source, columns=columns, adjusted=adjusted)
        return _from_named(frames, {}, symbols, "DataFrame", calendar=calendar,
                           max_fill_bars=max_fill_bars, min_bars=min_bars, start=start, end=end)
    if is_packaged(str(source)):
        frames, files, _ = packaged_frames(str(source), symbols)
        md = from_frames(frames, calendar=calendar, max_fill_bars=max_fill_bars,
                         min_bars=min_bars, files=files, source=f"packaged:{source}")
        return restrict_dates(md, start, end, min_bars=min_bars)
    path = Path(source)
    frames = {}
    files = {}
    if path.is_dir():
        paths = sorted(p for p in path.iterdir() if p.suffix.lower() in SUFFIXES)
        if not paths:
            raise DataError(f"no {'/'.join(SUFFIXES)} files in directory", file=str(path))
        for p in paths:
            for sym, frame in _split_table(read_table(p), str(p)).items():
                if sym in frames:
                    raise DataError(f"symbol {sym!r} appears in two files ({files[sym]})",
                                    file=str(p), symbol=sym)
                frames[sym], files[sym] = frame, str(p)
    else:
        for sym, frame in _split_table(read_table(path), str(path)).items():
            frames[sym], files[sym] = frame, str(path)
    if columns or adjusted:
        frames = {k: normalise(v, columns, adjusted, files[k]) for k, v in frames.items()}
    return _from_named(frames, files, symbols, str(path), calendar=calendar,
                       max_fill_bars=max_fill_bars, min_bars=min_bars, start=start, end=end)


def _from_named(frames, files, symbols, source: str, *, calendar, max_fill_bars, min_bars,
                start, end) -> MarketData:
    if symbols is not None:
        wanted = list(symbols)
        unknown = [s for s in wanted if s not in frames]
        if unknown:
            raise DataError(f"unknown symbol {unknown[0]!r} (available: {', '.join(frames)})",
                            file=source, symbol=unknown[0])
        frames = {s: frames[s] for s in wanted}
    md = from_frames(frames, calendar=calendar, max_fill_bars=max_fill_bars, min_bars=min_bars,
                     files=files, source=source)
    return restrict_dates(md, start, end, min_bars=min_bars)


def restrict_dates(md: MarketData, start: str | None, end: str | None, *,
                   min_bars: int = 2) -> MarketData:
    """Bars between ``start`` and ``end`` inclusive; outside the data raises DataError."""
    if start is None and end is None:
        return md
    a = md.locate(start) if start is not None else 0
    b = md.locate(end, side="right") if end is not None else md.n_bars
    if b - a < min_bars:
        raise DataError(
            f"the window {start or md.index[0]} .. {end or md.index[-1]} holds {max(b - a, 0)} "
            f"bars (< {min_bars}); the data covers {md.index[0]} .. {md.index[-1]}",
            file=md.source)
    return md.slice(a, b)
