"""A policy that scales with the assets: one shared evaluator per asset, after EIIE.

Jiang, Xu and Liang (2017), "A Deep Reinforcement Learning Framework for the Financial Portfolio
Management Problem", score every asset with the same small network ("ensemble of identical
independent evaluators"). :class:`EIIEPolicy` does the same for stable-baselines3's PPO and A2C
on the dict observation of ``ffe/Portfolio-v0``:

* **per asset** i, one MLP (shared by all assets) reads the asset's feature window
  (``W x F`` values) and its position fields (weight, unrealized return, stop and target
  distance) and gives ``h_i``;
* **context**: the mean of ``h_i`` over the assets and the account fields go through a second MLP,
  giving ``c`` (what every asset's decision may depend on: how invested the book is, what the
  other assets do);
* **outputs**: one linear head reads ``[h_i, c]`` for each asset's action (its mean for
  ``signals`` and ``weights``, its ``2k + 1`` logits for ``discrete``); for ``weights`` a head on
  ``c`` gives the cash entry; the value is read from ``c``.

No parameter depends on N (the Gaussian's log-std is one scalar shared by all outputs), cost
grows linearly in N, and permuting the assets permutes the actions. A model trained at one N acts
at another: :func:`resize` builds the policy for new spaces with the same weights (SB3's own
``predict`` refuses observations whose shape differs from the saved space, so
:class:`ffe_agents.sb3.SB3Policy` calls it for this policy only).

:class:`AssetNormalize` is ``VecNormalize`` with statistics per feature, per position field and
per account field, shared across bars and assets: they do not depend on N or on the column order
(SB3's ``VecNormalize`` keeps one statistic per entry of the flat window).

In a zoo-format YAML the policy is named by its alias (registered on PPO and A2C when this module
is imported; rl_zoo3 imports it with ``--gym-packages ffe_gym ffe_agents.eiie``)::

    policy: EIIEPolicy
    policy_kwargs: {n_features: 6, asset_arch: [64, 64], context_arch: [64], log_std_init: -1.0}

``n_features`` (F, the number of feature names in ``env.features.names``) is the one thing the
policy cannot read from the spaces; ffe-gym's trainer fills it in when absent and refuses a
value that disagrees with the env.
"""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import (
    DiagGaussianDistribution,
    MultiCategoricalDistribution,
)
from stable_baselines3.common.policies import ActorCriticPolicy
from stable_baselines3.common.running_mean_std import RunningMeanStd
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.vec_env import VecNormalize
from torch import nn

from ffe_gym.env.observations import ACCOUNT_FIELDS, POSITION_FIELDS

ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU, "gelu": nn.GELU, "silu": nn.SiLU}
P, A = len(POSITION_FIELDS), len(ACCOUNT_FIELDS)


def shapes(observation_space: spaces.Space, n_features: int) -> tuple[int, int]:
    """(W, N) of a dict observation space with F = ``n_features``; ValueError when the space is
    not ffe-gym's dict observation with that F."""
    if not isinstance(observation_space, spaces.Dict) or set(observation_space.spaces) != {
            "market", "positions", "account"}:
        raise ValueError("EIIEPolicy needs env.observation: dict (keys market, positions, "
                         f"account); got {observation_space}")
    market = int(np.prod(observation_space["market"].shape))
    positions = int(np.prod(observation_space["positions"].shape))
    account = int(np.prod(observation_space["account"].shape))
    if positions % P or account != A:
        raise ValueError(f"EIIEPolicy: positions must hold {P} fields per asset and account "
                         f"{A} fields; got {positions} and {account}")
    n = positions // P
    if n < 1 or market % (n * n_features):
        raise ValueError(f"EIIEPolicy: the market observation ({market} values) is not "
                         f"W x N x F with N = {n} assets and F = n_features = {n_features}; "
                         "set policy_kwargs.n_features to len(env.features.names)")
    return market // (n * n_features), n


def _mlp(sizes: Sequence[int], act: type[nn.Module]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for a, b in itertools.pairwise(sizes):
        layers += [nn.Linear(a, b), act()]
    return nn.Sequential(*layers)


class Parts(BaseFeaturesExtractor):
    """The dict observation concatenated as market | positions | account (no parameters)."""

    def __init__(self, observation_space: spaces.Dict) -> None:
        dims = [int(np.prod(observation_space[k].shape)) for k in ("market", "positions",
                                                                   "account")]
        super().__init__(observation_space, features_dim=sum(dims))

    def forward(self, obs: dict[str, th.Tensor]) -> th.Tensor:
        return th.cat([obs["market"].flatten(1), obs["positions"].flatten(1),
                       obs["account"].flatten(1)], dim=1)


class Evaluators(nn.Module):
    """The shared per-asset network and the context; ``forward`` gives (policy latent, value
    latent): the policy latent is ``[h_i, c]`` for each asset, flattened, then ``c``."""

    def __init__(self, window: int, n_assets: int, n_features: int, asset_arch: Sequence[int],
                 context_arch: Sequence[int], act: type[nn.Module]) -> None:
        super().__init__()
        self.window, self.n_assets, self.n_features = window, n_assets, n_features
        self.asset = _mlp([window * n_features + P, *asset_arch], act)
        self.h = asset_arch[-1]
        self.context = _mlp([self.h + A, *context_arch], act)
        self.c = context_arch[-1]
        self.latent_dim_pi = n_assets * (self.h + self.c) + self.c
        self.latent_dim_vf = self.c

    def encode(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        """Per-asset codes (B, N, H) and the context (B, C)."""
        W, N, F = self.window, self.n_assets, self.n_features
        b = features.shape[0]
        m = W * N * F
        market = features[:, :m].reshape(b, W, N, F).transpose(1, 2).reshape(b, N, W * F)
        positions = features[:, m:m + N * P].reshape(b, N, P)
        account = features[:, m + N * P:]
        h = self.asset(th.cat([market, positions], dim=2))
        c = self.context(th.cat([h.mean(dim=1), account], dim=1))
        return h, c

    def _latent_pi(self, h: th.Tensor, c: th.Tensor) -> th.Tensor:
        per_asset = th.cat([h, c[:, None, :].expand(-1, h.shape[1], -1)], dim=2)
        return th.cat([per_asset.flatten(1), c], dim=1)

    def forward(self, features: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
        h, c = self.encode(features)
        return self._latent_pi(h, c), c

    def forward_actor(self, features: th.Tensor) -> th.Tensor:
        return self._latent_pi(*self.encode(features))

    def forward_critic(self, features: th.Tensor) -> th.Tensor:
        return self.encode(features)[1]


class AssetHead(nn.Module):
    """One linear map shared by the assets ``[h_i, c] -> k`` outputs each, plus ``c -> 1`` for
    the cash entry of the ``weights`` scheme."""

    def __init__(self, n_assets: int, h: int, c: int, per_asset: int, cash: bool) -> None:
        super().__init__()
        self.n_assets, self.h, self.c = n_assets, h, c
        self.asset = nn.Linear(h + c, per_asset)
        self.cash = nn.Linear(c, 1) if cash else None

    def forward(self, latent: th.Tensor) -> th.Tensor:
        n, width = self.n_assets, self.h + self.c
        per_asset = latent[:, :n * width].reshape(latent.shape[0], n, width)
        out = self.asset(per_asset).flatten(1)
        if self.cash is not None:
            out = th.cat([out, self.cash(latent[:, n * width:])], dim=1)
        return out


class EIIEPolicy(ActorCriticPolicy):
    """Actor-critic policy with a shared per-asset evaluator, for PPO and A2C (module doc).

    :param n_features: F, the features per bar and asset (``len(env.features.names)``).
    :param asset_arch: hidden sizes of the per-asset network.
    :param context_arch: hidden sizes of the context network (mean code + account).
    :param activation_fn: ``tanh``, ``relu``, ``elu``, ``gelu``, ``silu`` or a module class.
    :param log_std_init: initial log-std of the Gaussian (one scalar for all outputs); -1 gives
        std 0.37 on the [-1, 1] box, so early rollouts are not uniform noise.
    :param kwargs: the rest of ``ActorCriticPolicy``'s arguments (``net_arch`` is not used;
        gSDE is not supported).
    """

    def __init__(self, observation_space: spaces.Space, action_space: spaces.Space,
                 lr_schedule: Any, n_features: int | None = None,
                 asset_arch: Sequence[int] = (64, 64), context_arch: Sequence[int] = (64,),
                 activation_fn: str | type[nn.Module] = "tanh", log_std_init: float = -1.0,
                 **kwargs: Any) -> None:
        if n_features is None:
            raise ValueError("EIIEPolicy needs policy_kwargs.n_features (the number of "
                             "feature names in env.features.names)")
        if kwargs.pop("use_sde", False):
            raise ValueError("EIIEPolicy does not support gSDE (use_sde)")
        kwargs.pop("net_arch", None)
        if isinstance(activation_fn, str):
            if activation_fn.lower() not in ACTIVATIONS:
                raise ValueError(f"EIIEPolicy: unknown activation_fn {activation_fn!r} "
                                 f"(allowed: {', '.join(ACTIVATIONS)})")
            activation_fn = ACTIVATIONS[activation_fn.lower()]
        self.n_features = int(n_features)
        self.window, self.n_assets = shapes(observation_space, self.n_features)
        self.asset_arch = [int(x) for x in asset_arch]
        self.context_arch = [int(x) for x in context_arch]
        if not self.asset_arch or not self.context_arch:
            raise ValueError("EIIEPolicy: asset_arch and context_arch need at least one layer")
        kwargs.setdefault("features_extractor_class", Parts)
        super().__init__(observation_space, action_space, lr_schedule,
                         activation_fn=activation_fn, log_std_init=log_std_init, **kwargs)

    def _outputs(self) -> tuple[int, bool]:
        """(outputs per asset, cash entry) for this action space."""
        n, space = self.n_assets, self.action_space
        if isinstance(space, spaces.Box) and space.shape in ((n,), (n + 1,)):
            return 1, space.shape == (n + 1,)
        if isinstance(space, spaces.MultiDiscrete) and space.shape == (n,) and len(
                set(space.nvec.tolist())) == 1:
            return int(space.nvec[0]), False
        raise ValueError(f"EIIEPolicy: action space {space} is not one of ffe-gym's schemes "
                         f"for {n} assets")

    def _build_mlp_extractor(self) -> None:
        self.mlp_extractor = Evaluators(self.window, self.n_assets, self.n_features,
                                        self.asset_arch, self.context_arch, self.activation_fn)

    def _build(self, lr_schedule: Any) -> None:
        self._build_mlp_extractor()
        ev = self.mlp_extractor
        per_asset, cash = self._outputs()
        if not isinstance(self.action_dist, (DiagGaussianDistribution,
                                             MultiCategoricalDistribution)):
            raise ValueError(f"EIIEPolicy: unsupported distribution {self.action_dist}")
        self.action_net = AssetHead(self.n_assets, ev.h, ev.c, per_asset, cash)
        if isinstance(self.action_dist, DiagGaussianDistribution):
            self.log_std = nn.Parameter(th.full((1,), float(self.log_std_init)))
        self.value_net = nn.Linear(ev.c, 1)
        if self.ortho_init:
            for module, gain in ((ev, np.sqrt(2)), (self.action_net, 0.01),
                                 (self.value_net, 1.0)):
                module.apply(lambda m, g=gain: self.init_weights(m, gain=g))
        self.optimizer = self.optimizer_class(self.parameters(), lr=lr_schedule(1),
                                              **self.optimizer_kwargs)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(n_features=self.n_features, asset_arch=self.asset_arch,
                    context_arch=self.context_arch)
        data.pop("net_arch", None)
        return data


def resize(policy: EIIEPolicy, observation_space: spaces.Space,
           action_space: spaces.Space) -> EIIEPolicy:
    """The same trained policy for other spaces (another N, another window is refused): a new
    :class:`EIIEPolicy` with ``policy``'s weights."""
    params = policy._get_constructor_parameters()
    params.update(observation_space=observation_space, action_space=action_space,
                  lr_schedule=lambda _: 0.0)
    new = type(policy)(**params)
    if new.window != policy.window:
        raise ValueError(f"EIIEPolicy was trained on a {policy.window}-bar window; the env has "
                         f"{new.window}")
    new.load_state_dict(policy.state_dict())
    new.set_training_mode(False)
    return new.to(policy.device)


# ------------------------------------------------------------------------ normalisation


class GroupStats(RunningMeanStd):
    """Running mean and variance of the last axis read in groups of ``group`` values: one
    statistic per position in the group, shared by every group (every bar and asset)."""

    def __init__(self, group: int, epsilon: float = 1e-4) -> None:
        super().__init__(epsilon=epsilon, shape=(group,))
        self.group = group

    def update(self, arr: np.ndarray) -> None:
        super().update(np.asarray(arr, dtype=np.float64).reshape(-1, self.group))


class AssetNormalize(VecNormalize):
    """``VecNormalize`` with statistics per feature (F), position field and account field,
    shared across bars and assets, so they mean the same at any N and in any column order.
    Saved and loaded as ``VecNormalize`` is; applies to an env of another N.

    :param venv: an SB3 vec env of ``ffe/Portfolio-v0`` with the dict observation.
    :param n_features: F.
    :param kwargs: ``VecNormalize``'s (``norm_obs``, ``norm_reward``, ``clip_obs``, ...).
    """

    def __init__(self, venv: Any, n_features: int, **kwargs: Any) -> None:
        kwargs.pop("norm_obs_keys", None)
        super().__init__(venv, **kwargs)
        shapes(venv.observation_space, n_features)
        self.n_features = n_features
        self.obs_rms = {"market": GroupStats(n_features), "positions": GroupStats(P),
                        "account": GroupStats(A)}
        self.norm_obs_keys = ["market", "positions", "account"]

    def _normalize_obs(self, obs: np.ndarray, obs_rms: RunningMeanStd) -> np.ndarray:
        g = obs_rms.mean.shape[0]
        x = np.asarray(obs).reshape(*np.shape(obs)[:-1], -1, g)
        x = (x - obs_rms.mean) / np.sqrt(obs_rms.var + self.epsilon)
        return np.clip(x, -self.clip_obs, self.clip_obs).reshape(np.shape(obs))

    def _unnormalize_obs(self, obs: np.ndarray, obs_rms: RunningMeanStd) -> np.ndarray:
        g = obs_rms.mean.shape[0]
        x = np.asarray(obs).reshape(*np.shape(obs)[:-1], -1, g)
        return (x * np.sqrt(obs_rms.var + self.epsilon) + obs_rms.mean).reshape(np.shape(obs))

    def set_venv(self, venv: Any) -> None:
        """Attach to ``venv`` (any N, the same F and fields; SB3's check of equal shapes is
        replaced by this one)."""
        if self.venv is not None:
            raise ValueError("Trying to set venv of already initialized VecNormalize wrapper.")
        shapes(venv.observation_space, self.n_features)
        self.venv = venv
        self.num_envs = venv.num_envs
        self.class_attributes = dict(inspect.getmembers(self.__class__))
        self.render_mode = venv.render_mode
        self.observation_space = venv.observation_space
        self.action_space = venv.action_space
        self.returns = np.zeros(self.num_envs)


def register() -> None:
    """Make ``policy: EIIEPolicy`` an alias on PPO and A2C (done when this module is imported)."""
    from stable_baselines3 import A2C, PPO

    for algo in (PPO, A2C):
        algo.policy_aliases["EIIEPolicy"] = EIIEPolicy


register()
