"""Metrics against empyrical-reloaded on the same returns, and by hand."""

from __future__ import annotations

import empyrical
import numpy as np
import pytest

from ffe_gym.metrics import compute_metrics, returns_of


@pytest.fixture(params=[0, 1, 2])
def curve(request):
    rng = np.random.default_rng(request.param)
    r = rng.standard_t(4, 3000) * 0.004 + 0.0001
    return 10_000 * np.concatenate([[1.0], np.cumprod(1 + r)])


@pytest.mark.parametrize("ppy", [8760.0, 6240.0, 252.0])
def test_against_empyrical(curve, ppy):
    r = returns_of(curve)
    m = compute_metrics(curve, ppy)
    assert m["total_return"] == pytest.approx(empyrical.cum_returns_final(r), rel=1e-9)
    assert m["cagr"] == pytest.approx(empyrical.annual_return(r, annualization=ppy), rel=1e-9)
    assert m["volatility"] == pytest.approx(
        empyrical.annual_volatility(r, annualization=ppy), rel=1e-9)
    assert m["sharpe"] == pytest.approx(empyrical.sharpe_ratio(r, annualization=ppy), rel=1e-9)
    assert m["sortino"] == pytest.approx(empyrical.sortino_ratio(r, annualization=ppy), rel=1e-9)
    assert m["max_drawdown"] == pytest.approx(empyrical.max_drawdown(r), rel=1e-9)
    assert m["calmar"] == pytest.approx(empyrical.calmar_ratio(r, annualization=ppy), rel=1e-9)
    assert m["var_95"] == pytest.approx(empyrical.value_at_risk(r, cutoff=0.05), rel=1e-9)
    assert m["cvar_95"] == pytest.approx(
        empyrical.conditional_value_at_risk(r, cutoff=0.05), rel=1e-9)


def test_trade_statistics_by_hand():
    m = compute_metrics([100.0, 101.0], 252, trade_pnls=[10.0, -5.0, 20.0, -15.0, 0.0])
    assert m["trades"] == 5
    assert m["win_rate"] == pytest.approx(2 / 5)
    assert m["profit_factor"] == pytest.approx(30 / 20)
    assert m["avg_win"] == pytest.approx(15.0)
    assert m["avg_loss"] == pytest.approx(-20 / 3)


def test_turnover_exposure_and_undefined_figures():
    m = compute_metrics([100.0, 100.0, 100.0], 252, traded_notional=200.0,
                        gross_exposure=[0.0, 50.0, 100.0])
    assert m["turnover"] == pytest.approx(2.0)
    assert m["turnover_per_year"] == pytest.approx(2.0 / (2 / 252))
    assert m["exposure"] == pytest.approx(0.5)
    assert m["sharpe"] == 0.0  # no variance: riskless, so 0 (every run has a Sharpe ratio)
    assert m["calmar"] is None  # no drawdown
    assert m["profit_factor"] is None and m["win_rate"] is None


def test_max_drawdown_by_hand():
    m = compute_metrics([100.0, 120.0, 90.0, 130.0, 117.0], 252)
    assert m["max_drawdown"] == pytest.approx(90 / 120 - 1)
