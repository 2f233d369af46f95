"""The design's invariants under thousands of random steps on random books and markets."""

from __future__ import annotations

import numpy as np
from helpers import bare
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ffe_gym.data import synthetic_market
from ffe_gym.portfolio import Portfolio
from ffe_gym.portfolio import layout as L

SETTINGS = settings(max_examples=60, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


@st.composite
def setups(draw):
    n_assets = draw(st.integers(1, 6))
    preset = draw(st.sampled_from(["crypto", "mixed"])) if n_assets >= 2 else "crypto"
    md = synthetic_market(n_assets, 260, preset, seed=draw(st.integers(0, 10_000)))
    sections = {
        "portfolio": {
            "max_positions": draw(st.sampled_from([None, 1, 2, 5])),
            "max_portfolio_risk": draw(st.sampled_from([None, 0.005, 0.02, 0.1])),
            "max_drawdown": draw(st.sampled_from([None, 0.05, 0.3])),
            "position_sizing": draw(st.sampled_from(
                ["correlation_adjusted", "fixed_fraction", "inverse_volatility",
                 "volatility_target"])),
            "rebalancing_frequency": draw(st.sampled_from([1, 2, 5, "6h"])),
            "correlation_window": draw(st.sampled_from([5, 30])),
            "correlation_threshold": draw(st.sampled_from([None, 0.0, 0.7])),
        },
        "sizing": {"base": draw(st.sampled_from(["risk", "notional"])),
                   "risk_per_trade": draw(st.sampled_from([0.01, 0.2, 0.6])),
                   "min_confidence_factor": 0.5},
        "risk": {
            "stop_loss": draw(st.sampled_from([0.005, 0.02, 0.5])),
            "take_profit": draw(st.sampled_from([None, 0.01, 0.05, 2.0])),
            "stop_mode": draw(st.sampled_from(["fraction", "volatility"])),
            "reentry_bars": draw(st.sampled_from([None, 0, 3])),
            "intrabar_stops": draw(st.booleans()),
            "allow_short": draw(st.booleans()),
            "max_short_exposure": draw(st.sampled_from([None, 0.5, 2.0])),
            "max_gross_exposure": draw(st.sampled_from([None, 1.0, 3.0])),
            "var_method": draw(st.sampled_from(["parametric", "historical"])),
            "var_window": draw(st.sampled_from([10, 100])),
            "drawdown_reference": draw(st.sampled_from(["peak", "initial"])),
            "on_portfolio_stop": draw(st.sampled_from(["terminate", "flat"])),
            "cooldown_bars": 3,
            "ruin_floor": 0.01,
            "allow_borrowing": draw(st.booleans()),
            **draw(st.sampled_from([{"initial_margin": 0.5, "maintenance_margin": 0.3},
                                    {"initial_margin": 1.0, "maintenance_margin": 0.25},
                                    {"initial_margin": 0.0, "maintenance_margin": 0.0}])),
        },
        "execution": {
            "price": draw(st.sampled_from(["close", "next_open"])),
            "fee_rate": draw(st.sampled_from([0.0, 0.001, 0.01])),
            "fixed_fee": draw(st.sampled_from([0.0, 1.0])),
            "slippage": draw(st.sampled_from([0.0, 0.001])),
            "volatility_slippage": draw(st.sampled_from([0.0, 0.5])),
            "borrow_rate": draw(st.sampled_from([0.0, 0.5])),
            "margin_rate": draw(st.sampled_from([0.0, 0.2])),
        },
    }
    scheme = draw(st.sampled_from(["signals", "weights"]))
    return md, bare(**sections), scheme, draw(st.integers(0, 2**31 - 1))


def _action(rng, scheme, B, N):
    if scheme == "signals":
        return (rng.integers(-1, 2, (B, N)).astype(np.int8), rng.random((B, N)))
    w = rng.normal(size=(B, N))
    w[rng.random((B, N)) < 0.2] = np.nan  # keep
    return (w / max(1.0, np.nansum(np.abs(w))),)


def _step(pf, scheme, action, active=None):
    if scheme == "signals":
        pf.step_signals(*action, active=active)
    else:
        pf.step_weights(*action, active=active)


def _check(pf, cfg):
    md = pf.market
    close = md.close[pf.bar]
    units = pf.units
    eq = pf.equity
    scale = np.maximum(1.0, np.abs(eq))
    marked = pf.cash + (units * close).sum(axis=1)
    np.testing.assert_allclose(eq, marked, rtol=0, atol=1e-9 * scale.max())
    P = pf.pos
    attributed = (P[..., L.REALIZED] + pf.unrealized() - P[..., L.FEES] - P[..., L.BORROW]).sum(1)
    np.testing.assert_allclose(eq - cfg.portfolio.initial_balance, attributed,
                               rtol=0, atol=1e-9 * scale.max())
    held = (units != 0).sum(axis=1)
    if cfg.portfolio.max_positions is not None:
        assert (held <= cfg.portfolio.max_positions).all()
    # margin: at every close the maintenance rule holds (a margin call restores it), unless the
    # book is ruined or a position sits in a closed market (it cannot be sold until it opens);
    # so without borrowing cash is never negative there
    closed = ((units != 0) & ~md.tradable[pf.bar]).any(axis=1)
    exempt = (pf.status == L.RUINED) | closed
    m = cfg.risk.maintenance_margin
    short = np.clip(-units * close, 0, None).sum(axis=1)
    if cfg.risk.allow_borrowing:
        need = eq - m * np.abs(units * close).sum(axis=1)
    else:
        need = pf.cash - short * (1 + m)
        assert ((pf.cash >= -1e-9 * scale) | exempt).all(), pf.cash
    assert ((need >= -1e-8 * scale) | exempt).all(), (need, pf.status)
    flat = units == 0
    assert np.all(P[..., L.ENTRY][flat] == 0) and np.all(np.isnan(P[..., L.STOP][flat]))
    assert (pf.n_fills <= 4 * md.n_assets).all()
    for b in range(pf.n_books):
        if pf.n_curve[b]:
            assert pf.curve[b, pf.n_curve[b] - 1] == eq[b]
        refused = np.flatnonzero(pf.refused[b])
        opened = pf.fills[b, : pf.n_fills[b]]
        opened = opened[opened[:, L.F_CLOSING] == 0.0][:, L.F_ASSET]
        assert not set(refused) & set(opened.astype(int))


@SETTINGS
@given(setups())
def test_accounting_identities_hold_at_every_step(setup):
    md, cfg, scheme, seed = setup
    rng = np.random.default_rng(seed)
    pf = Portfolio(md, cfg, n_books=3)
    pf.reset(start=rng.integers(0, 100, 3), end=md.n_bars - 1)
    steps = 0
    while not pf.done.all() and steps < 300:
        _step(pf, scheme, _action(rng, scheme, 3, md.n_assets))
        _check(pf, cfg)
        steps += 1


@SETTINGS
@given(setups())
def test_books_together_equal_books_one_by_one(setup):
    md, cfg, scheme, seed = setup
    rng = np.random.default_rng(seed)
    B = 4
    starts = rng.integers(0, 120, B)
    ends = np.minimum(starts + rng.integers(20, 140, B), md.n_bars - 1)
    together = Portfolio(md, cfg, n_books=B)
    together.reset(start=starts, end=ends)
    alone = [Portfolio(md, cfg) for _ in range(B)]
    for b, pf in enumerate(alone):
        pf.reset(start=starts[b], end=ends[b])
    while not together.done.all():
        action = _action(rng, scheme, B, md.n_assets)
        _step(together, scheme, action)
        for b, pf in enumerate(alone):
            _step(pf, scheme, tuple(a[b] for a in action))
    for b, pf in enumerate(alone):
        for name in ("pos", "acct", "clock", "count"):
            np.testing.assert_allclose(getattr(together, name)[b], getattr(pf, name)[0],
                                       rtol=1e-12, atol=0)


@SETTINGS
@given(setups())
def test_refused_openings_change_nothing(setup):
    md, cfg, scheme, seed = setup
    if scheme != "signals":
        return
    rng = np.random.default_rng(seed)
    pf = Portfolio(md, cfg)
    pf.reset(start=int(rng.integers(0, 100)))
    checked = 0
    while not pf.done[0] and checked < 150:
        d, c = _action(rng, scheme, 1, md.n_assets)
        before = pf.get_state()
        flat_before = before["pos"][0, :, L.UNITS] == 0
        pf.step_signals(d, c)
        after = pf.get_state()
        refused = (pf.refused[0] != 0) & flat_before & (d[0] != 0)
        if refused.any():
            d2 = d.copy()
            d2[0, refused] = 0
            pf.set_state(before)
            pf.step_signals(d2, c)
            replay = pf.get_state()
            for name in ("pos", "acct"):
                np.testing.assert_array_equal(replay[name], after[name])
            np.testing.assert_array_equal(replay["clock"], after["clock"])
        checked += 1


def test_a_copied_or_pickled_portfolio_steps_as_the_original_and_apart_from_it():
    # the state arrays are views of two buffers: a copy's views must be its own buffers'
    import copy
    import pickle

    md = synthetic_market(4, 300, "crypto", seed=1)
    pf = Portfolio(md, bare(portfolio={"max_positions": None}), n_books=3)
    pf.reset(start=20)
    rng = np.random.default_rng(0)
    actions = [(rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(3, 4)),
                rng.random((3, 4))) for _ in range(40)]
    for d, c in actions[:10]:
        pf.step_signals(d, c)
    copies = [copy.deepcopy(pf), pickle.loads(pickle.dumps(pf))]
    frozen = pf.get_state()
    for other in copies:
        assert not np.shares_memory(other.pos, pf.pos)
        assert np.shares_memory(other.pos, other._fbook)
        for d, c in actions[10:]:
            other.step_signals(d, c)
        assert other.acct[:, L.TRADED].sum() > 0.0
        for name, v in pf.get_state().items():
            np.testing.assert_array_equal(v, frozen[name])  # the original did not move
    for d, c in actions[10:]:
        pf.step_signals(d, c)
    for other in copies:
        for name, v in pf.get_state().items():
            np.testing.assert_array_equal(getattr(other, name), v)
        np.testing.assert_array_equal(other.fills, pf.fills)


def test_signals_on_two_threads_are_the_serial_step_and_bad_intents_change_nothing():
    import numba
    import pytest

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("numba has one thread on this machine")
    md = synthetic_market(5, 300, "mixed", seed=3)
    cfg = bare(portfolio={"max_positions": 3, "max_portfolio_risk": 0.02},
               risk={"allow_short": True, "stop_loss": 0.02, "take_profit": 0.04})
    serial, threaded = Portfolio(md, cfg, n_books=5), Portfolio(md, cfg, n_books=5, threads=2)
    for pf in (serial, threaded):
        pf.reset(start=30)
    rng = np.random.default_rng(4)
    for _ in range(120):
        d = rng.choice(np.array([-1, 0, 1], dtype=np.int8), size=(5, 5))
        c = rng.random((5, 5))
        serial.step_signals(d, c)
        threaded.step_signals(d, c)
    for name, v in serial.get_state().items():
        np.testing.assert_array_equal(getattr(threaded, name), v)
    assert serial.count[:, 1:].sum() > 0 and serial.acct[:, L.TRADED].sum() > 0
    for pf in (serial, threaded):
        before = pf.get_state()
        bad = np.zeros((5, 5), dtype=np.int8)
        bad[4, 4] = 2
        with pytest.raises(ValueError, match="direction must be -1, 0 or \\+1"):
            pf.step_signals(bad, np.zeros((5, 5)))
        with pytest.raises(ValueError, match="confidence must be finite"):
            pf.step_signals(np.zeros(5, dtype=np.int8), np.full(5, np.nan))
        for name, v in before.items():
            np.testing.assert_array_equal(getattr(pf, name), v)


def test_intents_of_a_wrong_shape_or_dtype_are_refused_with_the_shapes_named():
    import pytest

    md = synthetic_market(3, 100, "crypto", seed=0)
    pf = Portfolio(md, bare(), n_books=2)
    pf.reset(start=10)
    before = pf.get_state()
    for d, c in ((np.zeros(4), np.zeros(4)), (np.zeros((3, 3)), np.zeros((3, 3))),
                 (np.zeros(3), np.zeros((2, 3)))):
        with pytest.raises(ValueError, match=r"shape \(2, 3\) or \(3,\), got"):
            pf.step_signals(d, c)
    with pytest.raises(ValueError, match="direction must be numeric"):
        pf.step_signals(np.array(["1", "0", "0"]), np.zeros(3))
    for name, v in before.items():
        np.testing.assert_array_equal(getattr(pf, name), v)
    pf.step_signals(np.array([1, 0, 0]), np.full(3, 0.5))  # (N,): every book, int64 accepted
    assert (pf.units[:, 0] > 0).all() and not pf.units[:, 1:].any()
