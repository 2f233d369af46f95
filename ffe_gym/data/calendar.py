"""Calendar alignment of per-symbol bars into one panel.

``intersection``: keep the timestamps every symbol has. A symbol's bars between two kept
timestamps are folded into its next kept bar (open of the first, max high, min low, close of the
last, summed volume), so a weekend crash in BTC still reaches its stop on Monday's bar.

``union``: keep every timestamp any symbol has (after trimming to the span all symbols cover).
Where a market was closed its close is carried forward (open = high = low = close, volume 0),
the cell is marked not tradable, and counted. A run longer than ``max_fill_bars`` is an error.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ffe_gym.data.market import DataError, MarketData, infer_periods_per_year

FIELDS = ("open", "high", "low", "close", "volume")


def _trim_common_span(frames: dict[str, pd.DataFrame], files: dict[str, str]) -> tuple:
    start = max(f.index[0] for f in frames.values())
    end = min(f.index[-1] for f in frames.values())
    if start > end:
        sym = max(frames, key=lambda s: frames[s].index[0])
        raise DataError(f"no overlap: starts {start} after another symbol ends {end}",
                        file=files.get(sym), symbol=sym)
    return start, end


def _fold(frame: pd.DataFrame, kept: np.ndarray) -> tuple[np.ndarray, int]:
    """Fold rows of ``frame`` into the next row whose position is in ``kept`` (sorted). Rows
    after the last kept row are not folded anywhere: they lie after the panel's last bar, and
    folding them into it would leak the future into that bar."""
    starts = np.empty_like(kept)
    starts[0] = kept[0]
    starts[1:] = kept[:-1] + 1
    stop = int(kept[-1]) + 1  # reduceat's last segment would run to the end of the frame
    o = frame["open"].to_numpy()[starts]
    h = np.maximum.reduceat(frame["high"].to_numpy()[:stop], starts)
    lo = np.minimum.reduceat(frame["low"].to_numpy()[:stop], starts)
    c = frame["close"].to_numpy()[kept]
    v = np.add.reduceat(frame["volume"].to_numpy()[:stop], starts)
    folded = int((kept - starts).sum())
    return np.stack([o, h, lo, c, v], axis=1), folded


def align(frames: dict[str, pd.DataFrame], calendar: str = "intersection", *,
          max_fill_bars: int = 120, min_bars: int = 2, files: dict[str, str] | None = None,
          source: str = "memory", close_only: tuple[str, ...] = ()) -> MarketData:
    """Align validated per-symbol frames (UTC index, OHLCV columns) into a :class:`MarketData`.

    :param frames: symbol -> frame, already validated by :func:`ffe_gym.data.loaders.validate`.
    :param calendar: ``intersection`` or ``union`` (see the module docstring).
    :param max_fill_bars: longest run of carried-forward bars allowed by ``union``.
    :param min_bars: fewer aligned bars raises :class:`DataError`.
    :param files: symbol -> file name, for error messages.
    """
    files = files or {}
    if not frames:
        raise DataError("no symbols to align")
    symbols = list(frames)
    start, end = _trim_common_span(frames, files)
    trimmed = {s: f.loc[start:end] for s, f in frames.items()}
    counts: dict[str, dict[str, int]] = {
        s: {"trimmed": len(frames[s]) - len(trimmed[s]), "folded": 0, "filled": 0}
        for s in symbols
    }
    if calendar == "intersection":
        index = trimmed[symbols[0]].index
        for s in symbols[1:]:
            index = index.intersection(trimmed[s].index)
        if len(index) == 0:
            raise DataError("no overlap: the symbols share no timestamp", symbol=symbols[-1])
        arrays = []
        for s in symbols:
            f = trimmed[s]
            kept = f.index.get_indexer(index)
            block, folded = _fold(f, kept)
            counts[s]["folded"] = folded
            arrays.append(block)
        panel = np.stack(arrays, axis=1)  # (T, N, 5)
        tradable = np.ones(panel.shape[:2], dtype=bool)
    elif calendar == "union":
        index = trimmed[symbols[0]].index
        for s in symbols[1:]:
            index = index.union(trimmed[s].index)
        T = len(index)
        panel = np.empty((T, len(symbols), 5))
        tradable = np.zeros((T, len(symbols)), dtype=bool)
        for j, s in enumerate(symbols):
            f = trimmed[s]
            pos = index.get_indexer(f.index)
            present = np.zeros(T, dtype=bool)
            present[pos] = True
            # position of the last present row at or before each bar
            last = np.maximum.accumulate(np.where(present, np.arange(T), -1))
            vals = f[list(FIELDS)].to_numpy()
            row_of = np.cumsum(present) - 1  # row in f of that last present bar
            if not present[0]:
                # closed at the common start (crypto from a Saturday beside FX): carry its last
                # close from before the span, a real past price, never one from the end of the
                # data (row -1); the leading cells are untradable and counted as filled
                before = frames[s].loc[:index[0]]["close"].to_numpy()
                if len(before) == 0:  # pragma: no cover - the span starts at every first bar
                    raise DataError("no price at or before the common start", symbol=s,
                                    file=files.get(s))
                vals = np.vstack([np.full((1, len(FIELDS)), before[-1]), vals])
                row_of = row_of + 1
            close = vals[row_of, 3]
            block = np.where(present[:, None], vals[row_of], 0.0)
            block[~present, 0:4] = close[~present, None]
            block[~present, 4] = 0.0
            # longest run of filled bars
            run = np.arange(T) - last
            if run.max() > max_fill_bars:
                t = int(np.argmax(run > max_fill_bars))
                first = t - int(run[t]) + 1
                raise DataError(
                    f"market closed for more than max_fill_bars={max_fill_bars} bars "
                    f"(from {index[first]}); raise data.max_fill_bars or use calendar intersection",
                    file=files.get(s), symbol=s, row=str(index[first]))
            panel[:, j, :] = block
            tradable[:, j] = present
            counts[s]["filled"] = int((~present).sum())
    else:
        raise DataError(f"unknown calendar {calendar!r} (allowed: intersection, union)")
    if len(index) < min_bars:
        short = min(symbols, key=lambda s: len(frames[s]))
        raise DataError(f"too few bars after alignment: {len(index)} < min_bars={min_bars} "
                        f"({calendar} of {', '.join(f'{s}: {len(frames[s])}' for s in symbols)}"
                        f" bars, overlapping {start} .. {end}); the shortest is {short}",
                        file=files.get(short), symbol=short)
    return MarketData(
        symbols=tuple(symbols), index=pd.DatetimeIndex(index), open=panel[..., 0],
        high=panel[..., 1], low=panel[..., 2], close=panel[..., 3], volume=panel[..., 4],
        tradable=tradable, periods_per_year=infer_periods_per_year(pd.DatetimeIndex(index)),
        source=source, counts=counts, close_only=close_only,
    )


def decision_bars(index: pd.DatetimeIndex, frequency: int | str) -> np.ndarray:
    """Next-decision table: ``out[t]`` is the first decision bar after bar ``t``.

    An integer ``k`` decides every ``k`` bars from wherever a book starts (``t + k``). An
    offset such as ``"1D"`` decides on the last bar of each period (the day's close). The last
    bar maps to itself.
    """
    T = len(index)
    t = np.arange(T)
    if isinstance(frequency, int):
        nxt = t + frequency
    else:
        if _is_fixed(frequency):
            labels = np.asarray(index.floor(frequency).asi8)
        else:
            labels = np.asarray(index.tz_convert(None).to_period(frequency).asi8)
        is_last = np.ones(T, dtype=bool)
        is_last[:-1] = labels[:-1] != labels[1:]
        decision = np.flatnonzero(is_last)
        pos = np.searchsorted(decision, t, side="right")
        nxt = np.where(pos < len(decision), decision[np.minimum(pos, len(decision) - 1)], T - 1)
    return np.minimum(nxt, T - 1).astype(np.int64)


def _is_fixed(freq: str) -> bool:
    try:
        pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
        return True
    except ValueError:
        return False

