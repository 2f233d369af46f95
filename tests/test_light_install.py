"""``pip install ffe-gym`` without extras: the env, backtest and evaluate work with the core
dependencies alone, and a command that needs an extra names it in one line.

Each check runs in a fresh interpreter in which every optional package is hidden (imported as
if not installed), so an import that slips into the env's path fails here."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from ffe_gym.commands import EXTRAS

ROOT = Path(__file__).resolve().parents[1]
HIDE = "import sys\nfor m in {mods!r}:\n    sys.modules[m] = None\n".format(
    mods=sorted(EXTRAS) + ["sklearn", "cvxpy", "numba_progress"])


def light(code: str, tmp_path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", HIDE + code], capture_output=True, text=True,
                          cwd=tmp_path, timeout=600)


def test_the_env_and_its_checker_need_no_extra(tmp_path):
    r = light("""
import gymnasium as gym, numpy as np
import ffe_gym
from gymnasium.utils.env_checker import check_env
for scheme in ("signals", "discrete", "single", "weights"):
    env = gym.make("ffe/Portfolio-v0", config={"env": {"action_scheme": scheme}})
    check_env(env.unwrapped, skip_render_check=True)
    env.reset(seed=0)
    env.step(env.action_space.sample())
venv = gym.make_vec("ffe/Portfolio-v0", num_envs=4, vectorization_mode="vector_entry_point")
venv.reset(seed=0)
venv.step(venv.action_space.sample())
print("ansi:", gym.make("ffe/Portfolio-v0", render_mode="ansi").unwrapped is not None)
print("ok")
""", tmp_path)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]


def test_backtest_and_evaluate_need_no_extra(tmp_path):
    r = light("""
from ffe_gym.cli import main
assert main(["backtest", "--policy", "momentum", "--end", "2022-02-01"]) == 0
assert main(["evaluate", "--policy", "momentum", "--end", "2022-02-01", "--no-progress",
             "--out", "run"]) == 0
print("ok")
""", tmp_path)
    assert r.returncode == 0 and "ok" in r.stdout, r.stderr[-3000:]
    run = tmp_path / "run"
    assert (run / "equity.csv").exists() and not (run / "run.html").exists()
    assert "pip install 'ffe-gym[eval]'" in r.stderr  # the page needs plotly: said, not hidden


@pytest.mark.parametrize("argv, extra", [
    (["compare", "--experiment", str(ROOT / "configs" / "experiments" / "minimal.yaml")],
     "eval"),
    (["train", "--agent", "ppo", "--out", "x", "--timesteps", "64"], "sb3"),
])
def test_a_command_that_needs_an_extra_names_it(tmp_path, argv, extra):
    r = light(f"from ffe_gym.cli import main\nraise SystemExit(main({argv!r}))", tmp_path)
    assert r.returncode == 2, r.stderr[-3000:]
    assert f"pip install 'ffe-gym[{extra}]'" in r.stderr and "Traceback" not in r.stderr
