"""Everything an experiment or config can get wrong that is knowable before a job runs is
refused when it loads, naming the key (issue 29's load-time checks)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ffe_gym.config import Config, ConfigError, from_dict
from ffe_gym.evaluation import experiment as ex


def _exp(tmp_path: Path, **over) -> Path:
    spec = {"name": "checks",
            "datasets": [{"name": "syn", "data": {"source": "synthetic",
                                                  "synthetic": {"n_assets": 2, "n_bars": 600}}}],
            "folds": {"n_folds": 1, "train": 200, "validation": 50, "test": 50},
            "seeds": [0], "agents": [{"name": "momentum", "policy": "momentum"}]}
    spec.update(over)
    path = tmp_path / "e.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


@pytest.mark.parametrize("key, value", [
    ("portfolio.initial_balance", float("inf")), ("execution.fixed_fee", float("inf")),
    ("execution.borrow_rate", float("nan")), ("execution.volatility_slippage", float("inf")),
    ("sizing.target_volatility", float("-inf"))])
def test_non_finite_numbers_are_refused_by_key(key, value):
    section, name = key.split(".")
    with pytest.raises(ConfigError, match=rf"^{key}: .* is not a finite number"):
        from_dict(Config, {section: {name: value}})


@pytest.mark.parametrize("over, message", [
    ({"folds": {"n_folds": 0}}, r"folds.n_folds: 0 \(at least 1\)"),
    ({"folds": {"test": -150}}, r"folds.test: -150 \(at least 1\)"),
    ({"folds": {"embargo": -3}}, r"folds.embargo: -3"),
    ({"seeds": [0, -1]}, r"seeds: -1"),
    ({"agents": [{"name": "x", "policy": "no-such-policy"}]},
     r"agents.x.policy: 'no-such-policy' is not a registered name"),
    ({"agents": [{"name": "x", "policy": "ffe_agents.baselines:Nope"}]},
     r"agents.x.policy: cannot load policy"),
    ({"agents": [{"name": "x\n", "policy": "cash"}]}, r"is not a safe name"),
    ({"agents": [{"name": "a" * 101, "policy": "cash"}]}, r"at most 100 characters"),
])
def test_an_experiment_is_refused_at_load_naming_the_key(tmp_path, over, message):
    with pytest.raises(ConfigError, match=message):
        ex.load_experiment(_exp(tmp_path, **over))


def test_compare_refuses_a_reps_below_one_before_any_job(tmp_path):
    out = subprocess.run([sys.executable, "scripts/compare.py", "--experiment",
                          str(_exp(tmp_path)), "--out", str(tmp_path / "runs"), "--reps", "0"],
                         capture_output=True, text=True, cwd=Path(__file__).parents[1])
    assert out.returncode == 2 and "--reps: 0 (at least 1)" in out.stderr
    assert not (tmp_path / "runs").exists()
