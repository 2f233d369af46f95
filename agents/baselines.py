"""Rule-based baselines. Same env, costs and limits as every other policy.

* :class:`Cash`: stays in cash.
* :class:`BuyAndHold`: equal weights once, then holds (stops may still close positions).
* :class:`EqualWeight`: equal weights, rebalanced at every decision.
* :class:`RandomPolicy`: uniform random signals from its own seeded generator.
* :class:`Momentum`: time-series momentum on the observation's own features.

The weight baselines act through the ``weights`` scheme, the others through ``signals``;
``env_overrides()`` says which, and :func:`ffe_gym.evaluation.env_for` builds the env.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ffe_gym.data import symbol_ranks
from ffe_gym.env.observations import ObservationLayout
from ffe_gym.evaluation.policy import PolicyBase


class _Baseline(PolicyBase):
    name = "baseline"
    action_scheme = "weights"
    deterministic = True  # the same inputs give the same actions: one run per test window

    def env_overrides(self) -> dict[str, Any]:
        return {"action_scheme": self.action_scheme}

    def reset(self, seed: int | None = None) -> None:
        pass

    @staticmethod
    def _n_assets(info: dict[str, Any]) -> int:
        return len(info["weights"])


class Cash(_Baseline):
    """All cash at every decision."""

    name = "cash"

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        a = np.zeros(self._n_assets(info) + 1)
        a[-1] = 1.0
        return a


class EqualWeight(_Baseline):
    """1/N of equity in each asset at every decision (rebalanced)."""

    name = "equal-weight"

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        n = self._n_assets(info)
        a = np.full(n + 1, 1.0 / n)
        a[-1] = 0.0
        return a


class BuyAndHold(_Baseline):
    """Equal weights at the first decision, then the weights the book drifted to (no trades)."""

    name = "buy-and-hold"

    def __init__(self) -> None:
        self._bought = False

    def reset(self, seed: int | None = None) -> None:
        self._bought = False

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        n = self._n_assets(info)
        if not self._bought:
            self._bought = True
            a = np.full(n + 1, 1.0 / n)
            a[-1] = 0.0
            return a
        w = np.asarray(info["weights"], dtype=np.float64)  # float64: keeps the book exactly
        return np.append(w, max(0.0, 1.0 - np.abs(w).sum()))


class RandomPolicy(_Baseline):
    """Uniform random signals in [-1, 1] per asset; ``reset(seed)`` makes it repeatable.

    The draws go to the symbols in sorted order (once bound to the env's layout), so
    permuting the assets permutes its actions."""

    name = "random"
    action_scheme = "signals"
    deterministic = False

    def __init__(self, seed: int | None = None) -> None:
        self._rng = np.random.default_rng(seed)
        self._ranks: np.ndarray | None = None

    def bind(self, layout: ObservationLayout) -> None:
        self._ranks = symbol_ranks(layout.symbols)

    def reset(self, seed: int | None = None) -> None:
        if seed is not None:
            self._rng = np.random.default_rng(seed)

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        draws = self._rng.uniform(-1.0, 1.0, self._n_assets(info)).astype(np.float32)
        return draws if self._ranks is None else draws[self._ranks]


class Momentum(_Baseline):
    """Time-series momentum over the observation window.

    z = (sum of log returns over the W bars) / (latest rolling volatility * sqrt(W)), both from
    the observation's features; the signal is ``clip(z / scale, -1, 1)`` (the env's dead band
    turns weak signals into HOLD).

    :param scale: z-score that maps to full confidence.
    """

    name = "momentum"
    action_scheme = "signals"

    def __init__(self, scale: float = 2.0) -> None:
        self.scale = scale
        self._layout: ObservationLayout | None = None

    def bind(self, layout: ObservationLayout) -> None:
        missing = [f for f in ("log_return", "volatility") if f not in layout.features]
        if missing:
            raise ValueError(f"momentum needs the features log_return and volatility; the env "
                             f"lacks {missing[0]!r} (env.features.names)")
        self._layout = layout

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        if self._layout is None:
            raise RuntimeError("Momentum.act before bind(layout); use ffe_gym.evaluation.rollout")
        lay = self._layout
        r = lay.feature(observation, "log_return").sum(axis=0)
        vol = lay.feature(observation, "volatility")[-1] * np.sqrt(lay.window)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(vol > 0, r / vol, 0.0)
        return np.clip(z / self.scale, -1.0, 1.0).astype(np.float32)
