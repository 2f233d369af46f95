"""Learnability: does an agent find a signal that is known to be there, and none where none is?

On a planted synthetic market (``ffe_gym.data.synthetic``: ``trend``, ``alternating``,
``lead``, ``noise``) an agent is trained by the project's own path (:func:`ffe_agents.sb3.train`
with its YAML, validation and best-model choice, :func:`~ffe_agents.sb3.load_policy`), then it,
the preset's oracle (:mod:`ffe_agents.oracles`), ``random`` and ``cash`` each trade the same
held-out test window under the same rules and costs (the default rules unless ``config`` says
otherwise). The score is the test window's log return (the sum of the per-bar rewards).

A shifted observation, a misaligned reward or a broken action mapping lets every other test pass;
here it shows as a learner far below its oracle on a planted preset, or above cash on ``noise``
(a leak of the next bar into the observation would be a signal there). ``tests/test_learning.py``
runs it in CI; ``python scripts/benchmark.py --sections learn`` prints the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ffe_gym.config import Config, from_dict, merge, to_dict
from ffe_gym.data import MarketData, synthetic_market
from ffe_gym.data.splits import Window

#: bars of the planted market and its windows: train | validation | test, 100-bar embargoes
BARS = 6000
WINDOWS = {"train": (0, 3600), "validation": (3700, 4300), "test": (4400, 6000)}


@dataclass
class Outcome:
    """Test-window log returns of the learner and its yardsticks on one planted market."""

    preset: str
    scheme: str
    agent: str
    timesteps: int
    seed: int
    learner: float
    oracle: float | None  # None on ``noise`` (the oracle is cash)
    random: float
    cash: float

    @property
    def share(self) -> float | None:
        """The learner's return as a share of the oracle's."""
        return None if self.oracle is None else self.learner / self.oracle


def planted(preset: str, n_assets: int = 5, seed: int = 1) -> MarketData:
    """The planted market the checks use."""
    return synthetic_market(n_assets, BARS, preset, seed=seed)


def _log_return(result: Any) -> float:
    eq = result.equity.to_numpy()
    return float(np.log(eq[-1] / eq[0]))


def check(preset: str, scheme: str = "signals", agent: str = "ppo", timesteps: int = 100_000,
          seed: int = 0, out: str | Path | None = None, config: dict[str, Any] | None = None,
          agent_config: str | Path | None = None, n_assets: int = 5) -> Outcome:
    """Train ``agent`` on ``preset`` with ``scheme`` and score it on the test window.

    :param preset: ``trend``, ``alternating``, ``lead`` or ``noise``.
    :param scheme: ``signals`` or ``weights``.
    :param agent: an SB3 algorithm of ``configs/agents`` (its YAML, or ``agent_config``).
    :param timesteps: the training budget.
    :param seed: the training seed (the market is the same for every seed).
    :param out: the run folder (default a temporary one, removed afterwards).
    :param config: overrides of the env config (default: the default rules, 500-bar training
        episodes, validation every 10,000 steps).
    """
    import tempfile

    from ffe_agents import sb3
    from ffe_agents.baselines import Cash, RandomPolicy
    from ffe_agents.oracles import ORACLES
    from ffe_gym.evaluation.rollout import env_for, rollout

    md = planted(preset, n_assets)
    base = {"env": {"action_scheme": scheme, "episode_bars": 500},
            "train": {"eval_freq": 10_000, "checkpoint_freq": 10**9}}
    cfg = from_dict(Config, merge(merge(to_dict(Config()), base), config or {}))
    spec = sb3.load_agent_spec(agent_config or sb3.default_agent_config(agent), algo=agent)
    windows = {k: Window(*v) for k, v in WINDOWS.items()}
    with tempfile.TemporaryDirectory(prefix="ffe-learn-") as tmp:
        folder = Path(out) if out is not None else Path(tmp)
        sb3.train(spec, cfg, md, folder, seed=seed, timesteps=timesteps, progress=False,
                  windows=windows)
        learner = sb3.load_policy(folder)
        start, stop = WINDOWS["test"]
        oracle = ORACLES[preset](scheme) if preset in ORACLES else None
        scores = {}
        for key, policy in (("learner", learner), ("oracle", oracle),
                            ("random", RandomPolicy(seed)), ("cash", Cash())):
            if policy is None:
                scores[key] = None
                continue
            env = env_for(policy, merge(to_dict(cfg), {"env": {"episode_bars": None}}), md)
            scores[key] = _log_return(rollout(policy, env, window=(start, stop - 1), seed=seed))
    return Outcome(preset=preset, scheme=scheme, agent=agent, timesteps=timesteps, seed=seed,
                   **scores)
