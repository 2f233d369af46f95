"""Your own policy, in each action scheme, evaluated and compared with a baseline.

    python scripts/examples/custom_policies.py

A policy is any object with ``name``, ``reset(seed)`` and ``act(observation, info)``; it says
which action scheme it acts in with ``env_overrides()`` (subclass
``ffe_gym.evaluation.policy.PolicyBase`` for every hook's default). ``bind(layout)`` hands it an
``ObservationLayout`` to read the observation by name. The four schemes:

* ``signals``  ``Box(-1, 1, (N,))``: per asset a signed confidence; |a| < dead band is HOLD.
* ``discrete`` ``MultiDiscrete([2k + 1] * N)``: per asset SELL / HOLD / BUY (k confidence levels).
* ``single``   ``Discrete(2N + 1)``: hold everything, or BUY or SELL one asset (what DQN needs).
* ``weights``  ``Box(-1, 1, (N + 1,))``: target weights, the last entry cash.

The same policies run in ``compare`` as ``{name: mine, policy: "my_module:TrendSignals"}``.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ffe_gym.data import synthetic_market
from ffe_gym.evaluation import env_for, resolve_policy, rollout
from ffe_gym.evaluation.policy import PolicyBase


@dataclass
class Args:
    bars: int = 3000
    """bars of the synthetic panel (flagged as such in every output)"""
    start: int = 500
    """first decision bar"""
    seed: int = 0


class _Trend(PolicyBase):
    """Shared by the four: the trend of each asset over the observation window."""

    def bind(self, layout: Any) -> None:
        self.layout = layout

    def trend(self, observation: Any) -> np.ndarray:
        return self.layout.feature(observation, "log_return").sum(axis=0)  # (N,)


class TrendSignals(_Trend):
    name = "trend-signals"
    deterministic = True

    def env_overrides(self) -> dict[str, Any]:
        return {"action_scheme": "signals"}

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        return np.clip(self.trend(observation) * 20, -1, 1).astype(np.float32)


class TrendDiscrete(_Trend):
    name = "trend-discrete"
    deterministic = True

    def env_overrides(self) -> dict[str, Any]:
        return {"action_scheme": "discrete", "confidence_levels": 1}

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        return (np.sign(self.trend(observation)) + 1).astype(np.int64)  # 0 SELL 1 HOLD 2 BUY


class BestAsset(_Trend):
    name = "best-asset-single"
    deterministic = True

    def env_overrides(self) -> dict[str, Any]:
        return {"action_scheme": "single"}

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        t = self.trend(observation)
        best = int(np.argmax(t))
        return np.int64(1 + best if t[best] > 0 else 0)  # BUY the strongest, or hold


class TrendWeights(_Trend):
    name = "trend-weights"
    deterministic = True

    def env_overrides(self) -> dict[str, Any]:
        return {"action_scheme": "weights"}

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        up = np.maximum(self.trend(observation), 0.0)
        cash = 1.0 if up.sum() == 0 else 0.0
        a = np.append(up / max(up.max(), 1e-12), cash)
        return np.clip(a, 0, 1).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in asdict(Args()).items():
        p.add_argument(f"--{name}", type=int, default=value)
    args = Args(**vars(p.parse_args(argv)))

    md = synthetic_market(4, args.bars, "trend", seed=args.seed)
    config = {"risk": {"on_portfolio_stop": "flat"}}
    print(md.describe())
    print(f"{'policy':<20}{'scheme':<10}{'return':>9}{'sharpe':>8}{'max dd':>9}{'fills':>7}")
    for policy in (TrendSignals(), TrendDiscrete(), BestAsset(), TrendWeights(),
                   resolve_policy("buy-and-hold")):
        env = env_for(policy, config, md)
        r = rollout(policy, env, window=(args.start, md.n_bars - 1), seed=args.seed)
        m = r.metrics
        print(f"{r.policy:<20}{env.unwrapped.config.env.action_scheme:<10}"
              f"{m['total_return']:>9.2%}{m['sharpe']:>8.2f}{m['max_drawdown']:>9.2%}"
              f"{m['fills']:>7}")
    print("SYNTHETIC: the trend preset plants trends a trend follower finds. These figures show"
          " each scheme works, not skill.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
