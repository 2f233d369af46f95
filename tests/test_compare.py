"""Experiments: statistics by hand, the grid on every backend, resume, reports, the command."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from ffe_gym.config import ConfigError
from ffe_gym.evaluation import experiment as ex
from ffe_gym.evaluation import grid, report, runner
from ffe_gym.evaluation import statistics as S

ROOT = Path(__file__).resolve().parents[1]

# ---------------------------------------------------------------- statistics by hand


def test_iqm_trims_a_quarter_from_each_end():
    assert S.iqm(np.arange(1, 9)) == pytest.approx(4.5)  # mean of 3, 4, 5, 6
    assert S.iqm(np.array([[1.0, 100.0], [2.0, 3.0]])) == pytest.approx(2.5)  # mean of 2, 3


def test_stratified_bootstrap_resamples_within_tasks():
    same = np.full((3, 2), 1.5)
    assert S.stratified_bootstrap_ci(same, reps=200) == pytest.approx((1.5, 1.5, 1.5))
    x = np.array([[0.0, 10.0], [1.0, 11.0], [2.0, 12.0]])
    point, lo, hi = S.stratified_bootstrap_ci(x, np.mean, reps=500)
    assert point == pytest.approx(6.0) and lo < 6.0 < hi
    # every resample keeps one value per run from each task: the mean stays within 5.5 .. 6.5
    assert 5.0 <= lo and hi <= 7.0


def test_probability_of_improvement_by_hand():
    x = np.array([[1.0], [2.0]])
    y = np.array([[0.0], [2.0]])
    # pairs: 1>0, 1<2, 2>0, 2=2 (half) -> 2.5 / 4
    assert S.probability_of_improvement(x, y) == pytest.approx(0.625)
    assert S.probability_of_improvement(y, x) == pytest.approx(0.375)
    two_tasks = S.probability_of_improvement(np.array([[1.0, 5.0]]), np.array([[0.0, 9.0]]))
    assert two_tasks == pytest.approx(0.5)  # 1 on the first task, 0 on the second


def test_performance_profile_by_hand():
    prof = S.performance_profile(np.array([[-1.0, 0.5], [2.0, 0.0]]), np.array([-2, 0, 1, 3]))
    assert prof.tolist() == [1.0, 0.5, 0.25, 0.0]
    assert S.performance_profile(np.array([1.0, np.nan]), np.array([0.0])).tolist() == [1.0]


def test_block_bootstrap_sharpe_interval():
    rng = np.random.default_rng(0)
    r = 0.001 + 0.01 * rng.standard_normal(2000)
    point, lo, hi = S.block_bootstrap_sharpe_ci(r, 252, reps=500)
    assert point == pytest.approx(r.mean() / r.std(ddof=1) * math.sqrt(252))
    assert lo < point < hi
    ar = np.zeros(2000)
    for t in range(1, 2000):  # autocorrelated returns: blocks keep the dependence
        ar[t] = 0.7 * ar[t - 1] + 0.01 * rng.standard_normal()
    _, lo_b, hi_b = S.block_bootstrap_sharpe_ci(ar + 0.001, 252, block=50, reps=500)
    _, lo_1, hi_1 = S.block_bootstrap_sharpe_ci(ar + 0.001, 252, block=1, reps=500)
    assert hi_b - lo_b > hi_1 - lo_1


def test_deflated_sharpe_ratio_by_hand():
    assert S.expected_max_sharpe(10, 1.0) == pytest.approx(1.5747, abs=2e-3)
    rng = np.random.default_rng(1)
    r = 0.0005 + 0.01 * rng.standard_normal(1000)
    sr = r.mean() / r.std(ddof=1)
    g3 = float(np.mean((r - r.mean()) ** 3) / r.std() ** 3)
    g4 = float(np.mean((r - r.mean()) ** 4) / r.std() ** 4)
    psr = 0.5 * (1 + math.erf(sr * math.sqrt(999) / math.sqrt(1 - g3 * sr + (g4 - 1) / 4 * sr**2)
                              / math.sqrt(2)))
    assert S.deflated_sharpe_ratio(r, n_trials=1, sharpe_variance=0.001) == pytest.approx(
        psr, rel=1e-6)
    assert S.deflated_sharpe_ratio(r, 100, 0.001) < S.deflated_sharpe_ratio(r, 10, 0.001)


def test_two_stage_bootstrap_by_hand():
    # two windows, one run each: the resampled pairs {0,0}, {0,10}, {10,10} have IQM 0, 5, 10
    # with probabilities 1/4, 1/2, 1/4, so the 95% interval spans [0, 10]
    x = np.array([[0.0, 10.0]])
    assert S.two_stage_bootstrap_ci(x, reps=4000) == pytest.approx((5.0, 0.0, 10.0))
    # the stratified interval (runs within windows only) has zero width here
    assert S.stratified_bootstrap_ci(x, reps=500) == pytest.approx((5.0, 5.0, 5.0))
    # one window, two runs: the runs are resampled: means of {1,1}, {1,3}, {3,3}
    assert S.two_stage_bootstrap_ci(np.array([[1.0], [3.0]]), reps=4000) == pytest.approx(
        (2.0, 1.0, 3.0))
    # NaN cells are left out; a window with none left is dropped
    y = np.array([[0.0, np.nan, 10.0], [np.nan, np.nan, np.nan]])
    assert S.two_stage_bootstrap_ci(y, reps=4000) == pytest.approx((5.0, 0.0, 10.0))
    assert np.isnan(S.two_stage_bootstrap_ci(np.full((2, 2), np.nan))[0])


def test_two_stage_bootstrap_vectorised_equals_the_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 7))
    fast = S.two_stage_bootstrap_ci(x, S.iqm, reps=3000, seed=1)
    slow = S.two_stage_bootstrap_ci(x, lambda v: S.iqm(v), reps=3000, seed=1)
    assert fast[0] == slow[0]
    assert fast[1] == pytest.approx(slow[1], abs=0.1) and fast[2] == pytest.approx(slow[2],
                                                                                  abs=0.1)


def test_probability_of_improvement_two_stage_interval():
    x = np.array([[1.0, 0.0]])
    y = np.array([[0.0, 1.0]])
    point, lo, hi = S.probability_of_improvement_ci(x, y, reps=2000)
    assert point == 0.5 and lo == 0.0 and hi == 1.0  # windows resampled: 0, 1/2 or 1
    assert np.isnan(S.probability_of_improvement(np.full((1, 2), np.nan), y))


def test_paired_ratio_by_hand():
    a = np.array([[2.0, 4.0]])
    b = np.array([[1.0, 1.0]])
    point, lo, hi = S.paired_ratio_ci(a, b, lambda p, q: p.mean(1) / q.mean(1), reps=2000)
    assert point == pytest.approx(3.0) and lo == pytest.approx(2.0) and hi == pytest.approx(4.0)


def test_spa_and_stepm_find_the_known_winner():
    pytest.importorskip("arch")
    rng = np.random.default_rng(0)
    bench = rng.normal(0.0, 0.01, 2000)
    models = {"better": bench - 0.002 + rng.normal(0.0, 0.002, 2000),
              "same": bench + rng.normal(0.0, 0.002, 2000),
              "worse": bench + 0.002, "copy": bench.copy()}
    out = S.superiority_tests(bench, models, reps=500, seed=1)
    assert out["superior"] == ["better"]
    assert out["spa"]["consistent"] < 0.05
    assert out["identical"] == ["copy"] and out["block_size"] >= 1
    assert out["mean_gain"]["better"] > 0 > out["mean_gain"]["worse"]
    none = S.superiority_tests(bench, {"worse": bench + 0.002,
                                       "same": bench + rng.normal(0, 0.002, 2000)},
                               reps=500, seed=1)
    assert none["superior"] == [] and none["spa"]["consistent"] > 0.05


# ---------------------------------------------------------------- a tiny grid


def tiny_experiment(tmp_path: Path, **extra) -> Path:
    exp = {
        "name": "tiny",
        "config": {"risk": {"on_portfolio_stop": "flat", "var_window": 20},
                   "env": {"window": 8}},
        "datasets": [{"name": "syn", "data": {"source": "synthetic",
                                              "synthetic": {"n_assets": 3, "n_bars": 900,
                                                            "seed": 1}}}],
        "folds": {"n_folds": 2, "train": 300, "validation": 100, "test": 150},
        "seeds": [0, 1],
        "agents": [{"name": "cash", "policy": "cash"}, {"name": "random", "policy": "random"},
                   {"name": "momentum", "policy": "momentum"}],
        **extra,
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def comparable(rows):
    return sorted((r["dataset"], r["variant"], r["fold"], r["agent"], r["seed"],
                   r["final_equity"], r["trades"]) for r in rows)


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    exp = ex.load_experiment(tiny_experiment(tmp))
    specs = ex.jobs(exp, tmp / "runs")
    rows = runner.run_jobs(specs, "serial", progress=False)
    return tmp, exp, specs, rows


def test_grid_jobs_folders_reference_and_deterministic_agents_once(serial_run):
    tmp, exp, specs, rows = serial_run
    # per fold: the reference, cash and momentum once (deterministic), random on both seeds
    assert len(specs) == 2 * (1 + 1 + 2 + 1)
    assert sorted((s.agent["name"], s.seed) for s in specs if s.fold == 0) == [
        ("cash", 0), ("market", 0), ("momentum", 0), ("random", 0), ("random", 1)]
    for spec, row in zip(specs, rows, strict=True):
        folder = spec.folder
        variant = "reference" if spec.is_reference else "rules"
        assert folder == tmp / "runs" / "tiny" / "syn" / variant / f"fold{spec.fold}" / \
            spec.agent["name"] / f"seed{spec.seed}"
        for name in ("metrics.json", "equity.csv", "trades.csv", "weights.csv",
                     "manifest.json"):
            assert (folder / name).exists()
        assert row["reuse"] == "new" and row["identity"] == spec.identity
    assert len({s.identity for s in specs}) == len(specs)
    # every policy met the same test windows and the same starting capital
    assert len({(r["fold"], r["start"], r["end"]) for r in rows}) == 2
    assert {json.loads((s.folder / "manifest.json").read_text())["data_hash"]
            for s in specs} == {ex.market_for(ex.dataset_config(exp, exp.datasets[0])).digest()}


def test_the_reference_has_no_risk_rules(serial_run):
    _, exp, specs, _ = serial_run
    ref = next(s for s in specs if s.is_reference)
    cfg = ref.config
    assert ref.agent["policy"] == "buy-and-hold" and ref.deterministic
    assert cfg["risk"]["stop_loss"] is None and cfg["risk"]["take_profit"] is None
    assert cfg["portfolio"]["max_drawdown"] is None
    assert cfg["portfolio"]["max_portfolio_risk"] is None
    assert cfg["portfolio"]["max_positions"] is None
    assert cfg["execution"] == ex.dataset_config(exp, exp.datasets[0]).execution.__dict__ | {
        "overrides": {}}


def hand_market(tmp_path: Path) -> Path:
    """A falls 6% (a 2% stop fires) then climbs to 120; B doubles: closes only, 50 bars."""
    a = np.concatenate([[100.0, 99.0, 97.0, 94.0], np.linspace(95.0, 120.0, 46)])
    b = np.linspace(50.0, 100.0, 50)
    frame = pd.DataFrame({"time": pd.date_range("2020-01-01", periods=50, freq="D"),
                          "A": a, "B": b})
    frame.to_csv(tmp_path / "hand.csv", index=False)
    return tmp_path / "hand.csv"


def hand_experiment(tmp_path: Path, reference: str, fee: float) -> ex.ExperimentConfig:
    data = {"source": str(hand_market(tmp_path)), "min_bars": 10}
    path = tiny_experiment(
        tmp_path, reference=reference,
        config={"data": data, "env": {"window": 1}, "risk": {"var_window": 2},
         "portfolio": {"correlation_window": 2}, "sizing": {"volatility_window": 2},
         "execution": {"price": "close", "fee_rate": fee, "slippage": 0.0}},
        datasets=[{"name": "hand", "data": data}],
        folds={"n_folds": 1, "train": 5, "validation": 5, "test": 30, "embargo": 2},
        seeds=[0], agents=[{"name": "buy-and-hold", "policy": "buy-and-hold"}])
    return ex.load_experiment(path)


def test_market_reference_by_hand(tmp_path):
    f = 0.001
    exp = hand_experiment(tmp_path, "market", f)
    specs = ex.jobs(exp, tmp_path / "runs")
    rows = {r["role"]: r for r in runner.run_jobs(specs, "serial", progress=False)}
    md = ex.market_for(ex.dataset_config(exp, exp.datasets[0]))
    t0, t1 = specs[0].windows["test"][0], specs[0].windows["test"][1] - 1
    p0, p1 = md.close[t0], md.close[t1]
    e0 = 10_000.0
    # half the equity in each, scaled by one factor so that both fit the cash with the fee
    # (not A in full and B what is left)
    units = 0.5 * e0 / p0 / (1 + f)
    assert rows["reference"]["final_equity"] == pytest.approx(units @ p1, rel=1e-9)
    # under the rules buy-and-hold is stopped out of A in the first bars: another number
    assert rows["agent"]["trades"] >= 1
    assert rows["agent"]["final_equity"] != pytest.approx(rows["reference"]["final_equity"])


def test_ucrp_reference_by_hand(tmp_path):
    exp = hand_experiment(tmp_path, "ucrp", 0.0)
    specs = ex.jobs(exp, tmp_path / "runs")
    ref = next(r for r in runner.run_jobs(specs, "serial", progress=False)
               if r["role"] == "reference")
    md = ex.market_for(ex.dataset_config(exp, exp.datasets[0]))
    t0, t1 = specs[0].windows["test"][0], specs[0].windows["test"][1] - 1
    rel = md.close[t0 + 1: t1 + 1] / md.close[t0: t1]
    assert ref["final_equity"] == pytest.approx(10_000.0 * np.prod(rel.mean(axis=1)), rel=1e-9)


def test_parallel_backends_chain_the_seeds_of_each_agent_and_fold(serial_run):
    _, _, specs, _ = serial_run
    groups = runner.chains(specs)
    assert sum(len(g) for g in groups) == len(specs) and len(groups) == 2 * 4
    for g in groups:
        keys = {(specs[i].fold, specs[i].variant, specs[i].agent["name"]) for i in g}
        assert len(keys) == 1
        assert [specs[i].seed for i in g] in ([0], [0, 1])


def test_process_and_ray_backends_give_the_serial_results(serial_run, tmp_path):
    _, exp, _, rows = serial_run
    process = runner.run_jobs(ex.jobs(exp, tmp_path / "p"), "process", workers=2,
                            progress=False)
    assert comparable(process) == comparable(rows)
    pytest.importorskip("ray")
    ray_rows = runner.run_jobs(ex.jobs(exp, tmp_path / "r"), "ray", workers=2, progress=False)
    assert comparable(ray_rows) == comparable(rows)


def test_resume_recomputes_missing_killed_and_damaged_jobs_only(serial_run, tmp_path):
    src, exp, _, _ = serial_run
    root = tmp_path / "runs"
    shutil.copytree(src / "runs", root)
    specs = ex.jobs(exp, root)
    lost, partial, broken, gone = (specs[i].folder for i in (1, 3, 6, 8))
    shutil.rmtree(lost)  # never ran
    (partial / "metrics.json").unlink()  # killed before it finished
    (partial.parent / f".tmp-{partial.name}-999").mkdir()  # a killed job's temporary folder
    (broken / "metrics.json").write_text('{"experiment": "tin')  # truncated
    (gone / "equity.csv").unlink()  # a result file lost
    before = {s.folder: (s.folder / "metrics.json").stat().st_mtime_ns
              for s in specs if s.folder not in (lost, partial, broken, gone)}
    rows = runner.run_jobs(specs, "serial", progress=False)
    state = {Path(r["folder"]): r["reuse"] for r in rows}
    assert {f for f, s in state.items() if s != "reused"} == {lost, partial, broken, gone}
    assert state[lost] == state[partial] == "new"
    assert state[broken] == state[gone] == "damaged"
    for folder, mtime in before.items():
        assert (folder / "metrics.json").stat().st_mtime_ns == mtime


def test_an_unreproducible_run_is_recomputed_unless_kept(serial_run, tmp_path):
    """A run whose policy said its result depended on the machine's load (an LLM member cut
    off at its deadline) is not reused silently: recomputed by default, or reused and flagged
    with keep_unreproducible."""
    _, exp, _, _ = serial_run
    specs = ex.jobs(exp, tmp_path / "runs")
    runner.run_jobs(specs, "serial", progress=False)
    target = next(s for s in specs if s.agent["name"] == "momentum")
    path = target.folder / "metrics.json"
    row = json.loads(path.read_text())
    row["policy_stats"] = {"reproducible": False, "unreproducible": ["m: 1 timeout(s)"],
                           "input_flags": ["m: the same answer for each asset in every "
                                           "decision"]}
    path.write_text(json.dumps(row))
    kept = runner.run_jobs(specs, "serial", progress=False, keep_unreproducible=True)
    flagged = [r for r in kept if r["folder"] == str(target.folder)]
    assert [r["reuse"] for r in flagged] == ["reused"]
    df = grid.results_frame(kept, exp)
    agg = grid.aggregate(df, exp, reps=50)
    mom = next(r for r in agg["table"] if r["agent"] == "momentum")
    assert any(f.startswith("NOT REPRODUCIBLE: 1 of") for f in mom["flags"])
    assert any(f.startswith("DOES NOT READ THE MARKET (in some runs): m: the same answer")
               for f in mom["flags"])
    again = runner.run_jobs(specs, "serial", progress=False)
    states = {r["folder"]: r["reuse"] for r in again}
    assert states[str(target.folder)] == "unreproducible"
    assert sum(v == "reused" for v in states.values()) == len(specs) - 1
    assert json.loads(path.read_text())["policy_stats"] == {}  # recomputed: momentum's own


def test_a_changed_variant_or_fee_recomputes_exactly_the_changed_jobs(tmp_path):
    variants = {"rules": {}, "no_var": {"portfolio": {"max_portfolio_risk": None}}}
    agents = [{"name": "momentum", "policy": "momentum"}]
    first = ex.load_experiment(tiny_experiment(tmp_path, variants=variants, agents=agents))
    rows = runner.run_jobs(ex.jobs(first, tmp_path / "runs"), "serial", progress=False)
    assert {r["variant"] for r in rows} == {"reference", "rules", "no_var"}
    changed = {"rules": {}, "no_var": {"portfolio": {"max_portfolio_risk": 0.5}}}
    second = ex.load_experiment(tiny_experiment(tmp_path, variants=changed, agents=agents))
    again = runner.run_jobs(ex.jobs(second, tmp_path / "runs"), "serial", progress=False)
    assert {(r["variant"], r["reuse"]) for r in again} == {
        ("reference", "reused"), ("rules", "reused"), ("no_var", "stale")}
    fee = ex.load_experiment(tiny_experiment(
        tmp_path, variants=changed, agents=agents,
        config={"risk": {"on_portfolio_stop": "flat", "var_window": 20},
                "env": {"window": 8}, "execution": {"fee_rate": 0.05}}))
    third = runner.run_jobs(ex.jobs(fee, tmp_path / "runs"), "serial", progress=False)
    assert {r["reuse"] for r in third} == {"stale"}
    assert all(json.loads((Path(r["folder"]) / "manifest.json").read_text())["config"]
               ["execution"]["fee_rate"] == 0.05 for r in third)


def test_aggregate_and_report_with_variants(tmp_path):
    variants = {"rules": {}, "no_stops": {"risk": {"stop_loss": None, "take_profit": None},
                                          "sizing": {"base": "notional",
                                                     "risk_per_trade": 0.5}}}
    exp = ex.load_experiment(tiny_experiment(tmp_path, variants=variants))
    rows = runner.run_jobs(ex.jobs(exp, tmp_path / "runs"), "serial", progress=False)
    df = grid.results_frame(rows, exp)
    ref = df[df["role"] == "reference"].set_index("fold")["sharpe"]
    agents = df[df["role"] == "agent"]
    assert np.allclose(agents["score"], agents["sharpe"] - agents["fold"].map(ref),
                       equal_nan=True)
    agg = grid.aggregate(df, exp, reps=200)
    keys = {(r["agent"], r["variant"]) for r in agg["table"]}
    assert keys == {(a, v) for a in ("cash", "random", "momentum") for v in variants}
    cash = next(r for r in agg["table"] if r["agent"] == "cash")
    # a flat book's Sharpe is 0: every window is scored, the control included
    assert cash["windows"] == 2 and cash["control"] == "cash" and cash["sharpe"] == 0.0
    assert cash["iqm"] == pytest.approx(np.mean(-ref.to_numpy())) or not cash["ranked"]
    momentum = next(r for r in agg["table"] if r["agent"] == "momentum")
    assert momentum["deterministic"] and momentum["windows"] == 2 and not momentum["ranked"]
    assert any("not ranked: only 2 window(s)" in f for f in momentum["flags"])
    point, lo, hi = momentum["vs_cash"]  # paired per window against doing nothing
    m = agents[(agents["agent"] == "momentum") & (agents["variant"] == "rules")]
    assert point == pytest.approx(m["sharpe"].mean())
    assert lo <= point <= hi
    assert len(agg["probability_of_improvement"]) == 6 * 5
    assert {(e["agent"], e["variant"]) for e in agg["effects"]} >= {("momentum", "no_stops")}
    assert agg["tests"]["block_size"] >= 1 and len(agg["windows"]) == 2
    report.write_files(tmp_path, df, agg)
    path = report.html_report(tmp_path / "report.html", title="tiny", df=df, rows=rows,
                              agg=agg, config={"x": 1}, synthetic=True)
    text = path.read_text()
    assert "SYNTHETIC DATA" in text and text.count("data:image/png;base64,") >= 5
    assert "reference: market" in text and "Rule variants: effects" in text
    for a in ("cash", "random", "momentum", "no_stops"):
        assert a in text
    assert (tmp_path / "results.csv").exists() and (tmp_path / "summary.json").exists()
    lines = report.notes(agg, "syn data")
    assert any("two-stage bootstrap" in x for x in lines)
    assert any("Only 2 test windows" in x for x in lines)


def test_bad_experiments_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of policy or train"):
        ex.load_experiment(tiny_experiment(tmp_path, agents=[{"name": "x"}]))
    with pytest.raises(ConfigError, match=r"datasets\.syn: .*max_postions"):
        ex.load_experiment(tiny_experiment(tmp_path, config={"portfolio": {"max_postions": 1}}))
    with pytest.raises(ConfigError, match=r"variants\.cheap: changes 'execution'"):
        ex.load_experiment(tiny_experiment(
            tmp_path, variants={"cheap": {"execution": {"fee_rate": 0.0}}}))
    with pytest.raises(ConfigError, match="not a safe name"):
        ex.load_experiment(tiny_experiment(tmp_path, name="../../x"))
    with pytest.raises(ConfigError, match="not a safe name"):
        ex.load_experiment(tiny_experiment(tmp_path, agents=[{"name": "a/b", "policy": "cash"}]))
    with pytest.raises(ConfigError, match="score: 'profit'"):
        ex.load_experiment(tiny_experiment(tmp_path, score="profit"))


def test_compare_command_end_to_end(tmp_path):
    path = tiny_experiment(tmp_path, agents=[{"name": "cash", "policy": "cash"},
                                             {"name": "momentum", "policy": "momentum"}])
    cmd = [sys.executable, "scripts/compare.py", "--experiment", str(path), "--out",
           str(tmp_path / "runs"), "--reps", "100", "--no-progress"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    out = " ".join(r.stdout.split())
    assert "reference:" in out and "windows x runs" in out and "report:" in out
    assert "Rules [rules]: stop-loss 2%" in out and "rules: no ranked agent" in out
    assert "6 computed, 0 reused" in out and "Only 2 test windows" in out
    assert (tmp_path / "runs" / "tiny" / "report.html").exists()
    again = subprocess.run(cmd[:-1], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "0 computed, 6 reused" in " ".join(again.stdout.split())
    # piped, with progress: one plain line per job
    assert sum(x.startswith("[") and "]" in x and ": reused" in x
               for x in again.stdout.splitlines()) == 6
    bad = subprocess.run([sys.executable, "scripts/compare.py", "--experiment", "nope.yaml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "cannot read experiment" in bad.stderr


def test_shipped_experiments_load():
    from helpers import SHARED_DATA

    pytest.importorskip("arch")
    pytest.importorskip("skfolio")
    main = ex.load_experiment(ROOT / "configs" / "experiments" / "default.yaml")
    assert {a.name for a in main.agents} >= {"cash", "buy-and-hold", "equal-weight", "random",
                                             "momentum", "ppo", "a2c", "ppo-untrained",
                                             "a2c-untrained"}
    assert list(main.variants) == ["no_rules", "seed_rules"]
    cfg = ex.dataset_config(main, main.datasets[0])
    assert cfg.data.source == "skfolio"
    folds = ex.folds_for(main, cfg, ex.market_for(cfg))
    assert len(folds) >= 20 and main.folds.test == 252
    free = ex.variant_config(main, main.datasets[0], "no_rules")
    assert ex.rules_text(free) == ex.rules_text(ex.reference_config(free)).replace(
        "openings 1% of equity", "openings 5% of equity")
    exp = ex.load_experiment(ROOT / "configs" / "experiments" / "indices.yaml")
    assert {a.name for a in exp.agents} >= {"cash", "buy-and-hold", "equal-weight", "random",
                                            "momentum", "ppo", "a2c", "llm-ensemble"}
    assert exp.folds.n_folds >= 12 and exp.folds.test == 252 and exp.reference == "market"
    cfg = ex.dataset_config(exp, exp.datasets[0])
    assert cfg.data.source == "arch" and cfg.risk.on_portfolio_stop == "flat"
    md = ex.market_for(cfg)
    folds = ex.folds_for(exp, cfg, md)
    assert len(folds) == 12 and ex.embargo_for(cfg) >= cfg.risk.var_window
    for a, b in itertools.pairwise(folds):
        assert a.test.stop == b.test.start  # test windows tile the end of the data
    classic = ex.load_experiment(ROOT / "configs" / "experiments" / "classic.yaml")
    assert {a.name for a in classic.agents} >= {"eg", "olmar", "pamr", "min-variance",
                                                "mean-variance", "max-diversification",
                                                "hrp", "erc"}
    assert classic.folds == exp.folds and classic.reference == "market"
    risk = ex.load_experiment(ROOT / "configs" / "experiments" / "risk_rules.yaml")
    assert {"seed_rules", "no_correlation_sizing", "hedge_aware_sizing", "no_var", "no_stops",
            "no_drawdown_stop"} <= set(risk.variants)
    if SHARED_DATA.is_dir():
        real = ex.load_experiment(ROOT / "configs" / "experiments" / "real_h1.yaml")
        cfg = ex.dataset_config(real, real.datasets[0])
        assert cfg.portfolio.rebalancing_frequency == "1D"


def test_identity_covers_code_version_seed_window_and_agent_files(tmp_path, monkeypatch):
    llm_cfg = tmp_path / "llm.yaml"
    llm_cfg.write_text("members: []\n")
    agent = ex.AgentEntry(name="x", policy="cash", kwargs={"config": str(llm_cfg)})
    args = ({"a": 1}, "datahash", agent, {"test": (0, 10)}, 0, 0.0)

    def ident(**change):
        a = dict(zip(("config", "data_hash", "agent", "windows", "seed", "risk_free"), args,
                     strict=True)) | change
        return ex.job_identity(**a, digests=ex._file_digests(a["agent"]))

    base = ident()
    assert base == ident()
    assert len({base, ident(seed=1), ident(windows={"test": (0, 11)}), ident(risk_free=0.02),
                ident(config={"a": 2}), ident(data_hash="other")}) == 6
    llm_cfg.write_text("members: [{name: m}]\n")  # the file an agent names changed
    changed_file = ident()
    assert changed_file != base
    monkeypatch.setattr(ex, "code_digest", lambda *a: "other code")
    assert ident() != changed_file


def test_a_trained_run_as_policy_travels_with_its_jobs(tmp_path):
    """A saved model and its normalisation statistics go inside the job's spec, so a worker
    without the driver's folder evaluates exactly what the identity hashed."""
    from ffe_gym.config import Config, from_dict

    sb3 = pytest.importorskip("ffe_agents.sb3")
    agent = tmp_path / "ppo.yaml"
    agent.write_text("ffe/Portfolio-v0:\n  n_timesteps: 128\n  policy: MultiInputPolicy\n"
                     "  n_envs: 2\n  normalize: true\n  n_steps: 64\n  batch_size: 64\n"
                     "  n_epochs: 1\n  policy_kwargs: {net_arch: [16]}\n")
    exp_path = tiny_experiment(tmp_path, agents=[])
    exp = ex.load_experiment(exp_path)
    cfg = ex.dataset_config(exp, exp.datasets[0])
    cfg = from_dict(Config, ex.to_dict(cfg) | {"train": {"eval_freq": 1000,
                                                          "checkpoint_freq": 1000}})
    run = tmp_path / "ppo-run"
    sb3.train(sb3.load_agent_spec(agent, algo="ppo"), cfg, ex.market_for(cfg), run, seed=0,
              timesteps=128, progress=False)
    path = tiny_experiment(tmp_path, agents=[{"name": "trained", "policy": str(run)}])
    specs = ex.jobs(ex.load_experiment(path), tmp_path / "runs")
    trained = [s for s in specs if s.agent["name"] == "trained"]
    names = set(trained[0].inputs)
    assert f"{run}/model.zip" in names and f"{run}/vecnormalize.pkl" in names
    assert not any("/tb/" in n or "/checkpoints/" in n for n in names)
    first = runner.run_jobs(specs, "serial", progress=False)
    run.rename(tmp_path / "moved-away")  # the driver's folder is gone: the spec carries it
    again = runner.run_jobs([dataclasses.replace(s, root=str(tmp_path / "runs2"))
                             for s in specs], "serial", progress=False)
    key = [(r["agent"], r["fold"], r["final_equity"]) for r in first]
    assert key == [(r["agent"], r["fold"], r["final_equity"]) for r in again]
    assert all(r["reuse"] == "new" for r in again)


def test_a_hindsight_bound_must_be_labelled_and_is_never_a_contender(tmp_path):
    agents = [{"name": "cash", "policy": "cash"},
              {"name": "bcrp", "policy": "bcrp", "hindsight": True}]
    exp = ex.load_experiment(tiny_experiment(tmp_path, agents=agents, seeds=[0]))
    rows = runner.run_jobs(ex.jobs(exp, tmp_path / "runs"), "serial", progress=False)
    bound = [r for r in rows if r["agent"] == "bcrp"]
    assert len(bound) == 2 and all(r["hindsight"] for r in bound)
    (tmp_path / "u").mkdir()
    unlabelled = ex.load_experiment(tiny_experiment(
        tmp_path / "u", agents=[{"name": "bcrp", "policy": "bcrp"}], seeds=[0]))
    rows = runner.run_jobs(ex.jobs(unlabelled, tmp_path / "u" / "runs"), "serial",
                           progress=False)
    failed = [r for r in rows if r["agent"] == "bcrp"]
    assert len(failed) == 2 and all(r["status"] == "failed" for r in failed)
    assert all("read prices after its decision bars" in r["error"]
               and "hindsight: true" in r["error"] for r in failed)
