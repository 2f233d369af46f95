"""EnvCore: what PortfolioEnv (B = 1) and PortfolioVectorEnv (B = n) share.

One :class:`~ffe_gym.portfolio.Portfolio` of B books over one dataset, the action scheme, the
observation builder, the reward and the episode windows. The accounting stays in the engine;
this layer only translates.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numba
import numpy as np
import pandas as pd

from ffe_gym.config import Config, coerce_config
from ffe_gym.data import MarketData, load_market, market_from_config
from ffe_gym.env import stepping as S
from ffe_gym.env.actions import any_strides, make_scheme
from ffe_gym.env.observations import ObservationBuilder, ObservationLayout, check_buffer
from ffe_gym.env.rewards import Reward, StepOutcome
from ffe_gym.env.threads import ThreadTuner
from ffe_gym.features import compute_features, lookback
from ffe_gym.portfolio import Portfolio
from ffe_gym.portfolio import layout as L
from ffe_gym.portfolio.book import ruin_floor


def resolve_market(data: Any, cfg: Config) -> MarketData:
    """``data`` as given, loaded from a path with ``cfg.data``'s settings, or from config."""
    if isinstance(data, MarketData):
        return data
    if data is None:
        return market_from_config(cfg.data)
    if isinstance(data, (str, Path, pd.DataFrame, Mapping)):
        d = cfg.data
        return load_market(data, symbols=d.symbols, calendar=d.calendar,
                           max_fill_bars=d.max_fill_bars, min_bars=d.min_bars, start=d.start,
                           end=d.end)
    raise TypeError(f"data must be MarketData, a path, a DataFrame (or a mapping of them) or "
                    f"None, got {type(data).__name__}")


class EnvCore:
    """B books, their windows, actions, observations and rewards.

    :param config: a :class:`Config`, a mapping, a YAML path or None.
    :param data: a :class:`MarketData`, a path, or None for ``config.data``.
    :param n_books: B.
    :param threads: numba threads of the engine step (see :class:`Portfolio`) and of the
        observations; ``"auto"``: numba's threads, each step on one or all of them, whichever
        is measured faster (:class:`~ffe_gym.env.threads.ThreadTuner`).
    """

    def __init__(self, config: Config | Mapping | str | Path | None,
                 data: MarketData | str | Path | None, n_books: int,
                 threads: int | str = 1) -> None:
        self.tuner = None
        self._last_step: tuple[float, int] | None = None  # (start, threads) of the last step
        if threads == "auto":
            threads = min(numba.config.NUMBA_NUM_THREADS, os.cpu_count() or 1)
            if threads > 1 and n_books > 1:
                self.tuner = ThreadTuner(threads)
        elif isinstance(threads, str):
            raise ValueError(f"threads must be an integer >= 1 or 'auto', got {threads!r}")
        self.config = cfg = coerce_config(config)
        self.market = md = resolve_market(data, cfg)
        self.n_books = n_books
        ecfg = cfg.env
        self.portfolio = Portfolio(md, cfg, n_books=n_books, threads=threads)
        self.features = compute_features(md, ecfg.features)
        self.scheme = make_scheme(ecfg.action_scheme, md.n_assets, dead_band=ecfg.dead_band,
                                  levels=ecfg.confidence_levels,
                                  allow_short=cfg.risk.allow_short)
        self.observations = ObservationBuilder(self.features, ecfg.window, ecfg.features.clip,
                                               ecfg.observation == "flat",
                                               cfg.risk.cooldown_bars, threads=threads)
        self._fill_args = self.observations.fill_args
        self.reward = Reward(ecfg.reward, n_books)
        steps = self.portfolio.next_decision - np.arange(md.n_bars)
        spacing = (np.asarray((md.index[1:] - md.index[:-1]).total_seconds()) if md.n_bars > 1
                   else np.zeros(1))
        self.layout = ObservationLayout(
            ecfg.window, md.symbols, tuple(ecfg.features.names), ecfg.observation == "flat",
            ecfg.action_scheme, bar_seconds=float(np.median(spacing)),
            decision_bars=int(np.median(steps[steps > 0])) if (steps > 0).any() else 1,
            decision_seconds=float(np.median(np.asarray(
                (md.index[self.portfolio.next_decision] - md.index).total_seconds())[steps > 0]))
            if (steps > 0).any() else 0.0,
            fee_rate=cfg.execution.fee_rate, slippage=cfg.execution.slippage,
            allow_short=cfg.risk.allow_short, clip=ecfg.features.clip)
        self.first_bar = ecfg.window - 1  # the earliest decision bar an observation allows
        self.warmup = max(self.first_bar, lookback(ecfg.features))
        if self.warmup >= md.n_bars - 1:
            from ffe_gym.data import DataError

            raise DataError(f"{md.n_bars} bars leave no room after a warm-up of "
                            f"{self.warmup} bars (window {ecfg.window}, features)",
                            file=md.source)
        self.floor = ruin_floor(cfg)  # the engine's floor: one rule
        self.threads = self.portfolio.threads
        self._fees = np.zeros(n_books)  # cumulative fees and borrow at the last info (book b)
        self._borrow = np.zeros(n_books)
        # per book: the sums kept between steps and what the last step did (rows of
        # stepping.ACC_ROWS), and the end flags, written by the compiled step
        self._acc = np.zeros((S.ACC_ROWS, n_books))
        self._flags = np.zeros((2, n_books), dtype=np.bool_)
        self._every = np.ones(n_books, dtype=np.bool_)
        rc = ecfg.reward
        self._plain_log = (rc.kind == "log_return" and not rc.drawdown_penalty
                           and not rc.turnover_penalty)
        self._out_shape = (n_books, self.observations.total)
        self._action_shape = (n_books, *self.scheme.space.shape)
        self._step: Callable[..., int] | None = None  # bound at the first step (_bind_step)

    # ------------------------------------------------------------------ windows
    def bar_of(self, when: Any, *, end: bool = False) -> int:
        """A bar index from an int, a date string or a Timestamp (``end``: last bar <= when)."""
        if isinstance(when, (int, np.integer)):
            return int(when)
        if isinstance(when, (str, pd.Timestamp)):
            md = self.market
            return md.locate(when, side="right") - 1 if end else md.locate(when)
        raise ValueError(f"a window bound must be a bar index or a date, got {when!r}")

    def window(self, options: Mapping[str, Any] | None,
               rng: np.random.Generator, *, empty: bool = False) -> tuple[int, int]:
        """(start, end) of an episode: from ``options`` or drawn with ``rng``; ``empty``
        allows ``start == end`` (an observation at ``start`` and no bar to step)."""
        T = self.market.n_bars
        options = dict(options or {})
        unknown = set(options) - {"start", "end"}
        if unknown:
            raise ValueError(f"unknown reset option {sorted(unknown)[0]!r} (allowed: start, end)")
        length = self.config.env.episode_bars
        if "start" in options:
            start = self.bar_of(options["start"])
        elif length is None or T - 1 - length <= self.warmup:
            start = self.warmup
        else:
            start = int(rng.integers(self.warmup, T - 1 - length + 1))
        if "end" in options:
            end = self.bar_of(options["end"], end=True)
        else:
            end = T - 1 if length is None else min(start + length, T - 1)
        if start < self.first_bar or start > end or (start == end and not empty) or end > T - 1:
            md = self.market
            raise ValueError(
                f"episode window start={start}, end={end} is not allowed: need "
                f"{self.first_bar} <= start < end <= {T - 1} (window={self.config.env.window} "
                f"bars of history; data {md.index[0]} .. {md.index[-1]})")
        return start, end

    def reset_books(self, books: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> None:
        """Start the books in the mask ``books`` flat at ``starts``, windows ending at ``ends``."""
        pf = self.portfolio
        s = pf.clock[:, L.BAR].copy()
        e = pf.clock[:, L.END].copy()
        s[books], e[books] = starts, ends
        pf.reset(start=s, end=e, books=books)
        self.reward.reset(books)
        acc = self._acc
        acc[S.TRADED_LAST, books] = 0.0
        self._fees[books] = 0.0
        self._borrow[books] = 0.0
        acc[S.EP_STEPS:, books] = 0.0
        acc[S.EP_PEAK, books] = pf.acct[books, L.EQUITY]

    # ------------------------------------------------------------------ stepping
    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_step"] = None  # bound to the engine's arrays: rebound
        return state

    def _bind_step(self) -> Callable[..., int]:
        """The compiled env step with every argument but (active, scheme, raw, out) bound:
        its entry point (:func:`~ffe_gym.env.stepping.entry_point`) for the types those four
        always have here (a C-contiguous bool mask, an int, float32 actions of any strides, a
        C-contiguous (B, total) float32 buffer). Bound at the first step, and again after
        unpickling."""
        pf, B = self.portfolio, self.n_books
        fixed = (*pf.kernel_args, self._acc, self._flags, self.floor, *self._fill_args,
                 float(getattr(self.scheme, "dead_band", 0.0)))
        fn = S.step_observe
        if self.threads > 1 and B > 1:
            fixed, fn = (min(self.threads, B), *fixed), S.step_observe_threaded
        probe = (self._every, L.SIGNALS, any_strides(np.dtype(np.float32)),
                 np.empty(self._out_shape, dtype=np.float32))
        self._step = functools.partial(S.entry_point(fn, fixed + probe), *fixed)
        return self._step

    def _advance(self, actions: np.ndarray, active: np.ndarray | None,
                 out: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Check the actions, then (in one compiled call) decode them, step, settle and
        observe every book; (the filled buffer, the mask of books stepped). Refused actions
        raise before anything changes."""
        code, raw = self.scheme.stage(self.portfolio, actions, self._action_shape)
        if active is None:
            stepped = self._every
        else:
            stepped = np.ascontiguousarray(active, dtype=np.bool_)
            if stepped.shape != self._every.shape:
                raise ValueError(f"active must have shape {self._every.shape}, got "
                                 f"{stepped.shape}")
        if out is None:
            out = np.empty(self._out_shape, dtype=np.float32)
        else:
            check_buffer(out, self._out_shape)
        step = self._step or self._bind_step()
        if self.tuner is not None:  # timed from step to step: the caller's work counts too
            now = time.perf_counter()
            if self._last_step is not None:
                self.tuner.record(self._last_step[1], now - self._last_step[0])
            n = self.tuner.choose()
            numba.set_num_threads(n)
            self._last_step = (now, n)
            error = step(stepped, code, raw, out)
        else:
            if self.threads > 1 and self.n_books > 1:
                numba.set_num_threads(self.threads)
            error = step(stepped, code, raw, out)
        if error:
            self.scheme.refuse(error, raw)
        return out, stepped

    def _rewards(self, stepped: np.ndarray, active: np.ndarray | None,
                 fresh: bool) -> np.ndarray:
        acc = self._acc
        if self._plain_log:
            return acc[S.LOG_RETURN].copy() if fresh else acc[S.LOG_RETURN]
        pf = self.portfolio
        rewards = self.reward(StepOutcome(acc[S.BEFORE].copy(), pf.acct[:, L.EQUITY],
                                          self.floor, acc[S.TRADED].copy(),
                                          acc[S.DRAWDOWN].copy()))
        return rewards if active is None else np.where(stepped, rewards, 0.0)

    def step(self, actions: np.ndarray, active: np.ndarray | None = None,
             out: np.ndarray | None = None, fresh: bool = True
             ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Apply a batch of actions and observe: (observations, rewards, terminated,
        truncated). The observations of every book are written into ``out`` (a (B, total)
        C-contiguous float32 buffer) or a fresh array, and returned as that array
        (``observations.split`` gives the env's form); rewards and flags are (B,): fresh
        arrays, or with ``fresh=False`` buffers overwritten by the next step (for a caller
        that reads them at once). A refused batch raises before anything changes."""
        out, stepped = self._advance(actions, active, out)
        rewards = self._rewards(stepped, active, fresh)
        flags = self._flags
        term, trunc = flags[S.TERMINATED], flags[S.TRUNCATED]
        if not fresh:
            return out, rewards, term, trunc
        return out, rewards, term.copy(), trunc.copy()

    def step_one(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool]:
        """:meth:`step` of a one-book core (the single env): a fresh (total,) observation
        buffer, the reward and the terminated and truncated flags as Python scalars."""
        out, stepped = self._advance(np.asarray(action)[None], None, None)
        # B = 1: the flat index of row k, book 0, is k
        reward = (self._acc.item(S.LOG_RETURN) if self._plain_log
                  else float(self._rewards(stepped, None, False)[0]))
        return out[0], reward, self._flags.item(S.TERMINATED), self._flags.item(S.TRUNCATED)

    def episode_stats(self) -> dict[str, np.ndarray]:
        """Per-book statistics of the running episodes (arrays of shape (B,)).

        ``return`` is equity / initial - 1; ``sharpe`` is annualised from the decision-step log
        returns; ``max_drawdown`` is measured on step-end equity (>= 0); ``turnover`` is traded
        notional / initial balance; ``costs`` are fees plus borrow.
        """
        pf = self.portfolio
        init = pf.params[L.P_INITIAL]
        ep = self._acc
        n = np.maximum(ep[S.EP_STEPS], 1.0)
        mean = ep[S.EP_SUM] / n
        var = np.maximum(ep[S.EP_SUM2] / n - mean**2, 0.0) * n / np.maximum(n - 1.0, 1.0)
        bars_per_step = np.maximum(ep[S.EP_BARS] / n, 1.0)
        scale = np.sqrt(pf.params[L.P_PERIODS_PER_YEAR] / bars_per_step)
        with np.errstate(divide="ignore", invalid="ignore"):
            sharpe = np.where(var > 0, mean / np.sqrt(var) * scale, 0.0)
        P = pf.pos
        return {"equity": pf.acct[:, L.EQUITY].copy(),
                "return": pf.acct[:, L.EQUITY] / init - 1.0, "sharpe": sharpe,
                "max_drawdown": ep[S.EP_MAXDD].copy(), "turnover": pf.acct[:, L.TRADED] / init,
                "costs": (P[:, :, L.FEES] + P[:, :, L.BORROW]).sum(axis=1),
                "steps": ep[S.EP_STEPS].copy()}

    def observe(self, out: np.ndarray | None = None) -> dict[str, np.ndarray] | np.ndarray:
        return self.observations.build(self.portfolio, out)

    # ------------------------------------------------------------------ info
    def info(self, b: int) -> dict[str, Any]:
        """The single-env ``info`` of book b after a reset or step."""
        pf = self.portfolio
        symbols = self.market.symbols
        book, a = pf.summary(b)
        equity, cash, drawdown, var, gross, _, fees, borrow, _, n_refused = book.tolist()
        step_fees, step_borrow = fees - float(self._fees[b]), borrow - float(self._borrow[b])
        self._fees[b], self._borrow[b] = fees, borrow
        fills, stops = [], 0
        if pf.n_fills[b]:
            fills = [_fill_record(f, symbols) for f in pf.fills[b, : pf.n_fills[b]].tolist()]
            stops = sum(f["reason"] != "signal" for f in fills)
        refused = {}
        if n_refused:
            refused = {symbols[i]: L.REFUSAL_NAMES[r] for i, r in enumerate(pf.refused[b]) if r}
        return {
            "bar": int(pf.clock[b, L.BAR]),
            "equity": equity,
            "cash": cash,
            "drawdown": drawdown,
            "var": var,
            "gross_exposure": gross,
            "weights": a[:, L.A_WEIGHT],
            "fills": fills,
            "refused": refused,
            "stop_events": stops,
            "costs": {"fees": step_fees, "borrow": step_borrow},
            "attribution": {"realized": a[:, L.A_REALIZED], "unrealized": a[:, L.A_UNREALIZED],
                            "fees": a[:, L.A_FEES], "borrow": a[:, L.A_BORROW],
                            "pnl": a[:, L.A_PNL], "trades": a[:, L.A_TRADES],
                            "wins": a[:, L.A_WINS]},
            "refusals_total": dict(zip(L.REFUSAL_NAMES[1:], pf.count[b, 1:].tolist(),
                                       strict=True)),
            "status": L.STATUS_NAMES[pf.clock[b, L.STATUS]],
        }


def _fill_record(f: list[float], symbols: tuple[str, ...]) -> dict[str, Any]:
    return {"bar": int(f[L.F_BAR]), "asset": symbols[int(f[L.F_ASSET])],
            "units": f[L.F_UNITS], "price": f[L.F_PRICE], "fee": f[L.F_FEE], "pnl": f[L.F_PNL],
            "closing": bool(f[L.F_CLOSING]), "reason": L.REASON_NAMES[int(f[L.F_REASON])]}
