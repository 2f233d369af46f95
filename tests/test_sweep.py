"""A Ray Tune sweep of PPO scored on fold 0's validation window, then its winner in the grid."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

pytest.importorskip("ray.tune")

from ffe_gym.config import read_yaml
from ffe_gym.evaluation import experiment as ex
from ffe_gym.evaluation import grid, runner
from ffe_gym.evaluation.sweep import sweep

EXP = {
    "name": "sw",
    "config": {"risk": {"on_portfolio_stop": "flat", "var_window": 20},
               "env": {"window": 8, "episode_bars": 200, "dead_band": 0.0},
               "train": {"eval_freq": 100000}},
    "datasets": [{"name": "syn", "data": {"source": "synthetic", "synthetic": {
        "n_assets": 3, "n_bars": 900, "seed": 1}}}],
    "folds": {"n_folds": 2, "train": 300, "validation": 100, "test": 100},
    "seeds": [0],
    "agents": [{"name": "ppo", "train": {
        "agent": "ppo", "timesteps": 128, "n_envs": 2,
        "hyperparameters": {"n_steps": 64, "batch_size": 64},
        "sweep": {"trials": 3, "space": {"learning_rate": {"loguniform": [1.0e-5, 1.0e-2]},
                                         "gamma": {"choice": [0.9, 0.99]}}}}}],
}


def test_sweep_scores_validation_only_and_its_winner_counts_in_the_grid(tmp_path):
    path = tmp_path / "sw.yaml"
    path.write_text(yaml.safe_dump(EXP, sort_keys=False))
    exp = ex.load_experiment(path)
    result_path = sweep(exp, "ppo", tmp_path / "runs", workers=2)
    result = read_yaml(result_path)
    assert result["trials"] == 3 and len(result["all"]) == 3
    scores = [t["score"] for t in result["all"]]
    assert result["best_score"] == max(scores)
    assert set(result["best"]) == {"learning_rate", "gamma"}
    # chosen on fold 0's validation window, which ends before every test window
    cfg = ex.dataset_config(exp, exp.datasets[0])
    folds = ex.folds_for(exp, cfg, ex.market_for(cfg))
    assert result["validation_window"] == [folds[0].validation.start, folds[0].validation.stop]
    assert all(result["validation_window"][1] <= f.test.start for f in folds)
    # the winner, evaluated in the grid like any agent; its trials count in the DSR
    use = copy.deepcopy(EXP)
    use["agents"][0]["train"] = {"agent": "ppo", "timesteps": 128, "n_envs": 2,
                                 "hyperparameters": {"n_steps": 64, "batch_size": 64},
                                 "from_sweep": str(result_path)}
    path2 = tmp_path / "use.yaml"
    path2.write_text(yaml.safe_dump(use, sort_keys=False))
    exp2 = ex.load_experiment(path2)
    specs = ex.jobs(exp2, tmp_path / "runs")
    ppo = [s for s in specs if s.agent["name"] == "ppo"]
    assert ppo[0].agent["train"]["hyperparameters"]["gamma"] == result["best"]["gamma"]
    assert str(result_path) in ppo[0].inputs  # the result file travels and is hashed
    rows = runner.run_jobs(specs, "serial", progress=False)
    agg = grid.aggregate(grid.results_frame(rows, exp2), exp2, reps=100)
    # configurations tried: ppo and the two others its sweep tried (the controls are not trials)
    assert agg["n_trials"] == 3


def test_bad_search_space_names_the_dimension():
    from ffe_gym.config import ConfigError
    from ffe_gym.evaluation.sweep import search_space

    with pytest.raises(ConfigError, match=r"sweep\.space\.lr"):
        search_space({"lr": {"normal": [0, 1]}})
    assert set(search_space({"a": {"choice": [1, 2]}, "b": {"randint": [1, 5]}})) == {"a", "b"}


def test_sweep_command_refuses_an_agent_without_a_sweep(tmp_path):
    import subprocess
    import sys

    exp = copy.deepcopy(EXP)
    del exp["agents"][0]["train"]["sweep"]
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "scripts/sweep.py", "--experiment", str(path),
                        "--agent", "ppo"], cwd=root, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "needs train.sweep" in r.stderr
