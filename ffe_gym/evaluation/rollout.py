"""rollout: one policy, one env, one window -> an EpisodeResult."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ffe_gym.config import Config, coerce_config, from_dict, merge, to_dict
from ffe_gym.data import MarketData
from ffe_gym.env import PortfolioEnv
from ffe_gym.evaluation.policy import Policy, PolicyError, env_overrides, hook
from ffe_gym.portfolio.book import AssetAttribution
from ffe_gym.portfolio.journal import Journal


@dataclass
class EpisodeResult:
    """Everything one evaluation episode produced.

    ``equity`` and ``gross_exposure`` are per bar (the first value is the start);
    ``trades`` is the trade log (one row per fill); ``metrics`` follow
    :mod:`ffe_gym.metrics`; ``policy_stats`` is what the policy reports about itself (calls,
    cache hits and latency for the LLM ensemble).
    """

    policy: str
    equity: pd.Series
    gross_exposure: pd.Series
    trades: pd.DataFrame
    metrics: dict[str, Any]
    attribution: list[AssetAttribution]
    refusals: dict[str, int]
    steps: int
    status: str
    data: str
    synthetic: bool
    policy_stats: dict[str, Any] = field(default_factory=dict)
    weights: pd.DataFrame | None = None  # per decision: signed position value / equity
    hindsight: bool = False  # the policy read prices after its decision bars (MarketView)
    actions: list[np.ndarray] = field(default_factory=list)  # per decision, as the env got it
    refused: pd.DataFrame | None = None  # per decision: time, bar, asset, reason (a rule)

    @property
    def start(self) -> pd.Timestamp:
        return self.equity.index[0]

    @property
    def end(self) -> pd.Timestamp:
        return self.equity.index[-1]

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary (no per-bar series)."""
        return {"policy": self.policy, "start": str(self.start), "end": str(self.end),
                "steps": self.steps, "status": self.status, "data": self.data,
                "synthetic": self.synthetic, "metrics": self.metrics,
                "attribution": [asdict(a) for a in self.attribution],
                "refusals": self.refusals, "policy_stats": self.policy_stats}


def _options(window: Any) -> dict[str, Any] | None:
    if window is None:
        return None
    if isinstance(window, Mapping):
        return dict(window)
    start, end = window
    return {"start": start, "end": end}


def env_for(policy: Any, config: Config | Mapping | str | Path | None = None,
            data: MarketData | str | Path | None = None, **kwargs: Any) -> PortfolioEnv:
    """A PortfolioEnv for ``policy``: the given config with the policy's ``env`` keys applied.

    Costs, limits and data stay as configured; only how the policy talks to the env (action
    scheme, observation layout) is the policy's.
    """
    cfg = coerce_config(config)
    overrides = env_overrides(policy)
    if overrides:
        cfg = from_dict(Config, merge(to_dict(cfg), {"env": overrides}))
    else:
        cfg = copy.deepcopy(cfg)
    return PortfolioEnv(cfg, data, **kwargs)


def rollout(policy: Policy, env: Any, window: Any = None, seed: int | None = None,
            risk_free: float = 0.0,
            on_step: Callable[[int, int], None] | None = None,
            observe: Callable[[int, Any], Any] | None = None) -> EpisodeResult:
    """Run ``policy`` on ``env`` for one episode.

    :param policy: any :class:`~ffe_gym.evaluation.policy.Policy`.
    :param env: a :class:`PortfolioEnv` (wrappers allowed) whose action scheme is the policy's.
    :param window: ``(start, end)`` or ``{"start": ..., "end": ...}`` (bars or dates); None
        uses the env's own episode rule.
    :param seed: seeds the policy and the env reset.
    :param risk_free: constant annual risk-free rate for the Sharpe and Sortino ratios.
    :param on_step: called after every decision with (decisions so far, current bar).
    :param observe: what the policy sees at decision k instead of the env's observation
        (``observe(k, observation)``; the placebo diagnostic of :mod:`~ffe_gym.evaluation.audit`).
    :raises PolicyError: when the policy's action scheme is not the env's, or an action it
        returns has another shape than the env's action space (named with the policy).
    """
    base = env.unwrapped
    wanted = env_overrides(policy).get("action_scheme")
    have = base.config.env.action_scheme
    if wanted is not None and wanted != have:
        raise PolicyError(f"policy {policy.name!r} acts with action_scheme {wanted!r}, the env "
                          f"uses {have!r}; build the env with ffe_gym.evaluation.env_for")
    shape = env.action_space.shape
    hook(policy, "bind")(base.layout)
    bind_market = hook(policy, "bind_market")
    view = None
    if bind_market is not None:  # prices up to the current bar only (MarketView)
        view = base.market_view()
        bind_market(view)
    policy.reset(seed)
    obs, info = env.reset(seed=seed, options=_options(window))
    journal = Journal(base.portfolio)
    journal.start()
    steps = 0
    done = False
    bars = [info["bar"]]
    weights = [np.asarray(info["weights"], dtype=np.float64).copy()]
    actions = []
    refused: list[tuple[int, str, str]] = []
    while not done:
        seen = obs if observe is None else observe(steps, obs)
        action = policy.act(seen, info)
        if np.shape(action) != shape:
            raise PolicyError(
                f"policy {policy.name!r} returned an action of shape {np.shape(action)} at "
                f"decision {steps}; the env's {have!r} scheme takes {shape}. A policy that acts "
                "in another scheme says so in env_overrides() (ffe_gym.evaluation.policy."
                "PolicyBase), e.g. {'action_scheme': 'weights'}")
        actions.append(np.array(action, copy=True))
        obs, _, terminated, truncated, info = env.step(action)
        journal.record()
        bars.append(info["bar"])
        refused.extend((info["bar"], asset, why) for asset, why in info["refused"].items())
        weights.append(np.asarray(info["weights"], dtype=np.float64).copy())
        steps += 1
        done = terminated or truncated
        if on_step is not None:
            on_step(steps, int(info["bar"]))
    pf = base.portfolio
    md = base.market
    index = md.index[journal.bars]
    stats = hook(policy, "stats")
    return EpisodeResult(
        policy=policy.name,
        equity=pd.Series(journal.equity, index=index, name="equity"),
        gross_exposure=pd.Series(journal.gross, index=index, name="gross_exposure"),
        trades=journal.trades(), metrics=journal.metrics(risk_free), attribution=pf.attribution(0),
        refusals=pf.refusals(0), steps=steps, status=info["status"], data=md.describe(),
        synthetic=md.is_synthetic, policy_stats=dict(stats()),
        weights=pd.DataFrame(np.array(weights), index=md.index[bars], columns=list(md.symbols)),
        hindsight=bool(view is not None and view.peeked), actions=actions,
        refused=_refused_frame(refused, md),
    )


def _refused_frame(rows: list[tuple[int, str, str]], md: MarketData) -> pd.DataFrame:
    """The openings refused at each decision: time, bar, asset, reason (the rule's name)."""
    bars = np.array([r[0] for r in rows], dtype=np.int64)
    return pd.DataFrame({"time": md.index[bars], "bar": bars,
                         "asset": [r[1] for r in rows], "reason": [r[2] for r in rows]},
                        columns=["time", "bar", "asset", "reason"])

