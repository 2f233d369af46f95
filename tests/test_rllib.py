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
