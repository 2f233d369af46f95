"""The audit: placebo, permutation and causality checks on any policy."""

from __future__ import annotations

from typing import Any

import numpy as np

from ffe_agents.baselines import Cash, Momentum
from ffe_gym.data import synthetic_market
from ffe_gym.evaluation.audit import audit

MD = synthetic_market(4, 1500, seed=11)
CFG = {"risk": {"on_portfolio_stop": "flat"}}
WINDOWS = [(300 + 200 * k, 460 + 200 * k) for k in range(5)]


class Peeking(Momentum):
    """Momentum that also reads the next bar's close: the causality check's positive control."""

    name = "peeking"

    def bind_market(self, view: Any) -> None:
        self._view = view

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        future = self._view.hindsight_close()  # from the current bar to the episode's end
        if len(future) > 1:
            return np.sign(future[1] - future[0]).astype(np.float32)
        return super().act(observation, info)


def test_a_constant_policy_is_flagged_as_ignoring_its_input():
    r = audit(Cash, CFG, MD, WINDOWS)
    assert r.placebo_changed == 0.0 and r.decisions > 500
    assert any(f.startswith("ignores its input") for f in r.flags)
    assert r.causal


def test_momentum_uses_its_input_and_is_causal_and_order_free():
    r = audit(Momentum, CFG, MD, WINDOWS)
    assert r.placebo_changed > 0.3, r.lines()
    assert not any(f.startswith("ignores") for f in r.flags)
    assert r.permutation_changed == 0.0 and r.permutation_difference < 1e-9
    assert r.causal, r.causality_detail


def test_a_policy_that_reads_the_future_fails_the_causality_check():
    r = audit(Peeking, CFG, MD, WINDOWS[:1])
    assert not r.causal and "changed when only prices after bar" in r.causality_detail
    assert any(f.startswith("reads the future") for f in r.flags)
