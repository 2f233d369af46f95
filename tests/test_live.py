"""The live loop: parity with evaluate, restarts after any kill, feed faults, a real ccxt client
against a loopback exchange. No network: every feed here is a file or a server on 127.0.0.1."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import numpy as np
import pandas as pd
import pytest
from helpers import kill_until_done

from ffe_gym.data import synthetic_market
from ffe_gym.evaluation import env_for, resolve_policy, rollout
from ffe_gym.live import FeedError, FileFeed, LiveJournal, LiveLoop
from ffe_gym.live.loop import LiveError

ROOT = Path(__file__).resolve().parents[1]
MD = synthetic_market(3, 470, seed=4)
H = 400  # bars of history: the first decision is at bar H - 1
CFG = {"risk": {"on_portfolio_stop": "flat"}}
HOUR = pd.Timedelta(hours=1)


def rows(lo: int, hi: int, md=MD) -> pd.DataFrame:
    """Bars lo..hi-1 in FinRL's long layout."""
    parts = [pd.DataFrame({"date": md.index[lo:hi], "tic": s, "open": md.open[lo:hi, j],
                           "high": md.high[lo:hi, j], "low": md.low[lo:hi, j],
                           "close": md.close[lo:hi, j], "volume": md.volume[lo:hi, j]})
             for j, s in enumerate(md.symbols)]
    return pd.concat(parts).sort_values(["date", "tic"], kind="stable")


class Clock:
    def __init__(self, t: pd.Timestamp) -> None:
        self.t = t

    def __call__(self) -> pd.Timestamp:
        return self.t


def live_run(policy: str, tmp: Path, *, end: int = MD.n_bars, restart_every: int = 0,
             config=CFG, seed: int = 3, inject=None, kwargs=None) -> LiveLoop:
    """The loop in this process on a file that grows one bar time per poll."""
    path = tmp / "bars.csv"
    rows(0, H).to_csv(path, index=False)
    clock = Clock(MD.index[H - 1] + HOUR)
    make = lambda: LiveLoop(policy, FileFeed(path, 3600), tmp / "out", config=config,  # noqa: E731
                            seed=seed, clock=clock, log=None, policy_kwargs=kwargs)
    loop = make()
    loop.poll()
    for t in range(H, end):
        chunk = rows(t, t + 1)
        if inject is not None:
            chunk = inject(t, chunk)
        chunk.to_csv(path, mode="a", header=False, index=False)
        clock.t = MD.index[t] + HOUR
        loop.poll()
        if restart_every and (t - H) % restart_every == restart_every - 1:
            loop.journal.close()
            loop = make()  # as after a kill between two polls: nothing but the journal
    return loop


def evaluated(policy: str, end: int = MD.n_bars, seed: int = 3):
    p = resolve_policy(policy)
    return rollout(p, env_for(p, CFG, MD), window=(H - 1, end - 1), seed=seed)


def assert_same_run(live, ev) -> None:
    assert live.steps == ev.steps and live.metrics == ev.metrics
    a, b = live.trades.copy(), ev.trades.copy()
    a["time"], b["time"] = a["time"].dt.as_unit("ns"), b["time"].dt.as_unit("ns")
    pd.testing.assert_frame_equal(a, b)
    np.testing.assert_array_equal(live.equity.to_numpy(), ev.equity.to_numpy())
    assert live.refusals == ev.refusals


@pytest.mark.parametrize("policy", ["momentum", "olmar", "random"])
def test_a_live_run_is_the_backtest_of_the_same_bars(tmp_path, policy):
    """momentum reads its observation, OLMAR keeps a portfolio between decisions and reads
    prices through the causal view, random draws from a seeded generator: each gives, bar by
    bar on a growing file, exactly the decisions, fills and equity evaluate gives."""
    loop = live_run(policy, tmp_path)
    assert_same_run(loop.episode(), evaluated(policy))
    d = loop.journal.decisions()
    assert len(d) == MD.n_bars - H + 1 and [x["bar"] for x in d] == list(range(H - 1,
                                                                           MD.n_bars))


def test_restarts_between_polls_rebuild_the_book_and_the_policys_state(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    once = live_run("olmar", tmp_path / "a")
    restarted = live_run("olmar", tmp_path / "b", restart_every=7)
    assert_same_run(restarted.episode(), once.episode())
    for x, y in zip(once.journal.decisions(), restarted.journal.decisions(), strict=True):
        assert x["obs_hash"] == y["obs_hash"] and np.array_equal(x["action"], y["action"])


def test_a_recurrent_policy_resumes_with_its_memory_rebuilt(tmp_path):
    """RecurrentPPO carries an LSTM state from decision to decision: restarted every 6 bars,
    the loop rebuilds it by asking the model again at every journaled decision."""
    pytest.importorskip("sb3_contrib")
    from ffe_agents import sb3

    train_cfg = {**CFG, "env": {"window": 8, "episode_bars": 100},
                 "train": {"eval_freq": 128, "checkpoint_freq": 128, "embargo_bars": 40}}
    spec = sb3.load_agent_spec(ROOT / "configs" / "agents" / "recurrent_ppo.yaml")
    spec.n_envs, spec.policy_kwargs = 2, {"net_arch": [16], "lstm_hidden_size": 8}
    spec.kwargs.update({"n_steps": 32, "batch_size": 32, "n_epochs": 1})
    from ffe_gym.config import Config, from_dict

    model = tmp_path / "model"
    sb3.train(spec, from_dict(Config, train_cfg), synthetic_market(3, 1200, seed=2), model,
              seed=0, timesteps=128, progress=False)
    end = H + 20
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    once = live_run(str(model), tmp_path / "a", end=end)
    restarted = live_run(str(model), tmp_path / "b", end=end, restart_every=6)
    ev = evaluated(str(model), end=end)
    assert_same_run(once.episode(), ev)
    assert_same_run(restarted.episode(), ev)
    actions = np.array([d["action"] for d in once.journal.decisions()])
    assert len(np.unique(actions.round(6), axis=0)) > 1  # it does not answer one thing


def test_the_llm_ensemble_with_memory_resumes_from_its_cache_and_states_its_cutoff(tmp_path):
    """An LLM member (a loopback Ollama whose answer depends on the prompt) with memory: the
    prompts carry its past decisions, so its state matters. Restarted every 5 bars it rebuilds
    that state from its reply cache and ends where an uninterrupted run and evaluate end; the
    journal states the first bar beside the member's declared training cutoff."""
    from ffe_agents.llm.stub import Behaviour, StubServer, decide_all

    def reply(request):
        text = json.dumps(request["messages"])
        return decide_all(request, ("BUY", "SELL", "HOLD")[len(text) % 3], 0.8)

    with StubServer({"m": Behaviour(reply=reply)}) as server:
        def cfg(folder: Path) -> dict:
            return {"members": [{"name": "m", "backend": "ollama", "model": "m",
                                 "base_url": server.url, "training_cutoff": "2021-12"}],
                    "memory": 2, "cache_path": str(folder / "cache.sqlite"),
                    "deadline_seconds": 30}

        end = H + 25
        runs = {}
        for name, every in (("once", 0), ("restarted", 5)):
            (tmp_path / name).mkdir()
            runs[name] = live_run("llm-ensemble", tmp_path / name, end=end,
                                  restart_every=every, kwargs={"config": cfg(tmp_path / name)})
        p = resolve_policy("llm-ensemble", config=cfg(tmp_path / "ev"))
        ev = rollout(p, env_for(p, CFG, MD), window=(H - 1, end - 1), seed=3)
        assert_same_run(runs["once"].episode(), ev)
        assert_same_run(runs["restarted"].episode(), ev)
        assert len(ev.trades) > 0
    calls = [c for d in runs["once"].journal.decisions() for c in d["calls"]]
    assert len(calls) == len(runs["once"].journal.decisions())  # one prompt a decision
    assert all(c["member"] == "m" and len(c["key"]) == 64 for c in calls)
    samples = runs["once"].journal.meta()["samples"]
    assert samples == ["m: trained on data up to 2021-12 (stated); the bars from 2022-01-19 "
                       "on come after it: out of sample"]


def test_a_restart_with_other_settings_or_changed_bars_is_refused(tmp_path):
    loop = live_run("momentum", tmp_path, end=H + 5)
    loop.journal.close()
    feed = FileFeed(tmp_path / "bars.csv", 3600)
    with pytest.raises(LiveError, match="another policy"):
        LiveLoop("olmar", feed, tmp_path / "out", config=CFG, seed=3)
    with pytest.raises(LiveError, match="another seed"):
        LiveLoop("momentum", feed, tmp_path / "out", config=CFG, seed=4)
    # a bar of the journal altered behind the loop's back: the replay names the decision
    db = LiveJournal(tmp_path / "out" / "journal.sqlite")
    db.db.execute("UPDATE bars SET open = open * 1.01, high = high * 1.01, low = low * 1.01, "
                  "close = close * 1.01 WHERE time = ?",
                  (int(MD.index[H + 1].value),))
    db.close()
    clock = Clock(MD.index[H + 5] + HOUR)
    again = LiveLoop("momentum", feed, tmp_path / "out", config=CFG, seed=3, clock=clock,
                     log=None)
    rows(H + 5, H + 6).to_csv(tmp_path / "bars.csv", mode="a", header=False, index=False)
    with pytest.raises(LiveError, match="observation differs"):
        again.poll()


def test_sigkill_at_random_points_then_the_same_command_resumes(tmp_path):
    """The command in a subprocess, killed with SIGKILL at random moments while a writer
    appends bars, run again each time: its journal ends equal to an uninterrupted run's."""
    end = H + 60
    (tmp_path / "ref").mkdir()
    reference = live_run("olmar", tmp_path / "ref", end=end)
    path = tmp_path / "bars.csv"
    rows(0, H).to_csv(path, index=False)
    stop = str(MD.index[end - 1])

    def writer() -> None:
        for t in range(H, end):
            time.sleep(0.15)
            with open(path, "a") as fh:  # one write per bar time, every symbol's line
                fh.write(rows(t, t + 1).to_csv(index=False, header=False))

    cmd = [sys.executable, "-m", "ffe_gym.cli", "live", "--policy", "olmar", "--feed",
           f"file:{path}", "--bar-seconds", "3600", "--out", str(tmp_path / "out"),
           "--poll", "0.02", "--stop-at", stop, "--seed", "3", "--config",
           str(_config(tmp_path)), "--page-every", "0"]
    first = subprocess.run([*cmd, "--max-polls", "1"], capture_output=True, text=True,
                           timeout=300)  # the history and the first decision, then bars flow
    assert first.returncode == 0, first.stderr[-3000:]
    threading.Thread(target=writer, daemon=True).start()
    assert kill_until_done(cmd, seed=7) >= 1
    got = LiveJournal(tmp_path / "out" / "journal.sqlite")
    want = reference.journal
    pd.testing.assert_frame_equal(got.bars(), want.bars())
    a, b = got.decisions(), want.decisions()
    assert [(x["bar"], x["obs_hash"], x["action"].tolist(), x["equity"]) for x in a] == \
        [(x["bar"], x["obs_hash"], x["action"].tolist(), x["equity"]) for x in b]


def _config(tmp: Path) -> Path:
    path = tmp / "config.yaml"
    path.write_text(json.dumps(CFG))
    return path


def test_feed_faults_are_logged_and_the_book_follows_the_first_version(tmp_path):
    """A duplicated bar, a revised bar and a clock behind the feed leave the book as a clean
    run's; each is in the journal's events."""
    (tmp_path / "clean").mkdir()
    (tmp_path / "faulty").mkdir()
    end = H + 20
    clean = live_run("momentum", tmp_path / "clean", end=end)

    def inject(t: int, chunk: pd.DataFrame) -> pd.DataFrame:
        if t == H + 3:  # the same bar twice in the file
            return pd.concat([chunk, chunk.iloc[:1]])
        if t == H + 6:  # bar H + 5 of the first symbol revised after it was taken
            old = rows(H + 5, H + 6).iloc[:1].copy()
            old["close"] *= 1.05
            old["high"] = np.maximum(old["high"], old["close"])
            return pd.concat([chunk, old])
        if t == H + 9:  # a bar stamped far ahead: this clock runs behind the feed's
            ahead = chunk.iloc[:1].copy()
            ahead["date"] = MD.index[t] + pd.Timedelta(days=30)
            return pd.concat([chunk, ahead])
        return chunk

    faulty = live_run("momentum", tmp_path / "faulty", end=end, inject=inject)
    assert_same_run(faulty.episode(), clean.episode())
    kinds = faulty.journal.events()["kind"].value_counts().to_dict()
    assert kinds.get("duplicate") == 1 and kinds.get("revision") == 1
    assert kinds.get("clock_behind") == 1
    revision = faulty.journal.events().query("kind == 'revision'")["detail"].iloc[0]
    assert "taken OHLCV" in revision and "not applied" in revision


def test_a_missing_bar_is_a_closed_market_and_arrives_late_without_effect(tmp_path):
    config = {**CFG, "data": {"calendar": "union"}}
    sym = MD.symbols[1]

    def inject(t: int, chunk: pd.DataFrame) -> pd.DataFrame:
        if t == H + 4:  # symbol 1 has no bar at H + 4 yet ...
            return chunk[chunk["tic"] != sym]
        if t == H + 6:  # ... its H + 5 bar came, and H + 4's comes after that
            return pd.concat([chunk, rows(H + 4, H + 5).query("tic == @sym")])
        return chunk

    loop = live_run("momentum", tmp_path, end=H + 12, config=config, inject=inject)
    ev = loop.journal.events()
    missing = ev.query("kind == 'missing'")
    assert missing["symbol"].tolist() == [sym]
    assert int(missing["time"].iloc[0]) == MD.index[H + 4].value
    assert ev.query("kind == 'late_ignored'")["symbol"].tolist() == [sym]
    md = loop.market()
    row = md.index.get_loc(MD.index[H + 4])
    assert not md.tradable[row, 1] and md.tradable[row, 0]  # held: no order, no stop there
    assert md.close[row, 1] == md.close[row - 1, 1]  # its last close carried


class Flaky:
    """A feed that fails every other call (a FeedError, as an exchange error becomes)."""

    def __init__(self, feed) -> None:
        self.feed, self.calls = feed, 0
        self.symbols, self.bar_seconds = feed.symbols, feed.bar_seconds
        self.grace_seconds, self.path = feed.grace_seconds, feed.path

    def bars(self, since):
        self.calls += 1
        if self.calls % 2 == 0:
            raise FeedError("503 Service Unavailable")
        return self.feed.bars(since)


def test_feed_errors_are_retried_with_backoff_and_counted(tmp_path):
    path = tmp_path / "bars.csv"
    rows(0, H + 6).to_csv(path, index=False)
    clock = Clock(MD.index[H - 1] + HOUR)
    loop = LiveLoop("momentum", Flaky(FileFeed(path, 3600)), tmp_path / "out", config=CFG,
                    seed=3, clock=clock, log=None)
    loop.start()
    clock.t = MD.index[H + 5] + HOUR
    loop.run(poll_seconds=0.001, max_polls=3)
    assert len(loop.journal.decisions()) == 7  # H - 1 .. H + 5
    assert (loop.journal.events()["kind"] == "feed_error").sum() >= 2


# ---------------------------------------------------------------- ccxt against a loopback


class Exchange(BaseHTTPRequestHandler):
    """Binance's documented ``GET /api/v3/klines`` serving MD's bars up to the server's clock
    (the bar still forming included, as Binance does); every eleventh request answers 502."""

    clock: Clock
    requests = 0
    revised: frozenset = frozenset()  # each test's subclass gets a set of its own

    def do_GET(self) -> None:
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        type(self).requests += 1
        if u.path != "/api/v3/klines":
            return self._send(404, {"code": -1, "msg": "not found"})
        if self.requests % 11 == 0:  # a gateway in front of the exchange fails
            return self._send(502, "Bad Gateway")
        j = MD.symbols.index({"SYNC1USDT": "SYN_C1", "SYNC2USDT": "SYN_C2",
                              "SYNC3USDT": "SYN_C3"}[q["symbol"]])
        start = pd.Timestamp(int(q.get("startTime", 0)), unit="ms", tz="UTC")
        lo = int(MD.index.searchsorted(start))
        hi = min(int(MD.index.searchsorted(self.clock(), side="right")),
                 lo + int(q.get("limit", 500)))
        out = []
        for i in range(lo, hi):
            ms = int(MD.index[i].value // 1_000_000)
            close = MD.close[i, j] * (1.02 if (i, j) in self.revised else 1.0)
            out.append([ms, str(MD.open[i, j]), str(max(MD.high[i, j], close)),
                        str(MD.low[i, j]), str(close), str(MD.volume[i, j]), ms + 3_599_999,
                        "0", 1, "0", "0", "0"])
        self._send(200, out)

    def _send(self, code: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_ccxt_client_against_a_loopback_exchange(tmp_path):
    ccxt = pytest.importorskip("ccxt")
    from ffe_gym.live import CcxtFeed

    clock = Clock(MD.index[H - 1] + HOUR + pd.Timedelta(seconds=20))
    handler = type("Handler", (Exchange,), {"clock": clock, "requests": 0, "revised": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        exchange = ccxt.binance({"enableRateLimit": False, "timeout": 5000})
        exchange.urls["api"]["public"] = f"http://127.0.0.1:{server.server_address[1]}/api/v3"
        exchange.set_markets([_market(f"SYNC{k}") for k in (1, 2, 3)])
        symbols = [f"SYNC{k}/USDT" for k in (1, 2, 3)]
        feed = CcxtFeed(exchange, symbols, "1h", grace_seconds=10, limit=1000)
        feed.symbols = tuple(symbols)
        loop = LiveLoop("momentum", _Renamed(feed), tmp_path / "out", config=CFG, seed=3,
                        clock=clock, log=None)
        for _ in range(20):  # the history, through the 503s
            try:
                loop.start()
                break
            except FeedError:
                continue
        end = H + 30
        for t in range(H, end):
            clock.t = MD.index[t] + HOUR + pd.Timedelta(seconds=20)
            if t == H + 10:
                handler.revised.add((H + 8, 0))  # the exchange revises a taken bar
            loop.run(poll_seconds=0.0, max_polls=1)
        assert_same_run(loop.episode(), evaluated("momentum", end=end))
        kinds = loop.journal.events()["kind"].value_counts().to_dict()
        assert kinds.get("feed_error", 0) >= 1 and kinds.get("revision") == 1
    finally:
        server.shutdown()
        server.server_close()


class _Renamed:
    """ccxt's symbols (SYNC1/USDT) under the panel's names (SYN_C1), so one policy run is
    compared with the same run of evaluate."""

    def __init__(self, feed) -> None:
        self.feed = feed
        self.symbols = MD.symbols
        self.bar_seconds, self.grace_seconds = feed.bar_seconds, feed.grace_seconds
        self.exchange = feed.exchange

    def bars(self, since):
        frame = self.feed.bars(since)
        return frame.assign(symbol=frame["symbol"].map(
            {f"SYNC{k}/USDT": f"SYN_C{k}" for k in (1, 2, 3)}))


def _market(base: str) -> dict:
    return {"id": f"{base}USDT", "symbol": f"{base}/USDT", "base": base, "quote": "USDT",
            "baseId": base, "quoteId": "USDT", "type": "spot", "spot": True, "margin": False,
            "swap": False, "future": False, "option": False, "contract": False,
            "linear": None, "inverse": None, "active": True, "precision": {}, "limits": {},
            "info": {}}


def test_the_run_page_is_written_again_as_bars_arrive(tmp_path):
    path = tmp_path / "bars.csv"
    rows(0, H + 3).to_csv(path, index=False)
    clock = Clock(MD.index[H - 1] + HOUR)
    loop = LiveLoop("momentum", FileFeed(path, 3600), tmp_path / "out", config=CFG, seed=3,
                    clock=clock, log=None)
    loop.start()
    seen = []
    for t in (H, H + 2):
        clock.t = MD.index[t] + HOUR
        loop.run(poll_seconds=0.0, max_polls=1, page_seconds=0.0)
        seen.append(json.loads((tmp_path / "out" / "page" / "summary.json").read_text())
                    ["bars_seen"])
    assert seen == [1, 3]
    sheet = pd.read_csv(tmp_path / "out" / "page" / "tearsheet.csv")
    assert list(sheet.columns) == ["metric", "momentum", "reference: buy-and-hold"]


def test_status_prints_the_book_and_writes_the_run_page(tmp_path):
    live_run("momentum", tmp_path, end=H + 15)
    r = subprocess.run([sys.executable, "-m", "ffe_gym.cli", "live", "--status",
                        str(tmp_path / "out")], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "policy momentum" in r.stdout and "16 decisions" in r.stdout
    assert "over 15 bars since the first decision" in r.stdout
    page = tmp_path / "out" / "page"
    assert (page / "equity.csv").exists() and (page / "tearsheet.csv").exists()
    summary = json.loads((page / "summary.json").read_text())
    assert summary["live"] is True and summary["bars_seen"] == 15


class AlpacaData(BaseHTTPRequestHandler):
    """Alpaca's documented ``GET /v2/stocks/bars`` (bars keyed by symbol, ``t, o, h, l, c, v``,
    pages joined by ``next_page_token``) serving MD's closed bars up to the server's clock."""

    clock: Clock
    keys: frozenset = frozenset()  # each test's subclass gets a set of its own
    page = 25

    def do_GET(self) -> None:
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        self.keys.add(self.headers.get("APCA-API-KEY-ID"))
        if u.path != "/v2/stocks/bars":
            return self._send(404, {"message": "not found"})
        symbols = q["symbols"].split(",")
        start = pd.Timestamp(q["start"])
        start = start.tz_localize("UTC") if start.tzinfo is None else start
        lo = int(MD.index.searchsorted(start))
        now = self.clock() - (HOUR if getattr(self, "closed_only", False) else pd.Timedelta(0))
        hi = int(MD.index.searchsorted(now, side="right"))
        offset = int(q.get("page_token") or 0)
        rows = [(i, s) for i in range(lo, hi) for s in symbols]
        chunk = rows[offset: offset + self.page]
        bars: dict = {}
        for i, s in chunk:
            j = MD.symbols.index(s)
            bars.setdefault(s, []).append({
                "t": MD.index[i].strftime("%Y-%m-%dT%H:%M:%SZ"), "o": MD.open[i, j],
                "h": MD.high[i, j], "l": MD.low[i, j], "c": MD.close[i, j],
                "v": MD.volume[i, j], "n": 1, "vw": MD.close[i, j]})
        more = offset + self.page < len(rows)
        self._send(200, {"bars": bars, "next_page_token": str(offset + self.page) if more
                         else None})

    _send = Exchange._send

    def log_message(self, *args) -> None:
        pass


def test_alpaca_data_client_against_a_loopback_server(tmp_path, monkeypatch):
    pytest.importorskip("alpaca")
    from ffe_gym.live.feeds import AlpacaFeed

    monkeypatch.setenv("ALPACA_API_KEY", "PKTESTKEY123")
    monkeypatch.setenv("ALPACA_SECRET_KEY", "secret-never-written")
    clock = Clock(MD.index[H - 1] + HOUR + pd.Timedelta(seconds=20))
    handler = type("Handler", (AlpacaData,), {"clock": clock, "keys": set()})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        feed = AlpacaFeed(MD.symbols, "1Hour", history_start="2022-01-01",
                          url=f"http://127.0.0.1:{server.server_address[1]}")
        loop = LiveLoop("momentum", feed, tmp_path / "out", config=CFG, seed=3, clock=clock,
                        log=None)
        end = H + 12
        for t in range(H - 1, end):
            clock.t = MD.index[t] + HOUR + pd.Timedelta(seconds=20)
            loop.poll()
        assert_same_run(loop.episode(), evaluated("momentum", end=end))
        assert handler.keys == {"PKTESTKEY123"}
        journal = (tmp_path / "out" / "journal.sqlite").read_bytes()
        assert b"secret-never-written" not in journal and b"PKTESTKEY123" not in journal
    finally:
        server.shutdown()
        server.server_close()


class AlpacaTrading(BaseHTTPRequestHandler):
    """Alpaca's paper-trading endpoints the broker uses: ``POST /v2/orders`` (a
    ``client_order_id`` seen before is refused with 422, as Alpaca does), ``GET
    /v2/orders:by_client_order_id``, ``GET /v2/positions``, ``GET /v2/account``. The reply to
    the third order is lost (the order is kept, the client gets a 500)."""

    orders: dict
    posts = 0
    extra: dict  # positions the book does not know (to see them reported)

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).posts += 1
        cid = body["client_order_id"]
        if cid in self.orders:
            return self._send(422, {"code": 40010001,
                                    "message": "client_order_id must be unique"})
        self.orders[cid] = body
        if self.posts == 3:
            return self._send(500, {"code": 50010000, "message": "internal server error"})
        self._send(200, _order_json(body))

    def do_GET(self) -> None:
        u = urlparse(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        if u.path == "/v2/orders:by_client_order_id":
            return self._send(200, _order_json(self.orders[q["client_order_id"]]))
        if u.path == "/v2/positions":
            held: dict = dict(self.extra)
            for o in self.orders.values():
                sign = 1 if o["side"] == "buy" else -1
                held[o["symbol"]] = held.get(o["symbol"], 0.0) + sign * float(o["qty"])
            return self._send(200, [_position_json(s, q) for s, q in held.items()
                                    if abs(q) > 1e-12])
        if u.path == "/v2/account":
            return self._send(200, {"id": "00000000-0000-0000-0000-0000000000aa",
                                    "account_number": "PA1", "status": "ACTIVE",
                                    "cash": "10000"})
        self._send(404, {"message": "not found"})

    _send = Exchange._send

    def log_message(self, *args) -> None:
        pass


def _order_json(body: dict) -> dict:
    now = "2022-01-20T00:00:00Z"
    return {"id": "00000000-0000-0000-0000-" + f"{abs(hash(body['client_order_id'])):012d}"[:12],
            "client_order_id": body["client_order_id"], "created_at": now, "updated_at": now,
            "submitted_at": now, "order_class": "simple", "time_in_force": "day",
            "status": "accepted", "extended_hours": False, "symbol": body["symbol"],
            "qty": body["qty"], "side": body["side"], "type": "market"}


def _position_json(symbol: str, qty: float) -> dict:
    return {"asset_id": "00000000-0000-0000-0000-000000000001", "symbol": symbol,
            "exchange": "NASDAQ", "asset_class": "us_equity", "avg_entry_price": "1",
            "qty": str(abs(qty)), "side": "long" if qty > 0 else "short", "cost_basis": "1"}


def test_paper_orders_are_sent_once_and_the_broker_is_reconciled(tmp_path, monkeypatch):
    """Every engine fill becomes one order with an id derived from it: the reply to one order
    is lost, the loop is restarted twice, and the broker still holds exactly the book's
    positions; a position the book does not know is reported at the next start, not taken."""
    pytest.importorskip("alpaca")
    from ffe_gym.live.broker import AlpacaPaperBroker

    monkeypatch.setenv("ALPACA_API_KEY", "PKTESTKEY123")
    monkeypatch.setenv("ALPACA_SECRET_KEY", "secret-never-written")
    handler = type("Handler", (AlpacaTrading,), {"orders": {}, "posts": 0, "extra": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    path = tmp_path / "bars.csv"
    rows(0, H).to_csv(path, index=False)
    clock = Clock(MD.index[H - 1] + HOUR)

    def make() -> LiveLoop:
        return LiveLoop("momentum", FileFeed(path, 3600), tmp_path / "out", config=CFG, seed=3,
                        clock=clock, log=None, broker=AlpacaPaperBroker(url=url))

    try:
        loop = make()
        end = H + 30
        for t in range(H - 1, end):
            if t >= H:
                rows(t, t + 1).to_csv(path, mode="a", header=False, index=False)
            clock.t = MD.index[t] + HOUR
            loop.run(poll_seconds=0.0, max_polls=1)
            if t in (H + 8, H + 20):
                loop.journal.close()
                loop = make()
        handler.extra["SYN_C9"] = 5.0
        final = make()
        final.poll()
        fills = final.episode().trades
        orders = final.journal.orders()
        assert len(orders) == len(fills) and {o[4] for o in orders} <= {"sent", "duplicate"}
        assert len(handler.orders) == len(fills)  # every fill placed once, none twice
        assert sum(o[4] == "duplicate" for o in orders) == 1  # the order whose reply was lost
        book = final.market()
        env = env_for(final.policy, CFG, book)
        final._replay(env, final.journal.decisions(), H - 1, book.n_bars - 1)
        units = dict(zip(book.symbols, env.unwrapped.portfolio.units[0], strict=True))
        held, _ = final.broker.holdings()
        for sym in MD.symbols:
            assert held.get(sym, 0.0) == pytest.approx(units[sym], abs=1e-9)
        reports = final.journal.events().query("kind == 'reconcile'")["detail"].tolist()
        assert len(reports) == 4  # at each start: the first, two restarts, the last
        assert reports[0] == ("positions agree; cash: book 10,000.00, broker 10,000.00 (the "
                              "broker fills at its own prices and costs)")
        assert all(r.startswith("positions agree") for r in reports[1:3]), reports
        assert reports[3].startswith("positions differ: SYN_C9: book +0, broker +5")
    finally:
        server.shutdown()
        server.server_close()


class AlpacaBoth(AlpacaData):
    """Alpaca's data and paper-trading endpoints on one loopback server (both clients take one
    base URL), serving closed bars only."""

    closed_only = True
    orders: dict
    posts = 0
    extra: dict

    def do_GET(self) -> None:
        if urlparse(self.path).path == "/v2/stocks/bars":
            return AlpacaData.do_GET(self)
        return AlpacaTrading.do_GET(self)

    do_POST = AlpacaTrading.do_POST


def test_sigkill_with_alpaca_data_and_paper_orders_places_every_fill_once(tmp_path):
    """The command on Alpaca's data and paper-trading APIs (loopback), SIGKILLed at random
    moments while bars appear: it ends with the uninterrupted run's decisions, and the broker
    holds one order per fill of the book, the one whose reply was lost included."""
    pytest.importorskip("alpaca")
    end = H + 40
    (tmp_path / "ref").mkdir()
    reference = live_run("momentum", tmp_path / "ref", end=end)
    clock = Clock(MD.index[H - 1] + HOUR)
    handler = type("Handler", (AlpacaBoth,), {"clock": clock, "keys": set(), "orders": {},
                                              "posts": 0, "extra": {}})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    env = {**os.environ, "ALPACA_API_KEY": "PKTESTKEY123", "ALPACA_SECRET_KEY": "s3cr3t"}
    cmd = [sys.executable, "-m", "ffe_gym.cli", "live", "--policy", "momentum", "--feed",
           "alpaca:stocks", "--symbols", *MD.symbols, "--feed-url", url, "--history-start",
           "2022-01-01", "--broker", "alpaca-paper", "--broker-url", url, "--out",
           str(tmp_path / "out"), "--poll", "0.02", "--stop-at", str(MD.index[end - 1]),
           "--seed", "3", "--config", str(_config(tmp_path)), "--page-every", "0"]
    try:
        first = subprocess.run([*cmd, "--max-polls", "1"], capture_output=True, text=True,
                               env=env, timeout=300)
        assert first.returncode == 0, first.stderr[-3000:]

        def bars_appear() -> None:
            for t in range(H, end):
                time.sleep(0.15)
                clock.t = MD.index[t] + HOUR

        threading.Thread(target=bars_appear, daemon=True).start()
        assert kill_until_done(cmd, seed=11, env=env) >= 1
        got = LiveJournal(tmp_path / "out" / "journal.sqlite")
        a, b = got.decisions(), reference.journal.decisions()
        assert [(x["bar"], x["obs_hash"], x["action"].tolist()) for x in a] == \
            [(x["bar"], x["obs_hash"], x["action"].tolist()) for x in b]
        fills = reference.episode().trades
        orders = got.orders()
        assert len(handler.orders) == len(orders) == len(fills)  # one order per fill
        assert sorted(o[3] for o in orders) == sorted(fills["units"].tolist())
        assert {o[4] for o in orders} <= {"sent", "duplicate"}
    finally:
        server.shutdown()
        server.server_close()
