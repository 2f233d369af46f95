"""MarketData, loaders, calendars, synthetic market and splits."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from helpers import SHARED_DATA

from ffe_gym.data import (
    DataError,
    decision_bars,
    default_market,
    from_frames,
    infer_periods_per_year,
    load_market,
    restrict_dates,
    split_by_date,
    split_by_fraction,
    synthetic_market,
    walk_forward,
)
from ffe_gym.data.loaders import symbol_from_filename


def bars(times, close, **cols):
    close = np.asarray(close, float)
    df = pd.DataFrame({"time": pd.to_datetime(times, utc=True), "open": close,
                       "high": close * 1.01, "low": close * 0.99, "close": close,
                       "volume": np.ones(len(close))})
    for k, v in cols.items():
        df[k] = v
    return df


def hours(start, n):
    return pd.date_range(start, periods=n, freq="h", tz="UTC")


# ---------------------------------------------------------------- DataError, one per case


def test_unsorted_timestamps_name_file_symbol_row():
    df = bars(hours("2024-01-01", 5), [1, 2, 3, 4, 5])
    df.loc[3, "time"] = pd.Timestamp("2023-12-31", tz="UTC")
    with pytest.raises(DataError) as e:
        from_frames({"X": df}, files={"X": "x.csv"})
    msg = str(e.value)
    assert "file x.csv" in msg and "symbol X" in msg and "row 3" in msg and "not sorted" in msg


def test_duplicate_timestamp():
    df = bars(hours("2024-01-01", 5), [1, 2, 3, 4, 5])
    df.loc[2, "time"] = df.loc[1, "time"]
    with pytest.raises(DataError, match=r"symbol X, row 2: duplicate timestamp"):
        from_frames({"X": df})


@pytest.mark.parametrize("col", ["open", "high", "low", "close"])
def test_non_positive_price(col):
    df = bars(hours("2024-01-01", 5), [1, 2, 3, 4, 5])
    df.loc[4, col] = 0.0 if col != "high" else -1.0
    with pytest.raises(DataError, match=r"row 4 .*(non-positive|high|low)"):
        from_frames({"X": df})


def test_high_below_low():
    df = bars(hours("2024-01-01", 5), [1, 2, 3, 4, 5])
    df.loc[1, "high"], df.loc[1, "low"] = 1.5, 2.5
    with pytest.raises(DataError, match=r"row 1 .*high < low"):
        from_frames({"X": df})


def test_high_or_low_not_enclosing_open_close():
    df = bars(hours("2024-01-01", 5), [1, 2, 3, 4, 5])
    df.loc[2, "open"] = 3.5
    with pytest.raises(DataError, match=r"row 2 .*high below open or close"):
        from_frames({"X": df})


def test_nan_within_the_fill_limit_is_dropped_and_counted_beyond_it_raises():
    df = bars(hours("2024-01-01", 10), np.arange(1, 11))
    df.loc[3:4, "close"] = np.nan
    md = from_frames({"X": df}, max_fill_bars=2)
    assert md.n_bars == 8 and md.counts["X"]["nan_rows"] == 2
    with pytest.raises(DataError, match=r"symbol X, row 3 .*2 consecutive rows with NaN"):
        from_frames({"X": df}, max_fill_bars=1)


def test_no_overlap():
    a = bars(hours("2024-01-01", 5), [1, 2, 3, 4, 5])
    b = bars(hours("2024-02-01", 5), [1, 2, 3, 4, 5])
    with pytest.raises(DataError, match="no overlap"):
        from_frames({"A": a, "B": b})


def test_too_few_bars():
    a = bars(hours("2024-01-01", 5), [1, 2, 3, 4, 5])
    with pytest.raises(DataError, match="too few bars after alignment: 5 < min_bars=10"):
        from_frames({"A": a}, min_bars=10)


def test_unknown_symbol(tmp_path):
    for s in ("AAA", "BBB"):
        bars(hours("2024-01-01", 5), [1, 2, 3, 4, 5]).to_csv(tmp_path / f"{s}.csv", index=False)
    with pytest.raises(DataError,
                       match=r"symbol CCC.*unknown symbol 'CCC' \(available: AAA, BBB\)"):
        load_market(tmp_path, symbols=["AAA", "CCC"])
    with pytest.raises(DataError, match="unknown symbol"):
        load_market(tmp_path).select(["ZZZ"])


def test_missing_column_and_missing_file(tmp_path):
    df = bars(hours("2024-01-01", 5), [1, 2, 3, 4, 5]).drop(columns=["low"])
    df.to_csv(tmp_path / "X.csv", index=False)
    with pytest.raises(DataError, match=r"file .*X\.csv, symbol X: missing column 'low'"):
        load_market(tmp_path / "X.csv")
    with pytest.raises(DataError, match="no such file"):
        load_market(tmp_path / "nope.parquet")


# ---------------------------------------------------------------- layouts


def test_csv_parquet_long_and_close_only_layouts(tmp_path):
    t = hours("2024-01-01", 6)
    a = bars(t, [1, 2, 3, 4, 5, 6])
    b = bars(t, [6, 5, 4, 3, 2, 1])
    # one symbol per file, columns in a different order, parquet and csv
    a[["low", "high", "open", "close", "volume", "time"]].to_parquet(
        tmp_path / "AAA_USD_H1_2024.parquet")
    b.to_csv(tmp_path / "BBB_USD_H1_2024.csv", index=False)
    md = load_market(tmp_path)
    assert md.symbols == ("AAA_USD", "BBB_USD")
    np.testing.assert_array_equal(md.close[:, 0], a["close"])
    np.testing.assert_array_equal(md.low[:, 1], b["low"])
    # long format
    long = pd.concat([a.assign(symbol="A"), b.assign(symbol="B")])
    long.to_csv(tmp_path / "long.csv", index=False)
    md2 = load_market(tmp_path / "long.csv")
    assert md2.symbols == ("A", "B")
    np.testing.assert_array_equal(md2.close, md.close)
    # close-only wide table
    wide = pd.DataFrame({"date": t, "A": a["close"], "B": b["close"]})
    wide.to_csv(tmp_path / "wide.csv", index=False)
    md3 = load_market(tmp_path / "wide.csv")
    np.testing.assert_array_equal(md3.close, md.close)
    np.testing.assert_array_equal(md3.open, md3.close)
    np.testing.assert_array_equal(md3.high, md3.close)
    # wide OHLCV: two column levels (field, symbol), in Parquet
    wide = pd.concat({"A": a.set_index("time"), "B": b.set_index("time")}, axis=1)
    wide = wide.swaplevel(axis=1).sort_index(axis=1)
    wide.to_parquet(tmp_path / "wide.parquet")
    md4 = load_market(tmp_path / "wide.parquet")
    assert md4.symbols == ("A", "B")
    for f in ("open", "high", "low", "close", "volume"):
        np.testing.assert_array_equal(getattr(md4, f), getattr(md2, f))


def test_symbol_from_filename():
    assert symbol_from_filename("x/BTC_USD_H1_2020_2023.parquet") == "BTC_USD"
    assert symbol_from_filename("AAPL.csv") == "AAPL"
    assert symbol_from_filename("ES_1d.csv") == "ES"


def test_arrays_are_read_only():
    md = default_market()
    with pytest.raises(ValueError):
        md.close[0, 0] = 1.0


# ---------------------------------------------------------------- calendars


def test_intersection_folds_extra_bars_into_the_next_kept_bar():
    t = hours("2024-01-05 20:00", 6)  # 20:00 .. 01:00
    crypto = pd.DataFrame({"time": t, "open": [10, 11, 12, 13, 14, 15],
                           "high": [11.5, 12.5, 30, 14.5, 15.5, 16.5],
                           "low": [9.5, 10.5, 2, 12.5, 13.5, 14.5],
                           "close": [11, 12, 13, 14, 15, 16], "volume": [1, 2, 3, 4, 5, 6]})
    fx = bars(t[[0, 3, 5]], [1.0, 1.1, 1.2])  # fx has 20:00, 23:00, 01:00
    md = from_frames({"C": crypto, "F": fx}, calendar="intersection")
    assert list(md.index) == list(t[[0, 3, 5]])
    # bar 23:00 of C absorbs 21:00 and 22:00: open of 21:00, max high, min low, sum volume
    np.testing.assert_array_equal(md.open[:, 0], [10, 11, 14])
    np.testing.assert_array_equal(md.high[:, 0], [11.5, 30, 16.5])
    np.testing.assert_array_equal(md.low[:, 0], [9.5, 2, 13.5])
    np.testing.assert_array_equal(md.close[:, 0], [11, 14, 16])
    np.testing.assert_array_equal(md.volume[:, 0], [1, 2 + 3 + 4, 5 + 6])
    assert md.counts["C"]["folded"] == 3 and md.counts["F"]["folded"] == 0
    assert md.tradable.all()


def test_union_carries_closes_forward_marks_untradable_and_counts():
    t = hours("2024-01-05 20:00", 6)
    crypto = bars(t, [11, 12, 13, 14, 15, 16])
    fx = bars(t[[0, 3, 5]], [1.0, 1.1, 1.2])
    md = from_frames({"C": crypto, "F": fx}, calendar="union", max_fill_bars=2)
    assert md.n_bars == 6
    np.testing.assert_array_equal(md.tradable[:, 1], [1, 0, 0, 1, 0, 1])
    np.testing.assert_array_equal(md.close[:, 1], [1.0, 1.0, 1.0, 1.1, 1.1, 1.2])
    np.testing.assert_array_equal(md.high[1:3, 1], [1.0, 1.0])
    np.testing.assert_array_equal(md.volume[1:3, 1], [0.0, 0.0])
    assert md.counts["F"]["filled"] == 3
    with pytest.raises(DataError, match=r"symbol F, row .*max_fill_bars=1"):
        from_frames({"C": crypto, "F": fx}, calendar="union", max_fill_bars=1)


def test_union_trims_to_the_common_span():
    a = bars(hours("2024-01-01 00:00", 10), np.arange(1, 11))
    b = bars(hours("2024-01-01 03:00", 4), [1, 2, 3, 4])
    md = from_frames({"A": a, "B": b}, calendar="union")
    assert md.index[0] == b["time"].iloc[0] and md.index[-1] == b["time"].iloc[-1]
    assert md.counts["A"]["trimmed"] == 6


def test_periods_per_year_inferred_from_the_calendar():
    assert infer_periods_per_year(pd.date_range("2024-01-01", periods=500, freq="h",
                                                tz="UTC")) == 8760
    wk = pd.date_range("2024-01-01", periods=3000, freq="h", tz="UTC")
    assert infer_periods_per_year(wk[wk.day_of_week < 5]) == 6240
    assert infer_periods_per_year(pd.bdate_range("2020-01-01", "2023-12-31", tz="UTC")) == 252
    assert infer_periods_per_year(pd.date_range("2020-01-01", "2021-12-31", freq="D",
                                                tz="UTC")) == 365


def test_decision_bars_every_k_and_daily():
    idx = hours("2024-01-01 00:00", 60)
    np.testing.assert_array_equal(decision_bars(idx, 5)[:3], [5, 6, 7])
    daily = decision_bars(idx, "1D")
    assert daily[0] == 23 and daily[23] == 47 and daily[47] == 59  # last bar of each day
    assert daily[-1] == 59


# ---------------------------------------------------------------- the real hourly data


needs_shared = pytest.mark.skipif(not SHARED_DATA.is_dir(),
                                  reason="../shared/data/ffe-h1-2020-2023 is absent")


@needs_shared
@pytest.mark.shared_data
def test_real_hourly_data_intersection():
    md = load_market(SHARED_DATA, calendar="intersection")
    assert md.symbols == ("BTC_USD", "ETH_USD", "EUR_USD", "GBP_USD")
    assert md.periods_per_year == 6240
    assert md.tradable.all()
    assert md.counts["BTC_USD"]["folded"] > 10_000  # the weekends, folded into Mondays
    # folding keeps the extremes: Monday's first bar holds the weekend's low
    btc = pd.read_parquet(SHARED_DATA / "BTC_USD_H1_2020_2023.parquet").set_index("time")
    gaps = np.diff(md.index) > pd.Timedelta(hours=24)
    k = int(np.flatnonzero(gaps)[0]) + 1  # first bar after a weekend
    t, prev = md.index[k], md.index[k - 1]
    weekend = btc.loc[(btc.index > prev) & (btc.index <= t)]
    assert md.low[k, 0] == weekend["low"].min() and md.high[k, 0] == weekend["high"].max()
    assert md.open[k, 0] == weekend["open"].iloc[0] and md.close[k, 0] == btc.loc[t, "close"]


@needs_shared
@pytest.mark.shared_data
def test_real_hourly_data_union():
    md = load_market(SHARED_DATA, calendar="union")
    assert md.periods_per_year == 8760
    fx = md.symbols.index("EUR_USD")
    closed = ~md.tradable[:, fx]
    assert md.counts["EUR_USD"]["filled"] == int(closed.sum()) > 10_000
    # on a closed bar the close is the previous bar's close
    k = int(np.flatnonzero(closed)[0])
    assert md.close[k, fx] == md.close[k - 1, fx]
    with pytest.raises(DataError, match=r"(EUR_USD|GBP_USD)"):
        load_market(SHARED_DATA, calendar="union", max_fill_bars=48)


# ---------------------------------------------------------------- synthetic and splits


def test_synthetic_market_is_seeded_labelled_and_valid():
    a = synthetic_market(4, 500, "crypto", seed=3)
    b = synthetic_market(4, 500, "crypto", seed=3)
    c = synthetic_market(4, 500, "crypto", seed=4)
    assert a.digest() == b.digest() != c.digest()
    assert a.is_synthetic and all(s.startswith("SYN_") for s in a.symbols)
    assert "SYNTHETIC" in a.describe()
    assert (a.high >= np.maximum(a.open, a.close)).all()
    assert (a.low <= np.minimum(a.open, a.close)).all() and (a.low > 0).all()
    r = np.diff(np.log(a.close), axis=0)
    corr = np.corrcoef(r.T)
    assert corr[np.triu_indices(4, 1)].min() > 0.2  # correlated through the common factor
    fx = synthetic_market(2, 500, "fx", seed=0)
    assert (fx.index.day_of_week < 5).all() and fx.periods_per_year == 6240
    mixed = synthetic_market(3, 600, "mixed", seed=0)
    assert not mixed.tradable.all() and mixed.is_synthetic


def test_splits_and_walk_forward_with_embargo():
    md = synthetic_market(2, 1000, seed=0)
    tr, te = split_by_fraction(md, 0.7)
    assert (tr.start, tr.stop, te.start, te.stop) == (0, 700, 700, 1000)
    a, b = split_by_date(md, str(md.index[400]))
    assert a.stop == 400 == b.start
    with pytest.raises(DataError, match="outside the data"):
        split_by_date(md, "1999-01-01")
    folds = walk_forward(1000, n_folds=3, train=300, validation=100, test=100, embargo=50)
    assert len(folds) == 3 and folds[-1].test.stop == 1000
    for f in folds:
        assert f.validation.start - f.train.stop == 50
        assert f.test.start - f.validation.stop == 50
        assert len(f.train) == 300 and len(f.test) == 100
    assert folds[1].test.start == folds[0].test.stop
    anchored = walk_forward(1000, n_folds=2, train=300, validation=100, test=100, embargo=50,
                            anchored=True)
    assert anchored[1].train.start == 0
    with pytest.raises(DataError, match="need"):
        walk_forward(500, n_folds=3, train=300, validation=100, test=100, embargo=50)


# ---------------------------------------------------------------- packaged real data (arch)


def test_packaged_arch_intersection():
    wti_module = pytest.importorskip("arch.data.wti")
    from arch.data import sp500

    md = load_market("arch", calendar="intersection")
    assert md.symbols == ("SPX", "IXIC", "WTI")
    assert md.source == "packaged:arch" and not md.is_synthetic
    assert md.close_only == ("WTI",) and "close-only: WTI" in md.describe()
    assert md.periods_per_year == 252.0
    assert md.index[0] == pd.Timestamp("1999-01-04", tz="UTC")
    assert md.index[-1] == pd.Timestamp("2018-12-28", tz="UTC")  # WTI's last day
    assert md.n_bars == 5012
    wti = wti_module.load()["DCOILWTICO"]
    assert int(wti.isna().sum()) == 290 == md.counts["WTI"]["nan_rows"]
    spx = sp500.load()
    # a day SPX traded but WTI has no price (NaN in FRED's file) is not a common bar
    gaps = [d for d in wti.index[wti.isna()] if d in spx.index]
    assert gaps and all(pd.Timestamp(d, tz="UTC") not in md.index for d in gaps)
    day = pd.Timestamp("2008-10-15")
    assert md.close[md.locate(day), 0] == pytest.approx(float(spx.loc[day, "Close"]))
    assert md.close[md.locate(day), 2] == pytest.approx(float(wti.loc[day]))


def test_packaged_arch_union_and_symbols():
    pytest.importorskip("arch")
    md = load_market("arch", calendar="union", symbols=["WTI", "SPX"])
    assert md.symbols == ("WTI", "SPX")
    assert md.n_bars > 5012 and not md.tradable.all()
    assert md.counts["SPX"]["filled"] == int((~md.tradable[:, 1]).sum()) > 0
    with pytest.raises(DataError, match="unknown symbol 'NDX'"):
        load_market("arch", symbols=["NDX"])


def test_intersection_does_not_fold_rows_after_the_last_common_bar():
    # C has a bar at 02:00 (high 500, volume 1000) after the last common timestamp 01:00;
    # F ends later (02:30), so the common span still reaches 02:00. Before the fix, reduceat's
    # last segment ran to the end of C and folded 02:00 into the 01:00 bar: a look-ahead.
    t = list(hours("2024-01-01 00:00", 4))  # 00:00 .. 03:00 common to both
    c = pd.DataFrame({"time": [*t, pd.Timestamp("2024-01-01 04:00", tz="UTC")],
                      "open": [100.0] * 4 + [101.0], "high": [101.0] * 4 + [500.0],
                      "low": [99.0] * 4 + [100.0], "close": [100.0] * 3 + [100.5, 120.0],
                      "volume": [1.0] * 4 + [1000.0]})
    f = bars([*t, pd.Timestamp("2024-01-01 04:30", tz="UTC")], [1.0, 1.1, 1.2, 1.3, 1.4])
    md = from_frames({"C": c, "F": f}, calendar="intersection")
    assert md.n_bars == 4
    assert md.high[-1, 0] == 101.0 and md.volume[-1, 0] == 1.0 and md.close[-1, 0] == 100.5


def test_union_leading_cells_carry_the_last_past_close_not_the_last_price():
    # F (forex) has a Friday bar before the span and trades again later; C (crypto) starts on
    # the Saturday. Before the fix, F's leading cells took row -1: its LAST price in the data.
    sat = hours("2024-01-06 00:00", 6)
    c = bars(sat, [100, 101, 102, 103, 104, 105])
    f = bars([pd.Timestamp("2024-01-05 23:00", tz="UTC"), sat[3], sat[4], sat[5]],
             [10.0, 11.0, 12.0, 999.0])
    md = from_frames({"C": c, "F": f}, calendar="union", max_fill_bars=5)
    assert md.index[0] == sat[0]
    np.testing.assert_array_equal(md.close[:, 1], [10.0, 10.0, 10.0, 11.0, 12.0, 999.0])
    np.testing.assert_array_equal(md.tradable[:, 1], [0, 0, 0, 1, 1, 1])
    assert md.counts["F"]["filled"] == 3


def test_dates_malformed_refused_and_an_end_date_keeps_its_whole_day():
    md = from_frames({"A": bars(hours("2022-06-29 00:00", 72), np.arange(1.0, 73.0))})
    # before: --end 2022-06-30 stopped at 00:00, dropping the day's other 23 hours
    assert md.index[md.locate("2022-06-30", side="right") - 1] == pd.Timestamp(
        "2022-06-30 23:00", tz="UTC")
    assert md.locate("2022-06-30 12:00", side="right") - 1 == md.locate("2022-06-30 12:00")
    cut = restrict_dates(md, "2022-06-30", "2022-06-30")
    assert cut.n_bars == 24
    for bad in ("2022-13-01", "yesterday", "not a date"):
        with pytest.raises(DataError, match="is not a date"):
            md.locate(bad)


@pytest.mark.parametrize("cell, value, message", [
    ("close", np.inf, "non-finite"), ("high", np.inf, "non-finite"),
    ("high", 1e308, "absurd price"), ("open", 1e306, "absurd price"),
])
def test_infinite_and_absurd_prices_are_refused_with_the_row(cell, value, message):
    # before: an inf close made equity NaN for 200 bars; 1e308 highs fired take-profits
    frame = bars(hours("2024-01-01 00:00", 5), [100.0] * 5)
    frame[cell] = frame[cell].astype(float)
    frame.loc[3, cell] = value
    if cell in ("open", "close"):
        frame.loc[3, "high"] = max(frame.loc[3, "high"], value)
    with pytest.raises(DataError, match=rf"symbol A, row 3 .*{message}"):
        from_frames({"A": frame})


def test_ambiguous_columns_are_refused():
    # before: with both `close` and `Close` the last one silently won
    frame = bars(hours("2024-01-01 00:00", 5), [100.0] * 5)
    frame["Close"] = frame["close"] * 2
    with pytest.raises(DataError, match="ambiguous column 'close'"):
        from_frames({"A": frame})
    twice = pd.concat([bars(hours("2024-01-01 00:00", 5), [1.0] * 5),
                       pd.DataFrame({"close": [2.0] * 5})], axis=1)
    with pytest.raises(DataError, match="ambiguous column 'close'"):
        from_frames({"A": twice})


@pytest.mark.parametrize("unit, scale", [("s", 1), ("ms", 1_000), ("us", 1_000_000),
                                         ("ns", 1_000_000_000)])
def test_integer_epoch_timestamps_in_any_unit(unit, scale):
    # before: ccxt's milliseconds were read as nanoseconds (1970), periods_per_year 8.76e12
    t = hours("2024-01-01 00:00", 50)
    seconds = t.as_unit("s").asi8.astype(np.int64)
    frame = bars(t, np.linspace(100, 110, 50))
    frame["time"] = seconds * scale
    md = from_frames({"A": frame})
    assert md.index[0] == t[0] and md.index[-1] == t[-1]
    assert md.periods_per_year == 8760.0


def test_mixed_epoch_units_and_mixed_timezones_are_refused_in_one_line():
    t = hours("2024-01-01 00:00", 6)
    frame = bars(t, np.arange(1.0, 7.0))
    frame["time"] = t.as_unit("s").asi8
    frame.loc[5, "time"] = frame.loc[5, "time"] * 1000
    with pytest.raises(DataError, match="mix units"):
        from_frames({"A": frame})
    mixed = bars(t, np.arange(1.0, 7.0))
    mixed["time"] = [str(x.tz_localize(None)) if k % 2 else str(x)
                     for k, x in enumerate(t)]
    with pytest.raises(DataError, match=r"symbol A: timestamps do not parse") as err:
        from_frames({"A": mixed})
    assert "\n" not in str(err.value)


def test_bars_per_year_survive_a_missing_month_and_gaps_are_reported():
    # before: a month missing in a 24/7 hourly market gave 6240 bars a year (Sharpe x 0.84)
    t = pd.date_range("2023-01-01", "2023-12-31 23:00", freq="h", tz="UTC")
    holed = t[(t < "2023-05-01") | (t >= "2023-06-01")]
    assert infer_periods_per_year(holed) == 8760.0
    weekdays = t[t.day_of_week < 5]
    assert infer_periods_per_year(weekdays[(weekdays < "2023-05-01") |
                                           (weekdays >= "2023-06-01")]) == 6240.0
    days = pd.date_range("2023-01-01", "2023-12-31", freq="D", tz="UTC")
    assert infer_periods_per_year(days[(days < "2023-03-01") | (days >= "2023-04-15")]) == 365.0
    md = from_frames({"A": bars(holed, np.linspace(1, 2, len(holed)))})
    assert "1 gap(s) in the data, first 2023-04-30..2023-06-01" in md.describe()
    assert "gap" not in from_frames({"A": bars(weekdays, np.ones(len(weekdays)))}).describe()


def test_mixed_bar_lengths_are_refused(tmp_path):
    # before: a daily and an hourly file in one folder silently became a daily intersection
    bars(pd.date_range("2024-01-01", periods=60, freq="D", tz="UTC"),
         np.arange(1.0, 61.0)).to_csv(tmp_path / "D_daily.csv", index=False)
    bars(hours("2024-01-01 00:00", 24 * 60), np.ones(24 * 60)).to_csv(tmp_path / "H_H1.csv",
                                                                         index=False)
    with pytest.raises(DataError, match=r"mixed bar lengths: H every 0 days 01:00:00, D every "
                                        r"1 days"):
        load_market(tmp_path)


def test_too_few_bars_after_alignment_names_the_file_and_symbol(tmp_path):
    bars(hours("2024-01-01 00:00", 200), np.ones(200)).to_csv(tmp_path / "A_H1.csv",
                                                              index=False)
    bars(hours("2024-01-08 14:00", 10), np.ones(10)).to_csv(tmp_path / "B_H1.csv", index=False)
    with pytest.raises(DataError, match=r"B_H1.csv, symbol B: too few bars after alignment: "
                                        r"10 < min_bars=100"):
        load_market(tmp_path, min_bars=100)


def test_a_missing_volume_keeps_its_bar():
    # before: a NaN volume dropped the whole price bar
    from ffe_gym.config import FeatureConfig
    from ffe_gym.features import compute_features

    t = hours("2024-01-01 00:00", 40)
    frame = bars(t, np.linspace(100.0, 110.0, 40))
    frame["volume"] = np.arange(1.0, 41.0)
    frame.loc[20, "volume"] = np.nan
    md = from_frames({"A": frame})
    assert md.n_bars == 40 and md.close[20, 0] == frame.loc[20, "close"]
    assert np.isnan(md.volume[20, 0]) and md.counts["A"]["volume_missing"] == 1
    assert md.counts["A"]["nan_rows"] == 0
    feats = compute_features(md, FeatureConfig(names=["volume_z"]))
    assert np.isfinite(feats).all() and feats[20, 0, 0] == 0.0 and feats[21, 0, 0] != 0.0
    frame.loc[20, "volume"] = np.inf
    with pytest.raises(DataError, match=r"row 20 .*infinite volume"):
        from_frames({"A": frame})
