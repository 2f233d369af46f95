"""The grid's fault matrix: kill and resume, concurrent runs, failing jobs of each kind,
damaged results, changed experiments, unsafe names and symlinks, Ctrl-C. Each ends with
nothing lost, nothing stale and nothing written outside the output folder."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ffe_gym.evaluation import experiment as ex
from ffe_gym.evaluation import runner

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent


def experiment(tmp_path: Path, agents, name: str = "faults", folds: int = 2, **extra) -> Path:
    exp = {
        "name": name,
        "config": {"risk": {"on_portfolio_stop": "flat", "var_window": 20},
                   "env": {"window": 8}},
        "datasets": [{"name": "syn", "data": {"source": "synthetic",
                                              "synthetic": {"n_assets": 3, "n_bars": 900,
                                                            "seed": 1}}}],
        "folds": {"n_folds": folds, "train": 300, "validation": 50, "test": 100},
        "seeds": [0, 1],
        "agents": agents,
        "controls": False,  # these tests count jobs: no control agents added
        **extra,
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def compare(path: Path, out: Path, *extra: str, wait: bool = True):
    cmd = [sys.executable, "scripts/compare.py", "--experiment", str(path), "--out", str(out),
           "--reps", "100", "--no-progress", *extra]
    env = os.environ | {"PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    if not wait:
        # as from a terminal: a shell running the test suite in the background (as CI may)
        # makes SIGINT ignored for it, and an ignored signal is inherited, so Python would not
        # install its KeyboardInterrupt handler in the child and the Ctrl-C would be lost
        return subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env=env, start_new_session=True,
                                preexec_fn=_default_sigint)
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def counts(stdout: str) -> dict[str, int]:
    line = " ".join(stdout.split())
    m = re.search(r"jobs: (\d+) computed, (\d+) reused .*?(\d+) recomputed because stale .*?"
                  r"(\d+) recomputed because damaged, (\d+) failed", line)
    assert m, line
    return dict(zip(("new", "reused", "stale", "damaged", "failed"), map(int, m.groups()),
                    strict=True))


def tree(out: Path) -> dict[str, int]:
    """The finished run folders' metrics.json and their times (listed while a run may be
    renaming a temporary folder into place: a listing that raced it is taken again)."""
    while True:
        try:
            return {str(p.relative_to(out)): p.stat().st_mtime_ns
                    for p in out.rglob("metrics.json")
                    if not any(part.startswith(".tmp-") for part in p.parts)}
        except FileNotFoundError:
            continue


def wait_for(predicate, timeout: float = 120.0) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise TimeoutError("condition not met in time")
        time.sleep(0.05)


SLOW = [{"name": "slow", "policy": "faulty:Slow"},
        {"name": "random", "policy": "random"}]


def test_sigkill_then_resume_keeps_every_finished_job(tmp_path, monkeypatch):
    path = experiment(tmp_path, SLOW, folds=3)
    out = tmp_path / "runs"
    last = max(s.windows["test"][0] for s in ex.jobs(ex.load_experiment(path), out))
    gate = tmp_path / "gate"  # the slow policy holds in the last window: the run cannot finish
    monkeypatch.setenv("FFE_SLOW_GATE", str(gate))
    monkeypatch.setenv("FFE_SLOW_GATE_FROM_BAR", str(last))
    proc = compare(path, out, wait=False)
    wait_for(lambda: len(tree(out)) >= 3)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    before = tree(out)
    assert 3 <= len(before) < 12
    gate.touch()
    again = compare(path, out)
    assert again.returncode == 0, again.stderr
    c = counts(again.stdout)
    assert c["reused"] == len(before) and c["new"] + c["reused"] == 12 and c["failed"] == 0
    after = tree(out)
    assert all(after[k] == v for k, v in before.items())  # finished jobs untouched
    assert not list(out.rglob(".tmp-*"))  # the killed run's temporary folder is gone


def test_ctrl_c_ends_with_one_line_and_a_rerun_resumes(tmp_path, monkeypatch):
    path = experiment(tmp_path, SLOW, folds=3)
    out = tmp_path / "runs"
    gate = tmp_path / "gate"  # the slow policy holds until it exists: the run cannot finish
    monkeypatch.setenv("FFE_SLOW_GATE", str(gate))  # before the Ctrl-C, whatever the timing
    proc = compare(path, out, wait=False)
    wait_for(lambda: len(tree(out)) >= 1)
    os.killpg(proc.pid, signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130
    assert "Traceback" not in stderr
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "interrupted:" in lines[0] and "rerun to resume" in lines[0]
    gate.touch()
    again = compare(path, out)
    assert again.returncode == 0 and counts(again.stdout)["failed"] == 0


def test_two_concurrent_runs_neither_crash_nor_compute_a_job_twice(tmp_path):
    path = experiment(tmp_path, SLOW, folds=3)
    out = tmp_path / "runs"
    first, second = compare(path, out, wait=False), compare(path, out, wait=False)
    results = [p.communicate(timeout=600) + (p.returncode,) for p in (first, second)]
    for _, stderr, code in results:
        assert code == 0, stderr
    computed = [counts(stdout)["new"] for stdout, _, _ in results]
    reused = [counts(stdout)["reused"] for stdout, _, _ in results]
    assert sum(computed) == 12 and [c + r for c, r in zip(computed, reused, strict=True)] == [
        12, 12]
    manifests = [json.loads(p.read_text()) for p in out.rglob("manifest.json")]
    assert len(manifests) == 12


@pytest.mark.parametrize("backend", ["serial", "process"])
def test_failing_jobs_are_recorded_and_the_rest_completes(tmp_path, backend):
    agents = [{"name": "raises", "policy": "faulty:Raises"},
              {"name": "nans", "policy": "faulty:NaNs"},
              {"name": "momentum", "policy": "momentum"}]
    if backend == "process":
        agents.append({"name": "exits", "policy": "faulty:Exits"})
    path = experiment(tmp_path, agents)
    out = tmp_path / "runs"
    r = compare(path, out, "--backend", backend, "--workers", "2")
    assert r.returncode == 1, r.stderr
    text = " ".join(r.stdout.split())
    assert "FAILED syn/rules/fold0/raises/seed0: RuntimeError: this policy always fails" in text
    assert "FAILED syn/rules/fold1/nans/seed0: ValueError: signals action contains NaN" in text
    if backend == "process":
        assert "FAILED syn/rules/fold0/exits/seed0: the worker process died" in text
    n_failed = 2 * (len(agents) - 1)
    assert counts(r.stdout)["failed"] == n_failed
    assert f"{n_failed} job(s) failed" in text
    report = (out / "faults" / "report.html").read_text()
    assert "Failed jobs" in report and "this policy always fails" in report
    ok = [json.loads(p.read_text()) for p in out.rglob("metrics.json")]
    assert {row["agent"] for row in ok} == {"momentum", "market"}
    assert not any((out / "faults" / "syn" / "rules" / "fold0").glob("raises/seed0/*"))


def test_changed_budget_or_data_changes_exactly_the_identities_it_touches(tmp_path):
    agents = [{"name": "momentum", "policy": "momentum"},
              {"name": "ppo", "train": {"agent": "ppo", "timesteps": 64, "n_envs": 1}}]
    base = ex.jobs(ex.load_experiment(experiment(tmp_path, agents)), tmp_path / "runs")
    budget = [dict(a) for a in agents]
    budget[1] = {"name": "ppo", "train": {"agent": "ppo", "timesteps": 128, "n_envs": 1}}
    more = ex.jobs(ex.load_experiment(experiment(tmp_path, budget)), tmp_path / "runs")
    changed = {(s.agent["name"], s.fold, s.seed) for s, t in zip(base, more, strict=True)
               if s.identity != t.identity}
    assert changed == {("ppo", f, s) for f in (0, 1) for s in (0, 1)}
    data = ex.load_experiment(experiment(tmp_path, agents, datasets=[
        {"name": "syn", "data": {"source": "synthetic",
                                 "synthetic": {"n_assets": 3, "n_bars": 900, "seed": 2}}}]))
    other = ex.jobs(data, tmp_path / "runs")
    assert all(s.identity != t.identity for s, t in zip(base, other, strict=True))


def test_a_symlinked_stale_folder_is_unlinked_not_followed(tmp_path):
    path = experiment(tmp_path, [{"name": "momentum", "policy": "momentum"}], folds=1)
    exp = ex.load_experiment(path)
    specs = ex.jobs(exp, tmp_path / "runs")
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("mine")
    (outside / "metrics.json").write_text("{}")  # looks stale through the link
    target = specs[1].folder
    target.parent.mkdir(parents=True)
    target.symlink_to(outside, target_is_directory=True)
    rows = runner.run_jobs(specs, "serial", progress=False)
    assert {r["reuse"] for r in rows} == {"new", "stale"}
    assert (outside / "keep.txt").read_text() == "mine"
    assert not target.is_symlink() and (target / "metrics.json").is_file()


def test_unsafe_names_never_reach_the_filesystem(tmp_path):
    from ffe_gym.config import ConfigError

    for bad in ({"name": "../../x"}, {"datasets": [{"name": "../d", "data": {}}]},
                {"variants": {"a/b": {}}}):
        with pytest.raises(ConfigError, match="not a safe name"):
            ex.load_experiment(experiment(tmp_path, SLOW, **bad))
    r = compare(experiment(tmp_path, [{"name": "..", "policy": "cash"}]), tmp_path / "runs")
    assert r.returncode == 2 and "not a safe name" in r.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path.parent / "x").exists()


def test_output_files_follow_the_umask(tmp_path):
    path = experiment(tmp_path, [{"name": "momentum", "policy": "momentum"}], folds=1)
    r = compare(path, tmp_path / "runs")
    assert r.returncode == 0, r.stderr
    mask = os.umask(0)
    os.umask(mask)
    for name in ("report.html", "results.csv", "summary.json"):
        mode = (tmp_path / "runs" / "faults" / name).stat().st_mode & 0o777
        assert mode == 0o666 & ~mask, (name, oct(mode))
    metrics = next((tmp_path / "runs").rglob("metrics.json"))
    assert metrics.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_job_finished_between_the_first_look_and_the_lock_is_reused(tmp_path, monkeypatch):
    """Another run finishes a job after this run found it missing and before it takes the
    job's lock: the second look under the lock reuses it instead of computing it again."""
    from ffe_gym.evaluation import jobs

    exp = ex.load_experiment(experiment(tmp_path, [{"name": "momentum", "policy": "momentum"}]))
    specs = ex.jobs(exp, tmp_path / "runs")
    target = next(s for s in specs if s.agent["name"] == "momentum")
    real = runner.finished
    raced = []

    def racing(spec, keep_unreproducible=False):
        out = real(spec, keep_unreproducible)
        if spec.folder == target.folder and not raced:
            raced.append(jobs.run_job(spec))  # the other run: computes, writes, unlocks
        return out

    monkeypatch.setattr(runner, "finished", racing)
    rows = runner.run_jobs(specs, "serial", progress=False)
    assert raced[0]["reuse"] == "new"
    assert next(r for r in rows if r["folder"] == str(target.folder))["reuse"] == "reused"


def test_a_lock_path_leading_outside_fails_that_job_alone(tmp_path):
    """A dangling `.seed0.lock` symlink, or an agent folder symlinked elsewhere, never leads a
    write outside the output folder: that job fails, named, and every other job completes."""
    path = experiment(tmp_path, [{"name": "momentum", "policy": "momentum"},
                                 {"name": "cash", "policy": "cash"}], folds=1)
    exp = ex.load_experiment(path)
    specs = ex.jobs(exp, tmp_path / "runs")
    outside = tmp_path / "elsewhere"
    linked = next(s for s in specs if s.agent["name"] == "momentum")
    lock = linked.folder.parent / f".{linked.folder.name}.lock"
    lock.parent.mkdir(parents=True)
    lock.symlink_to(outside / "created.lock")  # dangling: O_CREAT would create its target
    moved = next(s for s in specs if s.agent["name"] == "cash")
    away = tmp_path / "away"
    away.mkdir()
    moved.folder.parent.parent.mkdir(parents=True, exist_ok=True)
    moved.folder.parent.symlink_to(away, target_is_directory=True)
    rows = {r["folder"]: r for r in runner.run_jobs(specs, "serial", progress=False)}
    bad = rows[str(linked.folder)]
    assert bad["reuse"] == "failed" and "symbolic link" in bad["error"]
    assert rows[str(moved.folder)]["reuse"] == "failed"
    assert "outside the output folder" in rows[str(moved.folder)]["error"]
    assert not outside.exists() and list(away.iterdir()) == []
    others = [r for f, r in rows.items() if f not in (str(linked.folder), str(moved.folder))]
    assert others and all(r["reuse"] == "new" for r in others)
