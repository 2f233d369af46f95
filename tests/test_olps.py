"""Online portfolio selection baselines: updates by hand, identities, wealth against numpy."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from helpers import BARE, market

from ffe_agents.baselines import EqualWeight
from ffe_agents.olps import EG, OLMAR, PAMR, project_simplex
from ffe_gym.data import synthetic_market
from ffe_gym.evaluation import env_for, resolve_policy, rollout

# no costs, no limits, fills at the close, a decision every bar: wealth is prod(b_t . x_t+1)
FREE = {k: dict(v) for k, v in BARE.items()}
FREE["portfolio"] = dict(BARE["portfolio"], correlation_threshold=None)
FREE["env"] = {"window": 2, "episode_bars": None,
               "features": {"names": ["log_return"], "volatility_window": 2, "rsi_window": 2,
                            "macd_fast": 1, "macd_slow": 2, "macd_signal": 1,
                            "volume_window": 2}}


def _env(policy, md):
    return env_for(policy, FREE, md)


def test_eg_update_by_hand():
    eg = EG(eta=0.05)
    b = eg.update(np.array([0.5, 0.5]), np.array([1.1, 0.9]), np.ones(2))
    # b.x = 1: b_1 = e^0.055 / (e^0.055 + e^0.045) = 1 / (1 + e^-0.01)
    assert b[0] == pytest.approx(1.0 / (1.0 + math.exp(-0.01)), rel=1e-15)
    assert b.sum() == pytest.approx(1.0, rel=1e-15)


def test_pamr_and_olmar_updates_by_hand():
    # PAMR: b.x = 1.0 > eps 0.5: loss 0.5, x - mean = (0.1, -0.1), |.|^2 = 0.02, tau = 25;
    # b - 25 (0.1, -0.1) = (-2, 3) -> projected (0, 1)
    b = PAMR(eps=0.5).update(np.array([0.5, 0.5]), np.array([1.1, 0.9]), np.ones(2))
    np.testing.assert_allclose(b, [0.0, 1.0], atol=1e-15)
    # OLMAR: closes (10, 10) then (11, 9): predicted (10.5/11, 9.5/9); b.x~ < eps = 10, so
    # lambda = (10 - b.x~) / |x~ - mean|^2, a step far enough to land on a vertex (0, 1)
    o = OLMAR(eps=10.0, window=5)
    o.start(np.array([10.0, 10.0]))
    b = o.update(np.array([0.5, 0.5]), np.array([1.1, 0.9]), np.array([11.0, 9.0]))
    np.testing.assert_allclose(b, [0.0, 1.0], atol=1e-15)
    # a small eps keeps it passive: b.x~ >= eps, lambda 0
    o = OLMAR(eps=0.5)
    o.start(np.array([10.0, 10.0]))
    b = o.update(np.array([0.3, 0.7]), np.array([1.1, 0.9]), np.array([11.0, 9.0]))
    np.testing.assert_allclose(b, [0.3, 0.7], rtol=1e-15)


def test_simplex_projection():
    np.testing.assert_allclose(project_simplex(np.array([0.6, 0.6, -0.3])), [0.5, 0.5, 0.0])
    np.testing.assert_allclose(project_simplex(np.array([0.2, 0.3, 0.5])), [0.2, 0.3, 0.5])
    p = project_simplex(np.array([3.0, -1.0, 0.5, 0.4]))
    assert p.sum() == pytest.approx(1.0) and (p >= 0).all()


def _reference_wealth(close: np.ndarray, start: int, end: int, update) -> float:
    """Direct numpy: b_start = 1/N, b_t = update(b_{t-1}, x_t, history), W *= b_t . x_{t+1}."""
    n = close.shape[1]
    b = np.full(n, 1.0 / n)
    wealth = 1.0
    for t in range(start, end):
        if t > start:
            b = update(b, close[t] / close[t - 1], close[start:t + 1])
        wealth *= float(b @ (close[t + 1] / close[t]))
    return wealth


def _eg(eta):
    def update(b, x, _):
        w = b * np.exp(eta * x / (b @ x))
        return w / w.sum()
    return update


def _olmar(eps, window):
    def update(b, x, hist):
        pred = hist[-window:].mean(axis=0) / hist[-1]
        dev = pred - pred.mean()
        lam = max(0.0, (eps - b @ pred) / (dev @ dev)) if dev @ dev > 0 else 0.0
        return project_simplex(b + lam * dev)
    return update


def _pamr(eps):
    def update(b, x, _):
        dev = x - x.mean()
        tau = max(0.0, b @ x - eps) / (dev @ dev) if dev @ dev > 0 else 0.0
        return project_simplex(b - tau * dev)
    return update


@pytest.mark.parametrize("policy, update", [
    (EG(0.05), _eg(0.05)), (EG(0.5), _eg(0.5)), (OLMAR(10.0, 5), _olmar(10.0, 5)),
    (OLMAR(1.5, 3), _olmar(1.5, 3)), (PAMR(0.5), _pamr(0.5)), (PAMR(0.99), _pamr(0.99)),
])
def test_wealth_without_costs_equals_the_published_update_rule_in_numpy(policy, update):
    md = synthetic_market(4, 300, "crypto", seed=2)  # 24/7: every rebalance can trade
    start, end = 50, 250
    r = rollout(policy, _env(policy, md), window=(start, end), seed=0)
    want = _reference_wealth(md.close, start, end, update)
    assert r.equity.iloc[-1] / r.equity.iloc[0] == pytest.approx(want, rel=1e-10)


def test_eg_with_zero_learning_rate_is_the_uniform_constant_rebalanced_portfolio():
    md = synthetic_market(3, 300, "fx", seed=1)
    a = rollout(EG(eta=0.0), _env(EG(), md), window=(40, 260), seed=0)
    b = rollout(EqualWeight(), _env(EqualWeight(), md), window=(40, 260), seed=0)
    np.testing.assert_allclose(a.equity.to_numpy(), b.equity.to_numpy(), rtol=1e-12)


def test_olps_policies_see_no_price_after_the_decision_bar():
    md = synthetic_market(3, 300, "crypto", seed=3)
    t = 150
    future = md.close.copy()
    future[t + 1:] *= np.exp(np.random.default_rng(0).normal(0, 0.1, future[t + 1:].shape))
    from dataclasses import replace

    md2 = replace(md, close=future, open=np.minimum(md.open, future) * 0 + future,
                  high=np.maximum(md.high, future), low=np.minimum(md.low, future))
    for name in ("eg", "olmar", "pamr", "up", "ons", "corn", "anticor", "cwmr"):
        acts = []
        for m in (md, md2):
            p = resolve_policy(name)
            rec = []
            act = p.act
            p.act = lambda obs, info, act=act, rec=rec: rec.append(act(obs, info)) or rec[-1]
            rollout(p, _env(p, m), window=(100, 200), seed=0)
            acts.append(rec)
        k = t - 100 + 1  # decisions at bars 100..t
        np.testing.assert_array_equal(np.array(acts[0][:k]), np.array(acts[1][:k]))
        assert not np.array_equal(np.array(acts[0]), np.array(acts[1]))  # later ones move


def test_a_policy_needs_the_market_view():
    eg = EG()
    with pytest.raises(RuntimeError, match="bind_market"):
        eg.act(None, {"weights": np.zeros(2)})
    md = market([[100.0, 50.0]] * 8)
    env = _env(eg, md)
    env.reset(seed=0, options={"start": 2})
    view = env.unwrapped.market_view()
    assert view.bar == 2 and view.close().shape == (3, 2)
    with pytest.raises(ValueError, match="read-only"):
        view.close()[0, 0] = 1.0


def test_bcrp_beats_every_constant_rebalanced_portfolio_of_its_window():
    from ffe_agents.olps import BCRP, best_crp

    md = synthetic_market(3, 300, "crypto", seed=7)
    start, end = 40, 240
    r = rollout(BCRP(), _env(BCRP(), md), window=(start, end), seed=0)
    assert r.hindsight  # it read the future: a labelled bound only
    x = md.close[start + 1:end + 1] / md.close[start:end]
    best = best_crp(x)
    assert r.equity.iloc[-1] / r.equity.iloc[0] == pytest.approx(np.prod(x @ best), rel=1e-10)
    grid = [np.array([i, j, 20 - i - j]) / 20 for i in range(21) for j in range(21 - i)]
    crps = [float(np.sum(np.log(x @ b))) for b in grid]
    assert float(np.sum(np.log(x @ best))) >= max(crps) - 1e-12  # at least every CRP tried
    ucrp = rollout(EqualWeight(), _env(EqualWeight(), md), window=(start, end), seed=0)
    assert r.equity.iloc[-1] >= ucrp.equity.iloc[-1] - 1e-9
    assert not ucrp.hindsight


def _up(samples, seed):
    def update(b, x, hist):  # the mixture of CRPs by their wealth over the whole history
        crps = np.random.default_rng(seed).dirichlet(np.ones(len(b)), samples)
        rel = hist[1:] / hist[:-1]
        wealth = np.prod(rel @ crps.T, axis=0)
        return wealth @ crps / wealth.sum()
    return update


def _ons(delta, beta):
    state = {}

    def project(q, A, steps=20000):  # projected gradient in A's norm: another method than SLSQP
        p = project_simplex(q)
        lr = 0.5 / np.linalg.eigvalsh(A).max()
        for _ in range(steps):
            p = project_simplex(p - lr * 2 * A @ (p - q))
        return p

    def update(b, x, hist):
        if len(hist) == 2:
            state["A"], state["c"] = np.eye(len(b)), np.zeros(len(b))
        g = x / (b @ x)
        state["A"] = state["A"] + np.outer(g, g)
        state["c"] = state["c"] + (1 + 1 / beta) * g
        return project(delta * np.linalg.solve(state["A"], state["c"]), state["A"])
    return update


@pytest.mark.parametrize("policy, update, rel", [
    (resolve_policy("up", samples=200, seed=3), _up(200, 3), 1e-10),
    (resolve_policy("ons"), _ons(0.125, 1.0), 1e-6),
])
def test_up_and_ons_wealth_equal_a_direct_implementation(policy, update, rel):
    md = synthetic_market(3, 200, "crypto", seed=4)
    start, end = 30, 90
    r = rollout(policy, _env(policy, md), window=(start, end), seed=0)
    want = _reference_wealth(md.close, start, end, update)
    assert r.equity.iloc[-1] / r.equity.iloc[0] == pytest.approx(want, rel=rel)


def test_up_with_one_sample_is_that_crp_and_corn_without_a_match_is_uniform():
    from ffe_agents.olps import CORN, UP

    up = UP(samples=1, seed=5)
    up.start(np.ones(3))
    crp = np.random.default_rng(5).dirichlet(np.ones(3), 1)[0]
    np.testing.assert_allclose(up.update(crp, np.array([1.1, 0.9, 1.0]), np.ones(3)), crp)
    corn = CORN(window=2, rho=0.99)
    for x in ([1.01, 0.99], [0.98, 1.02], [1.0, 1.0]):  # the first windows: 1/N
        b = corn.update(np.full(2, 0.5), np.array(x), np.ones(2))
    np.testing.assert_allclose(b, [0.5, 0.5])
    # a repeating pattern: the period after each earlier copy of the latest window is
    # (1.05, 0.95), so CORN puts everything on the first asset
    corn = CORN(window=1, rho=0.5)
    for x in ([1.0, 1.0], [1.02, 0.97], [1.05, 0.95], [1.0, 1.0], [1.02, 0.97]):
        b = corn.update(np.full(2, 0.5), np.array(x), np.ones(2))
    np.testing.assert_allclose(b, [1.0, 0.0], atol=1e-6)


def test_anticor_moves_money_from_the_recent_winner_to_the_correlated_loser_by_hand():
    from ffe_agents.olps import Anticor

    # window 2; earlier window: a0 (1.0, 1.1), a1 (1.0, 1.0); latest: a0 (1.1, 1.21), a1
    # (1.05, 1.10): a0 did better lately (mu2_0 > mu2_1) and a0's earlier log relatives
    # (0, log 1.1) correlate +1 with a1's latest (log 1.05, log 1.1): claim 0->1 =
    # 1 + max(-M_00, 0) + max(-M_11, 0) = 1 (M_00 = +1; M_11 = 0, a1's earlier window is
    # flat), so all of a0's drifted weight moves to a1
    a = Anticor(window=2)
    b = np.array([0.5, 0.5])
    for x in ([1.0, 1.0], [1.1, 1.0], [1.1, 1.05]):
        b = a.update(b, np.array(x), np.ones(2))
    b = a.update(b, np.array([1.21, 1.10]), np.ones(2))
    np.testing.assert_allclose(b, [0.0, 1.0], atol=1e-12)
    early = Anticor(window=30)  # before 2 x window periods it only drifts
    np.testing.assert_allclose(early.update(np.array([0.5, 0.5]), np.array([1.2, 1.0]),
                                            np.ones(2)), [1.2 / 2.2, 1.0 / 2.2])


def _cwmr(eps=-0.5, theta=1.6448536269514722):
    state = {}

    def update(b, x, hist):  # the published CWMR-Var step, written with explicit matrices
        n = len(b)
        S = state.get("S", np.eye(n) / n**2) if len(hist) > 2 else np.eye(n) / n**2
        M, V = b @ x, x @ S @ x
        xb = np.sum(np.diag(S) * x) / np.trace(S)
        f = (V - xb * (x @ S @ np.ones(n))) / M**2
        a, bb, c = 2 * theta * V * f, f + 2 * theta * V * (eps - np.log(M)), \
            eps - np.log(M) - theta * V
        roots = np.roots([a, bb, c])
        lam = min(max([0.0, *[r.real for r in roots if abs(r.imag) < 1e-12]]), 1e7)
        mu = b - lam * S @ (x - xb) / M
        S = np.linalg.inv(np.linalg.inv(S) + 2 * lam * theta * np.diag(x) ** 2)
        state["S"] = S / (n**2 * np.trace(S))
        return project_simplex(mu)
    return update


def test_cwmr_reverts_to_the_loser_keeps_b_without_dispersion_and_matches_numpy():
    from ffe_agents.olps import CWMR

    c = CWMR()
    c.start(np.ones(2))
    b = c.update(np.array([0.5, 0.5]), np.array([1.1, 0.9]), np.ones(2))
    assert b[1] > 0.5 and b.sum() == pytest.approx(1.0)  # towards the asset that fell
    c = CWMR()
    c.start(np.ones(3))
    np.testing.assert_allclose(c.update(np.array([0.2, 0.3, 0.5]), np.full(3, 1.02),
                                        np.ones(3)), [0.2, 0.3, 0.5], atol=1e-12)
    md = synthetic_market(3, 200, "crypto", seed=6)
    r = rollout(CWMR(), _env(CWMR(), md), window=(30, 130), seed=0)
    want = _reference_wealth(md.close, 30, 130, _cwmr())
    assert r.equity.iloc[-1] / r.equity.iloc[0] == pytest.approx(want, rel=1e-9)


def _kkt_gap(x: np.ndarray, b: np.ndarray) -> float:
    """max_i g_i / T - 1 for the log-optimal problem: 0 at the optimum (g = T on the
    support, at most T off it)."""
    g = (x / (x @ b)[:, None]).sum(axis=0)
    return float(g.max() / len(x) - 1.0)


def test_the_simplex_newton_method_reaches_the_log_optimum_and_projects_exactly():
    from ffe_agents.olps import best_crp, project_simplex, project_simplex_in

    rng = np.random.default_rng(4)
    for n, t in ((3, 20), (12, 400), (40, 60)):  # 40 assets, 60 periods: a degenerate case
        x = np.exp(rng.normal(0.0005, 0.02, (t, n)) + rng.normal(0, 0.001, n))
        b = best_crp(x)
        assert b.sum() == pytest.approx(1.0, abs=1e-12) and (b >= 0).all()
        assert abs(_kkt_gap(x, b)) < 1e-9
        support = b > 0
        g = (x / (x @ b)[:, None]).sum(axis=0)
        np.testing.assert_allclose(g[support], t, rtol=1e-9)
        # a warm start anywhere gives the same optimum value
        again = best_crp(x, start=np.eye(n)[0])
        assert np.sum(np.log(x @ again)) == pytest.approx(np.sum(np.log(x @ b)), abs=1e-9)
    # the projection in A's norm: with A = I it is the Euclidean projection
    q = np.array([0.9, 0.5, -0.3, 0.1])
    np.testing.assert_allclose(project_simplex_in(q, np.eye(4)), project_simplex(q), atol=1e-12)
    # and with a general A its KKT: the gradient equal on the support, no smaller off it
    a = rng.normal(size=(4, 4))
    A = a @ a.T + 0.1 * np.eye(4)
    p = project_simplex_in(q, A)
    grad = 2.0 * A @ (p - q)
    on = p > 0
    assert np.ptp(grad[on]) < 1e-9 and (grad[~on] >= grad[on].max() - 1e-9).all()


def test_bcrp_on_the_classic_djia_set_when_installed():
    from ffe_agents.commands.benchmark import olps_data_dir
    from ffe_agents.olps import best_crp

    folder = olps_data_dir()
    if folder is None:
        pytest.skip("the classic OLPS datasets are not installed (universal-portfolios)")
    close = pd.read_csv(folder / "djia.csv").to_numpy()
    x = close[1:] / close[:-1]
    b = best_crp(x)
    assert abs(_kkt_gap(x, b)) < 1e-9
    assert np.prod(x @ b) == pytest.approx(1.2521, rel=1e-4)  # the log-optimal CRP's wealth
