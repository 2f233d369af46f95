"""The margin model against numbers computed by hand (Reg-T-like defaults: 50% / 30%)."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import bare, book, market, signals

from ffe_gym.config import ConfigError
from ffe_gym.portfolio import layout as L

E0 = 10_000.0


def reasons(pf):
    return [L.REASON_NAMES[int(r)] for r in pf.step_fills(0)[:, L.F_REASON]]


def test_short_proceeds_are_collateral_not_cash_for_longs():
    # Short 80 units at 100: cash 18,000, of which 8,000 * 1.5 = 12,000 is held as collateral.
    # Before the margin model the 8,000 BUY of a1 was accepted out of the short's proceeds and
    # covering a0 at 130 left cash at -400.
    md = market(np.array([[100.0, 100.0]] * 3 + [[130.0, 100.0]] * 2))
    pf = book(md, bare(sizing={"risk_per_trade": 0.8}))
    pf.step_signals(*signals(2, a0=(-1, 1.0)))
    assert pf.units[0, 0] == pytest.approx(-80.0) and pf.cash[0] == pytest.approx(18_000.0)
    pf.step_signals(*signals(2, a1=(1, 1.0)))
    assert pf.units[0, 1] == 0.0 and pf.refusals()["cash"] == 1
    pf.step_signals(*signals(2))
    pf.step_signals(*signals(2, a0=(1, 0.0)))  # cover at 130 (and the BUY's long is sized 0)
    assert pf.cash[0] == pytest.approx(18_000.0 - 80 * 130.0) and pf.cash[0] > 0


def test_weights_scale_the_short_and_the_long_pro_rata():
    # weights [-0.8, +0.8] need 80 x (100 x 1.5 - 100) = 4,000 of margin for the short and
    # 8,000 of cash for the long, out of 10,000: both are scaled by 10,000 / 12,000 (whatever
    # the column order), so cash stays 10,000 = short value 6,666.67 x 1.5.
    md = market(np.full((4, 2), 100.0))
    pf = book(md, bare())
    pf.step_weights(np.array([-0.8, 0.8]))
    np.testing.assert_allclose(pf.units[0], [-200.0 / 3, 200.0 / 3], rtol=1e-12)
    assert pf.cash[0] == pytest.approx(10_000.0) and pf.refusals()["scaled"] == 2


def test_a_short_needs_initial_margin_in_cash():
    # All cash in a long: a short needs 50% of its value in cash beyond its proceeds.
    md = market(np.full((4, 2), 100.0))
    pf = book(md, bare(sizing={"risk_per_trade": 1.0}))
    pf.step_signals(*signals(2, a1=(1, 1.0)))
    assert pf.cash[0] == pytest.approx(0.0)
    pf.step_signals(*signals(2, a0=(-1, 0.2)))
    assert pf.units[0, 0] == 0.0 and pf.refusals()["margin"] == 1


def test_margin_call_covers_the_smallest_fraction_at_the_close():
    # Short 80 at 100; the close jumps to 180: cash 18,000 < 80 * 180 * 1.3 = 18,720.
    # Covering f of the short changes cash - 1.3 * short by f * 0.3 * 14,400 = 4,320 f:
    # f = 720 / 4,320 = 1/6, 13.33 units at 180; then cash = 1.3 * short = 15,600 exactly.
    md = market([100.0, 100.0, 180.0, 180.0])
    pf = book(md, bare(sizing={"risk_per_trade": 0.8}))
    pf.step_signals(*signals(1, a0=(-1, 1.0)))
    pf.step_signals(*signals(1))
    assert reasons(pf) == ["margin_call"]
    f = pf.step_fills(0)[0]
    assert f[L.F_UNITS] == pytest.approx(80.0 / 6) and f[L.F_PRICE] == 180.0
    assert pf.units[0, 0] == pytest.approx(-80.0 * 5 / 6)
    assert pf.cash[0] == pytest.approx(15_600.0)
    assert pf.cash[0] == pytest.approx(-pf.units[0, 0] * 180.0 * 1.3)
    assert pf.equity[0] == pytest.approx(18_000.0 - 80 * 180.0)  # no costs: equity unchanged
    assert pf.refusals()["margin_call"] == 1


def test_margin_call_with_costs_restores_the_rule_exactly():
    md = market([100.0, 100.0, 180.0, 180.0])
    cfg = bare(sizing={"risk_per_trade": 0.8},
               execution={"fee_rate": 0.001, "slippage": 0.002, "fixed_fee": 1.0})
    pf = book(md, cfg)
    pf.step_signals(*signals(1, a0=(-1, 1.0)))
    pf.step_signals(*signals(1))
    assert reasons(pf) == ["margin_call"]
    assert pf.cash[0] == pytest.approx(-pf.units[0, 0] * 180.0 * 1.3, rel=1e-12)


def test_a_second_call_before_the_next_decision_closes_in_full():
    # One decision every 3 bars: 180 calls 1/6 (cash 15,600, 66.67 short); at 200 the rule
    # breaks again (13,333 * 1.3 = 17,333 > 15,600): the whole short is covered.
    md = market([100.0, 180.0, 200.0, 200.0, 200.0])
    pf = book(md, bare(sizing={"risk_per_trade": 0.8},
                       portfolio={"rebalancing_frequency": 3}))
    pf.step_signals(*signals(1, a0=(-1, 1.0)))
    assert reasons(pf) == ["signal", "margin_call", "margin_call"]
    assert pf.units[0, 0] == 0.0
    assert pf.cash[0] == pytest.approx(15_600.0 - 80 * 5 / 6 * 200.0)
    assert pf.refusals()["margin_call"] == 2


def test_borrowing_buys_on_credit_charges_interest_and_calls_on_equity():
    # allow_borrowing: 150 units at 100 (gross 15,000 <= equity / 0.5), cash -5,000;
    # interest 5,000 * 0.0876 / 8760 = 0.05 per bar, in a0's borrow column.
    # At 40: equity 1,000 < 0.3 * 6,000; selling f keeps equity and removes 0.3 * 6,000 f
    # of requirement: f = 800 / 1,800 = 4/9.
    md = market([100.0, 100.0, 40.0, 40.0])
    cfg = bare(sizing={"risk_per_trade": 1.5}, risk={"allow_borrowing": True},
               execution={"margin_rate": 0.0876})
    pf = book(md, cfg)
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert pf.units[0, 0] == pytest.approx(150.0)
    assert pf.cash[0] == pytest.approx(-5_000.0 - 0.05)
    assert pf.pos[0, 0, L.BORROW] == pytest.approx(0.05)
    pf.step_signals(*signals(1))
    assert reasons(pf) == ["margin_call"]
    cash_before = -5_000.0 - 0.05 - (5_000.05 * 1e-5)
    eq = cash_before + 150 * 40.0
    f = (0.3 * 6_000.0 - eq) / (0.3 * 6_000.0)
    assert pf.units[0, 0] == pytest.approx(150.0 * (1 - f))
    assert pf.equity[0] == pytest.approx(0.3 * pf.units[0, 0] * 40.0)


def test_without_borrowing_a_long_beyond_cash_is_refused():
    md = market([100.0, 100.0, 100.0])
    pf = book(md, bare(sizing={"risk_per_trade": 1.5}))
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert pf.units[0, 0] == 0.0 and pf.refusals()["cash"] == 1


def test_borrowing_respects_initial_margin_on_gross():
    # equity 10,000 at 50% initial margin: at most 20,000 gross; 25,000 is refused "margin".
    md = market([100.0, 100.0, 100.0])
    pf = book(md, bare(sizing={"risk_per_trade": 2.5}, risk={"allow_borrowing": True}))
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    assert pf.units[0, 0] == 0.0 and pf.refusals()["margin"] == 1


def test_ruin_liquidates_at_the_close():
    # floor 50% of 10,000: the close at 40 marks 4,000; the long is sold there and the book ends.
    md = market([100.0, 100.0, 40.0, 40.0])
    pf = book(md, bare(sizing={"risk_per_trade": 1.0}, risk={"ruin_floor": 0.5}))
    pf.step_signals(*signals(1, a0=(1, 1.0)))
    pf.step_signals(*signals(1))
    assert reasons(pf) == ["ruin"] and pf.units[0, 0] == 0.0
    assert pf.cash[0] == pytest.approx(4_000.0)
    assert L.STATUS_NAMES[int(pf.status[0])] == "ruin"


def test_maintenance_above_initial_is_refused():
    with pytest.raises(ConfigError, match=r"risk\.maintenance_margin"):
        bare(risk={"initial_margin": 0.2, "maintenance_margin": 0.3})
