"""The Policy protocol, its optional hooks, and how policies are named.

Every policy (baseline, stable-baselines3 agent, LLM ensemble) has ``name``, ``reset(seed)`` and
``act(observation, info) -> action`` for one action scheme (:class:`Policy`). Every other hook
the project calls is declared once, with its default, in :class:`PolicyBase` and looked up
through :func:`hook`: ``env_overrides()`` naming the ``env`` config keys it needs (its action
scheme, and for a trained model the observation it was trained on), ``bind(layout)``,
``bind_market(view)`` to read prices and volumes up to the current bar
(:class:`ffe_gym.env.market_view.MarketView`: read-only, causal; what the classic portfolio
baselines use), ``deterministic``, ``stats()``, ``close()``, and the class hooks for state that
travels to remote workers. Costs, limits and data are never a policy's to choose: every policy
meets the same ones.

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
import pandas as pd

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
    """What every policy has: a name, ``reset`` and ``act``. The optional hooks, with their
    defaults, are :class:`PolicyBase`'s."""

    name: str

    def reset(self, seed: int | None = None) -> None: ...

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray: ...


class PolicyBase:
    """Every hook ffe-gym calls on a policy, each documented here once with the default used
    when a policy does not define it. Subclassing is optional: the project looks hooks up
    through :func:`hook`, which falls back to these defaults, so any object with ``name``,
    ``reset`` and ``act`` is a policy.
    """

    #: the policy's name in tables and run folders
    name: str = "policy"
    #: actions are a function of the inputs alone: the comparison runs it once per window
    deterministic: bool = False
    #: the comparison passes ``out=<its --out>`` to the constructor and the class hooks below
    #: (where the policy keeps state: the LLM ensemble's reply cache and models)
    takes_out: bool = False
    #: ``bind_market(view)``, when defined, gives the policy a causal
    #: :class:`~ffe_gym.env.market_view.MarketView` before ``reset``; None: it reads only its
    #: observations (then the placebo diagnostic reaches everything it sees)
    bind_market: Any = None
    #: the calls an LLM policy made in its last run, one dict per prompt (``llm_calls.csv``)
    call_log: list[dict[str, Any]] | None = None

    def reset(self, seed: int | None = None) -> None:
        """Start a new episode (seeded)."""

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        """The action for this decision, in the scheme of :meth:`env_overrides`."""
        raise NotImplementedError

    def env_overrides(self) -> Mapping[str, Any]:
        """The ``env`` config keys the policy needs (its action scheme; for a trained model
        the observation it was trained on); empty: it adapts to any env."""
        return {}

    def bind(self, layout: Any) -> None:
        """Learn how observations are laid out (an
        :class:`~ffe_gym.env.observations.ObservationLayout`), before ``reset``."""

    def training_cutoffs(self) -> Mapping[str, str | None]:
        """The last date each model behind the policy may have seen (its maker's statement:
        ``YYYY-MM`` or a date; None: not stated), by model name; empty for a policy without
        such models. ``evaluate`` and ``ffe-gym live`` compare it with the first bar
        (:func:`sample_lines`)."""
        return {}

    def stats(self) -> Mapping[str, Any]:
        """Counters of the last run for the run's record (``policy_stats``); ``reproducible:
        False`` with reasons marks a result that depended on the machine's load."""
        return {}

    def close(self) -> None:
        """Release what the policy holds (model servers, sidecars) after a run."""

    # state that travels with a job to a worker without the driver's files (Ray)
    @classmethod
    def carry_state(cls, **kwargs: Any) -> dict[str, bytes]:
        """On the driver: the files a remote job of this policy needs (``kwargs``: the
        agent entry's)."""
        return {}

    def carried_delta(self) -> dict[str, Any]:
        """On the worker, after a run: what the run added to the carried state."""
        return {}

    @classmethod
    def merge_carried(cls, delta: Mapping[str, Any], **kwargs: Any) -> None:
        """On the driver: add a remote job's :meth:`carried_delta` to the driver's state."""

    @classmethod
    def identity_digests(cls, **kwargs: Any) -> dict[str, str]:
        """What the policy's results depend on beyond its code and the files its entry names
        (a model file's digest), for a comparison job's identity."""
        return {}


_DEFAULT = PolicyBase()
HOOKS = frozenset(n for n in vars(PolicyBase) if not n.startswith("_")) | {"name"}


def hook(policy: Any, name: str) -> Any:
    """``policy.<name>`` (an instance or a class), or :class:`PolicyBase`'s default when the
    policy does not define it; the one place the project looks a hook up."""
    if name not in HOOKS:
        raise AttributeError(f"{name!r} is not a policy hook (see PolicyBase)")
    value = getattr(policy, name, None)
    return value if value is not None else getattr(_DEFAULT, name)


def _load(target: str) -> Any:
    module, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise PolicyError(f"cannot load policy {target!r}: {exc}") from None


def resolve_policy(spec: str, **kwargs: Any) -> Policy:
    """A policy from a registered short name, ``"module:Class"``, or a saved model's path.

    :param spec: e.g. ``"momentum"``, ``"ffe_agents.baselines:Momentum"``, ``"runs/ppo"`` (a
        folder of ``train``, rl_zoo3 or ``scripts/rllib_ppo.py --out``).
    :param kwargs: passed to the class (or to the model loader for a path).
    :raises PolicyError: naming the spec and the registered names.
    """
    if spec in REGISTRY:
        return _load(REGISTRY[spec])(**kwargs)
    if ":" in spec and not Path(spec).exists():
        return _load(spec)(**kwargs)
    path = Path(spec)
    if (path / "ffe-rllib.json").is_file():  # scripts/rllib_ppo.py --out
        return _load("ffe_agents.rllib:RLlibPolicy")(path, **kwargs)
    if path.exists():  # an SB3 run folder (train), a model.zip, an rl_zoo3 run folder
        return _load("ffe_agents.sb3:load_policy")(path, **kwargs)
    raise PolicyError(f"unknown policy {spec!r}: not a registered name "
                      f"({', '.join(REGISTRY)}), a 'module:Class', or an existing model path")


def env_overrides(policy: Any) -> Mapping[str, Any]:
    """The ``env`` config keys a policy needs (empty when it adapts to any env)."""
    return dict(hook(policy, "env_overrides")())


def cutoff_end(cutoff: str) -> pd.Timestamp:
    """The end of a stated training cutoff (``2024-06`` is the end of June 2024), in UTC."""
    text = str(cutoff).strip()
    freq = {4: "Y", 7: "M"}.get(len(text), "D")
    return pd.Period(text, freq=freq).end_time.tz_localize("UTC")


def sample_lines(policy: Any, first: pd.Timestamp) -> list[str]:
    """One line per model of ``policy`` saying whether bars from ``first`` on come after its
    stated training cutoff (out of sample) or not."""
    lines = []
    for name, cutoff in hook(policy, "training_cutoffs")().items():
        if cutoff is None:
            lines.append(f"{name}: no training cutoff stated (training_cutoff): whether it "
                         f"saw bars from {first:%Y-%m-%d} on is unknown")
        elif first > cutoff_end(cutoff):
            lines.append(f"{name}: trained on data up to {cutoff} (stated); the bars from "
                         f"{first:%Y-%m-%d} on come after it: out of sample")
        else:
            lines.append(f"{name}: trained on data up to {cutoff} (stated); the bars from "
                         f"{first:%Y-%m-%d} on are NOT after it: it may have seen them "
                         "(in-sample)")
    return lines
