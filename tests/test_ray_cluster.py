"""The ray backend against a real two-node cluster started with ``ray start`` on loopback.

Ray rewrites 127.0.0.1 given as a node address into the machine's outward address, so the
head and the worker node bind to other loopback addresses (127.0.0.2, 127.0.0.3): every
socket stays on this machine's loopback range. Each node has its own ``--temp-dir``, one CPU
and a 200 MB object store; token authentication uses a token file made by the test; the test
stops the cluster.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ray = pytest.importorskip("ray")

ROOT = Path(__file__).resolve().parents[1]
HEAD, WORKER = "127.0.0.2", "127.0.0.3"


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ray")
    token = tmp / "token"
    token.write_text(secrets.token_hex(32))
    env = os.environ | {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token),
                        "RAY_USAGE_STATS_ENABLED": "0"}
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = _free_port(HEAD)
    common = ["--num-cpus", "1", "--object-store-memory", "200000000", "--disable-usage-stats"]
    try:
        subprocess.run([ray_bin, "start", "--head", f"--node-ip-address={HEAD}",
                        f"--port={port}", "--include-dashboard=false",
                        f"--temp-dir={tmp / 'head'}", *common],
                       env=env, check=True, capture_output=True, timeout=180)
        subprocess.run([ray_bin, "start", f"--address={HEAD}:{port}",
                        f"--node-ip-address={WORKER}", f"--temp-dir={tmp / 'worker'}",
                        *common], env=env, check=True, capture_output=True, timeout=180)
        yield f"{HEAD}:{port}", env
    finally:
        subprocess.run([ray_bin, "stop", "--force"], env=env, capture_output=True, timeout=120)
        shutil.rmtree(tmp / "head", ignore_errors=True)
        shutil.rmtree(tmp / "worker", ignore_errors=True)


def _experiment(where: Path) -> Path:
    exp = {"name": "cluster",
           "config": {"risk": {"on_portfolio_stop": "flat", "var_window": 20},
                      "env": {"window": 8}},
           "datasets": [{"name": "syn", "data": {"source": "synthetic", "synthetic": {
               "n_assets": 3, "n_bars": 900, "seed": 1}}}],
           "folds": {"n_folds": 2, "train": 300, "validation": 50, "test": 100},
           "seeds": [0, 1],
           "agents": [{"name": "momentum", "policy": "momentum"},
                      {"name": "random", "policy": "random"}]}
    path = where / "cluster.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return path


def test_compare_on_a_two_node_cluster_equals_serial(cluster, tmp_path):
    address, env = cluster
    path = _experiment(tmp_path)
    run = tmp_path / "driver"
    run.mkdir()
    cmd = [sys.executable, str(ROOT / "scripts" / "compare.py"), "--experiment", str(path),
           "--reps", "100", "--no-progress"]
    on_ray = subprocess.run(cmd + ["--out", "relative-runs", "--backend", "ray", "--address",
                                   address], cwd=run, env=env, capture_output=True, text=True,
                            timeout=600)
    assert on_ray.returncode == 0, on_ray.stderr[-3000:]
    serial = subprocess.run(cmd + ["--out", str(tmp_path / "serial")], cwd=run,
                            capture_output=True, text=True, timeout=600)
    assert serial.returncode == 0, serial.stderr[-3000:]
    import pandas as pd

    a = pd.read_csv(run / "relative-runs" / "cluster" / "results.csv")
    b = pd.read_csv(tmp_path / "serial" / "cluster" / "results.csv")
    key = ["variant", "fold", "agent", "seed"]
    a, b = a.sort_values(key).reset_index(drop=True), b.sort_values(key).reset_index(drop=True)
    assert a[key + ["final_equity", "trades"]].equals(b[key + ["final_equity", "trades"]])
    # the run folders were written by the driver under its own (relative) output folder
    assert all(Path(f).is_relative_to(run / "relative-runs") for f in a["folder"])
    assert len(list((run / "relative-runs").rglob("metrics.json"))) == len(a)


def test_workers_never_write_run_folders(tmp_path):
    from ffe_gym.evaluation import experiment as ex
    from ffe_gym.evaluation import runner

    exp = ex.load_experiment(_experiment(tmp_path))
    specs = ex.jobs(exp, tmp_path / "nowhere")
    out = runner.compute_chain(specs[:3], runner._market(specs[0]))
    assert all("files" in r and "metrics.json" in r["files"] for r in out)
    assert not (tmp_path / "nowhere").exists()
