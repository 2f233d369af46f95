"""Market statistics shared by every book, and hedge-aware correlation sizing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from helpers import bare, book, signals
from test_engine_rules import E0, _market_with_correlation

from ffe_gym.data import synthetic_market
from ffe_gym.portfolio import Portfolio
from ffe_gym.portfolio import statistics as S


def _two_pass_corr(R, lo: int, t: int, i: int, j: int) -> float:
    """The reference scan: Pearson correlation of R[lo..t, i] and R[lo..t, j], two passes in
    plain Python (IEEE doubles in the kernel's order, so comparable bit for bit); 0 without
    variance."""
    n = t - lo + 1
    if n < 2:
        return 0.0
    mi = sum(float(R[s, i]) for s in range(lo, t + 1)) / n
    mj = sum(float(R[s, j]) for s in range(lo, t + 1)) / n
    sii = sjj = sij = 0.0
    for s in range(lo, t + 1):
        di, dj = float(R[s, i]) - mi, float(R[s, j]) - mj
        sii += di * di
        sjj += dj * dj
        sij += di * dj
    if sii <= 0.0 or sjj <= 0.0:
        return 0.0
    return sij / math.sqrt(sii * sjj)


def _sized(rho: float, mode: str, second: int) -> float:
    """Units of a1 opened beside a long a0 in one decision (a0 goes first: higher
    confidence), as a share of the unadjusted size 0.5 x E0 x 0.9 / price."""
    md = _market_with_correlation(rho)
    pf = book(md, bare(portfolio={"correlation_window": 30, "correlation_mode": mode}))
    while pf.bar[0] < 30:
        pf.step_signals(*signals(2))
    t = int(pf.bar[0])
    pf.step_signals(*signals(2, a0=(1, 1.0), a1=(second, 0.9)))
    assert pf.units[0, 0] == pytest.approx(0.5 * E0 / md.close[t, 0], rel=1e-12)
    return abs(pf.units[0, 1]) / (0.5 * E0 * 0.9 / md.close[t, 1])


def test_hedge_aware_sizing_cuts_only_a_bet_that_adds_to_a_correlated_one():
    # rho 0.85 at threshold 0.7: factor 1 - 0.5 x 0.15 / 0.3 = 0.75 (the seed's numbers)
    assert _sized(0.85, "absolute", +1) == pytest.approx(0.75, rel=1e-9)
    assert _sized(0.85, "absolute", -1) == pytest.approx(0.75, rel=1e-9)  # a hedge, cut
    assert _sized(0.85, "hedge_aware", +1) == pytest.approx(0.75, rel=1e-9)
    assert _sized(0.85, "hedge_aware", -1) == pytest.approx(1.0, rel=1e-12)  # a hedge
    # negative correlation: long + long is the hedge, long + short doubles the bet
    assert _sized(-0.85, "absolute", +1) == pytest.approx(0.75, rel=1e-9)
    assert _sized(-0.85, "hedge_aware", +1) == pytest.approx(1.0, rel=1e-12)
    assert _sized(-0.85, "hedge_aware", -1) == pytest.approx(0.75, rel=1e-9)


def test_rolling_volatility_table_is_bitwise_the_scan_and_the_sample_std():
    from ffe_gym.portfolio import kernel

    md = synthetic_market(3, 400, "mixed", seed=2)
    pf = Portfolio(md, bare(execution={"volatility_slippage": 0.1},
                            sizing={"volatility_window": 20}))
    vol, R = pf.stats.vol, pf.returns
    assert vol.shape == (md.n_bars, 3)
    for t in (0, 1, 2, 19, 20, 21, md.n_bars - 1):
        lo = max(1, t - 19)
        for i in range(3):
            assert vol[t, i] == kernel._std(R, lo, t, i)  # the same sums: bit for bit
            want = np.std(R[lo:t + 1, i], ddof=1) if t - lo >= 1 else 0.0
            assert vol[t, i] == pytest.approx(want, rel=1e-12, abs=1e-15)
    assert not Portfolio(md, bare()).stats.vol.any()  # not needed: never computed


def _run(md, cfg, seed: int = 0, books: int = 8, steps: int = 150):
    rng = np.random.default_rng(seed)
    pf = Portfolio(md, cfg, n_books=books)
    pf.reset(start=rng.integers(70, 200, books))
    out = []
    for _ in range(steps):
        d = rng.choice(np.array([-1, 0, 0, 1], dtype=np.int8), size=(books, md.n_assets))
        pf.step_signals(d, rng.random((books, md.n_assets)))
        out.append((pf.refused.copy(), pf.fills[:, :int(pf.n_fills.max())].copy(),
                    pf.acct.copy()))
        if pf.done.all():
            break
    return pf, out


def test_the_correlation_table_gives_the_scans_decisions(monkeypatch):

    md = synthetic_market(5, 600, "mixed", seed=4)  # fx and crypto: closed weekends included
    cfg = bare(portfolio={"correlation_window": 30, "correlation_threshold": 0.05},
               risk={"allow_short": True})
    table, a = _run(md, cfg)
    assert table.stats.cached and table.stats.pairs.shape == (md.n_bars, 5, 5)
    pairs, R = table.stats.pairs, table.returns
    for t in range(0, md.n_bars, 7):  # every pair, against the scan
        for i in range(5):
            for j in range(5):
                if i != j:
                    want = _two_pass_corr(R, max(1, t - 29), t, i, j)
                    assert pairs[t, i, j] == pytest.approx(want, abs=1e-12), (t, i, j)
    monkeypatch.setattr(S, "PAIR_BUDGET", 0)
    scanned, b = _run(md, cfg)
    assert not scanned.stats.cached and not scanned.stats.shared_cov
    assert len(a) == len(b)
    for (ra, fa, aa), (rb, fb, ab) in zip(a, b, strict=True):
        assert np.array_equal(ra, rb)
        np.testing.assert_allclose(fa, fb, rtol=1e-10, atol=1e-9)
        np.testing.assert_allclose(aa, ab, rtol=1e-10, atol=1e-9)


def test_a_closed_market_has_zero_correlation_in_the_table_as_in_the_scan():
    from ffe_gym.portfolio import kernel

    rng = np.random.default_rng(0)
    R = 0.01 * rng.standard_normal((200, 3))
    R[0] = 0.0
    R[50:120, 1] = 0.0  # carried prices: no return for 70 bars
    C = kernel.rolling_corr(R, 30)
    for t in range(80, 120):
        assert C[t, 0, 1] == 0.0 and C[t, 1, 2] == 0.0
        assert _two_pass_corr(R, t - 29, t, 0, 1) == 0.0
    assert C[150, 0, 1] != 0.0


def test_the_scan_with_moments_once_a_decision_is_bitwise_the_two_pass_scan():
    from ffe_gym.portfolio import kernel

    rng = np.random.default_rng(3)
    R = 0.02 * rng.standard_normal((300, 6)) + 0.001
    R[0] = 0.0
    R[100:180, 4] = 0.0  # a closed market
    for t in (1, 2, 29, 30, 150, 299):
        lo = max(1, t - 29)
        moments = np.zeros((3, 6))
        table = np.zeros((1, 1, 1))  # not read: the pairs are scanned
        for i in range(6):
            for j in range(6):
                if i == j:
                    continue
                held, units = np.array([j]), np.zeros(6)
                # hedge-aware, a long opening of i: +rho against a held long, -rho a short
                units[j] = 1.0
                up = kernel._max_corr(R, table, False, True, lo, t, i, 1.0, units, held, 1,
                                      moments)
                units[j] = -1.0
                down = kernel._max_corr(R, table, False, True, lo, t, i, 1.0, units, held, 1,
                                        moments)
                want = _two_pass_corr(R, lo, t, i, j)
                assert up - down == want, (t, i, j)  # one of the two is 0: bit for bit
                assert kernel._max_corr(R, table, False, False, lo, t, i, -1.0, units, held, 1,
                                        moments) == abs(want)
        assert moments[2].all() == (t >= 2)  # n < 2: nothing to scan


def test_rolling_covariance_is_the_sample_covariance_of_every_window():
    from ffe_gym.portfolio import kernel

    rng = np.random.default_rng(0)
    for scale, mean in ((0.01, 0.0), (1e-4, 0.01), (0.05, -0.002)):  # mean 100 sd: cancellation
        R = mean + scale * rng.standard_normal((1500, 4))
        R[0] = 0.0
        R[300:360, 2] = 0.0  # a closed market: carried prices
        sd = R[1:].std(axis=0)
        for window in (2, 30, 250):
            C = kernel.rolling_cov(R, window)
            for t in [0, 1, 2, 3, *range(29, 33), *range(100, 1500, 13)]:
                lo = max(1, t - window + 1)
                want = np.cov(R[lo:t + 1].T) if t - lo >= 1 else np.zeros((4, 4))
                assert np.max(np.abs(C[t] - want) / np.outer(sd, sd)) < 1e-12, (window, t)


def test_parametric_var_from_the_shared_covariance_refuses_what_the_scan_refuses(monkeypatch):
    md = synthetic_market(6, 900, "mixed", seed=5)
    cfg = bare(portfolio={"max_portfolio_risk": 0.01, "max_positions": None},
               risk={"var_window": 120})
    shared, a = _run(md, cfg, seed=3, steps=300)
    assert shared.stats.shared_cov
    monkeypatch.setattr(S, "PAIR_BUDGET", 0)
    scanned, b = _run(md, cfg, seed=3, steps=300)
    assert not scanned.stats.shared_cov and not scanned.stats.cached
    var_refusals = sum(int((r == 5).sum()) for r, _, _ in b)  # layout.R_VAR
    assert var_refusals > 100  # the limit binds
    assert len(a) == len(b)
    for (ra, fa, aa), (rb, fb, ab) in zip(a, b, strict=True):
        assert np.array_equal(ra, rb)
        np.testing.assert_allclose(fa, fb, rtol=1e-12, atol=1e-9)
        np.testing.assert_allclose(aa, ab, rtol=1e-12, atol=1e-9)
    hist = Portfolio(md, bare(portfolio={"max_portfolio_risk": 0.01},
                              risk={"var_method": "historical"}))
    assert not hist.stats.shared_cov  # historical VaR scans the book's series


def test_the_correlation_table_is_built_only_where_it_fits_and_is_read():
    md = synthetic_market(10, 2000, "crypto", seed=0)
    assert Portfolio(md, bare()).stats.cached
    assert not Portfolio(md, bare(portfolio={"correlation_threshold": None})).stats.cached
    big = synthetic_market(100, 500, "crypto", seed=0)  # 500 x 100^2 = 5 M > 4 M entries
    pf = Portfolio(big, bare(portfolio={"max_portfolio_risk": 0.02}))
    assert not pf.stats.cached and pf.stats.pairs.size == 1
    assert not pf.stats.shared_cov and pf.stats.cov.size == 1
