"""PortfolioVectorEnv: n books of the same engine stepped in one pass.

``gym.make_vec("ffe/Portfolio-v0", num_envs=n, vectorization_mode="vector_entry_point")``
builds it: one :class:`~ffe_gym.portfolio.Portfolio` of n books, one compiled call a step for
every book's actions, engine step, settling and observation. Autoreset is next-step (the
Gymnasium default) or same-step. At an episode end the book's portfolio statistics are in
``info["portfolio_episode"]`` (mask ``_portfolio_episode``), so Gymnasium's
``RecordEpisodeStatistics`` adds its ``info["episode"]`` beside them;
:class:`~ffe_gym.env.sb3.SB3VecEnv` adapts the env to stable-baselines3 (``terminal_observation``,
``TimeLimit.truncated``). ``step_info=False`` builds no per-step info arrays, and ``copy=False``
writes the observations into one preallocated batch returned as views valid until the next
step (as ``SyncVectorEnv(copy=False)``). ``threads=k`` splits the books over k numba threads
inside the step, bit for bit the serial result; ``threads="auto"`` times each step from its
start to the next (so the caller's work counts) and keeps one or two threads by what it
measures (:mod:`~ffe_gym.env.threads`): numba's threads help an idle machine and hurt beside a
busy process. The vector env equals n single envs stepped alike (tested).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from gymnasium.vector.utils import batch_space

from ffe_gym.config import Config
from ffe_gym.data import MarketData
from ffe_gym.env.core import EnvCore
from ffe_gym.portfolio import layout as L


class PortfolioVectorEnv(VectorEnv):
    """n independent books over one dataset, stepped together by one engine call.

    Each book has its own episode window and its own random generator: ``reset(seed=s)`` seeds
    book i with ``s + i`` (a list seeds each book), exactly as n :class:`PortfolioEnv` reset with
    those seeds, so n single envs stepped with the same actions give the same trajectories.

    Autoreset: ``NEXT_STEP`` (Gymnasium's default; the step after an episode ends resets that
    book, ignores its action and returns its first observation with reward 0) or ``SAME_STEP``
    (the ending step resets at once; the last observation and info are in
    ``info["final_obs"]`` and ``info["final_info"]``). The mode is in ``metadata``.

    ``info`` holds batched arrays: ``bar``, ``equity``, ``cash``, ``drawdown``, ``weights``
    (n, N), ``n_fills``, ``refused`` (n, N reason codes, ``layout.REFUSAL_NAMES``) and
    ``status`` (codes, ``layout.STATUS_NAMES``), each with its ``_key`` mask; when episodes
    end, ``portfolio_episode`` holds their portfolio statistics (equity, return, sharpe,
    max_drawdown, turnover, costs, steps; see ``EnvCore.episode_stats``) with the mask
    ``_portfolio_episode``. The key ``episode`` is left to Gymnasium's
    ``RecordEpisodeStatistics`` (``{r, l, t}``), which wraps this env as it wraps any other.

    :param num_envs: n, the number of books.
    :param config: as for :class:`PortfolioEnv`.
    :param data: as for :class:`PortfolioEnv`.
    :param autoreset_mode: ``AutoresetMode.NEXT_STEP`` or ``AutoresetMode.SAME_STEP``.
    :param step_info: build the per-step ``info`` arrays (``False`` leaves only
        ``portfolio_episode`` and, in same-step mode, ``final_obs``: what a trainer needs).
    :param copy: return fresh observation arrays every step (the default, as Gymnasium's
        ``SyncVectorEnv(copy=True)``); ``False`` writes every step into one preallocated
        batch and returns views of it, valid until the next ``step`` or ``reset`` (a trainer
        that copies observations into its own buffer, as SB3 and CleanRL do, loses nothing).
    :param threads: numba threads the books are split over in the engine step and the
        observations (1: serial; the trajectories are the same bit for bit); ``"auto"``:
        numba's threads or one, whichever each step is measured faster with
        (:mod:`ffe_gym.env.threads`; two threads lose to one beside a busy process).
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": [],
                                          "autoreset_mode": AutoresetMode.NEXT_STEP}

    def __init__(self, num_envs: int = 1, config: Config | Mapping | str | Path | None = None,
                 data: MarketData | str | Path | None = None,
                 autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
                 render_mode: str | None = None, step_info: bool = True,
                 copy: bool = True, threads: int | str = 1) -> None:
        mode = AutoresetMode(autoreset_mode)
        if mode == AutoresetMode.DISABLED:
            raise ValueError("autoreset_mode DISABLED is not supported; use NEXT_STEP or "
                             "SAME_STEP")
        if render_mode is not None:
            raise ValueError("PortfolioVectorEnv does not render; render a PortfolioEnv")
        self.core = EnvCore(config, data, int(num_envs), threads=threads)
        self.num_envs = int(num_envs)
        self.config = self.core.config
        self.market = self.core.market
        self.layout = self.core.layout
        self.metadata = {**self.metadata, "autoreset_mode": mode}
        self.render_mode = None
        self.single_action_space = self.core.scheme.space
        self.action_space = batch_space(self.single_action_space, self.num_envs)
        self.single_observation_space = self.core.observations.space
        self.observation_space = batch_space(self.single_observation_space, self.num_envs)
        self._rngs: list[np.random.Generator] = [
            seeding.np_random()[0] for _ in range(self.num_envs)]
        self._options: list[dict[str, Any] | None] = [None] * self.num_envs
        self._pending = np.zeros(self.num_envs, dtype=bool)  # NEXT_STEP: reset on next step
        self._ones = np.ones(self.num_envs, dtype=bool)
        self.step_info = step_info
        self.copy = copy
        b = self.core.observations
        self._obs = None if copy else np.empty((self.num_envs, sum(b.sizes.values())),
                                               dtype=np.float32)

    @property
    def portfolio(self):
        """The engine (n books) behind this env."""
        return self.core.portfolio

    def view(self, obs: dict | np.ndarray) -> np.ndarray:
        """The market part of a batch of observations as (n, W, N, F)."""
        return self.core.observations.view(obs)

    # ------------------------------------------------------------------ reset
    def _reset(self, books: np.ndarray) -> None:
        idx = np.flatnonzero(books)
        starts = np.empty(len(idx), dtype=np.int64)
        ends = np.empty(len(idx), dtype=np.int64)
        for k, b in enumerate(idx):
            starts[k], ends[k] = self.core.window(self._options[b], self._rngs[b])
        self.core.reset_books(books, starts, ends)

    def reset(self, *, seed: int | Sequence[int | None] | None = None,
              options: Mapping[str, Any] | Sequence[Mapping[str, Any] | None] | None = None
              ) -> tuple[Any, dict[str, Any]]:
        """Reset every book.

        :param seed: an int (book i gets ``seed + i``), a list of per-book seeds, or None.
        :param options: ``{"start": ..., "end": ...}`` for every book, or a list per book;
            kept for the autoresets that follow.
        """
        if seed is not None:
            seeds = ([seed + i for i in range(self.num_envs)] if isinstance(seed, int)
                     else list(seed))
            if len(seeds) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} seeds, got {len(seeds)}")
            for i, s in enumerate(seeds):
                if s is not None:
                    self._rngs[i] = seeding.np_random(s)[0]
        if options is None or isinstance(options, Mapping):
            self._options = [dict(options) if options else None] * self.num_envs
        else:
            self._options = [dict(o) if o else None for o in options]
            if len(self._options) != self.num_envs:
                raise ValueError(f"expected {self.num_envs} option mappings")
        self._reset(self._ones)
        self._pending[:] = False
        return self._observe(), self._info()

    # ------------------------------------------------------------------ step
    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        core = self.core
        pending = self._pending
        if pending.any():
            self._reset(pending)
            active = ~pending
            out, rewards, terminated, truncated = core.step(actions, active, self._obs)
            terminated &= active
            truncated &= active
        else:
            out, rewards, terminated, truncated = core.step(actions, None, self._obs)
        obs = core.observations.split(out)
        done = terminated | truncated
        if not done.any():
            self._pending = done
            return obs, rewards, terminated, truncated, self._info() if self.step_info else {}
        episode = core.episode_stats()
        if self.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP:
            final_obs = obs if self.copy else core.observations.split(out.copy())
            final_info = self._info() if self.step_info else {}
            self._reset(done)
            info = self._info() if self.step_info else {}
            info["portfolio_episode"], info["_portfolio_episode"] = episode, done.copy()
            info["final_obs"] = final_obs
            info["final_info"] = final_info
            info["_final_obs"] = info["_final_info"] = done.copy()
            return self._observe(), rewards, terminated, truncated, info
        self._pending = done
        info = self._info() if self.step_info else {}
        info["portfolio_episode"], info["_portfolio_episode"] = episode, done.copy()
        return obs, rewards, terminated, truncated, info

    def _observe(self) -> dict[str, np.ndarray] | np.ndarray:
        return self.core.observe(self._obs)

    def _info(self) -> dict[str, Any]:
        pf = self.core.portfolio
        info = {
            "bar": pf.clock[:, L.BAR].copy(), "equity": pf.acct[:, L.EQUITY].copy(),
            "cash": pf.acct[:, L.CASH].copy(), "drawdown": pf.drawdown(),
            "weights": pf.weights(), "n_fills": pf.n_fills.copy(),
            "refused": pf.refused.copy(), "status": pf.clock[:, L.STATUS].copy(),
        }
        for key in list(info):
            info[f"_{key}"] = self._ones.copy()
        return info

    def close_extras(self, **kwargs: Any) -> None:
        pass
