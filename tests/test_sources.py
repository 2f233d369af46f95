"""A job's identity follows the code it runs (ffe_gym.sources, experiment.code_modules).

Two halves: a change reaches exactly the jobs that run the changed file (a comment in the
report recomputes nothing, the kernel everything, the LLM's prompts the LLM jobs only), and the
set is complete: jobs of each policy kind run under a tracer, and every project file they
executed or opened is in their identity.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from ffe_gym.evaluation import experiment as ex
from ffe_gym.sources import Sources, project, runtime_files

ROOT = Path(__file__).resolve().parents[1]


def grid_experiment(tmp_path: Path, llm_config: Path | None = None) -> Path:
    agents = [{"name": "momentum", "policy": "momentum"},
              {"name": "olmar", "policy": "olmar"},
              {"name": "hrp", "policy": "hrp"},
              {"name": "ppo", "train": {"agent": "ppo", "timesteps": 64, "n_envs": 2,
                                        "hyperparameters": {"n_steps": 32, "batch_size": 32}}}]
    if llm_config is not None:
        agents.append({"name": "llm", "policy": "llm-ensemble",
                       "kwargs": {"config": str(llm_config)}, "decide_every": 20})
    exp = {"name": "traced",
           "config": {"env": {"window": 8}, "risk": {"var_window": 20},
                      "train": {"eval_freq": 64}},
           "datasets": [{"name": "syn", "data": {"source": "synthetic", "synthetic": {
               "n_assets": 3, "n_bars": 700, "seed": 2}}}],
           "folds": {"n_folds": 1, "train": 300, "validation": 100, "test": 60},
           "seeds": [0], "controls": False, "agents": agents}
    path = tmp_path / "traced.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def _copy(tmp_path: Path) -> Sources:
    ignore = shutil.ignore_patterns("__pycache__", "node_modules", "*.nbi", "*.nbc")
    roots = {}
    for name, root in project().roots.items():
        roots[name] = tmp_path / "src" / name
        shutil.copytree(root, roots[name], ignore=ignore)
    return Sources(roots)


def test_a_change_reaches_exactly_the_jobs_that_run_the_changed_file(tmp_path):
    llm = tmp_path / "llm.yaml"
    llm.write_text("members: [{name: m, backend: ollama, model: m}]\n")
    exp = ex.load_experiment(grid_experiment(tmp_path, llm))
    cfg = ex.to_dict(ex.dataset_config(exp, exp.datasets[0]))
    reference = ex.AgentEntry(name="market", policy=ex.REFERENCES["market"])
    agents = {a.name: ex.code_modules(a, cfg) for a in [*exp.agents, reference]}
    src = _copy(tmp_path)

    def digests() -> dict[str, str]:
        return {name: src.digest(mods) for name, mods in agents.items()}

    def edit(relative: str, text: str = "\n# a comment\n") -> set[str]:
        before = digests()
        path = src.roots[relative.split("/")[0]] / relative.split("/", 1)[1]
        path.write_text(path.read_text() + text)
        after = digests()
        return {k for k in before if before[k] != after[k]}

    everything = set(agents)
    assert edit("ffe_gym/evaluation/report.py") == set()
    assert edit("ffe_gym/commands/compare.py") == set()
    assert edit("ffe_agents/commands/benchmark.py") == set()
    assert edit("ffe_gym/portfolio/kernel.py") == everything
    assert edit("ffe_gym/evaluation/jobs.py") == everything
    assert edit("ffe_agents/llm/prompts.py") == {"llm"}
    assert edit("ffe_agents/llm/node/sidecar.mjs", "// a comment\n") == {"llm"}
    assert edit("ffe_agents/olps.py") == {"olmar"}
    assert edit("ffe_agents/baselines.py") == {"momentum", "olmar", "hrp", "market"}
    assert edit("ffe_agents/sb3.py") == {"ppo"}
    assert edit("ffe_agents/eiie.py") == {"ppo"}


def test_a_custom_module_named_by_the_config_is_in_the_identity():
    cfg = {"env": {"reward": "ffe_agents.learnability:some_reward"}}
    agent = ex.AgentEntry(name="x", policy="ffe_agents.oracles:TrendOracle")
    mods = ex.code_modules(agent, cfg)
    assert "ffe_agents.learnability" in mods and "ffe_agents.oracles" in mods


def test_the_sidecar_files_are_declared_runtime_files():
    node = project().roots["ffe_agents"] / "llm" / "node"
    declared = runtime_files(project().roots["ffe_agents"] / "llm" / "node_backend.py")
    shipped = {f"node/{p.name}" for p in node.iterdir() if p.is_file()}
    assert shipped and shipped <= set(declared)


TRACE = """
import json, sys, threading

executed, opened = set(), set()
def profile(frame, event, arg):
    if event == "call":
        executed.add(frame.f_code.co_filename)
def audit(event, args):
    if event == "open" and isinstance(args[0], str):
        opened.add(args[0])
sys.addaudithook(audit)

from ffe_gym.evaluation import experiment as ex, runner
exp = ex.load_experiment(sys.argv[1])
specs = [s for s in ex.jobs(exp, sys.argv[2]) if s.agent["name"] == sys.argv[3]]
market = ex.market_for(ex.dataset_config(exp, exp.datasets[0]))
executed.clear(); opened.clear()
sys.setprofile(profile); threading.setprofile(profile)
out = runner.compute_chain(specs, market)
sys.setprofile(None); threading.setprofile(None)
assert all("row" in r for r in out), [r.get("traceback") for r in out]
print(json.dumps({"executed": sorted(executed), "opened": sorted(opened)}))
"""


KNOWN = {"momentum": "ffe_agents/baselines.py", "olmar": "ffe_agents/olps.py",
         "ppo": "ffe_agents/sb3.py", "llm": "ffe_agents/llm/prompts.py"}


@pytest.mark.parametrize("agent", list(KNOWN))
def test_every_project_file_a_job_runs_is_in_its_identity(tmp_path, agent):
    from ffe_agents.llm.stub import Behaviour, StubServer

    with StubServer({"m": Behaviour()}) as stub:
        llm = tmp_path / "llm.yaml"
        llm.write_text(yaml.safe_dump({
            "members": [{"name": "m", "backend": "ollama", "model": "m",
                         "base_url": stub.url}],
            "cache_path": "{out}/llm-cache.sqlite"}))
        path = grid_experiment(tmp_path, llm)
        r = subprocess.run([sys.executable, "-c", textwrap.dedent(TRACE), str(path),
                            str(tmp_path / "runs"), agent],
                           cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    seen = json.loads(r.stdout.splitlines()[-1])
    exp = ex.load_experiment(path)
    cfg = ex.to_dict(ex.dataset_config(exp, exp.datasets[0]))
    entry = next((a for a in exp.agents if a.name == agent),
                 ex.AgentEntry(name="market", policy=ex.REFERENCES["market"]))
    src = project()
    identity = {p.resolve() for p in src.files(ex.code_modules(entry, cfg))}
    roots = [r.resolve() for r in src.roots.values()]

    def ours(name: str) -> Path | None:
        p = Path(name)
        if not p.is_absolute() or "__pycache__" in p.parts or "node_modules" in p.parts:
            return None
        p = p.resolve()
        return p if any(p.is_relative_to(r) for r in roots) and p.suffix != "" else None

    executed = {p for p in map(ours, seen["executed"]) if p is not None}
    opened = {p for p in map(ours, seen["opened"]) if p is not None and p.is_file()}
    names = {src.relative(p) for p in executed}
    assert {KNOWN[agent], "ffe_gym/evaluation/jobs.py", "ffe_gym/portfolio/book.py"} <= names
    assert "ffe_gym/evaluation/report.py" not in names
    missing = sorted(str(p) for p in (executed | opened) - identity)
    assert not missing, f"run by a {agent} job but not in its identity: {missing}"
    if agent == "llm":
        assert (tmp_path / "runs" / "llm-cache.sqlite").is_file()  # inside --out
        assert not (tmp_path / "runs" / "runs").exists()
