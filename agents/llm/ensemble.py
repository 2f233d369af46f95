"""LLMEnsemble: several language models voting, as one policy on ffe/Portfolio-v0.

One decision: prompts from the observation (joint or per asset) -> replies from the cache, or
from the models, all concurrently (bounded) under one deadline that covers retries and backoff
-> parsed decisions -> one vote per asset -> the ``signals`` action (BUY = +confidence,
SELL = -confidence, HOLD = 0). Local members answer first; remote members are asked only when
the local vote is weak, within a call budget. A member that is slow, dead or unreadable never
holds the step past the deadline: it counts as missing, and the decision is recorded as a
fallback for it.

Time: with local and remote members the local phase ends ``escalation.reserve_seconds``
before the deadline (default a quarter of it), so an escalation has time of its own; with
less than ``escalation.min_seconds`` left it is skipped (counted), and only calls really sent
are charged to the budget. A member that fails (timeouts, no connection) in
``breaker.failures`` decisions in a row is suspended for ``breaker.suspend_decisions``
decisions (counted as ``suspensions`` and ``calls_skipped``), then tried again.

A reply cut by its token limit (``finish_reason: length``) is counted as a truncation; the
assets it lost are ``truncated``, apart from parse failures.

Context: before sending, a prompt's length (the embedded model's tokenizer, else about 3
characters a token) plus its reply budget must fit the member's ``context``; the history is
halved until it does (counted as ``history_shortened``), never the instructions.

Digests: once per member per run the server is asked for the model's digest (Ollama's
``/api/tags``, the embedded file's sha256). Online, a cached reply stored under another digest
is not replayed (a re-pulled model behind the same name): the model is asked again and the
new reply replaces it, counted as ``digest_mismatch`` (``replay_other_digest: true`` replays
it anyway). Offline (no server) the stored digest is trusted and shown.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ffe_agents.llm.backends import (
    BackendError,
    make_backend,
    member_files,
    member_identity,
)
from ffe_agents.llm.cache import ReplyCache, key_of, member_prefix, merge_rows, snapshot
from ffe_agents.llm.config import LLMConfig, load_llm_config
from ffe_agents.llm.memory import Memory
from ffe_agents.llm.parser import (
    UNLISTED,
    Decision,
    is_trades,
    parse_decision,
    parse_joint,
    parse_trades,
)
from ffe_agents.llm.prompts import (
    Prompt,
    asset_labels,
    build_prompts,
    first_listed_assets,
    listed_first,
)
from ffe_agents.llm.voting import AdaptiveWeights, Vote, vote
from ffe_gym.env.observations import ObservationLayout
from ffe_gym.evaluation.policy import PolicyBase

ERROR = Decision("HOLD", 0.0, "", "error")
MISS = Decision("HOLD", 0.0, "replay miss", "error")  # abstains, as an error does


HOLD_TRUNCATED = Decision("HOLD", 0.0, "", "truncated")


class ReplayMiss(RuntimeError):
    """``cache_mode: replay`` met a decision with no stored reply (and ``replay_miss: error``)."""


def copying(first_rows: int, trades: int, k: int, n: int) -> str:
    """The flag of a member whose trades sit in the table's first ``k`` rows (the asset
    labels the prompt lists first, ASSET_1..k) in at least 90% of at least 12 trades, where a
    reader of the market would spread them (chance k / n); "" otherwise. The comparison sums
    the counts over a row's runs and asks the same."""
    if trades < 12 or first_rows < 0.9 * trades or n <= k:
        return ""
    return (f"copies the prompt's order: {first_rows} of {trades} trades in the first {k} "
            f"rows of the table (ASSET_1..{k}; chance {k / n:.0%})")


class MemberStats:
    """Counters of one member over an episode."""

    def __init__(self) -> None:
        self.calls = 0
        self.cache_hits = 0
        self.answers = 0
        self.parse_failures = 0
        self.fallbacks = 0
        self.errors: dict[str, int] = defaultdict(int)
        self.latency: list[float] = []
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.truncations = 0  # replies cut by the token limit
        self.truncated = 0  # asset decisions lost to a cut
        self.repairs: dict[str, int] = defaultdict(int)  # confidence read as percent / clipped
        self.not_started = 0  # calls the deadline overtook before they were sent
        self.calls_skipped = 0  # calls not made while the member was suspended
        self.suspensions = 0
        self.thinking_chars = 0
        self.history_shortened = 0  # decisions whose history was cut to fit the context
        self.context_overflows = 0  # prompts too long even with one bar of history
        self.digest_mismatch = 0  # stored replies not replayed: another model digest
        self.digest_replays = 0  # replayed anyway (replay_other_digest)
        self.replay_misses = 0  # cache_mode replay, replay_miss hold: prompts with no reply
        self.distinct: dict[int, set[tuple[str, float]]] = defaultdict(set)  # asset -> answers
        self.first_listed = 0  # answers that are the action listed first
        self.checked_order = 0  # answers whose listed order was known
        self.trades_seen = 0  # trades replies: trades made
        self.first_rows = 0  # ... in the assets of the table's first max_trades rows

    def as_dict(self) -> dict[str, Any]:
        lat = np.asarray(self.latency) if self.latency else np.zeros(0)
        return {"calls": self.calls, "cache_hits": self.cache_hits, "answers": self.answers,
                "parse_failures": self.parse_failures, "fallbacks": self.fallbacks,
                "errors": sum(self.errors.values()),
                "error_kinds": dict(self.errors),
                "latency_mean_s": float(lat.mean()) if len(lat) else None,
                "latency_max_s": float(lat.max()) if len(lat) else None,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "truncations": self.truncations, "truncated": self.truncated,
                "confidence_repairs": dict(self.repairs), "not_started": self.not_started,
                "calls_skipped": self.calls_skipped, "suspensions": self.suspensions,
                "thinking_chars": self.thinking_chars,
                "thinking_tokens_est": self.thinking_chars // 4,
                "history_shortened": self.history_shortened,
                "context_overflows": self.context_overflows,
                "digest_mismatch": self.digest_mismatch,
                "digest_replays": self.digest_replays, "replay_misses": self.replay_misses,
                "distinct_answers": (float(np.mean([len(v) for v in self.distinct.values()]))
                                     if self.distinct else None),
                "first_listed_share": (self.first_listed / self.checked_order
                                       if self.checked_order else None),
                "first_listed": self.first_listed, "checked_order": self.checked_order,
                "trades_seen": self.trades_seen, "first_rows": self.first_rows}


class LLMEnsemble(PolicyBase):
    """An ensemble of language models as one :class:`ffe_gym.evaluation.Policy`.

    :param config: an :class:`LLMConfig`, a mapping, a YAML path, or None for the embedded
        profile (two tiny in-process models: the plumbing, not trading skill).
    :param out: the run's output folder, for ``{out}`` in ``cache_path`` and ``model_dir``
        (a comparison passes its ``--out``; None: ``runs``).

    Deterministic for the comparison grid (one run per test window): greedy decoding with a
    fixed seed, or a read-only cache replay, gives the same replies for the same prompts. A
    member cut off at the deadline, or a call the deadline overtook, breaks that:
    ``stats()["reproducible"]`` is then False with the reasons in ``unreproducible``, and the
    comparison flags the run and recomputes it rather than reuse it (``--keep-unreproducible``
    keeps it, flagged).
    """

    action_scheme = "signals"
    deterministic = True
    takes_out = True  # the comparison passes out=<its --out> (not part of a job's identity)

    def __init__(self, config: LLMConfig | Mapping[str, Any] | str | Path | None = None,
                 name: str = "llm-ensemble", carried: Mapping[str, str] | None = None,
                 out: str | Path | None = None) -> None:
        self.config = cfg = load_llm_config(config, out)
        for role, path in (carried or {}).items():  # a job on another node: driver's files
            if role == "cache":
                cfg.cache_path = path
            elif role.startswith("model/"):  # a GGUF file named by path on the driver
                for m in cfg.members:
                    if m.name == role[len("model/"):]:
                        m.model = path
        self.name = name
        self.members = {m.name: m for m in cfg.members}
        self.backends = {m.name: make_backend(m, cfg.model_dir) for m in cfg.members}
        self.cache = ReplyCache(cfg.cache_path, cfg.cache_mode)
        self.layout: ObservationLayout | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._checked: dict[str, str | None] = {}  # member -> digest, after a health check
        self._dead: dict[str, str] = {}  # member -> why it is skipped for the run
        self._offline: dict[str, str | None] = {}  # member -> stored digest, server unreachable
        for b in self.backends.values():  # a structured-output mode found before
            b.restore_mode(self.cache.get_mode)
        self._mode_saved: set[str] = set()
        self.reset()

    # ------------------------------------------- state carried to and from remote workers
    @classmethod
    def carry_state(cls, config: Any = None, out: str | None = None, **_: Any
                    ) -> dict[str, bytes]:
        """What a job on a node without the driver's files needs: a snapshot of the reply
        cache, and the GGUF files that embedded members name by path."""
        cfg = load_llm_config(config, out)
        state = {k: v for m in cfg.members for k, v in member_files(m).items()}
        if cfg.cache_path and cfg.cache_mode != "off":
            state["cache"] = snapshot(cfg.cache_path)
        return state

    def carried_delta(self) -> dict[str, Any]:
        """The replies this run added to its (copied) cache."""
        return {"cache": list(self.cache.added)}

    @classmethod
    def merge_carried(cls, delta: Mapping[str, Any], config: Any = None,
                      out: str | None = None, **_: Any) -> None:
        """On the driver: add a remote job's new replies to the driver's cache."""
        cfg = load_llm_config(config, out)
        if cfg.cache_path and cfg.cache_mode == "read_write" and delta.get("cache"):
            merge_rows(cfg.cache_path, delta["cache"])

    @classmethod
    def identity_digests(cls, config: Any = None, out: str | None = None, **_: Any
                         ) -> dict[str, str]:
        """What the models are, for a comparison job's identity: an embedded GGUF file named
        by path by its sha256, a packaged model by its package version. (Served models are
        checked online, by their digest, when the job runs.)"""
        return {k: v for m in load_llm_config(config, out).members
                for k, v in member_identity(m).items()}

    # ------------------------------------------------------------------ policy protocol
    def env_overrides(self) -> dict[str, Any]:
        return {"action_scheme": "signals"}

    def training_cutoffs(self) -> dict[str, str | None]:
        """Each member's declared training cutoff (``training_cutoff``; None: not declared)."""
        return {m.name: m.training_cutoff for m in self.config.members}

    def bind(self, layout: ObservationLayout) -> None:
        self.layout = layout

    def reset(self, seed: int | None = None) -> None:
        cfg = self.config
        if getattr(self, "adaptive", None) is not None and cfg.adaptive.save:
            self.adaptive.save(cfg.adaptive.save)
        self.adaptive = AdaptiveWeights(list(self.members), cfg.adaptive)
        self.member_stats = {m: MemberStats() for m in self.members}
        self.tiers: dict[str, int] = defaultdict(int)
        self.decisions = 0
        self.escalations = 0
        self.escalations_skipped = 0  # weak votes with too little time left to escalate
        self.remote_calls = 0
        self.deadline_misses = 0
        self._fails: dict[str, int] = defaultdict(int)  # failing decisions in a row
        self._suspended: dict[str, int] = {}  # member -> first decision it is asked again
        self._outcome: dict[str, str] = {}  # member -> "ok" / "failed" in this decision
        self.decision_seconds: list[float] = []
        self.call_log: list[dict[str, Any]] = []  # one row per decision, member and prompt
        self._prev: tuple[int, dict[str, np.ndarray]] | None = None
        self.memory = (Memory(self.config.memory, self.layout.n_assets)
                       if self.config.memory > 0 and self.layout is not None else None)
        if self.layout is not None:  # bound to an env: load before the first decision
            self._check_digests(list(self.members), self.config.load_seconds)

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        if self.layout is None:
            raise RuntimeError("LLMEnsemble.act before bind(layout); use "
                               "ffe_gym.evaluation.rollout")
        t0 = time.perf_counter()
        deadline = t0 + self.config.deadline_seconds
        self._learn(observation, info)
        cfg = self.config
        bar = int(info.get("bar", 0))
        self._bar = bar
        if cfg.memory > 0:
            if self.memory is None:
                self.memory = Memory(cfg.memory, self.layout.n_assets)
            lr = (self.layout.feature(observation, "log_return").astype(float)
                  if "log_return" in self.layout.features else None)
            self.memory.observe(bar, lr)
        self._prompt_memo: dict[tuple[int, int, str], list[Prompt]] = {}
        self._observation = observation
        n_prompts = 1 if cfg.prompt_mode == "joint" else self.layout.n_assets
        local = [m for m, c in self.members.items() if c.local]
        remote = [m for m, c in self.members.items() if not c.local]
        first = local or remote
        self._outcome = {}
        esc = cfg.escalation
        first_deadline = deadline
        if local and remote:  # the remote phase keeps time of its own
            reserve = (cfg.deadline_seconds / 4 if esc.reserve_seconds is None
                       else esc.reserve_seconds)
            first_deadline = deadline - min(reserve, cfg.deadline_seconds)
        answers = self._ask(first, first_deadline)
        votes = self._votes(answers)
        if local and remote and self._weak(votes) and \
                self.remote_calls + len(remote) * n_prompts <= esc.call_budget:
            if deadline - time.perf_counter() < esc.min_seconds:
                self.escalations_skipped += 1
            else:
                self.escalations += 1
                sent = sum(self.member_stats[m].calls for m in remote)
                answers |= self._ask(remote, deadline)
                self.remote_calls += sum(self.member_stats[m].calls for m in remote) - sent
                votes = self._votes(answers)
        self._breaker()
        for v in votes:
            self.tiers[v.tier] += 1
        self.decisions += 1
        elapsed = time.perf_counter() - t0
        self.decision_seconds.append(elapsed)
        if elapsed > cfg.deadline_seconds * 1.05:
            self.deadline_misses += 1
        signals = np.array([v.signal for v in votes], dtype=np.float32)
        if self.memory is not None:
            for m, ds in answers.items():
                self.memory.record(m, bar, [d if d is not None and d.origin not in
                                            ("fallback", "error", "truncated") else None
                                            for d in ds])
        self._prev = (int(info.get("bar", 0)), {m: np.array(
            [d.signal if d is not None and d.origin not in ("fallback", "error") else np.nan
             for d in ds]) for m, ds in answers.items()})
        return signals

    def input_flags(self) -> list[str]:
        """Members that answered as if they did not read the market: one answer per asset over
        every decision (at least 3), or the action the schema listed first in at least 90% of
        at least 12 answers (chance: a third; the listed order is drawn per asset and prompt);
        with trades replies, at least 90% of at least 12 trades in the assets the schema
        listed first (chance: max_trades / N; the listed order is drawn per prompt)."""
        out = []
        for m, st in self.member_stats.items():
            if self.decisions >= 3 and st.distinct and all(len(v) == 1
                                                           for v in st.distinct.values()):
                out.append(f"{m}: the same answer for each asset in every decision")
            flag = copying(st.first_rows, st.trades_seen, self.config.max_trades,
                           self.layout.n_assets if self.layout is not None else 0)
            if flag:
                out.append(f"{m}: {flag}")
            if st.checked_order >= 12 and st.first_listed >= 0.9 * st.checked_order:
                what = ("trades are in the assets listed first"
                        if self.config.reply == "trades" else
                        "answers are the action listed first")
                out.append(f"{m}: copies the prompt's word order ({st.first_listed} of "
                           f"{st.checked_order} {what})")
        return out

    def unreproducible(self) -> list[str]:
        """Why this run's replies depend on the machine's load, not only on the prompts: member
        timeouts, calls the deadline overtook before they were sent, calls skipped while a
        member was suspended, decisions over the deadline, replay misses held. Empty: every
        reply came from the model or the cache as the prompts alone decide."""
        out = []
        for m, st in self.member_stats.items():
            for what, n in (("timeout(s)", st.errors.get("timeout", 0)),
                            ("call(s) not started", st.not_started),
                            ("call(s) skipped while suspended", st.calls_skipped),
                            ("replay miss(es) held", st.replay_misses)):
                if n:
                    out.append(f"{m}: {n} {what}")
        if self.deadline_misses:
            out.append(f"{self.deadline_misses} decision(s) over the deadline")
        return out

    def stats(self) -> dict[str, Any]:
        """Per-member calls, cache hits, latency, tokens, parse failures, fallbacks; votes;
        ``reproducible`` and ``unreproducible`` (why not)."""
        sec = np.asarray(self.decision_seconds) if self.decision_seconds else np.zeros(1)
        why = self.unreproducible()
        return {"reproducible": not why, "unreproducible": why,
                "input_flags": self.input_flags(), "outcomes": self.outcomes(),
                "members": {m: s.as_dict() for m, s in self.member_stats.items()},
                "decisions": self.decisions, "escalations": self.escalations,
                "max_trades": self.config.max_trades if self.config.reply == "trades" else None,
                "assets": self.layout.n_assets if self.layout is not None else None,
                "escalations_skipped": self.escalations_skipped,
                "remote_calls": self.remote_calls, "tiers": dict(self.tiers),
                "deadline_misses": self.deadline_misses,
                "decision_seconds_mean": float(sec.mean()),
                "decision_seconds_max": float(sec.max()),
                "cache_errors": self.cache.errors, "cache_disabled": self.cache.disabled,
                "cache_pending": len(self.cache.pending),
                "backends": {m: b.counters.as_dict() for m, b in self.backends.items()},
                "skipped_members": dict(self._dead),
                "digests": {**dict(self._checked),
                            **{m: (f"{d} (stored; server offline)" if d else
                                   "unknown (server offline)")
                               for m, d in self._offline.items()}},
                "adaptive": self.adaptive.to_dict() if self.config.adaptive.enabled else None}

    def close(self) -> None:
        if self.config.adaptive.save:
            self.adaptive.save(self.config.adaptive.save)
        if self._loop is not None and not self._loop.is_closed():
            self._loop.run_until_complete(self._close_backends())
            self._loop.close()
        self._loop = None
        self.cache.close()

    async def _close_backends(self) -> None:
        for b in self.backends.values():
            await b.aclose()

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_loop"] = None
        return state

    # ------------------------------------------------------------------ internals
    def _weights(self, members) -> dict[str, float]:
        v = self.config.voting
        return {m: self.members[m].weight * (v.local_weight if self.members[m].local
                                             else v.remote_weight) * self.adaptive.factor(m)
                for m in members}

    def _votes(self, answers: dict[str, list[Decision | None]]) -> list[Vote]:
        weights = self._weights(answers)
        n = self.layout.n_assets
        return [vote({m: ds[j] for m, ds in answers.items()}, weights, self.config.voting)
                for j in range(n)]

    def _weak(self, votes: list[Vote]) -> bool:
        e = self.config.escalation
        return any(v.confidence < e.min_confidence or v.agreement < e.min_agreement
                   for v in votes)

    def _learn(self, observation: Any, info: dict[str, Any]) -> None:
        """Adaptive weights: score the previous decisions against what happened since."""
        if self._prev is None or not self.config.adaptive.enabled:
            return
        bar, signals = self._prev
        k = max(1, int(info.get("bar", bar + 1)) - bar)
        names = self.layout.features
        if "log_return" not in names:
            return
        r = self.layout.feature(observation, "log_return")[-k:].sum(axis=0).astype(float)
        self.adaptive.update(signals, r)

    def _key(self, member: str, prompt: Prompt) -> str:
        prefixes = self.__dict__.setdefault("_prefixes", {})
        if member not in prefixes:  # the member's part of every key, once
            b = self.backends[member]
            options = b.options() | ({"think": True} if self.members[member].thinking else {})
            prefixes[member] = member_prefix(backend=b.kind, model=self.members[member].model,
                                             options=options,
                                             prompt_version=self.config.prompt_version)
        return key_of(prefixes[member], prompt.digest)

    def _parse(self, text: str, prompt: Prompt, finish: str | None = None) -> list[Decision]:
        if len(prompt.assets) == 1 and self.config.prompt_mode == "per_asset":
            ds = [parse_decision(text)]
        elif is_trades(prompt.schema):
            labels = asset_labels(self.layout, self.config.leakage_guard)
            ds = parse_trades(text, [labels[j] for j in prompt.assets], self.config.max_trades)
            if finish == "length":  # a cut reply did not choose to hold what it did not list
                ds = [HOLD_TRUNCATED if d is UNLISTED else d for d in ds]
        else:
            labels = asset_labels(self.layout, self.config.leakage_guard)
            ds = parse_joint(text, [labels[j] for j in prompt.assets])
        if finish == "length":  # what the cut lost is a truncation, not a parse failure
            ds = [replace(d, origin="truncated") if d.origin == "fallback" else d for d in ds]
        return ds

    def _digest_ok(self, member: str, row: dict[str, Any]) -> bool:
        """May a stored reply be replayed for this member? (module doc: Digests)"""
        stored = row.get("digest")
        if member in self._offline:  # no server to ask: trust what was stored, and show it
            if stored:
                self._offline[member] = stored
            return True
        now = self._checked.get(member)
        if now is None or stored is None or now == stored:
            return True
        if self.config.replay_other_digest:
            self.member_stats[member].digest_replays += 1
            return True
        self.member_stats[member].digest_mismatch += 1
        return False

    def _breaker(self) -> None:
        """Update the circuit breaker after a decision (see the module doc)."""
        b = self.config.breaker
        if b.failures <= 0:
            return
        for m, outcome in self._outcome.items():
            if outcome == "ok":
                self._fails[m] = 0
                continue
            self._fails[m] += 1
            if self._fails[m] >= b.failures:
                self._suspended[m] = self.decisions + 1 + b.suspend_decisions
                self.member_stats[m].suspensions += 1
                self._fails[m] = b.failures - 1  # one more failure after it suspends again

    def _is_suspended(self, member: str) -> bool:
        return self.decisions < self._suspended.get(member, 0)

    def _diversity(self, member: str, prompt: Prompt, decisions: list[Decision]) -> None:
        """Count each answer per asset (reply diversity) and whether it is the action the
        schema listed first for that asset (copying the prompt's word order)."""
        s = self.member_stats[member]
        first = listed_first(prompt)
        firsts = first_listed_assets(prompt)  # a trades prompt: where copying would trade
        labels = asset_labels(self.layout, self.config.leakage_guard) if firsts else []
        for j, (asset, d) in enumerate(zip(prompt.assets, decisions, strict=False)):
            if d.origin in ("fallback", "error", "truncated"):
                continue
            s.distinct[asset].add((d.action, round(d.confidence, 3)))
            if firsts and d.action != "HOLD":
                s.checked_order += 1
                s.first_listed += int(labels[asset] in firsts)
                s.trades_seen += 1
                s.first_rows += int(asset < self.config.max_trades)
            elif j < len(first) and first[j] is not None:
                s.checked_order += 1
                s.first_listed += int(d.action == first[j])

    def _record(self, member: str, decisions: list[Decision]) -> None:
        s = self.member_stats[member]
        for d in decisions:
            if d.repair:
                s.repairs[d.repair] += 1
            if d.origin == "truncated":
                s.truncated += 1
                s.fallbacks += 1
            elif d.origin == "fallback":
                s.parse_failures += 1
                s.fallbacks += 1
            elif d.origin == "error":
                s.fallbacks += 1
            else:
                s.answers += 1

    def _prompts_for(self, member: str) -> list[Prompt]:
        """This decision's prompts for one member: its schema (a thinking member on a server
        without a thinking channel gets a reasoning field first) and a history short enough
        for its context."""
        cfg = self.config
        mc = self.members[member]
        backend = self.backends[member]
        chars = 3 * mc.thinking_tokens if mc.thinking and not backend.thinking_channel else 0
        memory = (self.memory.section(member, asset_labels(self.layout, cfg.leakage_guard))
                  if self.memory is not None else None)
        h = max(1, cfg.history_bars)
        while True:
            key = (h, chars, member if memory else "")
            if key not in self._prompt_memo:
                self._prompt_memo[key] = build_prompts(
                    self.layout, self._observation, mode=cfg.prompt_mode,
                    guard=cfg.leakage_guard, history=h, reasoning_chars=chars, memory=memory,
                    reply=cfg.reply, max_trades=cfg.max_trades,
                    table=cfg.prompt_format == "table")
            prompts = self._prompt_memo[key]
            need = max(self._tokens(backend, p) + (mc.max_tokens or p.max_tokens)
                       + (mc.thinking_tokens if mc.thinking else 0) for p in prompts)
            if need <= mc.context or h == 1:
                if h < cfg.history_bars:
                    self.member_stats[member].history_shortened += 1
                if need > mc.context:
                    self.member_stats[member].context_overflows += 1
                return prompts
            h //= 2

    @staticmethod
    def _tokens(backend: Any, prompt: Prompt) -> int:
        text = "\n".join(m["content"] for m in prompt.messages)
        exact = backend.count_tokens(text) if hasattr(backend, "count_tokens") else None
        overhead = 8 * len(prompt.messages)  # chat template markers
        return (exact if exact is not None else len(text) // 3) + overhead

    def _check_digests(self, members: list[str], timeout: float | None = None) -> None:
        """Once per member per run: its model's digest, or offline (see the module doc); the
        embedded models load here. Called by ``reset`` with ``load_seconds``, so the first
        decision's deadline does not pay for the load. In ``replay`` mode nothing is started
        or loaded: an embedded model's digest is its file's
        hash, a server's is taken as stored (offline)."""
        todo = [m for m in members if m not in self._checked and m not in self._dead
                and m not in self._offline]
        if not todo:
            return
        if self.config.cache_mode == "replay":
            for m in todo:
                b = self.backends[m]
                digest = b.offline_digest()
                if digest is not None:
                    self._checked[m] = digest
                else:
                    self._offline[m] = None
            return
        if self._loop is None or self._loop.is_closed():
            self._loop = asyncio.new_event_loop()

        limit = max(2.0, self.config.deadline_seconds) if timeout is None else timeout

        async def one(m: str) -> None:
            try:
                self._checked[m] = await asyncio.wait_for(
                    self.backends[m].health(min(2.0, self.config.deadline_seconds)), limit)
            except (BackendError, TimeoutError) as exc:
                kind = exc.kind if isinstance(exc, BackendError) else "timeout"
                self.member_stats[m].errors[kind] += 1
                if kind in ("model_not_found", "unavailable"):
                    self._dead[m] = kind
                else:
                    self._offline[m] = None

        async def all_() -> None:
            await asyncio.gather(*(one(m) for m in todo))

        self._loop.run_until_complete(all_())

    def _log(self, member: str, outcome: str, decisions: list[Decision],
             latency: float | None = None, key: str | None = None) -> None:
        """One row of :attr:`call_log`: what became of one prompt of one member (``key``: the
        reply's key in the cache)."""
        self.call_log.append({
            "decision": self.decisions, "bar": self._bar, "member": member, "key": key,
            "outcome": outcome, "assets": len(decisions),
            "answers": sum(d.origin not in ("fallback", "error", "truncated")
                           for d in decisions),
            "parse_failures": sum(d.origin == "fallback" for d in decisions),
            "fallbacks": sum(d.origin in ("fallback", "error", "truncated")
                             for d in decisions),
            "latency_s": latency})

    def outcomes(self) -> dict[str, int]:
        """Prompts per outcome over the episode (the call log summed): ``cache`` (a stored
        reply), ``new`` (a model's reply), ``timeout``, ``not_started``, ``error``,
        ``skipped`` (member suspended or unusable) and ``replay_miss``; plus the asset
        decisions that were parse failures and fallbacks."""
        out = dict.fromkeys(("cache", "new", "timeout", "not_started", "error", "skipped",
                             "replay_miss"), 0)
        for row in self.call_log:
            out[row["outcome"]] = out.get(row["outcome"], 0) + 1
        out["parse_failures"] = sum(r["parse_failures"] for r in self.call_log)
        out["fallbacks"] = sum(r["fallbacks"] for r in self.call_log)
        return out

    def _ask(self, members: list[str], deadline: float) -> dict[str, list[Decision | None]]:
        """Decisions of ``members`` for every asset: cache first, then the models."""
        n = self.layout.n_assets
        out: dict[str, list[Decision | None]] = {m: [ERROR] * n for m in members}
        todo: list[tuple[str, Prompt, str]] = []
        if self.cache.mode != "off":
            self._check_digests(members)
        asked = [(m, p, self._key(m, p)) for m in members for p in self._prompts_for(m)]
        rows = self.cache.get_rows([key for _, _, key in asked])  # one query a decision
        for m, p, key in asked:
            row = rows.get(key)
            hit = row["reply"] if row else None
            if hit is not None and not self._digest_ok(m, row):
                hit = None
            if hit is not None:
                self.member_stats[m].cache_hits += 1
                ds = self._parse(hit["text"], p, hit.get("finish_reason"))
                if hit.get("finish_reason") == "length":
                    self.member_stats[m].truncations += 1
                self._record(m, ds)
                self._diversity(m, p, ds)
                self._log(m, "cache", ds, key=key)
                for j, d in zip(p.assets, ds, strict=True):
                    out[m][j] = d
            elif self.config.cache_mode == "replay":
                if self.config.replay_miss == "error":
                    raise ReplayMiss(
                        f"cache_mode replay: no stored reply of member {m!r} for the decision "
                        f"at bar {self._bar} (key {key[:16]}..., cache {self.cache.path}); "
                        "run with cache_mode read_write to ask the model, or replay_miss: hold")
                self.member_stats[m].replay_misses += 1
                self._record(m, [MISS] * len(p.assets))
                self._log(m, "replay_miss", [MISS] * len(p.assets), key=key)
            elif m in self._dead:
                self.member_stats[m].errors[self._dead[m]] += 1
                self._record(m, [ERROR] * len(p.assets))
                self._log(m, "skipped", [ERROR] * len(p.assets), key=key)
            elif self._is_suspended(m):
                self.member_stats[m].calls_skipped += 1
                self._record(m, [ERROR] * len(p.assets))
                self._log(m, "skipped", [ERROR] * len(p.assets), key=key)
            else:
                todo.append((m, p, key))
        if todo:
            if self._loop is None or self._loop.is_closed():
                self._loop = asyncio.new_event_loop()
            results, why, latency = self._loop.run_until_complete(
                self._call_all(todo, deadline))
            for (m, p, key), ds, outcome, sec in zip(todo, results, why, latency, strict=True):
                self._record(m, ds)
                self._diversity(m, p, ds)
                self._log(m, outcome, ds, sec, key=key)
                for j, d in zip(p.assets, ds, strict=True):
                    out[m][j] = d
        return out

    async def _call_all(self, todo, deadline: float
                        ) -> tuple[list[list[Decision]], list[str], list[float | None]]:
        """Every call of one decision under its deadline: the decisions, each call's outcome
        (new, timeout, not_started, error) and its reply's latency."""
        sem = asyncio.Semaphore(self.config.concurrency)
        sent = [False] * len(todo)  # a request went out (else the deadline overtook it)
        why = ["error"] * len(todo)
        latency: list[float | None] = [None] * len(todo)
        tasks = [asyncio.ensure_future(self._call(m, p, key, deadline, sem, sent, k, why,
                                                  latency))
                 for k, (m, p, key) in enumerate(todo)]
        remaining = max(0.0, deadline - time.perf_counter())
        done, pending = await asyncio.wait(tasks, timeout=remaining)
        for t in pending:
            t.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)
        results = []
        for k, ((m, p, _), t) in enumerate(zip(todo, tasks, strict=True)):
            if t in done and not t.cancelled() and t.exception() is None:
                results.append(t.result())
            else:
                if sent[k]:
                    self.member_stats[m].errors["timeout"] += 1
                    self._outcome.setdefault(m, "failed")
                    why[k] = "timeout"
                else:  # never sent: not a timeout of the member's
                    self.member_stats[m].not_started += 1
                    why[k] = "not_started"
                results.append([ERROR] * len(p.assets))
        return results, why, latency

    async def _call(self, member: str, prompt: Prompt, key: str, deadline: float,
                    sem: asyncio.Semaphore, sent: list[bool], k: int, why: list[str],
                    latency: list[float | None]) -> list[Decision]:
        cfg = self.config
        backend = self.backends[member]
        stats = self.member_stats[member]
        async with sem:
            if member not in self._checked:
                try:
                    self._checked[member] = await backend.health(
                        max(0.1, deadline - time.perf_counter()))
                except BackendError as exc:
                    stats.errors[exc.kind] += 1
                    if exc.kind in ("model_not_found", "unavailable"):
                        self._dead[member] = exc.kind
                        return [ERROR] * len(prompt.assets)
            max_tokens = self.members[member].max_tokens or prompt.max_tokens
            for attempt in range(cfg.retries + 1):
                remaining = deadline - time.perf_counter()
                if remaining <= 0:
                    if sent[k]:
                        stats.errors["timeout"] += 1
                        why[k] = "timeout"
                    else:
                        stats.not_started += 1
                        why[k] = "not_started"
                    return [ERROR] * len(prompt.assets)
                stats.calls += 1
                sent[k] = True
                try:
                    reply = await backend.chat(list(prompt.messages), prompt.schema, remaining,
                                               max_tokens)
                except (BackendError, TimeoutError) as exc:
                    kind = exc.kind if isinstance(exc, BackendError) else "timeout"
                    stats.errors[kind] += 1
                    why[k] = "timeout" if kind == "timeout" else "error"
                    if kind in ("timeout", "unreachable"):
                        self._outcome.setdefault(member, "failed")
                    if kind in ("model_not_found", "unavailable"):
                        self._dead[member] = kind
                        break
                    pause = min(cfg.backoff_seconds * 2**attempt,
                                max(0.0, deadline - time.perf_counter()))
                    if attempt < cfg.retries and pause > 0:
                        await asyncio.sleep(pause)
                    continue
                self._outcome[member] = "ok"
                why[k] = "new"
                latency[k] = reply.latency
                stats.latency.append(reply.latency)
                stats.prompt_tokens += reply.prompt_tokens or 0
                stats.completion_tokens += reply.completion_tokens or 0
                stats.thinking_chars += len(reply.thinking)
                if reply.finish_reason == "length":
                    stats.truncations += 1
                self.cache.put(key, backend=backend.kind, model=self.members[member].model,
                               digest=self._checked.get(member),
                               reply={"text": reply.text, "prompt_tokens": reply.prompt_tokens,
                                      "completion_tokens": reply.completion_tokens,
                                      "finish_reason": reply.finish_reason})
                settled = backend.settled_mode()
                if settled is not None and member not in self._mode_saved:
                    self.cache.put_mode(*settled)
                    self._mode_saved.add(member)
                return self._parse(reply.text, prompt, reply.finish_reason)
        return [ERROR] * len(prompt.assets)
