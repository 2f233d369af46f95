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
from dataclasses import dataclass

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
        # llama-cpp-python's server streams no usage: its prompt tokens are unknown (counted)
        unsent = result.policy_stats["backends"][m].get("usage_not_sent", 0)
        assert s["latency_mean_s"] > 0 and s["completion_tokens"] > 0
        assert s["prompt_tokens"] > 0 or unsent == s["calls"]
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


@dataclass
class Server:
    url: str
    proc: subprocess.Popen


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
    yield Server(url, proc)
    if proc.poll() is None:
        proc.terminate()
        proc.wait(timeout=30)


def test_openai_path_against_llama_cpp_server(tmp_path, llama_server):
    cfg = {"members": [{"name": "smol", "backend": "openai", "model": "smol",
                        "base_url": llama_server.url, "max_tokens": 160}],
           "cache_path": str(tmp_path / "c.sqlite"), "deadline_seconds": 120}
    live, ens = run(cfg)
    check_live(live, ["smol"])
    # llama.cpp's server refuses json_schema with HTTP 500; json_object + schema is remembered
    assert ens.backends["smol"].mode == "json_object"
    assert live.policy_stats["members"]["smol"]["errors"] == 0
    replay, _ = run(cfg | {"cache_mode": "read_only", "members": [
        {**cfg["members"][0], "base_url": "http://127.0.0.1:9"}]})  # no server: cache only
    check_replay(live, replay, ["smol"])


LONG = {"type": "object", "properties": {"text": {"type": "string", "minLength": 4000}},
        "required": ["text"]}
SHORT = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
ASK = [{"role": "user", "content": "Write a long text."}]


def test_a_streamed_reply_is_closed_at_its_deadline_and_the_server_stops_generating(
        llama_server):
    """A member cut off at its deadline closes the stream; llama.cpp's server stops that
    generation on the disconnect, so the next request is served at once instead of queueing
    behind thousands of abandoned tokens (without streaming it waited for all of them). A
    killed server then answers the next call at once, with an error."""
    import asyncio

    from ffe_agents.llm.backends import BackendError, OpenAIBackend
    from ffe_agents.llm.config import MemberConfig

    backend = OpenAIBackend(MemberConfig(name="smol", backend="openai", model="smol",
                                         base_url=llama_server.url))
    backend.settle("json_object")

    async def scenario():
        with pytest.raises(BackendError) as cut:  # 2,000 tokens cannot come within 1 s
            await backend.chat(ASK, LONG, timeout=1.0, max_tokens=2000)
        t0 = time.perf_counter()
        reply = await backend.chat(ASK, SHORT, timeout=120.0, max_tokens=8)
        after = time.perf_counter() - t0
        llama_server.proc.kill()
        llama_server.proc.wait(timeout=30)
        t1 = time.perf_counter()
        with pytest.raises(BackendError) as dead:
            await backend.chat(ASK, SHORT, timeout=120.0, max_tokens=8)
        gone = time.perf_counter() - t1
        await backend.aclose()
        return cut.value, reply, after, dead.value, gone

    cut, reply, after, dead, gone = asyncio.run(scenario())
    assert cut.kind == "timeout" and backend.counters.extra["closed_at_deadline"] == 1
    assert reply.finish_reason in ("stop", "length") and 0 < reply.completion_tokens <= 8
    # the abandoned generation had 2,000 tokens to go (about a minute on one thread here)
    assert after < 20.0, f"the next request waited {after:.1f} s: it queued behind the cut one"
    assert dead.kind == "unreachable" and gone < 10.0


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
