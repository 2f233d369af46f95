"""PortfolioEnv: the engine as a Gymnasium environment (one book)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np

from ffe_gym.config import Config
from ffe_gym.data import MarketData
from ffe_gym.env.core import EnvCore
from ffe_gym.env.market_view import MarketView
from ffe_gym.portfolio import layout as L

_ONE = np.ones(1, dtype=bool)


class PortfolioEnv(gym.Env):
    """A multi-asset portfolio: each step is one trading decision over N assets.

    ## Description

    The policy manages one book of N assets (crypto, forex, stocks: any aligned panel). Each step
    it states an intent per asset (or target weights); the engine sizes openings on equity with
    a correlation adjustment, enforces max positions, cash, short and gross exposure caps and a
    95% VaR limit, fills at the next open (or the close) with slippage and fees, then runs the
    bars until the next decision: per-asset stop-loss and take-profit on highs and lows, mark to
    market, borrow on shorts, the portfolio drawdown stop and ruin. The rules are in
    :mod:`ffe_gym.portfolio.specification` (plain Python, checked against the compiled kernel);
    every number is tested by hand.

    ## Action Space

    ``env.action_scheme`` chooses:

    * ``signals`` (default): ``Box(-1, 1, (N,), float32)``. Sign = direction (SELL < 0 < BUY),
      magnitude = confidence; ``|a| < dead_band`` (0.1) is HOLD. BUY while flat opens a long,
      BUY while short covers and opens a long, SELL while long closes, SELL while flat opens a
      short (if allowed); the rest keeps the position.
    * ``discrete``: ``MultiDiscrete([2k+1] * N)``; with ``confidence_levels`` k = 1,
      0 = SELL, 1 = HOLD, 2 = BUY at confidence 1; in general i means level i - k.
    * ``single``: ``Discrete(2N + 1)``, one asset per step (what DQN needs): 0 holds every
      position, 1 + i is BUY asset i, N + 1 + i is SELL asset i (confidence 1), the others HOLD.
    * ``weights``: ``Box(-1, 1, (N + 1,), float32)``; the last entry is cash. Target weights
      ``a / sum(|a|)``; negatives clipped to 0 when shorting is off; all zero = all cash.

    A wrong shape or dtype, NaN, or a value outside the space raises ``ValueError``.

    ## Observation Space

    ``Dict`` of 1-D float32 arrays, every value clipped to ``+-features.clip`` (10):

    * ``market`` (W * N * F): the last W bars (``window``, 24) of F causal features per asset
      (log_return, range, volatility, rsi, macd, volume_z; see ``ffe_gym.features``), order
      (bar oldest first, asset, feature). ``env.unwrapped.view(obs)`` reshapes it to (W, N, F).
    * ``positions`` (N * 4): per asset weight, unrealized_return, stop_distance,
      target_distance.
    * ``account`` (6): equity / initial - 1, cash / equity, gross and net exposure / equity,
      drawdown, cooldown left.

    ``observation: flat`` gives one ``Box`` with the three concatenated (for ``MlpPolicy``).
    Features are computed once per dataset from bars <= t; nothing in an observation depends on
    a later bar (tested by changing every price after t).

    ## Rewards

    ``log(equity_after / equity_before)`` per step by default, net of fees, slippage and borrow;
    so the sum over an episode without ruin is ``log(final / initial equity)``. On ruin the
    equity is floored at the ruin floor (a clipped reward). Alternatives (``env.reward``): the
    differential Sharpe ratio, penalties on drawdown and turnover, or any ``"module:callable"``.

    ## Starting State

    Flat, all cash (``initial_balance``, 10,000). Training episodes start at a random bar (drawn
    with ``self.np_random``) after the warm-up and last ``episode_bars`` bars (1000); evaluation
    passes a fixed window: ``reset(seed=..., options={"start": "2023-01-01", "end": 5000})``
    (dates or bar indices). With ``episode_bars: null`` an episode covers the whole data.
    ``start == end`` gives the observation at that bar and an episode with nothing left to step
    (what a live loop asks at the newest bar); ``step`` then raises.

    ## Episode End

    * Terminated: the portfolio stop fired with ``on_portfolio_stop: terminate`` (drawdown
      beyond ``max_drawdown``, 5%), or equity fell to the ruin floor (1% of initial).
    * Truncated: the episode's window (or the data) ended.

    Stepping after the end raises ``RuntimeError``; call ``reset()``.

    ## Info

    ``bar``, ``equity``, ``cash``, ``drawdown``, ``var`` (parametric 95% VaR of the book over one
    decision period, share of equity), ``weights``, ``gross_exposure``, ``fills`` (this step:
    asset, units, price, fee, pnl, reason), ``refused`` (asset -> reason), ``stop_events``,
    ``costs`` (fees and borrow this step), ``attribution`` (per-asset arrays so far),
    ``refusals_total`` and ``status``.

    ## Arguments

    ```python
    import gymnasium as gym, ffe_gym
    env = gym.make("ffe/Portfolio-v0")                        # synthetic default market
    env = gym.make("ffe/Portfolio-v0", config="my.yaml", data="prices/", render_mode="ansi")
    ```

    * ``config``: a :class:`ffe_gym.Config`, a nested mapping, a YAML path, or None (defaults).
    * ``data``: a :class:`ffe_gym.MarketData`, a file or directory of market data, or None
      (``config.data``: the embedded SYNTHETIC market by default).
    * ``render_mode``: ``"ansi"`` (a text summary) or ``"rgb_array"`` (equity, drawdown and
      weights, drawn with matplotlib).
    * ``step_info``: build the ``info`` above at every step (default). ``False`` returns an
      empty dict from ``step``, except the last step of an episode, whose info holds
      ``portfolio_episode`` (what a trainer needs; ``reset`` still returns the full info), and
      costs less (`python scripts/benchmark.py --sections env`).

    ## Vectorized version

    ``gym.make_vec("ffe/Portfolio-v0", num_envs=n, vectorization_mode="vector_entry_point")``
    gives :class:`ffe_gym.env.PortfolioVectorEnv`: n books stepped in one pass of the same
    engine (next-step autoreset), each with its own window and seed. For stable-baselines3,
    :class:`ffe_gym.env.SB3VecEnv` adapts it without subprocesses.

    ## Version History

    * v0: initial release.
    """

    metadata: ClassVar[dict[str, Any]] = {"render_modes": ["ansi", "rgb_array"], "render_fps": 4}

    def __init__(self, config: Config | Mapping | str | Path | None = None,
                 data: MarketData | str | Path | None = None,
                 render_mode: str | None = None, step_info: bool = True) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be one of {self.metadata['render_modes']}, "
                             f"got {render_mode!r}")
        self.core = EnvCore(config, data, 1)
        self.config = self.core.config
        self.market = self.core.market
        self.layout = self.core.layout
        self.action_space = self.core.scheme.space
        self.observation_space = self.core.observations.space
        self.render_mode = render_mode
        self.step_info = bool(step_info)
        self._done = True
        self._history: dict[str, list] | None = None

    @property
    def portfolio(self):
        """The engine (one book) behind this env."""
        return self.core.portfolio

    def view(self, obs: dict | np.ndarray) -> np.ndarray:
        """The market part of an observation as (W, N, F)."""
        return self.core.observations.view(obs)

    def market_view(self) -> MarketView:
        """A read-only view of prices and volumes up to the current bar (never later)."""
        return MarketView(self.market, self.portfolio)

    def _observation(self) -> dict[str, np.ndarray] | np.ndarray:
        return self.core.observations.build_one(self.core.portfolio)

    def reset(self, *, seed: int | None = None,
              options: dict[str, Any] | None = None) -> tuple[Any, dict[str, Any]]:
        super().reset(seed=seed)
        start, end = self.core.window(options, self.np_random, empty=True)
        self.core.reset_books(_ONE, np.array([start]), np.array([end]))
        self._done = start == end  # the newest bar's observation, nothing to step (live)
        if self.render_mode is not None:
            pf = self.portfolio
            self._history = {"bars": [start], "equity": [float(pf.equity[0])],
                             "weights_bars": [start], "weights": [pf.weights()[0].copy()]}
        return self._observation(), self.core.info(0)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        if self._done:
            raise RuntimeError("step() called on an ended episode (or before reset()); "
                               "call reset() first")
        core = self.core
        row, reward, term, trunc = core.step_one(action)
        self._done = term or trunc
        if self._history is not None:
            self._record()
        info = core.info(0) if self.step_info else {}
        if self._done:  # the episode's portfolio statistics, as the vector env gives them
            info["portfolio_episode"] = {k: float(v[0])
                                         for k, v in core.episode_stats().items()}
        return core.observations.split_row(row), reward, term, trunc, info

    def _record(self) -> None:
        pf = self.portfolio
        n = int(pf.n_curve[0])
        last = int(pf.bar[0])
        h = self._history
        h["bars"].extend(range(last - n + 1, last + 1))
        h["equity"].extend(pf.curve[0, :n].tolist())
        h["weights_bars"].append(last)
        h["weights"].append(pf.weights()[0].copy())

    def render(self) -> str | np.ndarray | None:
        if self.render_mode is None:
            gym.logger.warn("render() called without a render_mode; pass render_mode='ansi' "
                            "or 'rgb_array' to the constructor")
            return None
        from ffe_gym.env import render

        if self.render_mode == "ansi":
            return render.ansi(self)
        return render.rgb_array(self)

    def close(self) -> None:
        if self._history is not None:
            self._history = None

    def status(self) -> str:
        return L.STATUS_NAMES[int(self.portfolio.status[0])]
