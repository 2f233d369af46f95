"""Every engine rule against numbers computed by hand."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import bare, book, market, signals

from ffe_gym.portfolio import Portfolio, correlation_factor
from ffe_gym.portfolio import layout as L

E0 = 10_000.0


def fills(pf):
    return pf.step_fills(0)


# ---------------------------------------------------------------- sizing


def test_correlation_factor_seed_numbers():
    assert correlation_factor(0.85, 0.7) == pytest.approx(0.75, abs=1e-12)
    assert correlation_factor(0.7, 0.7) == 1.0
    assert correlation_factor(0.3, 0.7) == 1.0
    assert correlation_factor(1.0, 0.7) == pytest.approx(0.5)


def _market_with_correlation(rho: float, window: int = 30):
    rng = np.random.default_rng(3)
    x = rng.normal(size=window)
    x -= x.mean()
    z = rng.normal(size=window)
    z -= z.mean()
    z -= x * (z @ x) / (x @ x)  # orthogonal to x, still centred
    z *= np.linalg.norm(x) / np.linalg.norm(z)
    y = rho * x + np.sqrt(1 - rho**2) * z
    r = 0.01 * np.column_stack([x, y]) / x.std()
    close = np.vstack([[100.0, 50.0], 100.0 * np.ones((window + 1, 2))])
    for s in range(1, window + 1):
        close[s] = close[s - 1] * (1 + r[s - 1])
    close[window + 1] = close[window]
    return market(close)


def test_correlation_085_at_threshold_07_sizes_075():
    md = _market_with_correlation(0.85)
    pf = book(md, bare(portfolio={"correlation_window": 30}))
    while pf.bar[0] < 30:
        pf.step_signals(*signals(2))
    t = int(pf.bar[0])
    pf.step_signals(*signals(2, a0=(1, 1.0), a1=(1, 1.0)))  # tie: a0 first, then a1 sees a0
    c = md.close[t]
    u = pf.units[0]
    assert u[0] == pytest.approx(0.5 * E0 / c[0], rel=1e-12)
    assert u[1] == pytest.approx(0.5 * E0 * 0.75 / c[1], rel=1e-9)


@pytest.mark.parametrize("scan", [False, True])
def test_cash_decides_after_the_correlation_factor_where_the_factor_matters(monkeypatch, scan):
    # a1 (confidence 0.99, after a0 at 1.0; rho 0.85 with the held a0: factor 0.75) sized
    # 0.55 x 0.99 x E0 unadjusted. After a0 takes 5,500 the 4,500 left fit 0.75 x 5,445 =
    # 4,083.75 (opened, cut), not the full 5,445; after a0 takes 7,000 not even half of 6,930
    # fits the 3,000 left: refused for cash either way
    from ffe_gym.portfolio import statistics as S

    if scan:
        monkeypatch.setattr(S, "PAIR_BUDGET", 0)
    md = _market_with_correlation(0.85)
    for share, opened in ((0.55, True), (0.7, False)):
        pf = book(md, bare(portfolio={"correlation_window": 30},
                           sizing={"base": "notional", "risk_per_trade": share}))
        assert pf.stats.cached is not scan
        while pf.bar[0] < 30:
            pf.step_signals(*signals(2))
        t = int(pf.bar[0])
        c = md.close[t]
        pf.step_signals(*signals(2, a0=(1, 1.0), a1=(1, 0.99)))
        assert pf.units[0, 0] == pytest.approx(share * E0 / c[0], rel=1e-12)
        if opened:
            assert pf.units[0, 1] == pytest.approx(share * 0.99 * E0 * 0.75 / c[1], rel=1e-9)
            assert not pf.refused[0].any()
        else:
            assert pf.units[0, 1] == 0.0
            assert pf.refused[0, 1] == L.R_CASH and pf.count[0, L.R_CASH] == 1


def test_confidence_030_sizes_at_half():
    md = market([100.0, 100.0, 100.0])
    pf = book(md, bare(sizing={"min_confidence_factor": 0.5}))
    pf.step_signals(*signals(1, a0=(1, 0.30)))
    assert pf.units[0, 0] == pytest.approx(0.5 * E0 * 0.5 / 100.0)


def test_base_modes_risk_and_notional():
    md = market([100.0, 100.0, 100.0])
    pf = book(md, bare(sizing={"base": "risk", "risk_per_trade": 0.01},
                       risk={"stop_loss": 0.02}))
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert pf.units[0, 0] == pytest.approx(E0 * 0.01 / 0.02 / 100.0)  # 50 units
    pf = book(md, bare(sizing={"base": "notional", "risk_per_trade": 0.01}))
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert pf.units[0, 0] == pytest.approx(1.0)


def test_fixed_fraction_ignores_confidence_and_correlation():
    md = _market_with_correlation(0.95)
    pf = book(md, bare(portfolio={"position_sizing": "fixed_fraction"},
                       sizing={"risk_per_trade": 0.2, "min_confidence_factor": 0.5}))
    while pf.bar[0] < 30:
        pf.step_signals(*signals(2))
    t = int(pf.bar[0])
    pf.step_signals(*signals(2, a0=(1, 0.1), a1=(1, 0.1)))
    assert pf.units[0] * md.close[t] == pytest.approx([0.2 * E0, 0.2 * E0])


def test_inverse_volatility_and_volatility_target_sizers():
    rng = np.random.default_rng(1)
    r = rng.normal(0, [0.01, 0.03], size=(40, 2))
    close = 100 * np.cumprod(1 + np.vstack([[0, 0], r]), axis=0)
    md = market(close)
    t = 35
    win = r[t - 30:t]  # returns of bars t-29..t are r[t-30 .. t-1]
    sig = win.std(axis=0, ddof=1)
    cfg = bare(portfolio={"position_sizing": "inverse_volatility"},
               sizing={"risk_per_trade": 0.2, "volatility_window": 30})
    pf = book(md, cfg, start=t)
    pf.step_signals(*signals(2, a0=(1, 1.0), a1=(1, 1.0)))
    expected = 0.2 * E0 * np.minimum(sig.mean() / sig, 4.0)
    assert pf.units[0] * md.close[t] == pytest.approx(expected, rel=1e-9)

    cfg = bare(portfolio={"position_sizing": "volatility_target"},
               sizing={"target_volatility": 0.2, "volatility_window": 30})
    pf = book(md, cfg, start=t)
    pf.step_signals(*signals(2, a0=(1, 1.0), a1=(1, 1.0)))
    expected = E0 * 0.2 / (sig * np.sqrt(8760))
    assert pf.units[0] * md.close[t] == pytest.approx(expected, rel=1e-9)


# ---------------------------------------------------------------- the seed's table


def test_short_at_100_covered_at_90_earns_10_percent():
    md = market([100.0, 95.0, 90.0, 90.0])
    pf = book(md, bare())
    pf.step_signals(*signals(1, a0=(-1, 1.0)))
    assert pf.units[0, 0] == pytest.approx(-50.0)
    pf.step_signals(*signals(1))
    pf.step_signals(*signals(1, a0=(1, 1.0)))  # BUY while short: cover, then open long
    f = fills(pf)
    cover = f[f[:, L.F_CLOSING] == 1.0][0]
    assert cover[L.F_PRICE] == 90.0
    assert cover[L.F_PNL] == pytest.approx(500.0)  # 10% of the 5,000 notional
    assert cover[L.F_PNL] / (50 * 100.0) == pytest.approx(0.10)
    assert pf.units[0, 0] > 0


def test_signal_table():
    md = market(np.full((8, 1), 100.0))
    pf = book(md, bare())
    pf.step_signals(*signals(1, a0=(1, 1.0)))  # BUY flat -> long
    u = pf.units[0, 0]
    assert u > 0
    pf.step_signals(*signals(1, a0=(1, 1.0)))  # BUY long -> keep
    assert pf.units[0, 0] == u and pf.n_fills[0] == 0
    pf.step_signals(*signals(1, a0=(0, 1.0)))  # HOLD -> keep
    assert pf.units[0, 0] == u
    pf.step_signals(*signals(1, a0=(-1, 1.0)))  # SELL long -> close only
    assert pf.units[0, 0] == 0.0 and pf.n_fills[0] == 1
    pf.step_signals(*signals(1, a0=(-1, 1.0)))  # SELL flat -> short
    s = pf.units[0, 0]
    assert s < 0
    pf.step_signals(*signals(1, a0=(-1, 1.0)))  # SELL short -> keep
    assert pf.units[0, 0] == s and pf.n_fills[0] == 0


def test_no_shorting_when_disabled():
    md = market([100.0, 100.0, 100.0])
    pf = book(md, bare(risk={"allow_short": False}))
    pf.step_signals(*signals(1, a0=(-1, 1.0)))
    assert pf.units[0, 0] == 0.0
    assert pf.refused[0, 0] == L.R_NO_SHORTING
    assert pf.refusals()["no_shorting"] == 1


# ---------------------------------------------------------------- limits


def test_sixth_opening_refused_by_max_positions():
    md = market(np.full((3, 6), 100.0))
    pf = book(md, bare(portfolio={"max_positions": 5}, sizing={"risk_per_trade": 0.1}))
    conf = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    pf.step_signals(np.ones(6, np.int8), conf)
    assert (pf.units[0, :5] > 0).all() and pf.units[0, 5] == 0.0
    assert pf.refused[0, 5] == L.R_MAX_POSITIONS
    assert pf.refusals()["max_positions"] == 1


def test_openings_by_descending_confidence_then_index():
    md = market(np.full((3, 3), 100.0))
    pf = book(md, bare(portfolio={"max_positions": 2}, sizing={"risk_per_trade": 0.1}))
    pf.step_signals(np.ones(3, np.int8), np.array([0.5, 0.9, 0.9]))
    assert list(pf.units[0] > 0) == [False, True, True]


def test_flip_whose_opening_leg_is_refused_still_closes():
    md = market(np.full((4, 2), 100.0))
    pf = book(md, bare(risk={"max_gross_exposure": 0.6}))
    pf.step_signals(*signals(2, a0=(-1, 1.0)))  # short a0: gross 0.5
    assert pf.units[0, 0] == pytest.approx(-50.0)
    pf.step_signals(*signals(2, a0=(1, 0.9), a1=(1, 1.0)))
    # a0 is covered first; a1 (conf 1.0) opens (gross 0.5); a0's long leg would make 1.0 > 0.6
    assert pf.units[0, 0] == 0.0
    assert pf.units[0, 1] == pytest.approx(50.0)
    assert pf.refused[0, 0] == L.R_GROSS_CAP


def test_cash_limit_refuses_long():
    md = market(np.full((3, 2), 100.0))
    pf = book(md, bare(sizing={"risk_per_trade": 0.6}))
    pf.step_signals(*signals(2, a0=(1, 1.0), a1=(1, 0.9)))
    assert pf.units[0, 0] == pytest.approx(60.0) and pf.units[0, 1] == 0.0
    assert pf.refused[0, 1] == L.R_CASH


def test_short_and_gross_caps():
    md = market(np.full((3, 3), 100.0))
    pf = book(md, bare(sizing={"risk_per_trade": 0.4}, risk={"max_short_exposure": 0.5}))
    pf.step_signals(*signals(3, a0=(-1, 1.0), a1=(-1, 0.9)))
    assert pf.units[0, 0] < 0 and pf.units[0, 1] == 0.0
    assert pf.refused[0, 1] == L.R_SHORT_CAP
    pf = book(md, bare(sizing={"risk_per_trade": 0.4}, risk={"max_gross_exposure": 1.0}))
    pf.step_signals(*signals(3, a0=(1, 1.0), a1=(-1, 0.9), a2=(1, 0.8)))
    assert pf.units[0, 2] == 0.0 and pf.refused[0, 2] == L.R_GROSS_CAP


def test_parametric_var_limit_by_hand():
    rng = np.random.default_rng(7)
    r = rng.normal(0, 0.01, 20)
    close = 100 * np.cumprod(np.concatenate([[1.0], 1 + r]))
    md = market(close)
    t = 15
    window = r[t - 10:t]  # 10 returns ending at bar t
    w = 0.5
    var = 1.6448536269514722 * w * window.std(ddof=1)
    for limit, accepted in [(var * 1.001, True), (var * 0.999, False)]:
        cfg = bare(portfolio={"max_portfolio_risk": limit}, risk={"var_window": 10})
        pf = book(md, cfg, start=t)
        pf.step_signals(*signals(1, a0=(1, 1.0)))
        assert (pf.units[0, 0] != 0) == accepted
        if not accepted:
            assert pf.refused[0, 0] == L.R_VAR


@pytest.mark.parametrize("horizon, every, bars", [(None, 4, 4), (1, 4, 1), (5, 1, 5),
                                                   (1, 1, 1)])
def test_var_horizon_hand_computed_historical(horizon, every, bars):
    """95% historical VaR of the book after the trade, scaled by sqrt(bars ahead): the bars of
    ``risk.var_horizon_bars`` whatever the decision interval, or the decision interval when it
    is null."""
    rng = np.random.default_rng(8)
    r = rng.normal(0, 0.01, 40)
    close = 100 * np.cumprod(np.concatenate([[1.0], 1 + r]))
    md = market(close)
    t = 30
    window = r[t - 20:t]
    w = 0.5
    hist = -np.quantile(w * window, 0.05) * np.sqrt(bars)
    for limit, accepted in [(hist * 1.001, True), (hist * 0.999, False)]:
        cfg = bare(portfolio={"max_portfolio_risk": limit, "rebalancing_frequency": every},
                   risk={"var_window": 20, "var_method": "historical",
                         "var_horizon_bars": horizon})
        pf = book(md, cfg, start=t)
        pf.step_signals(*signals(1, a0=(1, 1.0)))
        assert (pf.units[0, 0] != 0) == accepted
        if not accepted:
            assert pf.refused[0, 0] == L.R_VAR


@pytest.mark.parametrize("horizon", [1, 5])
def test_var_horizon_hand_computed_parametric(horizon):
    """Parametric: z_95 * sd(w * r over the window) * sqrt(horizon), with decisions every 63
    bars (the horizon is not the decision interval)."""
    from statistics import NormalDist

    rng = np.random.default_rng(3)
    r = rng.normal(0, 0.01, 40)
    close = 100 * np.cumprod(np.concatenate([[1.0], 1 + r]))
    md = market(close)
    t = 30
    w = 0.5
    var = NormalDist().inv_cdf(0.95) * np.std(w * r[t - 20:t], ddof=1) * np.sqrt(horizon)
    for limit, accepted in [(var * 1.001, True), (var * 0.999, False)]:
        cfg = bare(portfolio={"max_portfolio_risk": limit, "rebalancing_frequency": 63},
                   risk={"var_window": 20, "var_horizon_bars": horizon})
        pf = book(md, cfg, start=t)
        pf.step_signals(*signals(1, a0=(1, 1.0)))
        assert (pf.units[0, 0] != 0) == accepted


def test_refused_opening_leaves_state_untouched():
    md = market(np.full((3, 2), 100.0))
    pf = book(md, bare(portfolio={"max_positions": 1}))
    pf.step_signals(*signals(2, a0=(1, 1.0)))
    before = (pf.pos.copy(), pf.acct.copy())
    pf.step_signals(*signals(2, a1=(1, 1.0)))
    assert pf.refused[0, 1] == L.R_MAX_POSITIONS
    np.testing.assert_array_equal(pf.pos, before[0])
    np.testing.assert_array_equal(pf.acct[:, [L.CASH, L.EQUITY]], before[1][:, [L.CASH, L.EQUITY]])


# ---------------------------------------------------------------- fills and costs


def test_close_fill_with_slippage_proportional_and_fixed_fee():
    md = market([100.0, 100.0, 100.0])
    pf = book(md, bare(execution={"slippage": 0.0001, "fee_rate": 0.001, "fixed_fee": 1.0}))
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    f = fills(pf)[0]
    assert f[L.F_PRICE] == pytest.approx(100.01)
    assert f[L.F_UNITS] == pytest.approx(50.0)
    assert f[L.F_FEE] == pytest.approx(0.001 * 50 * 100.01 + 1.0)
    assert pf.cash[0] == pytest.approx(E0 - 50 * 100.01 - (0.001 * 50 * 100.01 + 1.0))
    assert pf.equity[0] == pytest.approx(pf.cash[0] + 50 * 100.0)


def test_next_open_fill_and_cash_recheck_scales_down():
    md = market([100.0, 110.0, 110.0], open_=[100.0, 110.0, 110.0])
    pf = book(md, bare(sizing={"risk_per_trade": 0.99},
                       execution={"price": "next_open", "fee_rate": 0.001}))
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    # sized at close 100: 99 units would cost 10,900 at the 110 open -> scaled to the cash
    f = fills(pf)[0]
    assert f[L.F_BAR] == 1 and f[L.F_PRICE] == 110.0
    assert f[L.F_UNITS] == pytest.approx(E0 / (110.0 * 1.001))
    assert pf.cash[0] == pytest.approx(0.0, abs=1e-9)
    assert pf.refusals()["scaled"] == 1


def test_next_open_cash_check_at_decision_refuses():
    md = market([100.0, 100.0, 100.0])
    pf = book(md, bare(sizing={"risk_per_trade": 1.01}, execution={"price": "next_open"}))
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert pf.units[0, 0] == 0.0 and pf.refused[0, 0] == L.R_CASH


def test_per_asset_cost_overrides():
    md = market(np.full((3, 2), 100.0))
    cfg = bare(sizing={"risk_per_trade": 0.1},
               execution={"fee_rate": 0.001, "overrides": {"A1": {"fee_rate": 0.01}}})
    pf = book(md, cfg)
    pf.step_signals(*signals(2, a0=(1, 1.0), a1=(1, 1.0)))
    fees = pf.pos[0, :, L.FEES]
    assert fees == pytest.approx([0.001 * 1000, 0.01 * 1000])


def test_borrow_charged_per_bar_on_shorts():
    md = market(np.full(5, 100.0))
    pf = book(md, bare(execution={"borrow_rate": 0.0876}))
    pf.step_signals(*signals(1, a0=(-1, 1.0)))
    for _ in range(3):
        pf.step_signals(*signals(1))
    # 5,000 short notional * 0.0876 / 8760 = 0.05 per bar, four bars
    assert pf.pos[0, 0, L.BORROW] == pytest.approx(4 * 0.05)
    assert pf.equity[0] == pytest.approx(E0 - 0.2)


def test_volatility_scaled_slippage():
    rng = np.random.default_rng(2)
    r = rng.normal(0, 0.01, 40)
    close = 100 * np.cumprod(np.concatenate([[1.0], 1 + r]))
    md = market(close)
    t = 35
    sigma = r[t - 1 - 30:t - 1].std(ddof=1)  # volatility up to the bar before the fill bar
    cfg = bare(execution={"slippage": 0.0002, "volatility_slippage": 0.5},
               sizing={"volatility_window": 30})
    pf = book(md, cfg, start=t)
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert fills(pf)[0][L.F_PRICE] == pytest.approx(close[t] * (1 + 0.0002 + 0.5 * sigma))


# ---------------------------------------------------------------- exits


def _exit_after_entry(bar, side=1, **risk):
    o, h, lo, c = bar
    md = market([100.0, c, c], open_=[100.0, o, c], high=[100.0, h, c], low=[100.0, lo, c])
    cfg = bare(risk={"stop_loss": 0.02, "take_profit": 0.05, **risk})
    pf = book(md, cfg)
    pf.step_signals(*signals(1, a0=(side, 1.0)))  # fills at close[0]; bar 1 is checked
    f = fills(pf)
    f = f[f[:, L.F_CLOSING] == 1.0]
    return (f[0][L.F_PRICE], int(f[0][L.F_REASON])) if len(f) else (None, None)


@pytest.mark.parametrize("bar, expected", [
    ((99.5, 100.5, 97.0, 99.0), (98.0, L.STOP_LOSS)),  # stop inside the bar: at the stop
    ((96.0, 97.0, 95.0, 96.5), (96.0, L.STOP_LOSS)),  # gap below the stop: at the open
    ((100.0, 106.0, 97.0, 101.0), (98.0, L.STOP_LOSS)),  # both inside: the stop first
    ((106.0, 107.0, 97.0, 101.0), (106.0, L.TAKE_PROFIT)),  # opened beyond the target
    ((100.0, 105.5, 99.0, 100.0), (105.0, L.TAKE_PROFIT)),  # target inside the bar
    ((100.0, 101.0, 99.0, 100.0), (None, None)),  # neither
])
def test_long_stop_and_target_in_a_bar(bar, expected):
    assert _exit_after_entry(bar) == expected


@pytest.mark.parametrize("bar, expected", [
    ((100.5, 103.0, 99.0, 101.0), (102.0, L.STOP_LOSS)),
    ((103.0, 104.0, 99.0, 101.0), (103.0, L.STOP_LOSS)),
    ((100.0, 103.0, 94.0, 99.0), (102.0, L.STOP_LOSS)),
    ((94.0, 103.0, 93.0, 99.0), (94.0, L.TAKE_PROFIT)),
    ((99.0, 100.0, 94.5, 99.0), (95.0, L.TAKE_PROFIT)),
])
def test_short_stop_and_target_in_a_bar(bar, expected):
    assert _exit_after_entry(bar, side=-1) == expected


def test_close_only_stops():
    assert _exit_after_entry((99.5, 100.5, 97.0, 99.0), intrabar_stops=False) == (None, None)
    assert _exit_after_entry((99.5, 100.5, 97.0, 97.5), intrabar_stops=False) == (
        97.5, L.STOP_LOSS)


def test_exit_pays_slippage_and_fees():
    md = market([100.0, 99.0, 99.0], open_=[100.0, 99.5, 99.0], low=[100.0, 97.0, 99.0])
    cfg = bare(risk={"stop_loss": 0.02}, execution={"slippage": 0.001, "fee_rate": 0.001})
    pf = book(md, cfg)
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    entry = 100.0 * 1.001
    units, f = fills(pf)[0][L.F_UNITS], fills(pf)[1]
    assert f[L.F_PRICE] == pytest.approx(entry * 0.98 * 0.999)
    assert f[L.F_PNL] == pytest.approx(units * (entry * 0.98 * 0.999 - entry))
    assert f[L.F_FEE] == pytest.approx(0.001 * units * entry * 0.98 * 0.999)


def test_stops_checked_on_every_bar_between_decisions():
    md = market([100, 100, 97, 97, 97, 97], open_=[100, 100, 100, 97, 97, 97])
    cfg = bare(portfolio={"rebalancing_frequency": 4}, risk={"stop_loss": 0.02})
    pf = book(md, cfg)
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert pf.n_curve[0] == 4 and pf.bar[0] == 4
    f = fills(pf)
    assert f[-1][L.F_BAR] == 2 and f[-1][L.F_REASON] == L.STOP_LOSS
    assert f[-1][L.F_PRICE] == 98.0


def test_closed_market_no_orders_and_no_stops():
    close = [100.0, 100.0, 100.0, 95.0, 95.0]
    tradable = [True, True, False, True, True]
    md = market(close, open_=[100.0, 100.0, 100.0, 96.0, 95.0], tradable=tradable)
    cfg = bare(risk={"stop_loss": 0.02}, execution={"price": "next_open"})
    pf = book(md, cfg, start=1)
    pf.step_signals(*signals(1, a0=(1, 1.0)))  # fill bar 2 is closed
    assert pf.units[0, 0] == 0.0 and pf.refused[0, 0] == L.R_NOT_TRADABLE
    pf = book(md, cfg, start=0)
    pf.step_signals(*signals(1, a0=(1, 1.0)))  # fills at open of bar 1
    pf.step_signals(*signals(1))  # bar 2 closed: nothing fires
    assert pf.n_fills[0] == 0
    pf.step_signals(*signals(1))  # bar 3 gaps below the stop: fills at its open
    f = fills(pf)[0]
    assert f[L.F_REASON] == L.STOP_LOSS and f[L.F_PRICE] == 96.0


# ---------------------------------------------------------------- portfolio stop and ruin


def test_drawdown_from_peak_terminates_and_liquidates():
    md = market([100.0, 120.0, 113.0, 113.0])
    pf = book(md, bare(portfolio={"max_drawdown": 0.05}, sizing={"risk_per_trade": 1.0}))
    pf.step_signals(*signals(1, a0=(1, 1.0)))  # bar 1: 12,000
    assert pf.status[0] == L.RUNNING
    pf.step_signals(*signals(1))  # bar 2: 11,300, 5.8% below the peak
    assert pf.status[0] == L.STOPPED and pf.units[0, 0] == 0.0
    f = fills(pf)[0]
    assert f[L.F_REASON] == L.PORTFOLIO_STOP and f[L.F_PRICE] == 113.0
    assert pf.equity[0] == pytest.approx(11_300.0)


def test_drawdown_from_initial_does_not_fire_above_start():
    md = market([100.0, 120.0, 113.0, 94.0, 94.0])
    cfg = bare(portfolio={"max_drawdown": 0.05}, sizing={"risk_per_trade": 1.0},
               risk={"drawdown_reference": "initial"})
    pf = book(md, cfg)
    for _ in range(2):
        pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert pf.status[0] == L.RUNNING  # bar 2: 11,300, above the initial balance
    pf.step_signals(*signals(1))  # bar 3: 9,400, 6% below the initial balance
    assert pf.status[0] == L.STOPPED


def test_portfolio_stop_flat_blocks_entries_for_cooldown():
    md = market([100.0, 94.0] + [94.0] * 6)
    cfg = bare(portfolio={"max_drawdown": 0.05}, sizing={"risk_per_trade": 1.0},
               risk={"on_portfolio_stop": "flat", "cooldown_bars": 3})
    pf = book(md, cfg)
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert pf.status[0] == L.RUNNING and pf.units[0, 0] == 0.0
    assert pf.acct[0, L.PEAK] == pytest.approx(9_400.0)  # the peak is reset
    for _ in range(3):  # decisions at bars 1, 2, 3: cooldown 3, 2, 1 bars left
        pf.step_signals(*signals(1, a0=(1, 1.0)))
        assert pf.units[0, 0] == 0.0 and pf.refused[0, 0] == L.R_COOLDOWN
    pf.step_signals(*signals(1, a0=(1, 1.0)))  # bar 4: three bars have passed
    assert pf.units[0, 0] > 0
    assert pf.refusals()["cooldown"] == 3


def test_ruin_terminates():
    md = market([100.0, 40.0, 40.0])
    pf = book(md, bare(sizing={"risk_per_trade": 1.0}, risk={"ruin_floor": 0.5}))
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert pf.status[0] == L.RUINED
    assert pf.equity[0] == pytest.approx(4_000.0)


def test_end_of_window_is_ended():
    md = market(np.full(6, 100.0))
    pf = book(md, bare(), start=1, end=3)
    pf.step_signals(*signals(1))
    assert not pf.done[0]
    pf.step_signals(*signals(1))
    assert pf.status[0] == L.ENDED and pf.bar[0] == 3


# ---------------------------------------------------------------- weights path


def _prices(seed=0, T=60, N=4):
    rng = np.random.default_rng(seed)
    return 50 * np.cumprod(1 + rng.normal(0, 0.02, (T, N)), axis=0)


def test_weights_equal_weight_rebalanced_every_bar():
    close = _prices()
    md = market(close)
    pf = book(md, bare())
    N = close.shape[1]
    while not pf.done[0]:
        pf.step_weights(np.full(N, 1.0 / N))
    relatives = (close[1:] / close[:-1]).mean(axis=1)
    assert pf.equity[0] == pytest.approx(E0 * np.prod(relatives), rel=1e-12)


def test_weights_buy_and_hold_over_one_long_step():
    close = _prices(1)
    md = market(close)
    T, N = close.shape
    pf = book(md, bare(portfolio={"rebalancing_frequency": T - 1}))
    pf.step_weights(np.full(N, 1.0 / N))
    assert pf.done[0]
    assert pf.equity[0] == pytest.approx(E0 * (close[-1] / close[0]).mean(), rel=1e-12)


def test_weights_nan_keeps_and_short_and_reduce():
    md = market(np.full((5, 2), 100.0))
    pf = book(md, bare())
    pf.step_weights(np.array([0.5, -0.25]))
    assert pf.units[0] == pytest.approx([50.0, -25.0])
    pf.step_weights(np.array([np.nan, -0.1]))  # keep a0, reduce the short
    assert pf.units[0] == pytest.approx([50.0, -10.0])
    f = fills(pf)
    assert len(f) == 1 and f[0][L.F_CLOSING] == 1.0
    pf.step_weights(np.array([-0.2, 0.0]))  # flip a0, close a1
    assert pf.units[0] == pytest.approx([-20.0, 0.0])


def test_weights_cash_shortfall_scales_every_purchase_pro_rata():
    # 50 units of each at 100 with a 1% fee need 2 x 5,050 = 10,100 of 10,000: both are scaled
    # by 10,000 / 10,100 (not the second column's alone)
    md = market(np.full((3, 2), 100.0))
    pf = book(md, bare(execution={"fee_rate": 0.01}))
    pf.step_weights(np.array([0.5, 0.5]))
    assert pf.cash[0] == pytest.approx(0.0, abs=1e-7)
    assert pf.refusals()["scaled"] == 2
    np.testing.assert_allclose(pf.units[0], [50.0 * 10_000 / 10_100] * 2, rtol=1e-12)


# ---------------------------------------------------------------- attribution


def test_attribution_adds_up_and_share_is_none_when_total_is_zero():
    md = market(np.full((3, 2), 100.0))
    pf = book(md, bare())
    pf.step_signals(*signals(2))
    assert all(a.share_of_total is None for a in pf.attribution())
    md = market([[100.0, 100.0], [110.0, 95.0], [110.0, 95.0]])
    pf = book(md, bare(execution={"fee_rate": 0.001}))
    pf.step_signals(*signals(2, a0=(1, 1.0), a1=(-1, 1.0)))
    att = pf.attribution()
    total = sum(a.pnl for a in att)
    assert pf.equity[0] - E0 == pytest.approx(total, rel=1e-12)
    assert sum(a.share_of_total for a in att) == pytest.approx(1.0)
    assert att[0].unrealized == pytest.approx(50 * (110.0 - 100.0))
    assert att[1].unrealized == pytest.approx(-50 * (95.0 - 100.0))
    assert att[0].pnl_pct_initial == pytest.approx(att[0].pnl / E0 * 100)


def test_win_counts_net_of_fees():
    md = market([100.0, 100.05, 100.05])
    pf = book(md, bare(execution={"fee_rate": 0.001}))
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    pf.step_signals(*signals(1, a0=(-1, 1.0)))  # +0.05% gross, -0.2% in fees
    a = pf.attribution()[0]
    assert a.realized > 0 and a.trades == 1 and a.wins == 0 and a.win_rate == 0.0


# ---------------------------------------------------------------- re-entry after an exit


def _stopped_then_signals(n_decisions, reentry, freq=1, scheme="signals"):
    """Entry at bar 0 (close 100), stop at 98 inside bar 1, then BUY (or weight 1) again."""
    close = [100.0, 99.0] + [99.0] * 8
    md = market(close, open_=[100.0, 99.5] + [99.0] * 8, low=[100.0, 97.0] + [99.0] * 8)
    cfg = bare(portfolio={"rebalancing_frequency": freq},
               risk={"stop_loss": 0.02, "reentry_bars": reentry})
    pf = book(md, cfg)
    seen = []
    for _ in range(n_decisions):
        if scheme == "signals":
            pf.step_signals(*signals(1, a0=(1, 1.0)))
        else:
            pf.step_weights(np.array([0.5]))
        seen.append((int(pf.bar[0]), float(pf.units[0, 0]), int(pf.refused[0, 0])))
    return pf, seen


def test_reentry_blocked_for_reentry_bars_after_a_stop():
    # decision 1 at bar 0 opens; the stop fires in bar 1 (exit bar s = 1): openings at decision
    # bars t < s + 3 = 4 are refused (bars 1, 2, 3), bar 4 opens again
    pf, seen = _stopped_then_signals(5, reentry=3)
    assert seen[0][1] == 0.0  # stopped out within the first step
    assert [s[2] for s in seen[1:4]] == [L.R_REENTRY] * 3
    assert [s[1] for s in seen[1:4]] == [0.0] * 3
    assert seen[4][1] > 0 and seen[4][2] == 0
    assert pf.refusals()["reentry"] == 3


def test_reentry_zero_allows_the_next_decision_and_weights_are_blocked_too():
    _, seen = _stopped_then_signals(2, reentry=0)
    assert seen[1][1] > 0
    _, seen = _stopped_then_signals(4, reentry=2, scheme="weights")  # blocked at bars 1, 2
    assert [s[2] for s in seen[1:4]] == [L.R_REENTRY, L.R_REENTRY, L.R_NONE]
    assert seen[2][1] == 0.0 and seen[3][1] > 0


def test_reentry_default_is_one_decision_interval():
    cfg = bare(risk={"stop_loss": 0.02})
    md = market([100.0] * 12)
    assert cfg.risk.reentry_bars is None
    assert Portfolio(md, cfg).params[L.P_REENTRY] == 1
    every3 = bare(portfolio={"rebalancing_frequency": 3}, risk={"stop_loss": 0.02})
    assert Portfolio(md, every3).params[L.P_REENTRY] == 3
    # deciding every bar: the decision right after the stop (bar 1) is refused, bar 2 opens
    _, seen = _stopped_then_signals(3, reentry=None)
    assert seen[1][2] == L.R_REENTRY and seen[2][1] > 0


def test_portfolio_stop_does_not_set_reentry():
    md = market([100.0, 94.0] + [94.0] * 6)
    cfg = bare(portfolio={"max_drawdown": 0.05}, sizing={"risk_per_trade": 1.0},
               risk={"on_portfolio_stop": "flat", "cooldown_bars": 0, "reentry_bars": 5})
    pf = book(md, cfg)
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert pf.units[0, 0] == 0.0
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert pf.units[0, 0] > 0


# ---------------------------------------------------------------- volatility stops


def test_volatility_stop_and_target_levels_fixed_at_entry():
    # returns alternate +1% / -1%: per-bar sigma over the window by hand; 4 bars per decision
    close = [100.0]
    for k in range(12):
        close.append(close[-1] * (1.01 if k % 2 == 0 else 0.99))
    close += [close[-1]] * 8
    md = market(close)
    cfg = bare(portfolio={"rebalancing_frequency": 4},
               sizing={"volatility_window": 10},
               risk={"stop_mode": "volatility", "stop_loss": 2.0, "take_profit": 3.0})
    pf = book(md, cfg, start=12)
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    r = np.asarray(close[1:]) / np.asarray(close[:-1]) - 1.0
    sigma = r[12 - 10: 12].std(ddof=1)  # returns of bars 3..12, ending at the decision bar
    entry = close[12]
    scale = sigma * np.sqrt(4.0)
    assert pf.pos[0, 0, L.STOP] == pytest.approx(entry * (1 - 2.0 * scale), rel=1e-12)
    assert pf.pos[0, 0, L.TARGET] == pytest.approx(entry * (1 + 3.0 * scale), rel=1e-12)


def test_volatility_stop_sizes_risk_on_the_stop_distance():
    close = [100.0]
    for k in range(12):
        close.append(close[-1] * (1.02 if k % 2 == 0 else 0.98))
    md = market(close + [close[-1]] * 4)
    cfg = bare(sizing={"base": "risk", "risk_per_trade": 0.01, "volatility_window": 10},
               risk={"stop_mode": "volatility", "stop_loss": 2.0})
    pf = book(md, cfg, start=12)
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    r = np.diff(close) / np.asarray(close[:-1])
    dist = 2.0 * r[2:12].std(ddof=1)  # one bar per decision
    notional = pf.units[0, 0] * close[12]
    assert notional == pytest.approx(E0 * 0.01 / dist, rel=1e-9)
    # one stop distance lost = 1% of equity
    assert pf.units[0, 0] * close[12] * dist == pytest.approx(0.01 * E0, rel=1e-9)


def test_fraction_stop_must_be_below_one_volatility_multiple_may_not():
    from ffe_gym.config import ConfigError

    with pytest.raises(ConfigError, match="stop_loss"):
        bare(risk={"stop_loss": 1.5})
    assert bare(risk={"stop_loss": 1.5, "stop_mode": "volatility"}).risk.stop_loss == 1.5


def test_correlation_threshold_null_turns_the_adjustment_off():
    md = _market_with_correlation(0.85)
    on = book(md, bare(portfolio={"correlation_window": 30}), start=30)
    off = book(md, bare(portfolio={"correlation_window": 30, "correlation_threshold": None}),
               start=30)
    for pf in (on, off):
        pf.step_signals(*signals(2, a0=(1, 1.0), a1=(1, 1.0)))
    assert on.units[0, 1] * md.close[30, 1] == pytest.approx(0.5 * E0 * 0.75, rel=1e-9)
    assert off.units[0, 1] * md.close[30, 1] == pytest.approx(0.5 * E0, rel=1e-12)


def test_correlation_factor_stays_in_its_range_at_extreme_thresholds():
    # a computed |correlation| of 1.0000000000000002 at threshold 0.9999999999999999 made the
    # factor -0.5: a BUY opened a short
    for m in (1.0, 1.0000000000000002, 1.5):
        f = correlation_factor(m, 0.9999999999999999)
        assert 0.5 <= f <= 1.0
    assert correlation_factor(1.0000000000000002, 0.7) == 0.5


def test_weights_respect_allow_short_in_the_engine():
    # before: step_weights([-0.5, 0]) with shorts off opened -50 units
    md = market([[100.0, 50.0]] * 4)
    pf = book(md, bare(risk={"allow_short": False}))
    pf.step_weights(np.array([-0.5, 0.0]))
    assert pf.units[0, 0] == 0.0 and pf.refusals()["no_shorting"] == 1
    pf.step_weights(np.array([0.5, 0.0]))
    assert pf.units[0, 0] == pytest.approx(50.0)
    pf.step_weights(np.array([-0.5, 0.0]))  # a held long is closed, the short part refused
    assert pf.units[0, 0] == 0.0 and pf.refusals()["no_shorting"] == 2
    allowed = book(md, bare())
    allowed.step_weights(np.array([-0.5, 0.0]))
    assert allowed.units[0, 0] == pytest.approx(-50.0)


def test_a_scaled_order_counts_once_and_rounding_is_not_scaling():
    # next_open: short of cash at the decision (fee: both scaled by 10,000 / 10,100) and again
    # at the fill (one open above its close: both scaled by one more factor); each order counts
    # once, and the fills use all the cash, in equal units
    md = market(np.full((3, 2), 100.0), open_=[[100.0, 100.0], [100.0, 101.0],
                                               [100.0, 100.0]])
    pf = book(md, bare(execution={"fee_rate": 0.01, "price": "next_open"}))
    pf.step_weights(np.array([0.5, 0.5]))
    assert pf.refusals()["scaled"] == 2 and pf.cash[0] == pytest.approx(0.0, abs=1e-7)
    u = 10_000 / (1.01 * (100.0 + 101.0))
    np.testing.assert_allclose(pf.units[0], [u, u], rtol=1e-12)
    # 36 assets at 1/36 each, no costs: the cash check's float rounding is not a scaling
    n = 36
    rng = np.random.default_rng(0)
    closes = 100.0 * np.cumprod(1 + 0.01 * rng.standard_normal((40, n)), axis=0)
    pf = book(market(closes), bare())
    for _ in range(30):
        pf.step_weights(np.full(n, 1.0 / n))
    assert pf.refusals()["scaled"] == 0


def test_drawdown_from_initial_with_flat_stop_resets_its_reference():
    # before: after a flat stop, flat equity stayed below initial x 0.95 and the stop fired on
    # every bar after the cooldown: the book neither traded nor ended
    md = market([100.0, 94.0] + [94.0] * 4 + [94.0, 90.0, 88.0, 88.0])
    cfg = bare(portfolio={"max_drawdown": 0.05}, sizing={"risk_per_trade": 1.0},
               risk={"drawdown_reference": "initial", "on_portfolio_stop": "flat",
                     "cooldown_bars": 2})
    pf = book(md, cfg)
    pf.step_signals(*signals(1, a0=(1, 1.0)))  # 10,000 -> 9,400: stop, flat, cooldown 2
    assert pf.units[0, 0] == 0.0 and pf.acct[0, L.BASE] == pytest.approx(9_400.0)
    for _ in range(2):
        pf.step_signals(*signals(1, a0=(1, 1.0)))  # cooldown
    pf.step_signals(*signals(1, a0=(1, 1.0)))  # bar 3: opens again, no new stop at 9,400
    assert pf.units[0, 0] > 0 and pf.status[0] == L.RUNNING
    assert pf.drawdown()[0] == pytest.approx(0.0)
    for _ in range(4):  # 94 -> 90 -> 88: more than 5% below 9,400 -> a second stop
        pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert sum(1 for f in fills(pf) if f[L.F_REASON] == L.PORTFOLIO_STOP) <= 1
    assert pf.acct[0, L.BASE] < 9_400.0


def test_portfolio_stop_sells_a_closed_market_at_its_next_real_open():
    # before: the stop sold B at its carried (stale) close of 100 while its market was shut
    close = [[100.0, 100.0], [100.0, 100.0], [80.0, 100.0], [80.0, 100.0], [80.0, 70.0],
             [80.0, 70.0]]
    open_ = [[100.0, 100.0], [100.0, 100.0], [80.0, 100.0], [80.0, 100.0], [80.0, 75.0],
             [80.0, 70.0]]
    tradable = [[1, 1], [1, 1], [1, 0], [1, 0], [1, 1], [1, 1]]
    md = market(close, open_=open_, tradable=tradable)
    for mode in ("terminate", "flat"):
        cfg = bare(portfolio={"max_drawdown": 0.05}, sizing={"risk_per_trade": 0.5},
                   risk={"on_portfolio_stop": mode, "cooldown_bars": 0})
        pf = book(md, cfg)
        pf.step_signals(*signals(2, a0=(1, 1.0), a1=(1, 1.0)))  # bar 0 -> 1: both held
        pf.step_signals(*signals(2))  # bar 2: A falls 20%: stop; B's market is closed
        f = fills(pf)
        stop = f[f[:, L.F_REASON] == L.PORTFOLIO_STOP]
        assert [int(x[L.F_ASSET]) for x in stop] == [0] and stop[0][L.F_PRICE] == 80.0
        assert pf.units[0, 1] > 0 and pf.refusals()["pending_liquidation"] == 1
        assert pf.status[0] == L.RUNNING
        pf.step_signals(*signals(2, a0=(1, 1.0)))  # bar 3: still closed; no opening yet
        assert pf.refused[0, 0] == L.R_COOLDOWN and pf.units[0, 1] > 0
        pf.step_signals(*signals(2))  # bar 4: B opens at 75: sold there, not at 100 or 70
        f = fills(pf)
        assert f[-1][L.F_REASON] == L.PORTFOLIO_STOP and f[-1][L.F_PRICE] == 75.0
        assert pf.units[0, 1] == 0.0
        assert pf.status[0] == (L.STOPPED if mode == "terminate" else L.RUNNING)


def test_openings_are_ordered_by_descending_priority_ties_by_asset_index():
    from ffe_gym.portfolio import kernel

    rng = np.random.default_rng(0)
    for n in (1, 2, 3, 5, 16, 17, 40, 300):
        for _ in range(20):
            prio = np.round(rng.random(n) * 4) / 4  # many ties
            prio[rng.random(n) < 0.3] = -1.0  # not a candidate
            heap = np.flatnonzero(prio >= 0.0).astype(np.int64)  # as the step lists them
            hp = prio[heap]
            left = len(heap)
            kernel._heapify(heap, hp, left)
            want = [i for i in np.argsort(-prio, kind="mergesort") if prio[i] >= 0.0]
            taken = []
            while left > 0:
                i, left = kernel._take_first(heap, hp, left)
                assert all(hp[k] == prio[heap[k]] for k in range(left))
                taken.append(int(i))
            assert taken == want


def test_candidates_that_all_fail_cash_or_margin_before_sizing_are_refused_by_hand():
    """a0 holds 90% of equity (9,000 of 10,000), 1,000 cash left, no costs, initial margin
    0.5. Half an opening's unadjusted size (the correlation factor is at least 0.5) is
    conf x 4,500: a long needs that in cash, a short 0.5 x that of margin. Every candidate
    below fails even half its size, so all are refused before sizing, in one pass without
    ordering them (the shadow book does not change between them): the reasons are what the
    rules give one by one. a2 (conf 0.2: half 900 fits, full 1,800 does not) passes the early
    check and is refused in full."""
    md = market(np.full((5, 6), 100.0))
    pf = book(md, bare(sizing={"risk_per_trade": 0.9}))
    pf.step_signals(*signals(6, a0=(1, 1.0)))
    assert pf.units[0, 0] == pytest.approx(90.0) and pf.cash[0] == pytest.approx(1_000.0)
    # long 1.0: 4,500 > 1,000 cash; short 0.9: 0.5 x 4,050 = 2,025 > 1,000; short 0.5: 1,125;
    # long 0.3: 1,350
    pf.step_signals(*signals(6, a1=(1, 1.0), a3=(-1, 0.9), a4=(-1, 0.5), a5=(1, 0.3)))
    assert pf.refused[0].tolist() == [0, L.R_CASH, 0, L.R_MARGIN, L.R_MARGIN, L.R_CASH]
    assert pf.count[0, L.R_CASH] == 2 and pf.count[0, L.R_MARGIN] == 2
    assert pf.cash[0] == pytest.approx(1_000.0) and not pf.units[0, 1:].any()
    pf.step_signals(*signals(6, a1=(1, 1.0), a2=(1, 0.2), a3=(-1, 0.9)))
    assert pf.refused[0].tolist() == [0, L.R_CASH, L.R_CASH, L.R_MARGIN, 0, 0]
    assert pf.count[0, L.R_CASH] == 4 and pf.count[0, L.R_MARGIN] == 3
    assert pf.cash[0] == pytest.approx(1_000.0) and not pf.units[0, 1:].any()


def test_signals_of_equal_conviction_that_overdraw_are_scaled_pro_rata():
    # three BUYs at confidence 1, each sized 50% of equity, need 150% of the cash: each gets a
    # third (scaled by 2/3), not the first two columns half each and the third refused
    md = market(np.full((3, 3), 100.0))
    cfg = bare(portfolio={"correlation_threshold": None})
    pf = book(md, cfg)
    pf.step_signals(*signals(3, a0=(1, 1.0), a1=(1, 1.0), a2=(1, 1.0)))
    np.testing.assert_allclose(pf.units[0], [100.0 / 3] * 3, rtol=1e-12)
    assert pf.refusals()["scaled"] == 3 and pf.refusals()["cash"] == 0
    assert pf.cash[0] == pytest.approx(0.0, abs=1e-7)
    # a higher conviction is served first and in full; the two equals share what is left
    pf = book(md, cfg)
    pf.step_signals(*signals(3, a0=(1, 0.5), a1=(1, 1.0), a2=(1, 0.5)))
    np.testing.assert_allclose(pf.units[0], [25.0, 50.0, 25.0], rtol=1e-12)
    # under a position cap of 2 the equals' slots go by symbol, and the two share the cash
    pf = book(md, bare(portfolio={"correlation_threshold": None, "max_positions": 2},
                       sizing={"risk_per_trade": 0.6}))
    pf.step_signals(*signals(3, a0=(1, 1.0), a1=(1, 1.0), a2=(1, 1.0)))
    np.testing.assert_allclose(pf.units[0], [50.0, 50.0, 0.0], rtol=1e-12)
    assert pf.refused[0, 2] == L.R_MAX_POSITIONS


def test_equals_that_each_overdraw_at_half_their_size_are_still_scaled_together():
    # one position takes 90% of the cash; two BUYs of equal conviction then each need 9,000
    # (at half size 4,500, more than the 1,000 left): sized down together by 1,000 / 18,000,
    # 500 each, as the rule for equals says, not both refused for cash
    md = market(np.full((4, 3), 100.0))
    pf = book(md, bare(sizing={"risk_per_trade": 0.9}))
    pf.step_signals(*signals(3, a0=(1, 1.0)))
    assert pf.cash[0] == pytest.approx(1_000.0)
    pf.step_signals(*signals(3, a1=(1, 1.0), a2=(1, 1.0)))
    np.testing.assert_allclose(pf.units[0], [90.0, 5.0, 5.0], rtol=1e-12)
    assert pf.refusals()["cash"] == 0 and pf.refusals()["scaled"] == 2
    assert pf.cash[0] == pytest.approx(0.0, abs=1e-9)


def test_a_rebalance_is_scaled_over_the_purchases_the_position_cap_lets_through():
    # three targets of 50% under a cap of 2 positions and a fixed fee of 4,000: the fees of
    # all three (12,000) exceed the cash, the two let through (8,000) do not, so those two
    # share what is left after their fees (2,000, scaled by 0.2: 10 units each) rather than
    # the first by symbol taking 5,000 and the second being refused
    md = market(np.full((3, 3), 100.0))
    pf = book(md, bare(portfolio={"max_positions": 2}, execution={"fixed_fee": 4_000.0}))
    pf.step_weights(np.array([0.5, 0.5, 0.5]))
    np.testing.assert_allclose(pf.units[0], [10.0, 10.0, 0.0], rtol=1e-12)
    assert pf.refused[0].tolist() == [0, 0, L.R_MAX_POSITIONS]
    assert pf.refusals()["scaled"] == 2 and pf.cash[0] == pytest.approx(0.0, abs=1e-9)
