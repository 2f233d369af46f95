"""What makes a comparison evidence about policies: every window scored (a flat book's Sharpe
is 0), controls in every table, a test consistent with the score, rules stated from the config
that ran, intervals beside the figures they qualify, and the real 20-stock panel."""

from __future__ import annotations

import numpy as np
import pytest

from ffe_gym.config import Config, ConfigError, from_dict
from ffe_gym.data import DataError, load_market
from ffe_gym.evaluation import experiment as ex
from ffe_gym.evaluation.grid import scale_to
from ffe_gym.evaluation.statistics import block_bootstrap_sharpe_ci, superiority_tests
from ffe_gym.metrics import compute_metrics


def test_a_flat_book_has_sharpe_zero_whatever_the_risk_free_rate():
    flat = np.full(253, 10_000.0)
    for rf in (0.0, 0.05):
        m = compute_metrics(flat, 252, risk_free=rf)
        assert m["sharpe"] == 0.0
    assert compute_metrics(flat, 252, fills=4)["fills"] == 4


def test_the_sharpe_interval_uses_the_risk_free_rate_of_the_sharpe_beside_it():
    rng = np.random.default_rng(0)
    r = rng.normal(0.0004, 0.01, 1000)
    eq = 10_000.0 * np.cumprod(np.r_[1.0, 1.0 + r])
    sharpe = compute_metrics(eq, 252, risk_free=0.05)["sharpe"]
    point, lo, hi = block_bootstrap_sharpe_ci(r, 252, reps=500, risk_free=0.05)
    assert point == pytest.approx(sharpe, rel=1e-12)
    assert lo < sharpe < hi
    assert abs((lo + hi) / 2 - sharpe) < 0.25 * (hi - lo)  # centred on it, not on rf = 0
    p0, lo0, hi0 = block_bootstrap_sharpe_ci(r, 252, reps=500)
    assert p0 > point and lo0 > lo


def test_the_superiority_test_with_the_sharpe_loss_finds_a_calmer_better_agent():
    """A low-volatility agent with the higher Sharpe ratio: on raw returns it cannot beat the
    reference (its mean is lower); scaled to the reference's volatility, as the comparison
    does for a Sharpe score, StepM finds it."""
    rng = np.random.default_rng(1)
    n = 3000
    bench = rng.normal(0.0003, 0.01, n)  # Sharpe 0.48 a year
    calm = rng.normal(0.0002, 0.001, n)  # Sharpe 3.2 a year, a third less mean return
    raw = superiority_tests(-bench, {"calm": -calm}, reps=500)
    assert raw["superior"] == [] and raw["mean_gain"]["calm"] < 0
    scaled = superiority_tests(-bench, {"calm": -scale_to(calm, bench)}, reps=500)
    assert scaled["superior"] == ["calm"]
    np.testing.assert_allclose(np.std(scale_to(calm, bench), ddof=1), np.std(bench, ddof=1))
    assert not scale_to(np.zeros(5), bench).any()


def test_the_rules_line_comes_from_the_resolved_config():
    seed = ex.rules_text(Config())
    for part in ("stop-loss 2%", "take-profit 5%", "max 5 positions", "correlation sizing "
                 "above 0.7", "95% parametric VaR over 1 bar <= 2% of equity",
                 "5% drawdown stop from the peak"):
        assert part in seed
    off = ex.rules_text(from_dict(Config, {
        "risk": {"stop_loss": 0.2, "var_horizon_bars": None},
        "portfolio": {"max_portfolio_risk": None, "max_drawdown": None}}))
    assert "stop-loss 20%" in off and "VaR limit off" in off and "drawdown stop off" in off
    assert "2% VaR" not in off
    none = ex.rules_text(ex.reference_config(Config()))
    for part in ("stop-loss off", "take-profit off", "max positions off", "VaR limit off",
                 "drawdown stop off", "gross cap off", "correlation sizing off"):
        assert part in none


def _experiment(**over):
    base = {"name": "t", "datasets": [{"name": "d", "data": {"source": "synthetic"}}],
            "agents": [{"name": "momentum", "policy": "momentum"},
                       {"name": "ppo", "train": {"agent": "ppo", "timesteps": 64}}]}
    return from_dict(ex.ExperimentConfig, {**base, **over})


def test_controls_are_added_to_every_experiment():
    exp = _experiment()
    by = {a.name: a for a in exp.agents}
    assert by["cash"].control == "cash" and by["cash"].policy == "cash"
    twin = by["ppo-untrained"]
    assert twin.control == "ppo" and twin.train.timesteps == 0
    assert twin.train.agent == "ppo"
    # a cash agent of the user's serves as the control; off on request
    exp = _experiment(agents=[{"name": "idle", "policy": "cash"}])
    assert [a.name for a in exp.agents] == ["idle"] and exp.agents[0].control == "cash"
    assert [a.name for a in _experiment(controls=False).agents] == ["momentum", "ppo"]
    with pytest.raises(ConfigError, match="'cash' is the doing-nothing control"):
        _experiment(agents=[{"name": "cash", "policy": "momentum"}])


def test_the_skfolio_panel_loads_through_its_own_loader():
    pytest.importorskip("skfolio")
    md = load_market("skfolio")
    assert (md.n_bars, md.n_assets) == (8313, 20)
    assert md.symbols[0] == "AAPL" and "SP500" not in md.symbols
    assert str(md.index[0].date()) == "1990-01-02" and str(md.index[-1].date()) == "2022-12-28"
    assert set(md.close_only) == set(md.symbols) and md.periods_per_year == 252.0
    with pytest.raises(DataError, match="TSLA"):
        load_market("skfolio", symbols=["AAPL", "TSLA"])
    index = load_market("skfolio", symbols=["SP500"])
    assert index.n_bars == 8313
    from ffe_gym.data.packaged import describe_packaged

    assert "SURVIVOR-SELECTED" in describe_packaged(md)


def test_a_trained_agent_trains_once_per_fold_and_seed_for_every_variant(tmp_path,
                                                                           monkeypatch):
    import ffe_agents.sb3 as sb3
    from ffe_gym.evaluation import runner

    exp = from_dict(ex.ExperimentConfig, {
        "name": "once", "config": {"env": {"window": 8, "episode_bars": 100},
                                   "risk": {"var_window": 20},
                                   "train": {"eval_freq": 64}},
        "datasets": [{"name": "syn", "data": {"source": "synthetic", "synthetic": {
            "n_assets": 3, "n_bars": 700, "seed": 2}}}],
        "folds": {"n_folds": 1, "train": 300, "validation": 100, "test": 100},
        "seeds": [0], "controls": False,
        "variants": {"loose": {"portfolio": {"max_positions": None}}, "tight": {}},
        "agents": [{"name": "ppo", "train": {"agent": "ppo", "timesteps": 64, "n_envs": 2,
                                              "hyperparameters": {"n_steps": 32,
                                                                  "batch_size": 32}}}]})
    specs = [s for s in ex.jobs(exp, tmp_path / "runs") if not s.is_reference]
    loose, tight = specs
    assert loose.train_key == tight.train_key and loose.identity != tight.identity
    assert loose.train_config == tight.train_config == loose.config  # the first variant's
    assert tight.train_config["portfolio"]["max_positions"] is None
    assert tight.config["portfolio"]["max_positions"] == 5
    calls = []
    real = sb3.train
    monkeypatch.setattr(sb3, "train", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    rows = runner.run_jobs(ex.jobs(exp, tmp_path / "runs"), "serial", progress=False)
    assert [r["reuse"] for r in rows] == ["new"] * 3
    assert len(calls) == 1 and calls[0].portfolio.max_positions is None
    a, b = (tmp_path / "runs" / "once" / "syn" / v / "fold0" / "ppo" / "seed0" / "model"
            for v in ("loose", "tight"))
    assert (a / "model.zip").read_bytes() == (b / "model.zip").read_bytes()
    # per-variant training on request: two keys, and the tight model trains under its rules
    exp.train_per_variant = True
    loose, tight = [s for s in ex.jobs(exp, tmp_path / "runs") if not s.is_reference]
    assert loose.train_key != tight.train_key and tight.train_config == tight.config
    exp.train_per_variant, exp.train_variant = False, "tight"
    loose, _ = [s for s in ex.jobs(exp, tmp_path / "runs") if not s.is_reference]
    assert loose.train_config["portfolio"]["max_positions"] == 5


def test_the_index_line_is_the_index_bought_and_held_over_each_window(tmp_path):
    pytest.importorskip("skfolio")
    from ffe_gym.evaluation import grid, report, runner

    exp = from_dict(ex.ExperimentConfig, {
        "name": "idx", "config": {"env": {"window": 5}, "risk": {"var_window": 20},
                                  "portfolio": {"correlation_window": 10}},
        "datasets": [{"name": "three", "data": {"source": "skfolio",
                                                "symbols": ["KO", "PEP", "XOM"]}}],
        "folds": {"n_folds": 2, "train": 100, "validation": 50, "test": 60},
        "seeds": [0], "index": {"source": "skfolio", "symbol": "SP500"},
        "agents": [{"name": "momentum", "policy": "momentum"}]})
    rows = runner.run_jobs(ex.jobs(exp, tmp_path / "runs"), "serial", progress=False)
    df = grid.results_frame(rows, exp)
    agg = grid.aggregate(df, exp, reps=200)
    idx = agg["index"]
    close = load_market("skfolio", symbols=["SP500"]).close[:, 0]
    md = ex.market_for(ex.dataset_config(exp, exp.datasets[0]))
    returns = []
    for w in agg["windows"]:
        t0 = md.locate(w["start"])
        t1 = md.locate(w["end"])
        returns.append(close[t1] / close[t0] - 1.0)
    assert idx["windows"] == 2 and idx["total_return"] == pytest.approx(np.mean(returns))
    ref = df[df["role"] == "reference"]["sharpe"].to_numpy()
    sharpes = [compute_metrics(close[md.locate(w["start"]): md.locate(w["end"]) + 1], 252)
               ["sharpe"] for w in agg["windows"]]
    assert idx["iqm"] == pytest.approx(np.mean(np.array(sharpes) - ref))
    lines = report.notes(agg, "")
    assert any(line.startswith("Index line: SP500: S&P 500 index (price, no dividends)")
               for line in lines)
    with pytest.raises(ConfigError, match="index: give exactly source and symbol"):
        from_dict(ex.ExperimentConfig, {**ex.to_dict(exp), "index": {"source": "skfolio"}})
    # an unknown symbol or an index without prices over the windows: refused before any job
    wrong = from_dict(ex.ExperimentConfig, {**ex.to_dict(exp),
                                            "index": {"source": "skfolio", "symbol": "SPX"}})
    with pytest.raises(ConfigError, match=r"index: .*unknown symbol 'SPX'"):
        ex.jobs(wrong, tmp_path / "other")
    pytest.importorskip("arch")
    short = from_dict(ex.ExperimentConfig, {**ex.to_dict(exp),
                                            "index": {"source": "arch", "symbol": "SPX"}})
    with pytest.raises(ConfigError, match=r"index: SPX has prices 1999-01-04 \.\. 2018-12-31, "
                                          r"not over the test window"):
        ex.jobs(short, tmp_path / "other")
