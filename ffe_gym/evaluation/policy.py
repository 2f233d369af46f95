"""The Policy protocol and how policies are named.

Every policy (baseline, stable-baselines3 agent, LLM ensemble) has ``name``, ``reset(seed)`` and
``act(observation, info) -> action`` for one action scheme. Optional: ``bind(layout)`` to learn
how observations are laid out (:class:`ffe_gym.env.observations.ObservationLayout`),
``bind_market(view)`` to read prices and volumes up to the current bar
(:class:`ffe_gym.env.market_view.MarketView`: read-only, causal; what the classic portfolio
baselines use), and
``env_overrides()`` naming the ``env`` config keys it needs (its action scheme, and for a
trained model the observation it was trained on). Costs, limits and data are never a policy's
to choose: every policy meets the same ones.

A policy class may declare ``deterministic = True`` when its actions are a function of its
inputs alone: the comparison then runs it once per test window instead of once per seed (seeds
multiply only stochastic policies). An experiment entry can override it.

``ffe_gym`` never imports ``ffe_agents``: policies are named as ``"module:Class"`` strings (or a
registered short name for one) and resolved with importlib.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

REGISTRY: dict[str, str] = {
    "cash": "ffe_agents.baselines:Cash",
    "buy-and-hold": "ffe_agents.baselines:BuyAndHold",
    "equal-weight": "ffe_agents.baselines:EqualWeight",
    "random": "ffe_agents.baselines:RandomPolicy",
    "momentum": "ffe_agents.baselines:Momentum",
    "eg": "ffe_agents.olps:EG",
    "olmar": "ffe_agents.olps:OLMAR",
    "pamr": "ffe_agents.olps:PAMR",
    "bcrp": "ffe_agents.olps:BCRP",
    "up": "ffe_agents.olps:UP",
    "ons": "ffe_agents.olps:ONS",
    "corn": "ffe_agents.olps:CORN",
    "anticor": "ffe_agents.olps:Anticor",
    "cwmr": "ffe_agents.olps:CWMR",
    "min-variance": "ffe_agents.optimisation:MinimumVariance",
    "mean-variance": "ffe_agents.optimisation:MeanVariance",
    "max-diversification": "ffe_agents.optimisation:MaximumDiversification",
    "hrp": "ffe_agents.optimisation:HierarchicalRiskParity",
    "erc": "ffe_agents.optimisation:EqualRiskContribution",
    "llm-ensemble": "ffe_agents.llm:LLMEnsemble",
    "oracle-trend": "ffe_agents.oracles:TrendOracle",
    "oracle-alternating": "ffe_agents.oracles:AlternatingOracle",
    "oracle-lead": "ffe_agents.oracles:LeadOracle",
}


class PolicyError(ValueError):
    """A policy name or path that cannot be resolved."""


@runtime_checkable
class Policy(Protocol):
    name: str

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray: ...


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise PolicyError(f"cannot load policy {target!r}: {exc}") from None


def resolve_policy(spec: str, **kwargs: Any) -> Policy:
    """A policy from a registered short name, ``"module:Class"``, or a saved model's path.

    :param spec: e.g. ``"momentum"``, ``"ffe_agents.baselines:Momentum"``, ``"runs/ppo"``.
    :param kwargs: passed to the class (or to the model loader for a path).
    :raises PolicyError: naming the spec and the registered names.
    """
    if spec in REGISTRY:
        return _load(REGISTRY[spec])(**kwargs)
    if ":" in spec and not Path(spec).exists():
        return _load(spec)(**kwargs)
    path = Path(spec)
    if path.exists():
        return _load("ffe_agents.sb3:load_policy")(path, **kwargs)
    raise PolicyError(f"unknown policy {spec!r}: not a registered name "
                      f"({', '.join(REGISTRY)}), a 'module:Class', or an existing model path")


def env_overrides(policy: Any) -> Mapping[str, Any]:
    """The ``env`` config keys a policy needs (empty when it adapts to any env)."""
    fn = getattr(policy, "env_overrides", None)
    return dict(fn()) if fn is not None else {}
