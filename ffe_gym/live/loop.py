"""The live loop: a policy trades a paper book on bars as they close, with the backtest's step.

Each poll takes the feed's newly closed bars into the journal (:mod:`ffe_gym.live.journal`),
then, for each new bar t in time order, rebuilds the market from the journal's bars up to t,
builds the env exactly as ``evaluate`` would (:func:`~ffe_gym.evaluation.env_for`: the same
config, rules and costs), resets it at the first live bar and steps it with the journal's
actions. The book at t is therefore a function of the journal alone: nothing is kept in memory
that a restart could lose. At a decision bar the policy is asked for its action on the
observation at t and the decision is committed before the loop goes on.

* **Restarts**: killed at any point, the same command resumes. The policy's own state (OLMAR's
  portfolio, a recurrent network's memory, the LLM ensemble's memory) is rebuilt on the first
  decision after a start by asking the policy again at every journaled decision, in order: each
  observation must hash as journaled and each action must equal the journaled one (an LLM
  answers from its reply cache), or the loop stops naming the decision.
* **Decisions** every ``portfolio.rebalancing_frequency`` bars from the first live bar (a number
  of bars: an offset such as ``"1D"`` decides on a period's last bar, which a live feed knows only
  when the next bar arrives, and is refused).
* **Feed faults**: a bar re-sent unchanged is ignored; a bar that changes after it was taken is
  logged with both versions (``revision``) and never applied to the past; a bar that arrives
  after a later bar of its symbol was taken is logged (``late_ignored``); a time at which a
  symbol has no bar while it has a later one is taken without it (the calendar treats the cell
  as a closed market: no order, no stop, until prices return); a feed error is retried with
  backoff and counted (``feed_error``); a bar stamped after the loop's clock says the clock runs
  behind the feed (``clock_behind``).
* **Parity**: on a fault-free feed the decisions, fills and equity are those ``evaluate`` gives
  on the same bars, policy, config and seed (tested).
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ffe_gym.config import Config, ConfigError, coerce_config, to_dict
from ffe_gym.data import DataError, MarketData, from_frames
from ffe_gym.evaluation import env_for, resolve_policy, rollout
from ffe_gym.evaluation.policy import PolicyBase, PolicyError, hook, sample_lines
from ffe_gym.live.feeds import COLUMNS, Feed, FeedError, closed
from ffe_gym.live.journal import PRICE_COLUMNS, LiveJournal

Clock = Callable[[], pd.Timestamp]


class LiveError(RuntimeError):
    """The journal and this run disagree (another policy or config, a decision that replays
    differently): the loop stops rather than trade on a book it cannot reproduce."""


def utc_now() -> pd.Timestamp:
    return pd.Timestamp.now(tz="UTC")


def obs_hash(obs: Any) -> str:
    h = hashlib.sha256()
    parts = [obs[k] for k in sorted(obs)] if isinstance(obs, dict) else [obs]
    for p in parts:
        h.update(np.ascontiguousarray(p).tobytes())
    return h.hexdigest()


class LiveLoop:
    """One live run: a policy, a feed, a config, a journal folder.

    :param policy: a registered name, ``"module:Class"`` or a model folder (as ``evaluate``).
    :param feed: where bars come from (:mod:`ffe_gym.live.feeds`).
    :param out: the run's folder: ``journal.sqlite`` and the run page.
    :param config: a config path, mapping or :class:`Config` (rules, costs, capital).
    :param seed: the policy's and the env's seed.
    :param policy_kwargs: passed to the policy (``config=`` for the LLM ensemble).
    :param clock: the time now (UTC); a test passes an accelerated one.
    :param log: where status lines go (None: nowhere).
    :param broker: where the book's fills go as orders (:mod:`ffe_gym.live.broker`), or None
        (the engine's paper fills only).
    """

    def __init__(self, policy: str, feed: Feed, out: str | Path,
                 config: Config | dict | str | Path | None = None, seed: int = 0,
                 policy_kwargs: dict[str, Any] | None = None, clock: Clock = utc_now,
                 log: Callable[[str], None] | None = print, broker: Any = None) -> None:
        self.out = Path(out)
        self.feed, self.seed, self.clock, self.log = feed, int(seed), clock, log
        self.broker = broker
        self._reconciled = broker is None
        self.config = coerce_config(config)
        frequency = self.config.portfolio.rebalancing_frequency
        if not isinstance(frequency, int):
            raise ConfigError(f"portfolio.rebalancing_frequency: {frequency!r}: the live loop "
                              "decides every k bars (an offset decides on a period's last bar, "
                              "known only when the next bar arrives); give a number of bars")
        self.every = frequency
        self.policy_spec = policy
        kwargs = dict(policy_kwargs or {})
        from ffe_gym.evaluation.experiment import policy_class

        cls = policy_class({"policy": policy})
        if cls is not None and hook(cls, "takes_out"):  # its state (an LLM's replies) here
            kwargs.setdefault("out", str(self.out))
        self.policy = resolve_policy(policy, **kwargs)
        self.journal = LiveJournal(self.out / "journal.sqlite")
        self.settings = {"policy": policy, "config": to_dict(self.config), "seed": self.seed,
                         "symbols": list(feed.symbols), "bar_seconds": feed.bar_seconds,
                         "policy_kwargs": {k: str(v) for k, v in (policy_kwargs or {}).items()}}
        meta = self.journal.meta()
        if meta:
            for key, value in self.settings.items():
                if meta.get(key) != value:
                    raise LiveError(f"{self.journal.path}: this run was started with another "
                                    f"{key} ({meta.get(key)!r}, now {value!r}); use another "
                                    "--out, or the same settings to resume")
        self.meta = meta
        self._ready = False  # the policy's state is rebuilt at the first decision of a process
        self._market: tuple[int, MarketData] | None = None
        self._clock_warned = False
        self.backoff = 0.0

    # --------------------------------------------------------------------------- starting
    @property
    def started(self) -> bool:
        return "start_time" in self.meta

    def start(self) -> None:
        """First run: take the feed's closed history and make its newest bar the first live
        bar (the first decision). A restart does nothing here."""
        if self.started:
            return
        rows = closed(self._fetch(None), self.clock(), self.feed.bar_seconds,
                      self.feed.grace_seconds)
        rows, events = _dedupe(rows)
        if rows.empty:
            raise DataError("the feed has no closed bar yet", file=_where(self.feed))
        md = self._build(rows, pin=None)
        env = env_for(self.policy, self.config, md)
        if md.n_bars - 1 < env.unwrapped.core.first_bar:
            raise DataError(f"{md.n_bars} bars of history; the policy's observation and the "
                            f"rules need {env.unwrapped.core.first_bar + 1} (features, window, "
                            "correlation and VaR lookbacks)", file=_where(self.feed))
        self.journal.take(rows, events)
        samples = sample_lines(self.policy, md.index[-1])
        self.meta = {**self.settings, "start_time": int(md.index[-1].value),
                     "run_id": os.urandom(4).hex(),
                     "periods_per_year": md.periods_per_year, "history_bars": md.n_bars,
                     "status": "running", "samples": samples}
        self.journal.write_meta(self.meta)
        self._say(f"history: {md.describe()}; first live bar {md.index[-1]}")
        for line in samples:
            self._say(line)
        self.catch_up()

    # ------------------------------------------------------------------------------ polling
    def poll(self) -> int:
        """Take what the feed has closed since the last bar; advance the book bar by bar.
        Returns the number of bar times taken."""
        self.start()
        last = self.journal.last_time()
        overlap = int(self.feed.bar_seconds * 1e9) * 3  # re-read a few bars: revisions
        rows = self._fetch(None if last is None else last - overlap)
        now = self.clock()
        ahead = rows[rows["time"].to_numpy() > now.value]
        if len(ahead) and not self._clock_warned:
            self._clock_warned = True
            self.journal.event("clock_behind", f"the feed has a bar stamped "
                               f"{pd.Timestamp(int(ahead['time'].max()), tz='UTC')} after this "
                               f"clock's {now}: this machine's clock runs behind the feed's")
            self._say("warning: this machine's clock runs behind the feed's (see the journal)")
        rows = closed(rows, now, self.feed.bar_seconds, self.feed.grace_seconds)
        taken, events = self._classify(rows, now)
        if not taken.empty or events:
            self.journal.take(taken, events)
        self.catch_up()
        return taken["time"].nunique()

    def run(self, poll_seconds: float = 10.0, stop_at: pd.Timestamp | None = None,
            max_polls: int | None = None, page_seconds: float | None = None) -> None:
        """Poll until the episode ends, ``stop_at`` is taken, or ``max_polls`` polls; with
        ``page_seconds`` the run page is written again that often and when the loop stops."""
        try:
            self._run(poll_seconds, stop_at, max_polls, page_seconds)
        finally:
            if page_seconds is not None and self.started:
                self.write_page()

    def _run(self, poll_seconds: float, stop_at: pd.Timestamp | None, max_polls: int | None,
             page_seconds: float | None) -> None:
        polls, paged = 0, time.monotonic()
        while self.meta.get("status") == "running" or not self.started:
            try:
                self.poll()
                self.backoff = 0.0
            except FeedError as exc:
                self.backoff = min(max(2 * self.backoff, poll_seconds), 300.0)
                self.journal.event("feed_error", str(exc))
                self._say(f"feed error ({exc}); retrying in {self.backoff:.0f} s")
                time.sleep(self.backoff)
                continue
            polls += 1
            if page_seconds is not None and time.monotonic() - paged >= page_seconds:
                self.write_page()
                paged = time.monotonic()
            last = self.journal.last_time()
            if (stop_at is not None and last is not None and last >= stop_at.value) or (
                    max_polls is not None and polls >= max_polls):
                return
            time.sleep(poll_seconds)

    def _fetch(self, since: int | None) -> pd.DataFrame:
        rows = self.feed.bars(since)
        return rows[list(COLUMNS)]

    def _classify(self, rows: pd.DataFrame, now: pd.Timestamp
                  ) -> tuple[pd.DataFrame, list[tuple[str, int | None, str | None, str]]]:
        """Which closed rows to take now, and the events to log with them."""
        rows, found = _dedupe(rows)
        last = self.journal.last_time()
        known = self.journal.bars(since=int(rows["time"].min()) if len(rows) else last)
        seen = {(int(t), s): r for t, s, *r in known.itertuples(index=False)}
        # a file or an exchange sends the same rows again at every poll: log each fault once
        logged = {(int(t), s, d) for _, k, t, s, d in self.journal.events().itertuples(
            index=False) if k in ("duplicate", "revision", "late_ignored") and t is not None}
        events = [e for e in found if (e[1], e[2], e[3]) not in logged]
        fresh = []
        for r in rows.itertuples(index=False):
            key = (int(r.time), r.symbol)
            values = [float(getattr(r, c)) for c in PRICE_COLUMNS]
            if key in seen:
                if not _same(seen[key], values):
                    detail = f"taken {_fmt(seen[key])}, now {_fmt(values)}; not applied"
                    if (*key, detail) not in logged:
                        events.append(("revision", *key, detail))
                continue
            if last is not None and key[0] <= last:
                detail = f"{_fmt(values)} arrived after its time was taken; not applied"
                if (*key, detail) not in logged:
                    events.append(("late_ignored", *key, detail))
                continue
            fresh.append(r)
        if not fresh:
            return _frame([]), events
        frame = _frame(fresh)
        symbols = set(self.feed.symbols)
        newest = frame.groupby("symbol")["time"].max().to_dict()
        take = []
        for t, group in frame.groupby("time", sort=True):
            have = set(group["symbol"])
            missing = symbols - have
            if missing and not all(newest.get(s, -1) > t for s in missing):
                break  # a symbol's bar for t may still come: wait for it
            for s in sorted(missing):
                events.append(("missing", int(t), s, "no bar for this time; the cell is "
                               "a closed market (no order, no stop) until prices return"))
            close_ns = int(t) + int(self.feed.bar_seconds * 1e9)
            late = (now.value - close_ns) / 1e9 - self.feed.grace_seconds
            if late > max(self.feed.bar_seconds, 60.0) and last is not None:
                events.append(("late", int(t), None, f"taken {late:.0f} s after its close"))
            take.append(group)
        return (pd.concat(take, ignore_index=True) if take else _frame([])), events

    # ------------------------------------------------------------------------- the book
    def _build(self, rows: pd.DataFrame, pin: float | None) -> MarketData:
        frames = {s: g.drop(columns="symbol").assign(
            time=pd.to_datetime(g["time"].to_numpy(), utc=True)).reset_index(drop=True)
            for s, g in rows.groupby("symbol", sort=False)}
        missing = [s for s in self.feed.symbols if s not in frames]
        if missing:
            raise DataError("no bar at all for this symbol", file=_where(self.feed),
                            symbol=missing[0])
        frames = {s: frames[s] for s in self.feed.symbols}
        cfg = self.config.data
        md = from_frames(frames, calendar=cfg.calendar, max_fill_bars=cfg.max_fill_bars,
                         min_bars=2, source=f"live:{_where(self.feed)}")
        return md if pin is None else replace(md, periods_per_year=pin)

    def market(self) -> MarketData:
        """The market of every bar taken, its bars per year pinned to the history's."""
        n = self.journal.count()
        if self._market is None or self._market[0] != n:
            self._market = (n, self._build(self.journal.bars(), self.meta["periods_per_year"]))
        return self._market[1]

    def catch_up(self) -> None:
        """Bring the book to the last bar taken, deciding at every decision bar on the way
        (bars a killed process took but never stepped included)."""
        if self.meta.get("status") != "running":
            return
        md = self.market()
        s = int(md.index.get_loc(pd.Timestamp(self.meta["start_time"], tz="UTC")))
        decisions = self.journal.decisions()
        self._send_orders()  # pending orders of a process that died before sending them
        if not self._reconciled:
            self._reconcile(md, s, decisions)
        done = decisions[-1]["bar"] if decisions else s - 1
        last = md.n_bars - 1
        for i in range(done + 1, last + 1):
            if (i - s) % self.every == 0 or i == last:
                if not self._step_to(md, s, i, decisions, decide=(i - s) % self.every == 0):
                    return

    def _step_to(self, md: MarketData, s: int, i: int, decisions: list[dict[str, Any]],
                 decide: bool) -> bool:
        """The book at bar i (the journal's actions replayed); a decision there when
        ``decide``. False when the episode has ended."""
        stamp = md.index[i]
        env = env_for(self.policy, self.config, md.slice(0, i + 1))
        obs, info, ended = self._replay(env, decisions, s, i)
        if ended:
            self.meta["status"] = f"ended: {info['status']}"
            self.journal.write_meta({"status": self.meta["status"]})
            self._say(f"{stamp}: the episode ended ({info['status']}); the loop stops")
            return False
        if self.broker is not None and info["fills"]:
            self._order(md, info["fills"])
        action = None
        if decide:
            log = hook(self.policy, "call_log")
            seen = len(log) if isinstance(log, list) else 0
            action = np.asarray(self.policy.act(obs, info))
            log = hook(self.policy, "call_log")
            calls = log[seen:] if isinstance(log, list) else []
            shape = env.action_space.shape
            if action.shape != shape:
                raise PolicyError(f"policy {self.policy.name!r} returned an action of shape "
                                  f"{action.shape}; the env takes {shape}")
            book = {"equity": info["equity"], "cash": info["cash"], "status": info["status"],
                    "fills": len(info["fills"]), "refused": info["refused"]}
            self.journal.decide(len(decisions), int(stamp.value), i, obs_hash(obs), action,
                                book, calls)
            decisions.append({"k": len(decisions), "bar": i, "action": action,
                              "obs_hash": obs_hash(obs)})
        self._status(stamp, info, action, len(decisions))
        if self.broker is not None:  # where the orders sent so far leave the book
            self.meta["processed"] = i
            self.journal.write_meta({"processed": i})
        return True

    # ----------------------------------------------------------------------- the broker
    def _order(self, md: MarketData, fills: list[dict[str, Any]]) -> None:
        """The fills of a step as pending orders, each with an id derived from the fill, so
        the same fill seen again (a later replay, a restart) is the same order."""
        rows, seen = [], {}
        for f in fills:
            n = seen[(f["bar"], f["asset"])] = seen.get((f["bar"], f["asset"]), -1) + 1
            stamp = int(md.index[f["bar"]].value)
            rows.append((f"ffe-{self.meta['run_id']}-{stamp // 10**9}-{f['asset']}-{n}",
                         stamp, f["asset"], float(f["units"])))
        self.journal.add_orders(rows)
        self._send_orders()

    def _send_orders(self) -> None:
        """Send every pending order; a transient failure leaves the rest pending (retried)."""
        if self.broker is None:
            return
        for client_id, _, symbol, qty, _ in self.journal.orders("pending"):
            state = self.broker.submit(client_id, symbol, qty)
            self.journal.mark_order(client_id, state)
            if state == "duplicate":
                self.journal.event("order_resent", f"{client_id}: the broker had it already "
                                   "(a resend after a lost reply or a restart); not placed "
                                   "twice", symbol=symbol)

    def _reconcile(self, md: MarketData, s: int, decisions: list[dict[str, Any]]) -> None:
        """Compare the broker's positions and cash with the book's at the last bar whose
        fills were sent; report, never change."""
        i = int(self.meta.get("processed", s))
        env = env_for(self.policy, self.config, md.slice(0, i + 1))
        ready = self._ready
        if decisions:
            self._replay(env, [d for d in decisions if d["bar"] <= i], s, i)
        else:
            env.reset(seed=self.seed, options={"start": s, "end": i})
        self._ready = ready  # the next replay rebuilds the policy's state over every decision
        units = dict(zip(md.symbols, env.unwrapped.portfolio.units[0].tolist(), strict=True))
        held, cash = self.broker.holdings()
        diffs = [f"{sym}: book {units.get(sym, 0.0):+.6g}, broker {held.get(sym, 0.0):+.6g}"
                 for sym in sorted(set(units) | set(held))
                 if abs(units.get(sym, 0.0) - held.get(sym, 0.0)) > 1e-6]
        book_cash = float(env.unwrapped.portfolio.cash[0])
        detail = ("positions differ: " + "; ".join(diffs) if diffs else "positions agree") + \
            f"; cash: book {book_cash:,.2f}, broker {cash:,.2f} (the broker fills at its own " \
            "prices and costs)"
        self.journal.event("reconcile", detail)
        if diffs:
            self._say(f"reconcile: {detail}")
        self._reconciled = True

    def _replay(self, env: Any, decisions: list[dict[str, Any]], s: int, i: int
                ) -> tuple[Any, dict[str, Any], bool]:
        """The env reset at the first live bar and stepped with the journal's actions up to
        bar i (a decision taken at bar i itself is not stepped); on the first pass of a
        process the policy is asked again at every decision and must agree with the
        journal."""
        base = env.unwrapped
        hook(self.policy, "bind")(base.layout)
        bind_market = hook(self.policy, "bind_market")
        if bind_market is not None:
            bind_market(base.market_view())
        obs, info = env.reset(seed=self.seed, options={"start": s, "end": i})
        if not self._ready:
            self.policy.reset(self.seed)
        for d in decisions:
            if not self._ready:
                if obs_hash(obs) != d["obs_hash"]:
                    raise LiveError(f"decision {d['k']} at bar {d['bar']}: the observation "
                                    "differs from the journal's (bars or code changed)")
                again = np.asarray(self.policy.act(obs, info))
                if not np.array_equal(again, d["action"]):
                    raise LiveError(f"decision {d['k']} at bar {d['bar']}: the policy acts "
                                    f"{again.tolist()} where the journal has "
                                    f"{d['action'].tolist()}; its state cannot be rebuilt")
            if d["bar"] >= i:  # decided at bar i itself: nothing to step to yet
                break
            obs, _, terminated, _, info = env.step(d["action"])
            if terminated:
                self._ready = True
                return obs, info, True
        self._ready = True
        return obs, info, False

    def _status(self, stamp: pd.Timestamp, info: dict[str, Any], action: Any,
                decisions: int) -> None:
        held = [f"{s} {w:+.0%}" for s, w in zip(self.feed.symbols, info["weights"],
                                                strict=True) if abs(w) > 1e-9]
        refused = ", ".join(f"{s}: {r}" for s, r in info["refused"].items())
        self._say(f"{stamp:%Y-%m-%d %H:%M} equity {info['equity']:,.2f} "
                  f"drawdown {info['drawdown']:.1%} "
                  f"{'held ' + ', '.join(held) if held else 'flat'}"
                  f"{'; decided' if action is not None else ''}"
                  f"{'; refused ' + refused if refused else ''} ({decisions} decisions)")

    def _say(self, line: str) -> None:
        if self.log is not None:
            self.log(line)

    # ------------------------------------------------------------------------ the record
    def episode(self):
        """The run so far as an :class:`~ffe_gym.evaluation.EpisodeResult` (the journal's
        actions replayed on the journal's bars), or None before a second decision."""
        decisions = self.journal.decisions()
        if not decisions:
            return None
        md = self.market()
        s = int(md.index.get_loc(pd.Timestamp(self.meta["start_time"], tz="UTC")))
        if md.n_bars - 1 <= s:
            return None
        served = Journaled(self.policy, [d["action"] for d in decisions])
        env = env_for(self.policy, self.config, md)
        return rollout(served, env, window=(s, md.n_bars - 1), seed=self.seed)


    def write_page(self) -> list[Path]:
        """The run page of the bars so far (``<out>/page``): the files of ``evaluate --out``,
        against the reference on the same bars; empty before a bar follows the first
        decision."""
        from ffe_gym.evaluation.run_page import write_with_reference

        result = self.episode()
        if result is None:
            return []
        md = self.market()
        s = int(md.index.get_loc(pd.Timestamp(self.meta["start_time"], tz="UTC")))
        summary = result.summary() | {"live": True, "bars_seen": int(result.metrics["bars"]),
                                      "samples": self.meta.get("samples", [])}
        return write_with_reference(self.out / "page", result, md, self.config,
                                    (s, md.n_bars - 1), seed=self.seed, summary=summary)


class Journaled(PolicyBase):
    """The journal's actions, in order, under the live policy's name and action scheme."""

    def __init__(self, policy: Any, actions: list[np.ndarray]) -> None:
        self.policy, self.actions, self.k = policy, actions, 0
        self.name = hook(policy, "name")

    def env_overrides(self) -> dict[str, Any]:
        return dict(hook(self.policy, "env_overrides")())

    def reset(self, seed: int | None = None) -> None:
        self.k = 0

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        if self.k >= len(self.actions):
            raise LiveError(f"the replay asked for decision {self.k}; the journal has "
                            f"{len(self.actions)}")
        a = self.actions[self.k]
        self.k += 1
        return a


def _dedupe(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[tuple[str, int | None, str | None,
                                                                   str]]]:
    """Rows with each (time, symbol) once: exact repeats dropped (counted), the first of
    differing versions kept and the others logged as revisions."""
    events: list[tuple[str, int | None, str | None, str]] = []
    dup = rows.duplicated(["time", "symbol"], keep="first")
    if dup.any():
        firsts = rows[~dup].set_index(["time", "symbol"])
        for r in rows[dup].itertuples(index=False):
            first = firsts.loc[(r.time, r.symbol)][list(PRICE_COLUMNS)].to_numpy(float)
            values = [float(getattr(r, c)) for c in PRICE_COLUMNS]
            if _same(first, values):
                events.append(("duplicate", int(r.time), r.symbol, "the same bar twice"))
            else:
                events.append(("revision", int(r.time), r.symbol,
                               f"taken {_fmt(first)}, also {_fmt(values)}; not applied"))
    return rows[~dup].reset_index(drop=True), events


def _same(a: Any, b: Any) -> bool:
    a, b = np.asarray(a, float), np.asarray(b, float)
    return bool(np.all((a == b) | (np.isnan(a) & np.isnan(b))))


def _fmt(values: Any) -> str:
    return "OHLCV " + "/".join(f"{v:.10g}" for v in values)


def _frame(rows: list[Any]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=list(COLUMNS))


def _where(feed: Feed) -> str:
    return str(getattr(feed, "name", None) or getattr(feed, "path", None) or type(feed).__name__)
