"""Every script in scripts/examples runs, with tiny budgets, as a user would run it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "scripts" / "examples"
RLLIB_PYTHON = ROOT / ".venv-rllib" / "bin" / "python"


def run(*args: str, cwd: Path, prelude: str = "") -> subprocess.CompletedProcess:
    """A script in a fresh interpreter; ``prelude`` runs before it (to hide a module)."""
    script, rest = str(EXAMPLES / args[0]), list(args[1:])
    code = (f"import sys, runpy\n{prelude}\nsys.argv = {[script, *rest]!r}\n"
            f"runpy.run_path({script!r}, run_name='__main__')")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=cwd, timeout=900)


def test_every_example_has_a_test():
    tested = {"own_dataframe.py", "ppo_vs_baselines.py", "custom_policies.py",
              "zoo_round_trip.py", "rllib_checkpoint.py", "llm_local_server.py"}
    assert {p.name for p in EXAMPLES.glob("*.py")} == tested


def test_own_dataframe_made_up_and_from_a_finrl_csv(tmp_path):
    r = run("own_dataframe.py", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "MADE UP" in r.stdout and "random actions:" in r.stdout
    spec = importlib.util.spec_from_file_location("own_dataframe", EXAMPLES / "own_dataframe.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["own_dataframe"] = module  # dataclasses look their module up there
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules["own_dataframe"]
    module.made_up_panel(600, 1).to_csv(tmp_path / "finrl.csv", index=False)
    r = run("own_dataframe.py", "--csv", "finrl.csv", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "3 assets x 600 bars" in r.stdout and "MADE UP" not in r.stdout


def test_ppo_vs_baselines_on_the_minimal_experiment(tmp_path):
    r = run("ppo_vs_baselines.py", "--timesteps", "2048", "--folds", "2", "--out", "runs",
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    results = pd.read_csv(tmp_path / "runs" / "minimal" / "results.csv")
    assert {"cash", "buy-and-hold", "momentum", "ppo", "ppo-untrained"} <= set(results["agent"])
    assert (tmp_path / "runs" / "minimal" / "report.html").exists()


def test_custom_policies_of_every_scheme(tmp_path):
    r = run("custom_policies.py", "--bars", "1500", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    for name, scheme in [("trend-signals", "signals"), ("trend-discrete", "discrete"),
                         ("best-asset-single", "single"), ("trend-weights", "weights")]:
        line = next(x for x in r.stdout.splitlines() if x.startswith(name))
        assert line.split()[1] == scheme and int(line.split()[-1]) > 0  # it traded


@pytest.mark.skipif(importlib.util.find_spec("rl_zoo3") is None, reason="needs rl_zoo3")
def test_zoo_round_trip_loads_without_rl_zoo3(tmp_path):
    """The zoo trains (a lin_ schedule, pickled as rl_zoo3's own class); evaluate and compare
    then run in an interpreter where rl_zoo3 cannot be imported."""
    r = run("zoo_round_trip.py", "--timesteps", "2048", "--folds", "2", "--learning-rate",
            "lin_1e-3", "--out", "zoo", cwd=tmp_path,
            prelude="sys.modules['rl_zoo3'] = None  # as if not installed")
    assert r.returncode == 0, r.stderr[-3000:]
    model = next((tmp_path / "zoo" / "logs" / "ppo").glob("*/ffe-Portfolio-v0.zip"))
    import zipfile

    assert b"rl_zoo3" in zipfile.ZipFile(model).read("data")  # the zoo's schedule is in it
    summary = json.loads((tmp_path / "zoo" / "evaluate" / "summary.json").read_text())
    assert summary["start"].startswith("2022-09-01")  # after its training data
    results = pd.read_csv(tmp_path / "zoo" / "zoo" / "results.csv")
    assert "zoo-ppo" in set(results["agent"])


@pytest.mark.skipif(not RLLIB_PYTHON.exists(), reason="no .venv-rllib")
def test_rllib_checkpoint_evaluated_here(tmp_path):
    r = run("rllib_checkpoint.py", "--iterations", "1", "--out", "rl", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads((tmp_path / "rl" / "evaluate" / "summary.json").read_text())
    assert summary["policy"] == "rllib:model" and summary["start"].startswith("2022-09-01")
    assert (tmp_path / "rl" / "evaluate" / "run.html").exists()


@pytest.mark.llama
@pytest.mark.skipif(importlib.util.find_spec("llama_cpp") is None,
                    reason="needs llama-cpp-python (the llm extra)")
def test_llm_member_on_a_local_openai_server(tmp_path):
    r = run("llm_local_server.py", "--decisions", "2", "--out", "llm", cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "identical: True" in r.stdout and "2 cache hits" in r.stdout


@pytest.mark.skipif(importlib.util.find_spec("rl_zoo3") is None, reason="needs rl_zoo3")
def test_the_readme_zoo_commands_run_as_written(tmp_path):
    """The README's rl_zoo3 block, command by command, in a folder that has the repository's
    configs/ and scripts/ (so the relative paths resolve as they do at the root)."""
    import re
    import shlex

    readme = (ROOT / "README.md").read_text()
    block = next(b for b in re.findall(r"```bash\n(.*?)```", readme, re.DOTALL)
                 if "rl_zoo3.train" in b)
    commands = re.sub(r"\\\n\s*", " ", "\n".join(x.strip() for x in block.splitlines()))
    for link in ("configs", "scripts"):
        (tmp_path / link).symlink_to(ROOT / link)
    for line in commands.splitlines():
        argv = shlex.split(line, comments=True)
        assert argv[0] == "python"
        r = subprocess.run([sys.executable, *argv[1:]], capture_output=True, text=True,
                           cwd=tmp_path, timeout=900)
        assert r.returncode == 0, (line, r.stderr[-3000:])
    summary = json.loads((tmp_path / "runs" / "zoo" / "test" / "summary.json").read_text())
    assert summary["start"].startswith("2022-09-01")
    assert (tmp_path / "runs" / "zoo" / "test" / "run.html").exists()
