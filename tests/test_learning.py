"""Learnability with oracles: PPO, trained by the project's own path with configs/agents/ppo.yaml
and the default rules, finds each planted signal and finds none in noise.

Fixed budgets (100,000 steps), fixed seeds, no timing. What these catch and no other test does:
an observation shifted by a bar, a reward credited to the wrong step, an action mapped to the
wrong asset or sign (the learner falls far below its oracle), and a leak of the next bar into the
observation (the learner beats cash on ``noise``)."""

from __future__ import annotations

import numpy as np
import pytest

from ffe_agents.learnability import check

BUDGET = 100_000


@pytest.mark.parametrize("scheme", ["signals", "weights"])
@pytest.mark.parametrize("preset", ["trend", "alternating", "lead"])
def test_ppo_gets_half_the_oracle_and_beats_random_and_cash(preset, scheme):
    o = check(preset, scheme, timesteps=BUDGET, seed=0)
    assert o.oracle > 0.5, f"the oracle should earn on {preset}: {o}"
    assert o.learner >= 0.5 * o.oracle, o
    assert o.learner > o.random and o.learner > o.cash, o


def test_ppo_does_not_beat_cash_on_noise_beyond_its_seeds():
    """Six runs (two schemes x three seeds): the mean test return is not above cash's (0) by
    more than two standard errors."""
    runs = [check("noise", scheme, timesteps=BUDGET, seed=seed).learner
            for scheme in ("signals", "weights") for seed in (0, 1, 2)]
    mean, se = np.mean(runs), np.std(runs, ddof=1) / np.sqrt(len(runs))
    assert mean <= 2 * se, runs
