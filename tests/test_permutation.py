"""No result depends on the order of the assets: permuting the columns of the panel (the
symbols travel with them) permutes every output and changes no figure.

The engine under every action scheme and rule set of the invariant tests, with ties in
confidence and in target weights on purpose (where a rule must choose among equals it goes by
the symbol, and purchases that overdraw are scaled pro rata); then the baselines and the
reference through a whole rollout.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from test_engine_invariants import SETTINGS, setups

from ffe_gym.portfolio import Portfolio
from ffe_gym.portfolio import layout as L


def _actions(rng, scheme, n, steps):
    out = []
    for _ in range(steps):
        if scheme == "signals":
            d = rng.integers(-1, 2, n).astype(np.int8)
            c = rng.choice([0.25, 0.5, 1.0], n)  # ties in confidence
            out.append((d, c))
        else:
            w = rng.choice([-0.5, 0.0, 0.25, 0.5, 1.0], n)  # ties in weight
            w[rng.random(n) < 0.2] = np.nan
            out.append((w / max(1.0, np.nansum(np.abs(w))),))
    return out


def _run(md, cfg, scheme, actions, start):
    pf = Portfolio(md, cfg)
    pf.reset(start=start)
    trace = []
    for a in actions:
        if pf.done.all():
            break
        (pf.step_signals if scheme == "signals" else pf.step_weights)(*a)
        fills = pf.fills[0, : pf.n_fills[0]].copy()
        trace.append((pf.equity[0], pf.cash[0], pf.units[0].copy(), pf.count[0].copy(),
                      pf.refused[0].copy(), fills))
    return trace


@SETTINGS
@given(setups())
def test_engine_results_permute_with_the_assets(setup):
    md, cfg, scheme, seed = setup
    rng = np.random.default_rng(seed)
    perm = rng.permutation(md.n_assets)
    moved = md.select([md.symbols[j] for j in perm])
    actions = _actions(rng, scheme, md.n_assets, 120)
    start = int(rng.integers(0, 60))
    a = _run(md, cfg, scheme, actions, start)
    b = _run(moved, cfg, scheme, [tuple(x[perm] for x in act) for act in actions], start)
    assert len(a) == len(b)
    for (eq, cash, units, count, refused, fills), (eq2, cash2, units2, count2, refused2,
                                                   fills2) in zip(a, b, strict=True):
        scale = max(1.0, abs(eq))
        assert eq2 == pytest.approx(eq, rel=1e-9, abs=1e-9 * scale)
        assert cash2 == pytest.approx(cash, rel=1e-9, abs=1e-9 * scale)
        np.testing.assert_allclose(units2, units[perm], rtol=1e-9, atol=1e-9)
        np.testing.assert_array_equal(count2, count)
        np.testing.assert_array_equal(refused2, refused[perm])
        # the same fills, each on the same symbol (columns renamed), in any order
        f2 = fills2.copy()
        f2[:, L.F_ASSET] = perm[f2[:, L.F_ASSET].astype(int)]
        key = [L.F_BAR, L.F_ASSET, L.F_REASON, L.F_CLOSING]
        s1 = fills[np.lexsort(fills[:, key].T[::-1])]
        s2 = f2[np.lexsort(f2[:, key].T[::-1])]
        np.testing.assert_allclose(s2, s1, rtol=1e-9, atol=1e-9 * scale)


CLOSED_FORM = ["cash", "buy-and-hold", "equal-weight", "momentum", "random", "eg", "olmar",
               "pamr", "up", "anticor", "cwmr"]
SOLVERS = ["ons", "bcrp", "corn", "min-variance", "hrp"]  # to their solvers' tolerance


@pytest.mark.parametrize("name", CLOSED_FORM + SOLVERS)
@pytest.mark.parametrize("rules", ["seed", "none"])
def test_policies_and_references_permute_with_the_assets(name, rules):
    from ffe_gym.data import synthetic_market
    from ffe_gym.evaluation import env_for, resolve_policy, rollout
    from ffe_gym.evaluation.experiment import reference_config

    md = synthetic_market(6, 400, "crypto", seed=5)
    perm = np.array([3, 0, 5, 1, 4, 2])
    moved = md.select([md.symbols[j] for j in perm])
    from ffe_gym.config import Config, from_dict

    cfg = from_dict(Config, {"risk": {"on_portfolio_stop": "flat", "cooldown_bars": 5},
                             "portfolio": {"max_positions": 3}})
    if rules == "none":
        cfg = reference_config(cfg)
    runs = []
    for data in (md, moved):
        policy = resolve_policy(name)
        runs.append(rollout(policy, env_for(policy, cfg, data), window=(100, 399), seed=1))
    a, b = runs
    tol = 1e-9 if name in CLOSED_FORM else 1e-4
    # a solver's weights move within its tolerance, which annualised figures of 300 hourly
    # bars magnify (x 29): those are compared through the equity and the weights
    keys = a.metrics if name in CLOSED_FORM else ("final_equity", "total_return")
    for key in keys:
        value = a.metrics[key]
        if isinstance(value, float):
            assert b.metrics[key] == pytest.approx(value, rel=tol, abs=tol), key
        else:
            assert b.metrics[key] == value, key
    if name in CLOSED_FORM:
        assert a.refusals == b.refusals
    # (a minimum-variance fit on a flat objective pins weights to about 1e-3 only)
    np.testing.assert_allclose(b.weights[list(md.symbols)].to_numpy(),
                               a.weights[list(md.symbols)].to_numpy(), rtol=tol,
                               atol=tol if name in CLOSED_FORM else 1e-3)
