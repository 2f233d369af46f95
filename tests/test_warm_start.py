"""Walk-forward warm starts: each fold's training starts from the previous fold's evaluated
model, the jobs chain per seed across folds on every backend, identities chain too, a resumed
run ships the previous fold's model, and a warm start that could see the test window is
refused."""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

from ffe_gym.config import ConfigError
from ffe_gym.evaluation import experiment as ex
from ffe_gym.evaluation import runner


def experiment(tmp_path: Path, warm: bool = True, **folds) -> ex.ExperimentConfig:
    spec = {
        "name": "warm",
        "config": {"risk": {"on_portfolio_stop": "flat", "var_window": 20},
                   "env": {"window": 8, "episode_bars": 100},
                   "train": {"eval_freq": 128, "checkpoint_freq": 10**6,
                             "evaluate_model": "final"}},
        "datasets": [{"name": "syn", "data": {"source": "synthetic",
                                              "synthetic": {"n_assets": 3, "n_bars": 1200,
                                                            "seed": 1}}}],
        "folds": {"n_folds": 3, "train": 300, "validation": 100, "test": 120, **folds},
        "seeds": [0],
        "agents": [{"name": "ppo", "train": {
            "agent": "ppo", "timesteps": 256, "n_envs": 4, "warm_start": warm,
            "hyperparameters": {"n_steps": 32, "batch_size": 64, "n_epochs": 1}}}],
    }
    path = tmp_path / "warm.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return ex.load_experiment(path)


def trained(specs: list[ex.JobSpec]) -> list[ex.JobSpec]:
    return [s for s in specs if s.agent["name"] == "ppo"]


def manifest(spec: ex.JobSpec) -> dict:
    return json.loads((spec.folder / "model" / "manifest.json").read_text())


def weights(spec: ex.JobSpec) -> np.ndarray:
    """The trained model's parameters, flattened."""
    from stable_baselines3 import PPO

    model = PPO.load(str(spec.folder / "model" / "model.zip"), device="cpu")
    return np.concatenate([p.detach().numpy().ravel() for p in model.policy.parameters()])


@pytest.fixture(scope="module")
def warm_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("warm")
    specs = ex.jobs(experiment(tmp), tmp / "runs")
    rows = runner.run_jobs(specs, "serial", progress=False)
    return tmp, specs, rows, [weights(s) for s in trained(specs)]


def test_each_fold_starts_from_the_previous_folds_model(warm_run):
    _, specs, rows, _ = warm_run
    assert all(r["reuse"] != "failed" for r in rows), [r.get("error") for r in rows]
    ppo = trained(specs)
    assert [s.fold for s in ppo] == [0, 1, 2]
    assert ppo[0].warm_from == "" and manifest(ppo[0])["warm_start"] is None
    for prev, spec in itertools.pairwise(ppo):
        assert spec.warm_from == prev.train_key
        w = manifest(spec)["warm_start"]
        assert w["windows"] == manifest(prev)["windows"] and w["model"] == manifest(prev)["model"]
    twin = [s for s in specs if s.agent["name"] == "ppo-untrained"]
    assert all(s.warm_from == "" for s in twin)  # the untrained control is never warm-started


def test_identities_chain_and_the_jobs_chain_per_seed_across_folds(warm_run, tmp_path):
    _, specs, _, trained_weights = warm_run
    cold = trained(ex.jobs(experiment(tmp_path, warm=False), tmp_path / "runs"))
    warm = trained(specs)
    assert cold[0].train_key != warm[0].train_key  # the option itself is in the identity
    assert len({s.train_key for s in warm}) == 3
    groups = runner.chains(specs)
    ppo = [g for g in groups if specs[g[0]].agent["name"] == "ppo"]
    assert len(ppo) == 1 and [specs[i].fold for i in ppo[0]] == [0, 1, 2]
    # trained cold, fold 1 ends elsewhere: the warm start changed what fold 1 learned
    runner.run_jobs([s for s in ex.jobs(experiment(tmp_path, warm=False), tmp_path / "runs")
                     if s.agent["name"] == "ppo" and s.fold == 1], "serial", progress=False)
    assert not np.array_equal(weights(cold[1]), trained_weights[1])


def test_a_resumed_run_ships_the_previous_folds_model_and_trains_the_same(warm_run):
    """Fold 2's folder deleted: the rerun reuses folds 0 and 1 and trains fold 2 again from fold
    1's model, read from its run folder and shipped to a worker process: the same weights."""
    _, specs, _, trained_weights = warm_run
    last = trained(specs)[-1]
    shutil.rmtree(last.folder)
    again = runner.run_jobs(specs, "process", workers=2, progress=False)
    row = next(r for r in again if r["agent"] == "ppo" and r["fold"] == 2)
    assert row["reuse"] != "failed", row.get("error")
    assert sum(r["reuse"] == "reused" for r in again) == len(specs) - 1
    np.testing.assert_array_equal(weights(last), trained_weights[2])


def test_the_process_backend_trains_the_folds_in_order_as_serial_does(warm_run, tmp_path):
    _, _, _, trained_weights = warm_run
    specs = ex.jobs(experiment(tmp_path), tmp_path / "runs")
    rows = runner.run_jobs(specs, "process", workers=2, progress=False)
    assert all(r["reuse"] != "failed" for r in rows)
    for spec, w in zip(trained(specs), trained_weights, strict=True):
        np.testing.assert_array_equal(weights(spec), w)


def test_a_warm_start_that_could_see_the_test_window_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="warm_start: fold 1's model would start from fold 0"):
        ex.jobs(experiment(tmp_path, embargo=0, test=20), tmp_path / "runs")
