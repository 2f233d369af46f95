"""Experiments: statistics by hand, the grid on every backend, resume, reports, the command."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from ffe_gym.config import ConfigError
from ffe_gym.evaluation import experiment as ex
from ffe_gym.evaluation import grid, report
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
    path.write_text(yaml.safe_dump(exp))
    return path


def comparable(rows):
    return sorted((r["dataset"], r["fold"], r["agent"], r["seed"], r["final_equity"],
                   r["trades"]) for r in rows)


@pytest.fixture(scope="module")
def serial_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("grid")
    exp = ex.load_experiment(tiny_experiment(tmp))
    specs = ex.jobs(exp, tmp / "runs")
    rows = grid.run_jobs(specs, "serial", progress=False)
    return tmp, exp, specs, rows


def test_grid_jobs_folders_and_baseline_added(serial_run):
    tmp, exp, specs, rows = serial_run
    assert [a.name for a in exp.agents][-1] == "equal-weight"  # the baseline joins the grid
    assert len(specs) == 4 * 2 * 2
    for spec, row in zip(specs, rows, strict=True):
        folder = spec.folder
        assert folder == tmp / "runs" / "tiny" / "syn" / f"fold{spec.fold}" / \
            spec.agent["name"] / f"seed{spec.seed}"
        for name in ("metrics.json", "equity.csv", "trades.csv", "weights.csv",
                     "manifest.json"):
            assert (folder / name).exists()
        assert row["skipped"] is False
    # every policy met the same test windows and the same starting capital
    windows = {(r["fold"], r["start"], r["end"]) for r in rows}
    assert len(windows) == 2
    assert {json.loads((s.folder / "manifest.json").read_text())["data_hash"]
            for s in specs} == {ex._market(ex.dataset_config(exp, exp.datasets[0])).digest()}


def test_parallel_backends_chain_the_seeds_of_each_agent_and_fold(serial_run):
    _, _, specs, _ = serial_run
    groups = grid.chains(specs)
    assert sum(len(g) for g in groups) == len(specs) and len(groups) == 2 * 4
    for g in groups:
        keys = {(specs[i].fold, specs[i].agent["name"]) for i in g}
        assert len(keys) == 1 and [specs[i].seed for i in g] == [0, 1]


def test_process_and_ray_backends_give_the_serial_results(serial_run, tmp_path):
    _, exp, _, rows = serial_run
    process = grid.run_jobs(ex.jobs(exp, tmp_path / "p"), "process", workers=2,
                            progress=False)
    assert comparable(process) == comparable(rows)
    pytest.importorskip("ray")
    ray_rows = grid.run_jobs(ex.jobs(exp, tmp_path / "r"), "ray", workers=2, progress=False)
    assert comparable(ray_rows) == comparable(rows)


def test_resume_finishes_only_what_is_missing(serial_run, tmp_path):
    src, exp, _, _ = serial_run
    root = tmp_path / "runs"
    shutil.copytree(src / "runs", root)
    specs = ex.jobs(exp, root)
    lost, partial = specs[3].folder, specs[7].folder
    shutil.rmtree(lost)  # never ran
    (partial / "metrics.json").unlink()  # killed before it finished
    (partial.parent / f".tmp-{partial.name}-999").mkdir()  # a killed job's temporary folder
    before = {s.folder: (s.folder / "metrics.json").stat().st_mtime_ns
              for s in specs if (s.folder / "metrics.json").exists()}
    rows = grid.run_jobs(specs, "serial", progress=False)
    recomputed = {Path(r["folder"]) for r in rows if not r["skipped"]}
    assert recomputed == {lost, partial}
    for folder, mtime in before.items():
        assert (folder / "metrics.json").stat().st_mtime_ns == mtime


def test_aggregate_and_report_name_every_agent(serial_run, tmp_path):
    _, exp, _, rows = serial_run
    df = grid.results_frame(rows, exp)
    assert (df[df["agent"] == "equal-weight"]["score"] == 0).all()
    agg = grid.aggregate(df, exp, reps=200)
    agents = {"cash", "random", "momentum", "equal-weight"}
    assert {r["agent"] for r in agg["table"]} == agents
    assert len(agg["probability_of_improvement"]) == 4 * 3
    eq = next(r for r in agg["table"] if r["agent"] == "equal-weight")
    assert eq["iqm"] == 0.0 and eq["iqm_low"] == 0.0
    report.write_files(tmp_path, df, agg)
    path = report.html_report(tmp_path / "report.html", title="tiny", df=df, rows=rows,
                              agg=agg, config={"x": 1}, synthetic=True)
    text = path.read_text()
    assert "SYNTHETIC DATA" in text and text.count("data:image/png;base64,") >= 6
    for a in agents:
        assert a in text
    assert (tmp_path / "results.csv").exists() and (tmp_path / "summary.json").exists()


def test_bad_experiments_name_the_problem(tmp_path):
    with pytest.raises(ConfigError, match="exactly one of policy or train"):
        ex.load_experiment(tiny_experiment(tmp_path, agents=[{"name": "x"}]))
    with pytest.raises(ConfigError, match=r"datasets\.syn: .*max_postions"):
        ex.load_experiment(tiny_experiment(tmp_path, config={"portfolio": {"max_postions": 1}}))


def test_compare_command_end_to_end(tmp_path):
    path = tiny_experiment(tmp_path, agents=[{"name": "cash", "policy": "cash"}])
    cmd = [sys.executable, "scripts/compare.py", "--experiment", str(path), "--out",
           str(tmp_path / "runs"), "--reps", "100", "--no-progress"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert "IQM score" in r.stdout and "report:" in r.stdout
    assert (tmp_path / "runs" / "tiny" / "report.html").exists()
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "8 jobs were already done" in again.stdout
    bad = subprocess.run([sys.executable, "scripts/compare.py", "--experiment", "nope.yaml"],
                         cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert bad.returncode == 2 and "cannot read experiment" in bad.stderr


def test_shipped_experiments_load():
    from helpers import SHARED_DATA

    exp = ex.load_experiment(ROOT / "configs" / "experiments" / "default.yaml")
    assert {a.name for a in exp.agents} >= {"cash", "buy-and-hold", "equal-weight", "random",
                                            "momentum", "ppo", "a2c", "llm-ensemble"}
    assert exp.folds.n_folds >= 2 and len(exp.seeds) >= 3
    if SHARED_DATA.is_dir():
        real = ex.load_experiment(ROOT / "configs" / "experiments" / "real_h1.yaml")
        cfg = ex.dataset_config(real, real.datasets[0])
        assert cfg.portfolio.rebalancing_frequency == "1D"
