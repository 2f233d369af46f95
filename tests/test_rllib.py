"""RLlib PPO on ffe/Portfolio-v0 with the batched engine as RLlib's vector env.

ray[rllib] 2.60 pins gymnasium 1.2.2, so it lives in its own environment (.venv-rllib, made by
scripts/setup.sh through scripts/setup_rllib.sh); this test runs the example script there, in
a subprocess. Ray starts on 127.0.0.1 and the script shuts it down.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PYTHON = ROOT / ".venv-rllib" / "bin" / "python"


@pytest.mark.skipif(not PYTHON.exists(), reason="no .venv-rllib (bash scripts/setup_rllib.sh)")
def test_rllib_ppo_trains_on_the_vector_env_and_counts_episodes():
    out = subprocess.run([str(PYTHON), str(ROOT / "scripts" / "rllib_ppo.py"), "--iterations",
                          "2", "--episode-bars", "50"], capture_output=True, text=True,
                         timeout=600, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = [json.loads(x) for x in out.stdout.splitlines() if x.startswith("{")]
    assert [x["iteration"] for x in lines] == [1, 2]
    assert all(x["vector_env"] == "PortfolioVectorEnv" for x in lines)  # the batched engine
    assert lines[-1]["env_steps"] >= 1024
    assert lines[-1]["episode_return_mean"] is not None  # 8 books x 50-bar episodes ended
    ps = subprocess.run(["pgrep", "-f", "ray::|raylet|gcs_server"], capture_output=True,
                        text=True)
    assert ps.stdout.strip() == "", "Ray processes left running"


@pytest.mark.skipif(not PYTHON.exists(), reason="no .venv-rllib (bash scripts/setup_rllib.sh)")
def test_an_rllib_checkpoint_is_a_policy_here_and_in_its_own_environment(tmp_path):
    """``--out`` saves the checkpoint; ``evaluate`` acts with it from this environment (no
    RLlib: the module runs in a child process of .venv-rllib) exactly as in .venv-rllib
    itself (in process)."""
    import sys

    out = tmp_path / "rllib-ppo"
    r = subprocess.run([str(PYTHON), "scripts/rllib_ppo.py", "--iterations", "1",
                        "--episode-bars", "50", "--out", str(out)],
                       capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    meta = json.loads((out / "ffe-rllib.json").read_text())
    assert meta["env_config"]["config"]["env"]["observation"] == "flat"
    results = {}
    for python in (sys.executable, str(PYTHON)):
        r = subprocess.run([python, "scripts/evaluate.py", "--policy", str(out), "--end", "400",
                            "--no-progress", "--json", str(tmp_path / "e.json")],
                           capture_output=True, text=True, timeout=600, cwd=ROOT)
        assert r.returncode == 0, r.stderr[-3000:]
        results[python] = json.loads((tmp_path / "e.json").read_text())
    here, there = results.values()
    assert here["policy"] == "rllib:rllib-ppo" and here["metrics"]["fills"] > 0
    assert here["metrics"] == there["metrics"] and here["refusals"] == there["refusals"]
    # a broken checkpoint is the policy's error, named, in one line
    (out / "checkpoint" / "learner_group" / "learner" / "rl_module" / "default_policy"
     / "module_state.pkl").write_bytes(b"not a pickle")
    r = subprocess.run([sys.executable, "scripts/evaluate.py", "--policy", str(out), "--end",
                        "400", "--no-progress"], capture_output=True, text=True, timeout=600,
                       cwd=ROOT)
    assert r.returncode == 2 and "cannot load the RLModule" in r.stderr, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
