"""The compiled kernel against the plain-Python specification (ffe_gym/portfolio/specification.py).

Hypothesis draws markets (gaps and closed bars, a close-only asset, extreme prices), every rule
on and off, every sizer, stop mode, action scheme, short and margin setting, and action
sequences with ties of conviction; the kernel steps B > 1 books (threaded or not, its shared
statistics tables or its scans) and the specification steps each book alone. After every
step they must agree on every fill, refusal and counter, and on cash, positions, equity,
the curve and the attribution to 1e-9 of the book's scale.
"""

from __future__ import annotations

import os

import numba
import numpy as np
import pytest
from helpers import bare
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffe_gym.data import synthetic_market
from ffe_gym.data.market import MarketData
from ffe_gym.portfolio import Portfolio
from ffe_gym.portfolio import layout as L
from ffe_gym.portfolio.specification import SpecifiedPortfolio, StepRecord

RTOL = 1e-9
# the same 500 cases every run, so a red build is a change of code, never of luck;
# FFE_SPEC_HUNT=3000 draws that many new cases instead (a failure is kept in .hypothesis)
HUNT = int(os.environ.get("FFE_SPEC_HUNT", "0"))
SETTINGS = settings(max_examples=HUNT or 500, deadline=None, derandomize=not HUNT,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def market(n_assets: int, preset: str, seed: int, kinds: tuple[str, ...]) -> MarketData:
    """A synthetic market whose asset i is reshaped by ``kinds[i]``: closed bars (prices
    carried, not tradable, a gap at the reopening), close-only, extreme prices."""
    md = synthetic_market(n_assets, 160, preset, seed=seed)
    o, h, lo, c = (np.array(a) for a in (md.open, md.high, md.low, md.close))
    tradable = np.array(md.tradable)
    T, N = c.shape
    rng = np.random.default_rng(seed)
    for i, kind in enumerate(kinds):
        if kind == "gaps":  # closed stretches: the close carried, then a gap at the reopening
            closed = rng.random(T) < 0.15
            closed[0] = False
            for t in np.flatnonzero(closed):
                o[t, i] = h[t, i] = lo[t, i] = c[t, i] = c[t - 1, i]
            tradable[closed, i] = False
        elif kind == "close_only":
            o[:, i] = h[:, i] = lo[:, i] = c[:, i]
        elif kind in ("huge", "tiny"):
            f = 1e6 if kind == "huge" else 1e-4
            o[:, i], h[:, i], lo[:, i], c[:, i] = o[:, i] * f, h[:, i] * f, lo[:, i] * f, \
                c[:, i] * f
    return MarketData(symbols=md.symbols, index=md.index, open=o, high=h, low=lo, close=c,
                      volume=md.volume, tradable=tradable, periods_per_year=md.periods_per_year,
                      source="test")


@st.composite
def setups(draw):
    n_assets = draw(st.integers(1, 5))
    kinds = tuple(draw(st.sampled_from(["plain", "gaps", "close_only", "huge", "tiny"]))
                  for _ in range(n_assets))
    md = (n_assets, draw(st.sampled_from(["crypto", "fx"])), draw(st.integers(0, 10_000)),
          kinds)
    stop_mode = draw(st.sampled_from(["fraction", "volatility"]))
    sections = {
        "portfolio": {
            "initial_balance": draw(st.sampled_from([1_000.0, 10_000.0])),
            "max_positions": draw(st.sampled_from([None, 1, 2, 4])),
            "max_portfolio_risk": draw(st.sampled_from([None, 0.005, 0.05])),
            "max_drawdown": draw(st.sampled_from([None, 0.03, 0.2])),
            "position_sizing": draw(st.sampled_from(
                ["correlation_adjusted", "fixed_fraction", "inverse_volatility",
                 "volatility_target"])),
            "correlation_mode": draw(st.sampled_from(["absolute", "hedge_aware"])),
            "rebalancing_frequency": draw(st.sampled_from([1, 3, "6h"])),
            "correlation_window": draw(st.sampled_from([5, 30])),
            "correlation_threshold": draw(st.sampled_from([None, 0.0, 0.5])),
        },
        "sizing": {"base": draw(st.sampled_from(["risk", "notional"])),
                   "risk_per_trade": draw(st.sampled_from([0.01, 0.2, 0.6])),
                   "min_confidence_factor": draw(st.sampled_from([0.0, 0.5])),
                   "volatility_window": draw(st.sampled_from([5, 30]))},
        "risk": {
            "stop_loss": draw(st.sampled_from([0.01, 0.05] if stop_mode == "fraction"
                                              else [1.0, 3.0])),
            "take_profit": draw(st.sampled_from([None, 0.02] if stop_mode == "fraction"
                                                else [None, 2.0])),
            "stop_mode": stop_mode,
            "reentry_bars": draw(st.sampled_from([None, 0, 3])),
            "intrabar_stops": draw(st.booleans()),
            "allow_short": draw(st.booleans()),
            "max_short_exposure": draw(st.sampled_from([None, 0.3, 2.0])),
            "max_gross_exposure": draw(st.sampled_from([None, 0.8, 3.0])),
            "var_method": draw(st.sampled_from(["parametric", "historical"])),
            "var_window": draw(st.sampled_from([10, 60])),
            "var_horizon_bars": draw(st.sampled_from([None, 1, 24])),
            "drawdown_reference": draw(st.sampled_from(["peak", "initial"])),
            "on_portfolio_stop": draw(st.sampled_from(["terminate", "flat"])),
            "cooldown_bars": draw(st.sampled_from([0, 3])),
            "ruin_floor": draw(st.sampled_from([0.01, 0.5])),
            "allow_borrowing": draw(st.booleans()),
            **draw(st.sampled_from([{"initial_margin": 0.5, "maintenance_margin": 0.3},
                                    {"initial_margin": 1.0, "maintenance_margin": 0.25},
                                    {"initial_margin": 0.0, "maintenance_margin": 0.0}])),
        },
        "execution": {
            "price": draw(st.sampled_from(["close", "next_open"])),
            "fee_rate": draw(st.sampled_from([0.0, 0.001, 0.02])),
            "fixed_fee": draw(st.sampled_from([0.0, 1.0, 50.0])),
            "slippage": draw(st.sampled_from([0.0, 0.001])),
            "volatility_slippage": draw(st.sampled_from([0.0, 0.5])),
            "borrow_rate": draw(st.sampled_from([0.0, 0.5])),
            "margin_rate": draw(st.sampled_from([0.0, 0.2])),
        },
    }
    if draw(st.booleans()):  # one asset's own costs
        first = "SYN_C1" if md[1] == "crypto" else "SYN_F1"
        sections["execution"]["overrides"] = {first: {"fee_rate": 0.005, "fixed_fee": 2.0}}
    scheme = draw(st.sampled_from([L.SIGNALS, L.WEIGHTS]))
    threads = draw(st.sampled_from([1, 2])) if numba.config.NUMBA_NUM_THREADS >= 2 else 1
    scans = draw(st.booleans())  # the kernel's scans instead of its shared tables
    return md, sections, scheme, threads, scans, draw(st.integers(0, 2**31 - 1))


def _actions(rng: np.random.Generator, scheme: int, B: int, N: int) -> tuple[np.ndarray, ...]:
    if scheme == L.SIGNALS:  # confidences from a few levels: openings of equal conviction
        return (rng.integers(-1, 2, (B, N)).astype(np.int8),
                rng.choice([0.2, 0.5, 1.0, rng.random()], (B, N)))
    w = rng.normal(size=(B, N)) * rng.choice([0.3, 1.0, 3.0])
    w[rng.random((B, N)) < 0.2] = np.nan  # keep
    w[rng.random((B, N)) < 0.1] = 0.0
    return (w,)


def _fills(rows: np.ndarray) -> list[tuple]:
    return [(int(r[L.F_BAR]), int(r[L.F_ASSET]), float(r[L.F_UNITS]), float(r[L.F_PRICE]),
             int(r[L.F_REASON])) for r in rows]


def _close(got: float, want: float, scale: float) -> bool:
    return abs(got - want) <= RTOL * max(abs(got), abs(want), scale)


def _compare(pf: Portfolio, b: int, spec: SpecifiedPortfolio, rec: StepRecord,
             step: int) -> None:
    where = f"step {step}, book {b}"
    book = spec.book
    money = spec.rules.initial
    fills = pf.fills[b, :pf.n_fills[b]]
    assert len(fills) == len(rec.fills), (where, _fills(fills), rec.fills, rec.refused,
                                          pf.refused[b], pf.count[b], spec.book.counts)
    for k, (row, f) in enumerate(zip(fills, rec.fills, strict=True)):
        assert (int(row[L.F_BAR]), int(row[L.F_ASSET]), int(row[L.F_REASON]),
                bool(row[L.F_CLOSING])) == (f.bar, f.asset, f.reason, f.closing), \
            (where, k, row, f)
        for col, value, scale in ((L.F_UNITS, f.units, money / f.price),
                                  (L.F_PRICE, f.price, 0.0), (L.F_FEE, f.fee, money),
                                  (L.F_PNL, f.pnl, money), (L.F_NET, f.net, money)):
            assert _close(row[col], value, scale), (where, k, col, row[col], value)
    refused = {i: int(r) for i, r in enumerate(pf.refused[b]) if r}
    assert refused == rec.refused, (where, refused, rec.refused)
    assert list(pf.count[b]) == book.counts, (where, list(pf.count[b]), book.counts)
    clock = pf.clock[b]
    assert (clock[L.BAR], clock[L.STATUS], clock[L.COOLDOWN], clock[L.WAITING],
            bool(clock[L.STOP_WAIT])) == (book.bar, book.status, book.cooldown,
                                          book.waiting, book.stop_wait), where
    acct = pf.acct[b]
    for col, value in ((L.CASH, book.cash), (L.EQUITY, book.equity), (L.PEAK, book.peak),
                       (L.BASE, book.base), (L.GROSS, book.gross), (L.TRADED, book.traded)):
        assert _close(acct[col], value, money), (where, col, acct[col], value)
    curve = pf.curve[b, :pf.n_curve[b]]
    assert len(curve) == len(rec.curve), where
    assert all(_close(x, y, money) for x, y in zip(curve, rec.curve, strict=True)), \
        (where, curve, rec.curve)
    close = spec.market.close[book.bar]
    for i, p in enumerate(book.positions):
        row = pf.pos[b, i]
        assert _close(row[L.UNITS] * close[i], p.units * close[i], money), (where, i)
        assert (int(row[L.TRADES]), int(row[L.WINS]), row[L.REENTRY], bool(row[L.PENDING])) \
            == (p.trades, p.wins, p.reentry, p.pending), (where, i)
        for col, value in ((L.REALIZED, p.realized), (L.FEES, p.fees),
                           (L.BORROW, p.borrow), (L.OPEN_FEES, p.open_fees),
                           (L.GROSS_WIN, p.gross_win), (L.GROSS_LOSS, p.gross_loss)):
            assert _close(row[col], value, money), (where, i, col, row[col], value)
        for col, value in ((L.ENTRY, p.entry), (L.STOP, p.stop), (L.TARGET, p.target)):
            assert (np.isnan(row[col]) and np.isnan(value)) or \
                _close(row[col], value, 0.0), (where, i, col, row[col], value)


def _run(md: tuple, sections: dict, scheme: int, threads: int, scans: bool, seed: int,
         B: int = 3, max_steps: int = 120) -> int:
    md, cfg = market(*md), bare(**sections)
    rng = np.random.default_rng(seed)
    pf = Portfolio(md, cfg, n_books=B, threads=threads)
    if scans:  # the kernel's per-candidate scans (the paths beyond the tables' budget)
        pf.params[L.P_PAIR_CACHE] = 0.0
        pf.params[L.P_SHARED_COV] = 0.0
    starts = rng.integers(0, md.n_bars // 2, B)
    ends = np.minimum(starts + rng.integers(20, md.n_bars, B), md.n_bars - 1)
    pf.reset(start=starts, end=ends)
    specs = [SpecifiedPortfolio(md, cfg) for _ in range(B)]
    for b, spec in enumerate(specs):
        spec.reset(int(starts[b]), int(ends[b]))
    steps = 0
    while not pf.done.all() and steps < max_steps:
        action = _actions(rng, scheme, B, md.n_assets)
        if scheme == L.SIGNALS:
            pf.step_signals(*action)
        else:
            pf.step_weights(*action)
        for b, spec in enumerate(specs):
            rec = spec.step(scheme, tuple(a[b] for a in action))
            _compare(pf, b, spec, rec, steps)
        steps += 1
    return steps


@SETTINGS
@given(setups())
def test_the_kernel_steps_as_the_specification(setup):
    _run(*setup)


@pytest.mark.parametrize("scheme", [L.SIGNALS, L.WEIGHTS])
def test_the_specification_is_exercised(scheme):
    """A long run with tight limits: the comparison covers refusals of every kind that
    config allows, scaled orders, stops, targets and a portfolio stop (not vacuous)."""
    md = synthetic_market(4, 400, "crypto", seed=3)
    cfg = bare(portfolio={"max_positions": 2, "max_portfolio_risk": 0.01,
                          "max_drawdown": 0.1, "correlation_threshold": 0.3},
               sizing={"base": "risk", "risk_per_trade": 0.2},
               risk={"stop_loss": 0.01, "take_profit": 0.02, "reentry_bars": 3,
                     "max_gross_exposure": 1.5, "on_portfolio_stop": "flat",
                     "cooldown_bars": 2},
               execution={"fee_rate": 0.001, "slippage": 0.001})
    spec = SpecifiedPortfolio(md, cfg)
    pf = Portfolio(md, cfg)
    rng = np.random.default_rng(0)
    reasons = set()
    for step in range(300):
        if pf.done[0]:
            break
        action = _actions(rng, scheme, 1, 4)
        (pf.step_signals if scheme == L.SIGNALS else pf.step_weights)(*action)
        rec = spec.step(scheme, tuple(a[0] for a in action))
        _compare(pf, 0, spec, rec, step)
        reasons |= {f.reason for f in rec.fills}
    totals = np.array(spec.book.counts)
    assert totals[L.R_VAR] and totals[L.R_GROSS_CAP] and totals[L.R_REENTRY]
    assert {L.SIGNAL, L.STOP_LOSS, L.TAKE_PROFIT} <= reasons
