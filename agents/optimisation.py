"""Optimisation baselines refitted on a rolling window, solved by skfolio.

At each decision the policy reads the last ``lookback`` closes up to the decision bar from
the env's causal :class:`~ffe_gym.env.market_view.MarketView`, takes their simple returns,
fits the portfolio model and holds its long-only, fully invested weights until the next
decision (``weights`` scheme; ``decide_every`` in an experiment sets how often it refits).
Until ``min_bars`` returns are available it holds 1/N.

* :class:`MinimumVariance`: minimise the portfolio variance.
* :class:`MeanVariance`: maximise ``mean - risk_aversion x variance`` of per-bar returns;
  ``risk_aversion = 10`` (a moderately risk-averse investor on daily returns; skfolio's own
  default of 1 is almost the maximum-return portfolio at this scale).
* :class:`MaximumDiversification`: maximise the ratio of weighted volatilities to the
  portfolio volatility (Choueifaty and Coignard 2008).
* :class:`HierarchicalRiskParity`: Lopez de Prado's (2016) HRP on the correlation distance.
* :class:`EqualRiskContribution`: every asset contributes the same variance (risk budgeting
  with equal budgets).

The solvers are skfolio's (cvxpy with Clarabel for the convex ones), installed with the
``classic`` extra: ``pip install -e ".[classic]"`` (``scripts/setup.sh`` does).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ffe_agents.baselines import _Baseline


def _skfolio():
    try:
        import skfolio.optimization as opt
        from skfolio import RiskMeasure
    except ImportError:  # pragma: no cover - the classic extra is part of the setup
        raise ImportError("the optimisation baselines need skfolio: "
                          "pip install -e \".[classic]\"") from None
    return opt, RiskMeasure


class _Refitted(_Baseline):
    """:param lookback: bars of returns each fit uses; :param min_bars: fewer returns than
    this hold 1/N."""

    name = "refitted"

    def __init__(self, lookback: int = 252, min_bars: int = 20) -> None:
        if lookback < 2 or min_bars < 2:
            raise ValueError("lookback and min_bars must be at least 2")
        self.lookback = int(lookback)
        self.min_bars = int(min_bars)
        self._view: Any = None

    def bind_market(self, view: Any) -> None:
        self._view = view

    def model(self) -> Any:
        raise NotImplementedError

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        if self._view is None:
            raise RuntimeError(f"{type(self).__name__}.act before bind_market(view); use "
                               "ffe_gym.evaluation.rollout")
        close = self._view.close(self.lookback + 1)
        n = close.shape[1]
        w = np.full(n, 1.0 / n)
        if len(close) - 1 >= self.min_bars:
            returns = close[1:] / close[:-1] - 1.0
            m = self.model()
            m.fit(returns)
            w = np.clip(np.asarray(m.weights_, dtype=np.float64), 0.0, None)
            w = w / w.sum() if w.sum() > 0 else np.full(n, 1.0 / n)
        return np.append(w, 0.0)


class MinimumVariance(_Refitted):
    name = "min-variance"

    def model(self) -> Any:
        opt, rm = _skfolio()
        return opt.MeanRisk(objective_function=opt.ObjectiveFunction.MINIMIZE_RISK,
                            risk_measure=rm.VARIANCE)


class MeanVariance(_Refitted):
    """:param risk_aversion: lambda in ``mean - lambda x variance`` (per-bar returns)."""

    name = "mean-variance"

    def __init__(self, lookback: int = 252, min_bars: int = 20,
                 risk_aversion: float = 10.0) -> None:
        super().__init__(lookback, min_bars)
        self.risk_aversion = float(risk_aversion)

    def model(self) -> Any:
        opt, rm = _skfolio()
        return opt.MeanRisk(objective_function=opt.ObjectiveFunction.MAXIMIZE_UTILITY,
                            risk_measure=rm.VARIANCE, risk_aversion=self.risk_aversion)


class MaximumDiversification(_Refitted):
    name = "max-diversification"

    def model(self) -> Any:
        opt, _ = _skfolio()
        return opt.MaximumDiversification()


class HierarchicalRiskParity(_Refitted):
    name = "hrp"

    def model(self) -> Any:
        opt, _ = _skfolio()
        return opt.HierarchicalRiskParity()


class EqualRiskContribution(_Refitted):
    name = "erc"

    def model(self) -> Any:
        opt, rm = _skfolio()
        return opt.RiskBudgeting(risk_measure=rm.VARIANCE)
