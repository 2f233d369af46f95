"""The LLM ensemble against llama.cpp itself: in-process, and its OpenAI-compatible server.

Marked ``llama``: they need the compiled backend (``pip install 'ffe-gym[llm]'``); a fast suite
runs ``pytest -m "not llama"``. CI runs them. They assert plumbing (schema-valid decisions,
recorded latency and tokens, exact replays from the cache), never trading quality.
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time

import httpx
import pytest
from helpers import ensemble_rollout

pytestmark = pytest.mark.llama
llama_cpp = pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

from ffe_agents.llm import LLMEnsemble  # noqa: E402
from ffe_agents.llm.backends import embedded_model_path  # noqa: E402
from ffe_gym.data import synthetic_market  # noqa: E402
from ffe_gym.evaluation import env_for, rollout  # noqa: E402

MD = synthetic_market(3, 600, "crypto", seed=8)
WINDOW = (300, 303)


def run(cfg):
    return ensemble_rollout(cfg, MD, WINDOW)


def check_live(result, members):
    st = result.policy_stats["members"]
    for m in members:
        s = st[m]
        assert s["calls"] == result.steps and s["cache_hits"] == 0
        assert s["latency_mean_s"] > 0 and s["prompt_tokens"] > 0 and s["completion_tokens"] > 0
        # grammar-constrained decoding: every reply is readable, most straight from the schema
        assert s["answers"] + s["parse_failures"] == 3 * result.steps
        assert s["answers"] >= 2 * result.steps


def check_replay(live, replay, members):
    assert replay.metrics == live.metrics and replay.trades.equals(live.trades)
    for m in members:
        s = replay.policy_stats["members"][m]
        assert s["calls"] == 0 and s["cache_hits"] == replay.steps


def test_embedded_backend_in_process_and_exact_replay(tmp_path):
    cfg = {"members": [
        {"name": "smollm2", "backend": "embedded", "model": "smollm2-135m", "max_tokens": 160},
        {"name": "gemma3", "backend": "embedded", "model": "gemma3-270m", "max_tokens": 160}],
        "cache_path": str(tmp_path / "c.sqlite"), "model_dir": str(tmp_path / "models"),
        "deadline_seconds": 120}
    live, ens = run(cfg)
    check_live(live, ["smollm2", "gemma3"])
    assert (tmp_path / "models" / "gemma-3-270m-q4_k_m.gguf").exists()  # our path, not ~/.cache
    assert ens.stats()["digests"]["gemma3"].startswith("sha256:")
    replay, _ = run(cfg | {"cache_mode": "read_only"})
    check_replay(live, replay, ["smollm2", "gemma3"])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def llama_server(tmp_path):
    port = _free_port()
    model = embedded_model_path("smollm2-135m", tmp_path)
    log = tmp_path / "server.log"
    with open(log, "wb") as out:  # a file, not a pipe: the server logs a lot while loading
        proc = subprocess.Popen(
            [sys.executable, "-m", "llama_cpp.server", "--model", str(model), "--host",
             "127.0.0.1", "--port", str(port), "--n_ctx", "2048", "--n_threads", "1",
             "--model_alias", "smol"], stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(240):
        if proc.poll() is not None:
            pytest.fail(f"llama_cpp.server exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{url}/v1/models", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.25)
    else:
        proc.kill()
        pytest.fail("llama_cpp.server did not start within 60 s")
    yield url
    proc.terminate()
    proc.wait(timeout=30)


def test_openai_path_against_llama_cpp_server(tmp_path, llama_server):
    cfg = {"members": [{"name": "smol", "backend": "openai", "model": "smol",
                        "base_url": llama_server, "max_tokens": 160}],
           "cache_path": str(tmp_path / "c.sqlite"), "deadline_seconds": 120}
    live, ens = run(cfg)
    check_live(live, ["smol"])
    # llama.cpp's server refuses json_schema with HTTP 500; json_object + schema is remembered
    assert ens.backends["smol"].mode == "json_object"
    assert live.policy_stats["members"]["smol"]["errors"] == 0
    replay, _ = run(cfg | {"cache_mode": "read_only", "members": [
        {**cfg["members"][0], "base_url": "http://127.0.0.1:9"}]})  # no server: cache only
    check_replay(live, replay, ["smol"])


@pytest.mark.parametrize("abort", [True, False])
def test_a_generation_past_its_deadline_is_aborted_and_frees_the_model(tmp_path, abort):
    # before: with a 2 s deadline every decision ended on time but llama.cpp kept generating
    # the abandoned replies (the rollout returned at 8.7 s, the process at 102 s) and later
    # calls queued behind them. abort_at_deadline: false shows that behaviour, counted.
    member = {"name": "smollm2", "backend": "embedded", "model": "smollm2-135m",
              "max_tokens": 400, "abort_at_deadline": abort}
    cfg = {"members": [member], "cache_mode": "off", "model_dir": str(tmp_path / "models"),
           "deadline_seconds": 0.05, "retries": 0, "breaker": {"failures": 0}}
    ens = LLMEnsemble(cfg)
    ens.backends["smollm2"]._load()  # the model is loaded before the clock starts
    ens._checked["smollm2"] = ens.backends["smollm2"].digest
    try:
        r = rollout(ens, env_for(ens, None, MD), window=WINDOW, seed=0)
        backend = ens.backends["smollm2"]
        with backend._lock:  # waits for a generation still running, if any
            counters = r.policy_stats["backends"]["smollm2"]
            after = backend.counters.as_dict()
    finally:
        ens.close()
    st = r.policy_stats["members"]["smollm2"]
    assert st["calls"] + st["not_started"] >= 1 and st["answers"] == 0
    if abort:
        # every generation that started was stopped at its next token; nothing ran on
        assert after["aborted"] == st["calls"] - after["not_started"] >= 1
        assert after["tokens_after_deadline"] == 0
    else:
        assert after["aborted"] == 0 and after["tokens_after_deadline"] > 0
    assert counters["aborted"] <= after["aborted"]
