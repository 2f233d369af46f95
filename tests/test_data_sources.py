"""A researcher's own data in one call: DataFrames and vendor layouts, built in the shapes
their documentation gives (nothing is downloaded)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pandas as pd
import pytest

import ffe_gym  # noqa: F401
from ffe_gym.data import DataError, load_market

T = pd.date_range("2024-01-01", periods=60, freq="h", tz="UTC")
RNG = np.random.default_rng(0)
CLOSE = {s: 100.0 * np.cumprod(1 + 0.01 * RNG.standard_normal(60)) for s in ("AAA", "BBB")}


def ohlcv(sym: str) -> pd.DataFrame:
    c = CLOSE[sym]
    return pd.DataFrame({"open": c * 0.999, "high": c * 1.01, "low": c * 0.99, "close": c,
                         "volume": np.arange(60.0) + 1}, index=T)


def check(md, symbols=("AAA", "BBB"), close=None):
    assert md.symbols == tuple(symbols) and md.n_bars == 60
    for j, s in enumerate(symbols):
        np.testing.assert_allclose(md.close[:, j], CLOSE[s] if close is None else close[s])


def test_long_wide_and_mapping_frames():
    long = pd.concat([ohlcv(s).assign(symbol=s).rename_axis("time").reset_index()
                      for s in CLOSE])
    check(load_market(long))
    wide = pd.DataFrame({s: CLOSE[s] for s in CLOSE}, index=T).rename_axis("time").reset_index()
    md = load_market(wide)
    check(md)
    assert md.close_only == ("AAA", "BBB")
    check(load_market({s: ohlcv(s) for s in CLOSE}))


def test_yfinance_download_frame_and_adjusted():
    # yf.download(["AAA", "BBB"]) returns (Price, Ticker) columns on a Date index
    parts = {}
    for s in CLOSE:
        f = ohlcv(s)
        f["Adj Close"] = f["close"] * 0.5
        parts[s] = f.rename(columns=str.title).rename(columns={"Adj close": "Adj Close"})
    frame = pd.concat(parts, axis=1).swaplevel(0, 1, axis=1).sort_index(axis=1)
    frame.index.name = "Date"
    check(load_market(frame))
    adj = load_market(frame, adjusted=True)
    check(adj, close={s: CLOSE[s] * 0.5 for s in CLOSE})
    np.testing.assert_allclose(adj.open[:, 0], CLOSE["AAA"] * 0.999 * 0.5)


def test_yfinance_csv_with_two_header_rows(tmp_path):
    # the layout yfinance writes: Price / Ticker / Date rows, then the data
    fields = ["Close", "High", "Low", "Open", "Volume"]
    lines = ["Price," + ",".join(f for f in fields for _ in CLOSE),
             "Ticker," + ",".join(s for _ in fields for s in CLOSE),
             "Date" + "," * (len(fields) * len(CLOSE))]
    for k, t in enumerate(T):
        row = {s: ohlcv(s).iloc[k] for s in CLOSE}
        lines.append(str(t) + "," + ",".join(str(row[s][f.lower()]) for f in fields
                                             for s in CLOSE))
    path = tmp_path / "yf.csv"
    path.write_text("\n".join(lines) + "\n")
    check(load_market(path))


def test_polygon_ccxt_and_alpaca_layouts():
    ms = T.as_unit("ms").asi8
    # polygon aggregates: t (ms), o, h, l, c, v, vw, n
    poly = {s: pd.DataFrame({"t": ms, "o": ohlcv(s)["open"].to_numpy(),
                             "h": ohlcv(s)["high"].to_numpy(), "l": ohlcv(s)["low"].to_numpy(),
                             "c": CLOSE[s], "v": 1.0, "vw": CLOSE[s], "n": 3}) for s in CLOSE}
    check(load_market(poly))
    # ccxt fetch_ohlcv: [[timestamp ms, open, high, low, close, volume], ...]
    ccxt = {s: pd.DataFrame([[int(m), *ohlcv(s).iloc[k].to_numpy()] for k, m in enumerate(ms)],
                            columns=["timestamp", "open", "high", "low", "close", "volume"])
            for s in CLOSE}
    md = load_market(ccxt)
    check(md)
    assert md.periods_per_year == 8760.0  # milliseconds read as milliseconds
    # Alpaca bars.df: a (symbol, timestamp) MultiIndex
    alpaca = pd.concat([ohlcv(s).assign(trade_count=5, vwap=CLOSE[s]) for s in CLOSE],
                       keys=list(CLOSE), names=["symbol", "timestamp"])
    check(load_market(alpaca))
    # a columns mapping for anything else
    other = {s: ohlcv(s).rename_axis("when").reset_index().rename(columns={"close": "last"})
             for s in CLOSE}
    check(load_market(other, columns={"when": "time", "last": "close"}))
    with pytest.raises(DataError, match="columns mapping names 'nope'"):
        load_market(other, columns={"nope": "time"})


def test_finrl_long_frame_and_raw_ccxt_lists():
    # FinRL's standard frame: date, tic, open, high, low, close, volume (rows by date)
    finrl = pd.concat([ohlcv(s).assign(tic=s).rename_axis("date").reset_index()
                       for s in CLOSE]).sort_values(["date", "tic"], kind="stable")
    check(load_market(finrl[["date", "tic", "open", "high", "low", "close", "volume"]]))
    check(load_market(finrl.rename(columns={"tic": "ticker"})))
    with pytest.raises(DataError, match="two symbol columns, 'symbol' and 'tic'"):
        load_market(finrl.assign(symbol="X"))
    # ccxt's fetch_ohlcv as returned: a list of [ms, open, high, low, close, volume] per symbol
    ms = T.as_unit("ms").asi8
    rows = {s: [[int(m), *map(float, ohlcv(s).iloc[k].to_numpy())] for k, m in enumerate(ms)]
            for s in CLOSE}
    md = load_market(rows)
    check(md)
    assert md.periods_per_year == 8760.0
    check(load_market({s: pd.DataFrame(r) for s, r in rows.items()}))  # unnamed columns 0..5
    with pytest.raises(DataError, match=r"data\['AAA'\].*fetch_ohlcv rows.*shape \(60, 5\)"):
        load_market({s: [r[:5] for r in rows[s]] for s in CLOSE})
    # a misspelled column is named with the likely one
    bad = ohlcv("AAA").rename(columns={"close": "clsoe"}).rename_axis("time").reset_index()
    with pytest.raises(DataError, match=r"missing column 'close'.*did you mean 'clsoe'"):
        load_market({"AAA": bad})
    unnamed = pd.DataFrame(np.ones((60, 4)))
    with pytest.raises(DataError, match="unnamed columns: name them"):
        load_market({"AAA": unnamed})


def test_gym_make_takes_a_dataframe():
    env = gym.make("ffe/Portfolio-v0", data={s: ohlcv(s) for s in CLOSE},
                   config={"env": {"window": 4, "episode_bars": 10}, "data": {"min_bars": 10},
                           "risk": {"var_window": 10}, "portfolio": {"correlation_window": 5},
                           "sizing": {"volatility_window": 5}})
    obs, info = env.reset(seed=0)
    assert env.unwrapped.market.symbols == ("AAA", "BBB")
    env.step(env.action_space.sample())
