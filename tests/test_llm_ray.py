"""The LLM ensemble on the process and ray backends. On ray its reply cache travels to the job
as a snapshot, the replies a job adds come back and the driver merges them, so a second run
replays exactly with no server (and no worker ever writes the driver's cache file)."""

from __future__ import annotations

import sqlite3

import pytest
import yaml

pytest.importorskip("ray")

from ffe_agents.llm.stub import Behaviour, StubServer
from ffe_gym.evaluation import experiment as ex
from ffe_gym.evaluation import runner


def _experiment(tmp_path, llm_cfg):
    exp = {"name": "llm-ray",
           "config": {"risk": {"on_portfolio_stop": "flat", "var_window": 20},
                      "env": {"window": 8}},
           "datasets": [{"name": "syn", "data": {"source": "synthetic", "synthetic": {
               "n_assets": 2, "n_bars": 700, "seed": 4}}}],
           "folds": {"n_folds": 2, "train": 300, "validation": 50, "test": 72},
           "seeds": [0],
           "agents": [{"name": "llm", "policy": "llm-ensemble",
                       "kwargs": {"config": str(llm_cfg)}, "decide_every": 24}]}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp, sort_keys=False))
    return ex.load_experiment(path)


def _rows(path):
    with sqlite3.connect(path) as db:
        return db.execute("SELECT COUNT(*) FROM replies").fetchone()[0]


@pytest.mark.parametrize("backend", ["process", "ray"])
def test_replies_come_home_from_ray_jobs_and_replay_exactly(tmp_path, backend):
    # process: the workers write the shared cache file concurrently; ray: the driver merges
    # the rows its jobs return. Either way every reply is kept and the replay is exact.
    cache = tmp_path / "driver-cache.sqlite"
    cfg = tmp_path / "llm.yaml"
    with StubServer({"m1": Behaviour(), "m2": Behaviour()}) as s:
        members = (f"members:\n  - {{name: a, backend: ollama, model: m1, base_url: '{s.url}'}}\n"
                   f"  - {{name: b, backend: ollama, model: m2, base_url: '{s.url}'}}\n")
        cfg.write_text(members + f"cache_path: '{cache}'\n")
        live = runner.run_jobs(ex.jobs(_experiment(tmp_path, cfg), tmp_path / "runs"),
                               backend, workers=2, progress=False)
        calls = len([r for r in s.requests if r["path"] == "/api/chat"])
    llm = [r for r in live if r["agent"] == "llm"]
    assert len(llm) == 2 and all(r["reuse"] == "new" for r in llm)
    assert calls > 0 and _rows(cache) == calls  # every reply reached the driver's cache
    # the server is gone; read-only replay on ray: the same numbers, no call
    cfg.write_text(members + f"cache_path: '{cache}'\ncache_mode: read_only\n")
    replay = runner.run_jobs(ex.jobs(_experiment(tmp_path, cfg), tmp_path / "runs"),
                             backend, workers=2, progress=False)
    again = [r for r in replay if r["agent"] == "llm"]
    assert all(r["reuse"] == "stale" for r in again)  # the LLM config changed: recomputed
    key = ("fold", "final_equity", "trades")
    assert sorted(tuple(r[k] for k in key) for r in again) == sorted(
        tuple(r[k] for k in key) for r in llm)
    for r in again:
        members = r["policy_stats"]["members"]
        assert all(m["calls"] == 0 and m["cache_hits"] > 0 for m in members.values())


def test_a_carried_job_writes_its_copy_never_the_drivers_cache(tmp_path):
    from ffe_gym.evaluation.jobs import compute_job

    cache = tmp_path / "driver-cache.sqlite"
    cfg = tmp_path / "llm.yaml"
    with StubServer({"m1": Behaviour()}) as s:
        cfg.write_text(f"members:\n  - {{name: a, backend: ollama, model: m1, base_url: "
                       f"'{s.url}'}}\ncache_path: '{cache}'\n")
        spec = next(j for j in ex.jobs(_experiment(tmp_path, cfg), tmp_path / "runs")
                    if j.agent["name"] == "llm")
        carried = runner.carry(spec)
        assert set(carried.carried) == {"cache"}
        result = compute_job(carried, runner._market(spec))
    assert "error" not in result, result.get("error")
    assert len(result["carried"]["cache"]) > 0
    assert not cache.exists()  # the job wrote its copy; only the driver merges
    from ffe_agents.llm.ensemble import LLMEnsemble

    LLMEnsemble.merge_carried(result["carried"], config=str(cfg))
    assert _rows(cache) == len(result["carried"]["cache"])


def test_gguf_files_named_by_path_travel_with_the_job(tmp_path):
    from ffe_agents.llm.ensemble import LLMEnsemble

    model = tmp_path / "my-model.gguf"
    model.write_bytes(b"GGUF not really")
    cfg = tmp_path / "llm.yaml"
    cfg.write_text(f"members:\n  - {{name: local, backend: embedded, model: '{model}'}}\n"
                   "cache_path: null\n")
    state = LLMEnsemble.carry_state(config=str(cfg))
    assert state == {"model/local": b"GGUF not really"}
    copy = tmp_path / "elsewhere.gguf"
    copy.write_bytes(state["model/local"])
    ens = LLMEnsemble(config=str(cfg), carried={"model/local": str(copy)})
    assert ens.members["local"].model == str(copy)
