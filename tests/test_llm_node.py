"""The embedded models through node-llama-cpp (prebuilt llama.cpp from npm) in a sidecar.

Marked ``llama`` like the in-process tests; skipped where Node.js or the sidecar's npm packages
are missing (``scripts/setup.sh`` installs them). Real models, real processes: replies are
checked for plumbing (schema-valid, counted, replayed exactly), never for trading quality.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from helpers import ensemble_rollout

from ffe_agents.llm import LLMEnsemble
from ffe_agents.llm.backends import make_backend
from ffe_agents.llm.cache import member_prefix
from ffe_agents.llm.config import MemberConfig
from ffe_agents.llm.node_backend import NodeBackend, binding_version, sidecar_available
from ffe_gym.data import synthetic_market
from ffe_gym.evaluation import env_for, rollout

pytestmark = [pytest.mark.llama,
              pytest.mark.skipif(sidecar_available() is not None,
                                 reason=f"node-llama-cpp sidecar: {sidecar_available()}")]

MD = synthetic_market(3, 600, "crypto", seed=8)
WINDOW = (300, 303)
NODE = {"backend": "embedded", "binding": "node-llama-cpp"}


def run(cfg):
    return ensemble_rollout(cfg, MD, WINDOW)


def test_node_binding_live_then_exact_replay(tmp_path):
    cfg = {"members": [
        {"name": "smollm2", "model": "smollm2-135m", "max_tokens": 160, **NODE},
        {"name": "gemma3", "model": "gemma3-270m", "max_tokens": 160, **NODE}],
        "cache_path": str(tmp_path / "c.sqlite"), "model_dir": str(tmp_path / "models"),
        "deadline_seconds": 120}
    live, ens = run(cfg)
    st = live.policy_stats["members"]
    for m in ("smollm2", "gemma3"):
        s = st[m]
        assert s["calls"] == live.steps and s["cache_hits"] == 0 and s["errors"] == 0
        assert s["prompt_tokens"] > 0 and s["completion_tokens"] > 0 and s["truncated"] == 0
        assert s["answers"] + s["parse_failures"] == 3 * live.steps
        assert s["answers"] >= 2 * live.steps
        assert ens.backends[m].info["version"] == binding_version().split("==")[1]
    assert ens.stats()["digests"]["gemma3"].startswith("sha256:")
    assert ens.backends["gemma3"]._proc is None  # closed with the ensemble
    replay, _ = run(cfg | {"cache_mode": "read_only"})
    assert replay.metrics == live.metrics and replay.trades.equals(live.trades)
    for m in ("smollm2", "gemma3"):
        r = replay.policy_stats["members"][m]
        assert r["calls"] == 0 and r["cache_hits"] == replay.steps
    # the models load when the ensemble is reset for an episode, before the first decision and
    # outside its deadline (before: inside the first decision's)
    ens = LLMEnsemble(cfg | {"cache_mode": "off"})
    try:
        ens.bind(env_for(ens, None, MD).unwrapped.layout)
        ens.reset(0)
        assert all(ens.backends[m]._proc is not None for m in ("smollm2", "gemma3"))
        assert ens.decisions == 0 and ens._checked["gemma3"].startswith("sha256:")
    finally:
        ens.close()
    # cache_mode replay: the same result with no sidecar started and no model loaded (the
    # digest check hashes the GGUF file)
    ens = LLMEnsemble(cfg | {"cache_mode": "replay"})
    try:
        strict = rollout(ens, env_for(ens, None, MD), window=WINDOW, seed=0)
        assert all(ens.backends[m]._proc is None for m in ("smollm2", "gemma3"))
        assert ens.stats()["digests"]["gemma3"] == live.policy_stats["digests"]["gemma3"]
    finally:
        ens.close()
    assert strict.metrics == live.metrics and strict.trades.equals(live.trades)


def _prompt():
    schema = {"type": "object", "properties": {
        "BTC": {"type": "object", "properties": {
            "action": {"type": "string", "enum": ["HOLD", "SELL", "BUY"]},
            "confidence": {"type": "number", "enum": [0.0, 0.5, 1.0]}},
            "required": ["action", "confidence"], "additionalProperties": False}},
        "required": ["BTC"], "additionalProperties": False}
    messages = [{"role": "system", "content": "You are a trading assistant. Reply in JSON."},
                {"role": "user", "content": "BTC: RSI 71, momentum falling. Decide for BTC."}]
    return messages, schema


def test_compact_grammar_counts_and_a_dead_sidecar_is_an_error_then_restarts(tmp_path):
    b = NodeBackend(MemberConfig(name="s", model="smollm2-135m", max_tokens=60, **NODE),
                    tmp_path)
    messages, schema = _prompt()
    try:
        r = asyncio.run(b.chat(messages, schema, timeout=120))
        assert r.finish_reason == "stop" and "\n" not in r.text  # no indentation tokens
        assert r.text.startswith("{") and '"BTC"' in r.text
        assert r.prompt_tokens and r.completion_tokens
        # the tokenizer counts the user text alone as fewer tokens than the whole prompt
        assert 0 < b.count_tokens(messages[1]["content"]) < r.prompt_tokens
        b._proc.kill()
        b._proc.wait()
        b._reader.join(timeout=30)
        # a request to the dead process is answered at once with an error, never left waiting
        reply = b._request({"op": "chat", "messages": messages, "schema": schema,
                            "max_tokens": 20, "temperature": 0.0, "seed": 0}).result(timeout=5)
        assert not reply["ok"] and re.search("sidecar (exited|is gone)", reply["error"])
        assert b.count_tokens("x") is None
        again = asyncio.run(b.chat(messages, schema, timeout=120))  # a new sidecar
        assert again.text == r.text  # temperature 0, the same seed
    finally:
        b.close()


def test_bindings_never_share_cache_keys(tmp_path):
    base = {"name": "s", "backend": "embedded", "model": "smollm2-135m"}
    py = make_backend(MemberConfig(**base), tmp_path)
    node = make_backend(MemberConfig(**base, binding="node-llama-cpp"), tmp_path)
    assert isinstance(node, NodeBackend) and not isinstance(py, NodeBackend)
    keys = {member_prefix(backend=b.kind, model="smollm2-135m", options=b.options(),
                          prompt_version="v2") for b in (py, node)}
    assert len(keys) == 2


@pytest.mark.parametrize("abort", [True, False])
def test_node_generation_past_its_deadline_is_stopped_and_counted(tmp_path, abort):
    member = {"name": "smollm2", "model": "smollm2-135m", "max_tokens": 400,
              "abort_at_deadline": abort, **NODE}
    cfg = {"members": [member], "cache_mode": "off", "model_dir": str(tmp_path / "models"),
           "deadline_seconds": 0.05, "retries": 0, "breaker": {"failures": 0}}
    ens = LLMEnsemble(cfg)
    backend = ens.backends["smollm2"]
    backend._load()  # the model is loaded before the clock starts
    ens._checked["smollm2"] = backend.digest
    try:
        r = rollout(ens, env_for(ens, None, MD), window=WINDOW, seed=0)
        backend.drain()  # every cancelled request has been answered: the counters are final
        after = backend.counters.as_dict()
    finally:
        ens.close()
    st = r.policy_stats["members"]["smollm2"]
    assert st["answers"] == 0 and st["calls"] >= 1
    if abort:  # every call that was sent ended cancelled: stopped, or never started
        assert after["aborted"] + after["not_started"] >= st["calls"]
        assert after["aborted"] >= 1 and after["tokens_after_deadline"] == 0
    else:
        assert after["aborted"] == 0 and after["tokens_after_deadline"] > 0
