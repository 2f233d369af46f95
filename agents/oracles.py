"""Oracles of the planted synthetic markets: what a perfect reader of the observation would do.

Each knows how its market was made (``ffe_gym.data.synthetic``, the planted presets) and reads
only the observation, so it is causal: it shows how much return the observation holds, which is
the yardstick of the learnability tests (a learner that works gets a good share of it). On any
other market an oracle is just a rule-based policy, and no better than its rule.

* :class:`TrendOracle` (``trend``): the sign of the summed ``log_return`` over the window.
* :class:`AlternatingOracle` (``alternating``): the square-wave phase that best matches the
  window's ``log_return``, continued one bar.
* :class:`LeadOracle` (``lead``): the sign of the last bar's ``volume_z``.

For ``noise`` the oracle is ``cash``. ``scheme`` picks how the direction is sent: ``signals``
(+-1 per asset: full confidence; the rules size it) or ``weights`` (+-1/N per asset, no cash).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ffe_gym.data.synthetic import HALF_PERIOD
from ffe_gym.env.observations import ObservationLayout
from ffe_gym.evaluation.policy import PolicyBase


class _Oracle(PolicyBase):
    name = "oracle"
    deterministic = True
    needs = ("log_return",)

    def __init__(self, scheme: str = "signals") -> None:
        if scheme not in ("signals", "weights"):
            raise ValueError(f"oracle scheme must be signals or weights, got {scheme!r}")
        self.action_scheme = scheme
        self._layout: ObservationLayout | None = None

    def env_overrides(self) -> dict[str, Any]:
        return {"action_scheme": self.action_scheme}

    def bind(self, layout: ObservationLayout) -> None:
        missing = [f for f in self.needs if f not in layout.features]
        if missing:
            raise ValueError(f"{self.name} needs the feature {missing[0]!r} "
                             "(env.features.names)")
        self._layout = layout

    def reset(self, seed: int | None = None) -> None:
        pass

    def direction(self, observation: Any) -> np.ndarray:
        raise NotImplementedError

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        if self._layout is None:
            raise RuntimeError(f"{self.name}.act before bind(layout); use "
                               "ffe_gym.evaluation.rollout")
        d = np.sign(self.direction(observation)).astype(np.float32)
        if self.action_scheme == "signals":
            return d
        return np.append(d / len(d), 0.0).astype(np.float32)


class TrendOracle(_Oracle):
    """The planted trend's sign: the sign of the summed log returns over the window."""

    name = "oracle-trend"

    def direction(self, observation: Any) -> np.ndarray:
        return self._layout.feature(observation, "log_return").sum(axis=0)


class AlternatingOracle(_Oracle):
    """The square wave (``half_period`` bars up, as many down) whose phase best fits the
    window's log returns, one bar further.

    :param half_period: bars of one sign (the preset's ``HALF_PERIOD``).
    """

    name = "oracle-alternating"

    def __init__(self, scheme: str = "signals", half_period: int = HALF_PERIOD) -> None:
        super().__init__(scheme)
        self.half_period = half_period

    def direction(self, observation: Any) -> np.ndarray:
        r = self._layout.feature(observation, "log_return")  # (W, N), oldest first
        w, h = r.shape[0], self.half_period
        t = np.arange(w + 1)[:, None] + np.arange(2 * h)[None, :]  # bars x phases
        waves = np.where((t // h) % 2 == 0, 1.0, -1.0)
        fit = waves[:w].T @ r  # (phases, N)
        best = fit.argmax(axis=0)
        return waves[w, best]


class LeadOracle(_Oracle):
    """The next bar's sign as the last bar's volume announces it (``volume_z``)."""

    name = "oracle-lead"
    needs = ("volume_z",)

    def direction(self, observation: Any) -> np.ndarray:
        return self._layout.feature(observation, "volume_z")[-1]


ORACLES = {"trend": TrendOracle, "alternating": AlternatingOracle, "lead": LeadOracle}
