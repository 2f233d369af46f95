"""Optimisation baselines (skfolio): weights by hand on uncorrelated assets, causality, and
every classic baseline on the packaged real data."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from helpers import market

from ffe_gym.evaluation import env_for, resolve_policy, rollout

pytest.importorskip("skfolio")

from ffe_agents.optimisation import (
    EqualRiskContribution,
    HierarchicalRiskParity,
    MaximumDiversification,
    MeanVariance,
    MinimumVariance,
)


def _uncorrelated(sd=(0.01, 0.02), n=120, seed=0, drift=(0.0, 0.0)):
    """Closes whose returns have sample sds ``sd``, sample correlation exactly 0 and sample
    means ``drift``."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    x -= x.mean()
    z = rng.normal(size=n)
    z -= z.mean()
    z -= x * (z @ x) / (x @ x)
    r = np.column_stack([sd[0] * x / x.std(ddof=1), sd[1] * z / z.std(ddof=1)])
    r += np.asarray(drift)
    close = 100.0 * np.vstack([np.ones(2), np.cumprod(1.0 + r, axis=0)])
    close = np.vstack([close, close[-1]])  # one more bar: the decision is at the last return
    return market(close, ppy=252.0)


def _weights(policy, md):
    env = env_for(policy, {"env": {"window": 2, "features": {
        "names": ["log_return"], "volatility_window": 2, "rsi_window": 2, "macd_fast": 1,
        "macd_slow": 2, "macd_signal": 1, "volume_window": 2}}}, md)
    env.reset(seed=0, options={"start": md.n_bars - 2})
    policy.bind_market(env.unwrapped.market_view())
    return policy.act(None, {"weights": np.zeros(md.n_assets)})[:-1]


@pytest.mark.parametrize("policy, want", [
    # two uncorrelated assets, sd 1% and 2%: minimum variance w1 = s2^2 / (s1^2 + s2^2) = 0.8;
    # HRP with two assets is inverse-variance, the same 0.8; equal risk contribution and
    # maximum diversification with zero correlation are inverse-volatility: 2/3
    (MinimumVariance(lookback=200), [0.8, 0.2]),
    (HierarchicalRiskParity(lookback=200), [0.8, 0.2]),
    (EqualRiskContribution(lookback=200), [2 / 3, 1 / 3]),
    (MaximumDiversification(lookback=200), [2 / 3, 1 / 3]),
])
def test_weights_on_two_uncorrelated_assets_by_hand(policy, want):
    np.testing.assert_allclose(_weights(policy, _uncorrelated()), want, atol=2e-4)


def test_mean_variance_moves_from_the_best_mean_to_minimum_variance_with_risk_aversion():
    md = _uncorrelated(drift=(0.0, 0.002))  # the riskier asset has the better mean
    greedy = _weights(MeanVariance(lookback=200, risk_aversion=1e-6), md)
    np.testing.assert_allclose(greedy, [0.0, 1.0], atol=1e-4)
    cautious = _weights(MeanVariance(lookback=200, risk_aversion=1e6), md)
    np.testing.assert_allclose(cautious, [0.8, 0.2], atol=2e-3)


def test_refitted_baselines_see_no_price_after_the_decision_bar():
    from ffe_gym.data import synthetic_market

    md = synthetic_market(3, 400, "crypto", seed=5)
    t = 250
    f = np.ones_like(md.close)
    f[t + 1:] = np.exp(np.random.default_rng(0).normal(0, 0.1, f[t + 1:].shape))
    md2 = replace(md, open=md.open * f, high=md.high * f, low=md.low * f, close=md.close * f)
    for cls in (MinimumVariance, HierarchicalRiskParity):
        runs = []
        for m in (md, md2):
            p = cls(lookback=60)
            rec = []
            act = p.act
            p.act = lambda obs, info, act=act, rec=rec: rec.append(act(obs, info)) or rec[-1]
            rollout(p, env_for(p, None, m), window=(200, 300), seed=0)
            runs.append(np.array(rec))
        k = t - 200 + 1
        np.testing.assert_array_equal(runs[0][:k], runs[1][:k])
        assert not np.array_equal(runs[0], runs[1])


@pytest.mark.parametrize("name", ["eg", "olmar", "pamr", "up", "ons", "corn", "anticor", "cwmr",
                                  "min-variance", "mean-variance", "max-diversification",
                                  "hrp", "erc"])
def test_every_classic_baseline_runs_on_the_packaged_real_data(name):
    pytest.importorskip("arch")
    from ffe_gym.config import Config, from_dict
    from ffe_gym.data import market_from_config

    md = market_from_config(from_dict(Config, {"data": {"source": "arch"}}).data)
    policy = resolve_policy(name)
    cfg = {"portfolio": {"rebalancing_frequency": 21, "max_portfolio_risk": None},
           "risk": {"on_portfolio_stop": "flat"}}
    r = rollout(policy, env_for(policy, cfg, md), window=(3000, 3252), seed=0)
    assert r.steps == 12 and np.isfinite(r.equity.to_numpy()).all()
    assert r.metrics["trades"] > 0
