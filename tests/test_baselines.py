"""Baselines on hand-checkable markets; rollout and policy resolution."""

from __future__ import annotations

import numpy as np
import pytest
from helpers import bare, market

from ffe_gym.evaluation import PolicyError, env_for, resolve_policy, rollout

FEATURES = {"names": ["log_return", "volatility"], "volatility_window": 3, "rsi_window": 2,
            "macd_fast": 1, "macd_slow": 2, "macd_signal": 1, "volume_window": 2}


def frictionless(**extra):
    """Zero costs, every limit off, close fills, whole-window episodes."""
    env = {"window": 2, "episode_bars": None, "features": FEATURES}
    return bare(env=env, **extra)


def prices(seed=0, T=80, N=3):
    rng = np.random.default_rng(seed)
    return 50 * np.cumprod(1 + rng.normal(0, 0.02, (T, N)), axis=0)


def run(name, close, cfg=None, seed=0, **kwargs):
    policy = resolve_policy(name, **kwargs)
    env = env_for(policy, cfg or frictionless(), market(close))
    return rollout(policy, env, window=(1, len(close) - 1), seed=seed)


def test_cash_keeps_the_initial_balance():
    r = run("cash", prices())
    assert r.metrics["final_equity"] == 10_000.0 and r.metrics["trades"] == 0
    assert len(r.trades) == 0


def test_equal_weight_rebalanced_matches_the_formula():
    close = prices(1)
    r = run("equal-weight", close)
    relatives = (close[2:] / close[1:-1]).mean(axis=1)
    assert r.metrics["final_equity"] == pytest.approx(10_000 * np.prod(relatives), rel=1e-12)


def test_buy_and_hold_matches_mean_price_relative_and_trades_once():
    close = prices(2)
    r = run("buy-and-hold", close)
    assert r.metrics["final_equity"] == pytest.approx(
        10_000 * (close[-1] / close[1]).mean(), rel=1e-12)
    assert len(r.trades) == close.shape[1]  # the three opening fills, nothing after


def test_baselines_pay_the_same_costs():
    close = prices(3)
    cfg = frictionless(execution={"fee_rate": 0.001})
    free = run("buy-and-hold", close)
    paid = run("buy-and-hold", close, cfg)
    fees = paid.trades["fee"].sum()
    # the purchases are scaled by one factor to the cash: notional * 1.001 = 10,000
    assert fees == pytest.approx(0.001 * 10_000 / 1.001, rel=1e-9)
    assert paid.refusals["scaled"] == 3
    assert paid.metrics["final_equity"] < free.metrics["final_equity"]


def test_random_is_repeatable_per_seed():
    close = prices(4)
    a = run("random", close, seed=1)
    b = run("random", close, seed=1)
    c = run("random", close, seed=2)
    assert a.metrics == b.metrics
    assert a.metrics["final_equity"] != c.metrics["final_equity"]


def test_momentum_buys_the_riser_and_sells_the_faller():
    T = 40
    up = 100 * 1.01 ** np.arange(T) * (1 + 0.002 * np.sin(np.arange(T)))
    down = 100 * 0.99 ** np.arange(T) * (1 + 0.002 * np.cos(np.arange(T)))
    policy = resolve_policy("momentum")
    env = env_for(policy, frictionless(), market(np.column_stack([up, down])))
    policy.bind(env.layout)
    obs, info = env.reset(options={"start": 10, "end": T - 1})
    action = policy.act(obs, info)
    assert action[0] > 0.5 and action[1] < -0.5


def test_momentum_needs_its_features():
    cfg = frictionless()
    cfg.env.features.names = ["rsi"]
    policy = resolve_policy("momentum")
    with pytest.raises(ValueError, match="log_return"):
        rollout(policy, env_for(policy, cfg, market(prices())), window=(1, 10))


def test_episode_result_contents():
    r = run("equal-weight", prices(5))
    assert r.equity.index[0] == r.start and len(r.equity) == r.metrics["bars"] + 1
    assert {a.symbol for a in r.attribution} == {"A0", "A1", "A2"}
    s = r.summary()
    assert s["policy"] == "equal-weight" and "metrics" in s and s["synthetic"] is False


def test_rollout_refuses_a_mismatched_action_scheme():
    policy = resolve_policy("cash")  # weights
    env = env_for(resolve_policy("random"), frictionless(), market(prices()))  # signals
    with pytest.raises(ValueError, match="action_scheme"):
        rollout(policy, env, window=(1, 10))


def test_policy_resolution():
    assert resolve_policy("ffe_agents.baselines:Momentum").name == "momentum"
    with pytest.raises(PolicyError, match="unknown policy"):
        resolve_policy("nope")
    with pytest.raises(PolicyError, match="cannot load"):
        resolve_policy("ffe_agents.baselines:Nope")
