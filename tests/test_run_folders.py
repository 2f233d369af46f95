"""Run folders you can trust, move and rerun (the grid's fault harness, part two).

Each test breaks the output folder the way a user or a machine does (a truncated or altered
file, a moved or copied tree, a full or read-only disk, a file-size or open-file limit, a name
too long, a driver killed at a fixed point of writing) and checks afterwards: nothing lost,
nothing stale reused, nothing written outside the output folder, one clear line.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_grid_faults import ROOT, TESTS, counts, experiment

AGENTS = [{"name": "momentum", "policy": "momentum"}, {"name": "random", "policy": "random"}]


@pytest.fixture
def here(capsys, monkeypatch):
    """``compare`` in this process (no interpreter start-up): returns a CompletedProcess like
    :func:`test_grid_faults.compare`'s."""
    from ffe_gym.commands import compare as command

    monkeypatch.syspath_prepend(str(TESTS))
    monkeypatch.chdir(ROOT)

    def run(path: Path, out: Path, *extra: str) -> subprocess.CompletedProcess:
        capsys.readouterr()
        code = command.main(["--experiment", str(path), "--out", str(out), "--reps", "100",
                             "--no-progress", *extra])
        got = capsys.readouterr()
        return subprocess.CompletedProcess([], code, got.out, got.err)

    return run


def runs(out: Path) -> list[Path]:
    """The finished run folders (not a killed run's temporary folder)."""
    return sorted(p.parent for p in out.rglob("metrics.json")
                  if not any(part.startswith(".tmp-") for part in p.parts))


def one_line(stderr: str) -> str:
    lines = [x for x in stderr.splitlines() if x.strip()]
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr
    return lines[0]


def test_a_truncated_or_altered_file_is_damage_listed_by_verify_and_recomputed(tmp_path, here):
    path = experiment(tmp_path, AGENTS)
    out = tmp_path / "runs"
    first = here(path, out)
    assert first.returncode == 0, first.stderr
    ok = here(path, out, "--verify")
    assert ok.returncode == 0 and "8 ok, 0 missing, 0 stale, 0 damaged" in ok.stdout
    a, b, c = runs(out)[:3]
    lines = (a / "equity.csv").read_text().splitlines(keepends=True)
    (a / "equity.csv").write_text("".join(lines[:50]))  # head -n 50
    trades = (b / "trades.csv").read_bytes()
    (b / "trades.csv").write_bytes(trades[: len(trades) // 2])
    weights = bytearray((c / "weights.csv").read_bytes())
    weights[-3] = ord("7") if weights[-3] != ord("7") else ord("8")  # same size, one digit
    (c / "weights.csv").write_bytes(bytes(weights))
    bad = here(path, out, "--verify")
    assert bad.returncode == 1
    damaged = [x for x in bad.stdout.splitlines() if x.startswith("DAMAGED")]
    assert len(damaged) == 3, bad.stdout
    assert any("equity.csv" in x and "truncated" in x for x in damaged)
    assert any("trades.csv" in x and "truncated" in x for x in damaged)
    assert any("weights.csv" in x and "SHA-256" in x for x in damaged)
    assert "5 ok, 0 missing, 0 stale, 3 damaged" in bad.stdout
    again = here(path, out)
    assert again.returncode == 0, again.stderr
    assert counts(again.stdout) == {"new": 0, "reused": 5, "stale": 0, "damaged": 3,
                                    "failed": 0}
    assert here(path, out, "--verify").returncode == 0
    assert len((a / "equity.csv").read_text().splitlines()) == len(lines)


def test_a_short_curve_is_padded_only_when_its_status_says_the_run_ended_early(tmp_path):
    from ffe_gym.evaluation.grid import _log_returns
    from ffe_gym.evaluation.jobs import DamagedRun

    pd.DataFrame({"equity": [100.0, 101.0, 99.0, 99.0]}).to_csv(tmp_path / "equity.csv")
    ruined = _log_returns(str(tmp_path), 6, "ruin")
    assert np.allclose(ruined, [np.log(1.01), np.log(99 / 101), 0, 0, 0, 0])
    assert len(_log_returns(str(tmp_path), 6, "portfolio_stop")) == 6
    assert len(_log_returns(str(tmp_path), 3, "end_of_data")) == 3
    for status, bars in (("end_of_data", 6), ("running", 6), ("ruin", 2)):
        with pytest.raises(DamagedRun, match="3 returns in a window of"):
            _log_returns(str(tmp_path), bars, status)


def test_a_moved_or_copied_tree_is_reused_from_where_it_now_is(tmp_path, here):
    path = experiment(tmp_path, AGENTS)
    first = here(path, tmp_path / "a")
    assert first.returncode == 0, first.stderr
    report = (tmp_path / "a" / "faults" / "summary.json").read_text()
    (tmp_path / "a").rename(tmp_path / "b")  # mv
    moved = here(path, tmp_path / "b")
    assert moved.returncode == 0, moved.stderr
    assert counts(moved.stdout)["reused"] == 8
    shutil.copytree(tmp_path / "b", tmp_path / "c")  # cp -r, then the original goes
    shutil.rmtree(tmp_path / "b")
    copied = here(path, tmp_path / "c")
    assert copied.returncode == 0, copied.stderr
    assert counts(copied.stdout)["reused"] == 8
    results = pd.read_csv(tmp_path / "c" / "faults" / "results.csv")
    assert all(str(f).startswith(str(tmp_path / "c")) for f in results["folder"])
    same = json.loads((tmp_path / "c" / "faults" / "summary.json").read_text())
    before = json.loads(report)
    assert same["table"] == before["table"] and same["tests"] == before["tests"]
    stored = json.loads(next((tmp_path / "c").rglob("metrics.json")).read_text())
    assert not Path(stored["folder"]).is_absolute()


def _limited(limit: int, value: int):
    def apply() -> None:
        resource.setrlimit(limit, (value, value))
    return apply


def _compare_limited(path: Path, out: Path, preexec, *extra: str):
    cmd = [sys.executable, "scripts/compare.py", "--experiment", str(path), "--out", str(out),
           "--reps", "100", "--no-progress", *extra]
    env = os.environ | {"PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
                          preexec_fn=preexec)


def test_a_file_size_cap_ends_in_one_line_and_a_rerun_completes(tmp_path, here):
    path = experiment(tmp_path, AGENTS)
    out = tmp_path / "runs"
    capped = _compare_limited(path, out, _limited(resource.RLIMIT_FSIZE, 4096))
    assert capped.returncode == 2
    line = one_line(capped.stderr)
    assert line.startswith("error: ") and "File too large" in line  # the job's scratch file
    assert "ulimit -f" in line and "run the same command again to resume" in line
    assert not list(out.rglob(".tmp-*"))  # no half-written run folder
    again = here(path, out)
    assert again.returncode == 0, again.stderr
    assert here(path, out, "--verify").returncode == 0


def test_open_files_stay_bounded_whatever_the_grid_size(tmp_path):
    """164 jobs under a limit of 16 open files (macOS's default is 256): a lock is held per
    running job, not one per pending job."""
    path = experiment(tmp_path, [{"name": "random", "policy": "random"}], folds=4,
                      seeds=list(range(40)))
    out = tmp_path / "runs"
    ran = _compare_limited(path, out, _limited(resource.RLIMIT_NOFILE, 16))
    assert ran.returncode == 0, ran.stderr
    assert counts(ran.stdout)["new"] == 164


@pytest.mark.parametrize("code,advice", [(errno.EMFILE, "ulimit -n"),
                                         (errno.ENOSPC, "TMPDIR"),
                                         (errno.EROFS, "writable folder")])
def test_the_error_boundary_names_the_path_and_what_to_do(code, advice, capsys):
    from ffe_gym.commands import run_command

    def failing(_):
        raise OSError(code, os.strerror(code), "/data/runs/x/metrics.json")

    assert run_command(failing, None) == 2
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"error: /data/runs/x/metrics.json: {os.strerror(code)}; ")
    assert advice in line and "finished runs are kept" in line


def test_every_machine_failure_a_job_sends_home_has_a_one_line_message():
    from ffe_gym.commands import FOLDER_ERRORS
    from ffe_gym.evaluation.jobs import MACHINE_ERRNOS

    assert MACHINE_ERRNOS <= FOLDER_ERRORS.keys()


def test_other_errors_are_not_swallowed_by_the_boundary():
    from ffe_gym.commands import run_command

    def failing(_):
        raise FileNotFoundError(errno.ENOENT, "No such file", "x")

    with pytest.raises(FileNotFoundError):
        run_command(failing, None)


def test_a_name_too_long_ends_in_one_line(tmp_path, here):
    path = experiment(tmp_path, AGENTS)
    out = tmp_path / ("x" * 300)
    r = here(path, out)
    assert r.returncode == 2
    line = one_line(r.stderr)
    assert "File name too long" in line and "shorten --out" in line
    assert not list(tmp_path.rglob("metrics.json"))


@pytest.fixture
def small_disk(tmp_path):
    """A 256 KiB tmpfs (root and a mount namespace that allows it; skipped otherwise)."""
    mnt = tmp_path / "disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs here: {r.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_full_disk_then_a_read_only_one_end_in_one_line_keeping_finished_jobs(
        tmp_path, small_disk, here):
    path = experiment(tmp_path, AGENTS, folds=3)
    out = small_disk / "runs"
    full = here(path, out)
    assert full.returncode == 2
    line = one_line(full.stderr)
    assert line.startswith(f"error: {out}") and "No space left on device" in line
    kept = runs(out)
    assert kept, "some jobs fit before the disk filled"
    assert not list(out.rglob(".tmp-*"))
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    ro = here(path, out)
    assert ro.returncode == 2
    assert "Read-only file system" in one_line(ro.stderr)
    assert runs(out) == kept
    subprocess.run(["mount", "-o", "remount,rw,size=8m", str(small_disk)], check=True)
    again = here(path, out)
    assert again.returncode == 0, again.stderr
    c = counts(again.stdout)
    assert c["reused"] == len(kept) and c["new"] + c["reused"] == 12
    assert here(path, out, "--verify").returncode == 0


KILL_AT = """
import os, sys
from ffe_gym.commands import compare
from ffe_gym.evaluation import jobs, runner
from ffe_gym import manifest

point, nth = sys.argv[1], int(sys.argv[2])
seen = [0]

def at_point():
    seen[0] += 1
    if seen[0] == nth:
        os._exit(9)  # as SIGKILL: no cleanup, no flush

real_replace = os.replace
def replace(src, dst):
    name = os.path.basename(str(dst))
    if point == "job-rename" and name.startswith("seed"):
        at_point()
    if point == "report" and name == "report.html":
        at_point()
    return real_replace(src, dst)
os.replace = replace

real_write = jobs.Path.write_bytes
def write_bytes(self, data):
    if point == "job-file" and self.name == "equity.csv":
        at_point()
    return real_write(self, data)
jobs.Path.write_bytes = write_bytes

sys.exit(compare.main(sys.argv[3:]))
"""


@pytest.mark.parametrize("point,nth", [("job-file", 3), ("job-rename", 5), ("report", 1)])
def test_a_driver_killed_at_a_fixed_point_of_writing_leaves_nothing_half_written(
        tmp_path, point, nth, here):
    path = experiment(tmp_path, AGENTS)
    out = tmp_path / "runs"
    args = ["--experiment", str(path), "--out", str(out), "--reps", "100", "--no-progress"]
    killed = subprocess.run([sys.executable, "-c", textwrap.dedent(KILL_AT), point, str(nth),
                             *args], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert killed.returncode == 9, killed.stderr
    finished = runs(out)
    expected = {"job-file": 2, "job-rename": 4, "report": 8}[point]
    assert len(finished) == expected
    assert not (out / "faults" / "report.html").exists()
    again = here(path, out)
    assert again.returncode == 0, again.stderr
    assert counts(again.stdout)["reused"] == expected
    assert not list(out.rglob(".tmp-*"))
    assert here(path, out, "--verify").returncode == 0
    assert (out / "faults" / "report.html").stat().st_size > 0
