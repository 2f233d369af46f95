"""Subprocess smoke runs of every script with tiny budgets, including the error exits."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from helpers import SHARED_DATA

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], cwd=cwd, capture_output=True, text=True,
                          timeout=600)


def test_backtest_on_the_embedded_default(tmp_path):
    out = tmp_path / "bt.json"
    trades = tmp_path / "trades.csv"
    r = run("scripts/backtest.py", "--end", "2022-03-01", "--json", str(out),
            "--trades", str(trades))
    assert r.returncode == 0, r.stderr
    for title in ("Portfolio Performance", "SYNTHETIC", "Per-Asset Attribution",
                  "Recent Trades"):
        assert title in r.stdout
    result = json.loads(out.read_text())
    assert result["metrics"]["bars"] > 0
    assert {a["symbol"] for a in result["attribution"]} == {f"SYN_C{i}" for i in range(1, 6)}
    log = pd.read_csv(trades)
    assert list(log.columns[:4]) == ["time", "bar", "asset", "action"]
    assert len(log) > 0


def test_backtest_seed_interface_flags(tmp_path):
    r = run("scripts/backtest.py", "SYN_C1", "SYN_C2", "SYN_C3", "--start", "2022-02-01",
            "--end", "2022-02-20", "--initial-balance", "50000", "--correlation-threshold",
            "0.5", "--max-positions", "2", "--on-portfolio-stop", "flat", "--json",
            str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "r.json").read_text())
    assert result["config"]["portfolio"]["initial_balance"] == 50000
    assert result["config"]["portfolio"]["max_positions"] == 2
    assert len(result["attribution"]) == 3


@pytest.mark.parametrize("args, message", [
    (["--data", "does/not/exist.csv"], "no such file"),
    (["SYN_C1"], "two or more symbols"),
    (["SYN_C1", "NOPE"], "unknown symbol 'NOPE'"),
    (["--start", "2030-01-01"], "leaves no room"),
    (["--config", "missing.yaml"], "cannot read config"),
])
def test_backtest_errors_exit_2_with_a_message(args, message):
    r = run("scripts/backtest.py", *args)
    assert r.returncode == 2
    assert message in r.stderr
    assert "Traceback" not in r.stderr


def test_backtest_bad_data_file_exits_2_naming_the_row(tmp_path):
    t = pd.date_range("2024-01-01", periods=200, freq="h", tz="UTC")
    for sym in ("AAA", "BBB"):
        df = pd.DataFrame({"time": t, "open": 10.0, "high": 11.0, "low": 9.0, "close": 10.0})
        if sym == "BBB":
            df.loc[57, "low"] = -1.0
        df.to_csv(tmp_path / f"{sym}.csv", index=False)
    r = run("scripts/backtest.py", "--data", str(tmp_path))
    assert r.returncode == 2
    assert "BBB.csv" in r.stderr and "symbol BBB" in r.stderr and "row 57" in r.stderr


@pytest.mark.skipif(not SHARED_DATA.is_dir(), reason="../shared data is absent")
def test_backtest_on_the_real_hourly_data(tmp_path):
    r = run("scripts/backtest.py", "BTC_USD", "ETH_USD", "EUR_USD", "--data", str(SHARED_DATA),
            "--start", "2022-01-01", "--end", "2022-03-31", "--calendar", "union",
            "--json", str(tmp_path / "r.json"))
    assert r.returncode == 0, r.stderr
    assert "SYNTHETIC" not in r.stdout


def test_benchmark_tiny_budget(tmp_path):
    r = run("scripts/benchmark.py", "--seconds", "0.05", "--assets", "10", "--books", "1", "4",
            "--sections", "engine", "scaling", "env", "peers", "train", "llm", "--vector-envs",
            "4", "--train-timesteps", "256", "--train-repeats", "1", "--llm-decisions", "5",
            "--json", str(tmp_path / "bench.json"))
    assert r.returncode == 0, r.stderr
    figures = json.loads((tmp_path / "bench.json").read_text())
    assert {"engine", "scaling", "env", "train", "llm"} <= set(figures)
    assert {(t["config"], t["assets"]) for t in figures["train"]} == {
        ("old", 5), ("default", 5), ("old", 20), ("default", 20)}
    assert all(t["steps_per_s"] > 0 and 0 <= t["env_share"] <= 1 for t in figures["train"])
    assert "decisions/s" in r.stdout
    assert "Engine scaling" in r.stdout and "1000" in r.stdout
    assert "PortfolioVectorEnv" in r.stdout
    assert "PPO training" in r.stdout and "EIIEPolicy" in r.stdout
    assert "cached replay decisions/s" in r.stdout
    for peer in ("gym-anytrading", "Gym-Trading-Env", "FinRL"):
        assert peer in r.stdout  # a figure, or "could not run" when not installed


def _git_head() -> bool:
    r = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--verify", "HEAD"],
                       capture_output=True, text=True, check=False)
    return r.returncode == 0


@pytest.mark.skipif(not _git_head(), reason="not a git checkout: nothing to measure against")
def test_benchmark_against_a_commit_in_one_process(tmp_path):
    r = run("scripts/benchmark.py", "--sections", "against", "--against", "HEAD",
            "--seconds", "0.02", "--repeats", "2", "--json", str(tmp_path / "ab.json"))
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "ab.json").read_text())["against"]["rows"]
    assert [row["figure"].split(" ")[0] for row in rows] == ["engine"] * 3 + ["env"] * 2 + [
        "vector"]
    for row in rows:
        assert len(row["before"]) == len(row["after"]) == 2
        assert min(row["before"] + row["after"]) > 0 and row["ratio"] > 0
    assert "against HEAD's, in one process" in r.stdout
    bad = run("scripts/benchmark.py", "--sections", "against", "--against", "no-such-rev",
              "--seconds", "0.02")
    assert bad.returncode != 0 and "--against no-such-rev: git show" in bad.stderr


def test_audit_flags_a_constant_policy_and_names_bad_input(tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text("data:\n  synthetic: {n_assets: 3, n_bars: 1200}\n"
                   "risk: {on_portfolio_stop: flat}\n")
    r = run("scripts/audit.py", "cash", "--config", str(cfg), "--windows", "3", "--json",
            str(tmp_path / "a.json"))
    assert r.returncode == 0, r.stderr
    assert "flag: ignores its input" in r.stdout and "SYNTHETIC" in r.stdout
    found = json.loads((tmp_path / "a.json").read_text())
    assert found["placebo_changed"] == 0.0 and found["causal"] and found["windows"] == 3
    bad = run("scripts/audit.py", "cash", "--config", str(cfg), "--windows", "5000")
    assert bad.returncode == 2 and "--windows 5000" in bad.stderr


def test_console_script_dispatches(capsys):
    from ffe_gym.cli import COMMANDS, main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for name, (_, doc) in COMMANDS.items():  # before: only the names, no description
        assert f"  {name}" in out and doc in out
    assert main(["nope"]) == 2
    assert "unknown command 'nope'" in capsys.readouterr().err
    from ffe_gym import __version__

    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"ffe-gym {__version__}\n"
    r = run("-m", "ffe_gym.cli", "backtest", "--help")
    assert r.returncode == 0 and "--initial-balance" in r.stdout


def test_train_then_evaluate_subprocess(tmp_path):
    cfg = tmp_path / "small.yaml"
    cfg.write_text("data:\n  synthetic: {n_assets: 3, n_bars: 1500}\n"
                   "env: {window: 8, episode_bars: 200}\n"
                   "train: {eval_freq: 256, checkpoint_freq: 256, embargo_bars: 40}\n")
    agent = tmp_path / "ppo.yaml"
    agent.write_text("ffe/Portfolio-v0:\n  n_timesteps: 256\n  policy: MultiInputPolicy\n"
                     "  n_envs: 2\n  normalize: true\n  n_steps: 64\n  batch_size: 64\n"
                     "  n_epochs: 1\n  policy_kwargs: {net_arch: [16]}\n")
    out = tmp_path / "run"
    r = run("scripts/train.py", "--agent", "ppo", "--agent-config", str(agent), "--config",
            str(cfg), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    assert (out / "model.zip").exists() and (out / "checkpoints").is_dir()
    r = run("scripts/evaluate.py", "--policy", str(out), "--config", str(cfg), "--json",
            str(tmp_path / "eval.json"), "--trades", str(tmp_path / "trades.csv"))
    assert r.returncode == 0, r.stderr
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["policy"].startswith("ppo") and result["metrics"]["bars"] > 0
    # the default window is the model's own test window
    manifest = json.loads((out / "manifest.json").read_text())
    assert result["start"] == manifest["window_times"]["test"][0]


@pytest.mark.parametrize("args, message", [
    (["--agent", "ddpg", "--out", "x"], "configs/agents/ddpg.yaml"),
    (["--agent", "ppo", "--out", "x", "--data", "nope.csv"], "no such file"),
    (["--agent", "ppo", "--out", "x", "--config", "missing.yaml"], "cannot read config"),
])
def test_train_errors_exit_2(args, message, tmp_path):
    r = run("scripts/train.py", *args, cwd=ROOT)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr


@pytest.mark.parametrize("args, message", [
    (["--policy", "nope"], "unknown policy"),
    (["--policy", "cash", "--start", "2030-01-01"], "not allowed"),
    (["--policy", "cash", "--data", "nope.csv"], "no such file"),
    (["--policy", "cash", "--start", "2022-13-01"], "'2022-13-01' is not a date"),
    (["--policy", "cash", "--end", "yesterday"], "'yesterday' is not a date"),
])
def test_evaluate_errors_exit_2(args, message):
    r = run("scripts/evaluate.py", *args)
    assert r.returncode == 2 and message in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_evaluate_baseline_prints_metrics():
    r = run("scripts/evaluate.py", "--policy", "equal-weight", "--end", "2022-02-01")
    assert r.returncode == 0, r.stderr
    assert "Metrics [SYNTHETIC DATA]" in r.stdout and "Sharpe" in r.stdout
    assert "No order was placed" not in r.stdout
    flat = run("scripts/evaluate.py", "--policy", "cash", "--end", "2022-02-01",
               "--no-progress")
    assert flat.returncode == 0 and "No order was placed" in flat.stdout  # said, not silent
    lines = [x for x in r.stderr.splitlines() if x.startswith("evaluate: ")]
    decisions = int(r.stdout.split(" decisions")[0].rsplit("(", 1)[1].split()[-1])
    # piped: a line every tenth of the window, and the last decision (the episode may end early)
    assert 1 <= len(lines) <= 12 and lines[-1].startswith(f"evaluate: {decisions}/")


def test_evaluate_llm_ensemble_subprocess_and_offline_replay(tmp_path):
    from ffe_agents.llm.stub import Behaviour, StubServer

    cfg = tmp_path / "llm.yaml"
    cache = tmp_path / "cache.sqlite"
    with StubServer({"llama3.2:3b": Behaviour(), "qwen2.5:7b": Behaviour()}) as s:
        cfg.write_text(
            "members:\n"
            f"  - {{name: llama, backend: ollama, model: 'llama3.2:3b', base_url: '{s.url}'}}\n"
            f"  - {{name: qwen, backend: ollama, model: 'qwen2.5:7b', base_url: '{s.url}'}}\n"
            f"cache_path: '{cache}'\n")
        args = ["scripts/evaluate.py", "--policy", "llm-ensemble", "--llm-config", str(cfg),
                "--start", "2022-03-01", "--end", "2022-03-02"]
        live = run(*args, "--json", str(tmp_path / "live.json"))
    assert live.returncode == 0, live.stderr
    assert "Policy statistics" in live.stdout and "cache_hits" in live.stdout
    replay = run(*args, "--json", str(tmp_path / "replay.json"))  # the server is gone
    assert replay.returncode == 0, replay.stderr
    a = json.loads((tmp_path / "live.json").read_text())
    b = json.loads((tmp_path / "replay.json").read_text())
    assert a["metrics"] == b["metrics"]
    assert b["policy_stats"]["members"]["llama"]["calls"] == 0
    assert b["policy_stats"]["members"]["llama"]["cache_hits"] == a["steps"]


def test_ffe_gym_never_imports_ffe_agents():
    import re

    pattern = re.compile(r"^\s*(from|import)\s+ffe_agents\b", re.MULTILINE)
    offenders = [str(p.relative_to(ROOT)) for p in (ROOT / "ffe_gym").rglob("*.py")
                 if pattern.search(p.read_text())]
    assert offenders == []


def test_api_reference_builds_without_warnings(tmp_path):
    pytest.importorskip("pdoc")
    r = run("scripts/api_docs.py", "--out", str(tmp_path / "api"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Warning" not in r.stderr, r.stderr[-3000:]
    page = (tmp_path / "api" / "ffe_gym" / "env" / "portfolio_env.html").read_text()
    assert "Action Space" in page and "Discrete(2N + 1)" in page
    for module in ("ffe_gym/portfolio/specification", "ffe_gym/evaluation/run_page",
                   "ffe_agents/rllib", "ffe_agents/llm/ensemble"):
        assert (tmp_path / "api" / f"{module}.html").exists(), module


def test_live_script_help_and_a_bad_feed_exits_2(tmp_path):
    r = run("scripts/live.py", "--help")
    assert r.returncode == 0 and "--feed" in r.stdout and "--status" in r.stdout
    r = run("scripts/live.py", "--policy", "momentum", "--feed", "smoke:signals", "--out",
            str(tmp_path / "x"))
    assert r.returncode == 2 and "give ccxt:EXCHANGE, alpaca:stocks" in r.stderr
    assert "Traceback" not in r.stderr
