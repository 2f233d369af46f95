"""Config: defaults mirror configs/default.yaml; every bad value names its key path."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from ffe_gym.config import Config, ConfigError, from_dict, load_config, to_dict

ROOT = Path(__file__).resolve().parents[1]


def test_default_yaml_mirrors_the_dataclasses():
    loaded = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    assert loaded == to_dict(Config())
    assert load_config(ROOT / "configs" / "default.yaml") == Config()


def test_overrides_merge_and_convert():
    cfg = load_config(None, {"portfolio": {"max_positions": 3, "initial_balance": 5000}})
    assert cfg.portfolio.max_positions == 3
    assert cfg.portfolio.initial_balance == 5000.0
    assert isinstance(cfg.portfolio.initial_balance, float)
    assert cfg.risk == Config().risk


@pytest.mark.parametrize("data, key, what", [
    ({"portfolio": {"max_postions": 3}}, "portfolio.max_postions", "unknown key"),
    ({"nope": {}}, "nope", "unknown key"),
    ({"portfolio": {"max_positions": "five"}}, "portfolio.max_positions", "is not int"),
    ({"portfolio": {"max_positions": 0}}, "portfolio.max_positions", "out of range"),
    ({"portfolio": {"correlation_threshold": 1.0}}, "portfolio.correlation_threshold", "< 1"),
    ({"risk": {"intrabar_stops": "yes"}}, "risk.intrabar_stops", "true or false"),
    ({"risk": {"var_method": "monte_carlo"}}, "risk.var_method", "'parametric'"),
    ({"execution": {"price": "vwap"}}, "execution.price", "'next_open'"),
    ({"execution": {"fee_rate": -0.1}}, "execution.fee_rate", ">= 0"),
    ({"execution": {"overrides": {"BTC": {"fee": 1}}}}, "execution.overrides.BTC.fee",
     "unknown key"),
    ({"data": {"symbols": "BTC"}}, "data.symbols", "not list"),
    ({"portfolio": {"rebalancing_frequency": 0}}, "portfolio.rebalancing_frequency", ">= 1"),
    ({"portfolio": {"rebalancing_frequency": "fortnightly"}}, "portfolio.rebalancing_frequency",
     "not a pandas offset"),
    ({"risk": {"stop_loss": None}}, "risk.stop_loss", "sizing.base"),
    ({"portfolio": []}, "portfolio", "expected a mapping"),
])
def test_bad_values_name_the_key(data, key, what):
    with pytest.raises(ConfigError) as err:
        from_dict(Config, data)
    assert key in str(err.value)
    assert what in str(err.value)


def test_null_turns_a_limit_off():
    cfg = from_dict(Config, {"portfolio": {"max_drawdown": None, "max_positions": None}})
    assert cfg.portfolio.max_drawdown is None and cfg.portfolio.max_positions is None


def test_yaml_file_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("risk:\n  stop_loss: lots\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: risk\.stop_loss"):
        load_config(bad)
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("risk: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(broken)


def test_a_section_that_is_not_a_mapping_is_refused_not_replaced(tmp_path):
    # before: config.merge replaced `risk: 5` with the command line's empty {"risk": {}}
    import subprocess
    import sys

    from ffe_gym.config import merge

    bad = tmp_path / "bad.yaml"
    bad.write_text("risk: 5\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml: risk: expected a mapping"):
        load_config(bad, {"risk": {}})
    with pytest.raises(ConfigError, match=r"a\.b: expected a mapping"):
        merge({"a": {"b": [1]}}, {"a": {"b": {"c": 1}}})
    assert merge({"a": None}, {"a": {"b": 1}}) == {"a": {"b": 1}}
    root = Path(__file__).resolve().parents[1]
    r = subprocess.run([sys.executable, "scripts/backtest.py", "--config", str(bad),
                        "--end", "2022-02-01"], cwd=root, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 2 and "risk: expected a mapping" in r.stderr
