"""threads="auto": the tuner's choices from given step times (no clock), and results that do not
depend on the threads."""

from __future__ import annotations

import numpy as np
import pytest

from ffe_gym.data import synthetic_market
from ffe_gym.env import PortfolioVectorEnv
from ffe_gym.env.threads import ThreadTuner


def run(tuner: ThreadTuner, cost: dict[int, float], steps: int) -> list[int]:
    chosen = []
    for _ in range(steps):
        n = tuner.choose()
        tuner.record(n, cost[n])
        chosen.append(n)
    return chosen


def test_two_threads_are_kept_when_faster_and_dropped_when_slower():
    t = ThreadTuner(2, probe=2, shortest=8, longest=64)
    chosen = run(t, {1: 2.0, 2: 1.0}, 200)
    assert chosen[0] == 1 and t.current == 2  # starts on one thread, switches
    assert chosen[-100:].count(1) <= 2 * (100 // 64 + 1)  # the rest: probes of one thread only
    # the machine gets busy: two threads now slower; the tuner goes back to one
    chosen = run(t, {1: 2.0, 2: 8.0}, 400)
    assert chosen[:3].count(1) >= 1 and t.current == 1
    # losing probes back off: one probe (2 steps) per 64 steps once the interval is longest
    assert t.interval == 64 and chosen[-256:].count(2) <= 2 * (256 // 64 + 1)


def test_a_probe_that_loses_doubles_the_interval_up_to_the_longest():
    t = ThreadTuner(2, probe=1, shortest=4, longest=32)
    run(t, {1: 1.0, 2: 3.0}, 500)
    assert t.current == 1 and t.interval == 32
    with pytest.raises(ValueError):
        ThreadTuner(1)


def test_auto_threads_give_the_same_trajectories_as_one():
    md = synthetic_market(6, 800, seed=5)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (150, 16, 6)).astype(np.float32)
    out = []
    for threads in (1, "auto"):
        env = PortfolioVectorEnv(16, {"risk": {"on_portfolio_stop": "flat"}}, md,
                                 threads=threads)
        obs, _ = env.reset(seed=3)
        rows = [obs["market"].copy()]
        for a in actions:
            obs, r, term, trunc, info = env.step(a)
            rows += [obs["positions"].copy(), r.copy(), info["equity"].copy()]
        out.append(rows)
    for a, b in zip(out[0], out[1], strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="'auto'"):
        PortfolioVectorEnv(2, None, md, threads="many")
