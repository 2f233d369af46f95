"""stable-baselines3 agents on ffe/Portfolio-v0: hyperparameters, training, and the policy.

Hyperparameters use the rl-baselines3-zoo format (``configs/agents/<algo>.yaml``), so the same
file works with ``rl_zoo3`` where it is installed::

    ffe/Portfolio-v0:
      n_timesteps: 200000
      policy: MultiInputPolicy      # MlpPolicy switches the env to the flat observation
      n_envs: 8
      normalize: true               # or a mapping of VecNormalize arguments
      learning_rate: lin_3e-4       # linear schedule from 3e-4 to 0
      policy_kwargs: {net_arch: [64, 64], activation_fn: tanh}

Training runs on :class:`ffe_gym.env.SB3VecEnv` (n books, one engine call per step), with
``VecNormalize`` (statistics saved beside the model and loaded frozen for evaluation; for
``EIIEPolicy`` :class:`ffe_agents.eiie.AssetNormalize`, one statistic per feature shared by every
bar and asset), an ``EvalCallback`` on a validation window apart from training and test,
checkpoints, and TensorBoard logs with ``portfolio/*`` scalars per episode beside SB3's own.
``MlpPolicy`` switches the env to the flat observation; SAC and TD3 need a continuous scheme;
DQN trains in the ``single`` scheme (``Discrete(2N + 1)``).

* **Windows**: ``train.train_fraction`` for training, an embargo of the longest lookback,
  ``train.validation_fraction`` for validation, another embargo, the rest for testing.
* **The model evaluated** is the one with the best validation return (``best/``, with the
  normalisation statistics saved at that moment); ``train.evaluate_model: final`` takes the
  last. Judge learning by ``eval/mean_reward`` (the deterministic policy on validation), not by
  the sampled ``rollout/ep_rew_mean``: SB3's Gaussian starts at log-std 0, uniform noise on the
  [-1, 1] box, which ``log_std_init: -1.0`` in the shipped YAML avoids. An untrained policy's
  mean action sits inside the signals scheme's dead band: it evaluates to exactly no trade,
  and ``evaluate`` says so.
* **A run folder** holds ``model.zip``, ``best/``, ``vecnormalize.pkl``, ``config.yaml`` (the
  resolved config), ``agent.yaml``, ``manifest.json`` (version, git commit and dirtiness, data
  hash, seed, windows, the model evaluated, library versions), ``eval/evaluations.npz``,
  ``tb/`` and ``checkpoints/``. ``--resume`` continues one.
* **rl_zoo3**: ``python -m rl_zoo3.train --algo ppo --env ffe/Portfolio-v0 --gym-packages
  ffe_gym ffe_agents.eiie --conf-file configs/agents/ppo.yaml`` (``--env-kwargs
  'config:{...}'`` for the env's config; ``callback: ffe_agents.sb3.PortfolioScalars`` in the
  YAML adds the portfolio scalars). Its run folder is a policy (:func:`load_zoo_policy`): the
  model with the zoo's custom objects (so no rl_zoo3 is needed to load it), the frozen
  ``vecnormalize.pkl`` when ``config.yml`` says ``normalize``, and the env config from
  ``args.yml``'s ``env_kwargs``, read with a safe loader that knows the zoo's ``OrderedDict``
  and tuple tags and refuses any other Python tag.
"""

from __future__ import annotations

import copy
import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ffe_gym.config import Config, ConfigError, from_dict, merge, read_yaml, to_dict
from ffe_gym.data import MarketData
from ffe_gym.data.splits import Window
from ffe_gym.evaluation.policy import PolicyBase
from ffe_gym.features import lookback
from ffe_gym.manifest import manifest, write_json, write_yaml

ENV_ID = "ffe/Portfolio-v0"
ALGOS = {
    "ppo": "stable_baselines3:PPO",
    "a2c": "stable_baselines3:A2C",
    "sac": "stable_baselines3:SAC",
    "td3": "stable_baselines3:TD3",
    "dqn": "stable_baselines3:DQN",
    "recurrent_ppo": "sb3_contrib:RecurrentPPO",
}
CONTINUOUS_ONLY = {"sac", "td3"}
DISCRETE_ONLY = {"dqn"}  # one flat Discrete space: trained with env.action_scheme "single"
ZOO_UNSUPPORTED = ("env_wrapper", "frame_stack", "callback", "vec_env_wrapper")
ACTIVATIONS = {"tanh": "Tanh", "relu": "ReLU", "elu": "ELU", "leaky_relu": "LeakyReLU",
               "gelu": "GELU", "silu": "SiLU"}


class LinearSchedule:
    """rl-zoo's ``lin_<x>``: ``x * progress_remaining`` (from x down to 0); picklable."""

    def __init__(self, initial: float) -> None:
        self.initial = float(initial)

    def __call__(self, progress_remaining: float) -> float:
        return progress_remaining * self.initial

    def __repr__(self) -> str:
        return f"lin_{self.initial:g}"


@dataclass
class AgentSpec:
    """One agent's hyperparameters, read from a zoo-format YAML."""

    algo: str
    n_timesteps: int
    policy: str
    n_envs: int = 1
    normalize: dict[str, Any] | None = None
    policy_kwargs: dict[str, Any] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    raw: dict[str, Any] = field(default_factory=dict)


def algo_class(algo: str) -> type:
    if algo not in ALGOS:
        raise ConfigError(f"unknown agent {algo!r} (allowed: {', '.join(ALGOS)})")
    module, _, name = ALGOS[algo].partition(":")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError as exc:
        raise ConfigError(f"agent {algo!r} needs the package {module!r} ({exc}); "
                          "pip install 'ffe-gym[sb3]'") from None


def schedule(value: Any) -> Any:
    """A hyperparameter as SB3 takes it: rl_zoo3's ``"lin_<start>"`` becomes a schedule
    decaying linearly from ``start`` to 0 over training; anything else is returned as is."""
    if isinstance(value, str) and value.startswith("lin_"):
        return LinearSchedule(float(value[4:]))
    return value


def _policy_kwargs(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):
        raise ConfigError(f"{where}.policy_kwargs: give a mapping, e.g. "
                          "{net_arch: [64, 64], activation_fn: tanh}, not a Python string")
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}.policy_kwargs: expected a mapping")
    out = dict(value)
    act = out.get("activation_fn")
    if isinstance(act, str):
        import torch.nn as nn

        name = ACTIVATIONS.get(act.lower().removeprefix("nn."), act.removeprefix("nn."))
        if not hasattr(nn, name):
            raise ConfigError(f"{where}.policy_kwargs.activation_fn: unknown {act!r} "
                              f"(allowed: {', '.join(ACTIVATIONS)})")
        out["activation_fn"] = getattr(nn, name)
    return out


def load_agent_spec(path: str | Path, algo: str | None = None,
                    env_id: str = ENV_ID) -> AgentSpec:
    """Read the hyperparameters for ``env_id`` from a zoo-format YAML file.

    :param path: e.g. ``configs/agents/ppo.yaml``.
    :param algo: the algorithm; default the file's stem.
    :raises ConfigError: naming the file and key.
    """
    path = Path(path)
    algo = algo or path.stem
    data = read_yaml(path, "agent config")
    if not isinstance(data, Mapping) or env_id not in data:
        raise ConfigError(f"{path}: no section for {env_id!r} (the zoo format keys "
                          "hyperparameters by env id)")
    raw = dict(data[env_id])
    where = f"{path}: {env_id}"
    for key in ZOO_UNSUPPORTED:
        if key in raw:
            raise ConfigError(f"{where}.{key}: not supported by ffe-gym's trainer")
    try:
        n_timesteps = int(float(raw.pop("n_timesteps")))
        policy = str(raw.pop("policy"))
    except KeyError as exc:
        raise ConfigError(f"{where}: missing key {exc.args[0]!r}") from None
    n_envs = int(raw.pop("n_envs", 1))
    normalize = raw.pop("normalize", False)
    if isinstance(normalize, str):
        raise ConfigError(f"{where}.normalize: give true/false or a mapping of VecNormalize "
                          "arguments, not a Python string")
    norm = (dict(normalize) if isinstance(normalize, Mapping) else {}) if normalize else None
    policy_kwargs = _policy_kwargs(raw.pop("policy_kwargs", None), where)
    kwargs = {k: schedule(v) for k, v in raw.items()}
    if "train_freq" in kwargs and isinstance(kwargs["train_freq"], list):
        kwargs["train_freq"] = tuple(kwargs["train_freq"])
    return AgentSpec(algo=algo, n_timesteps=n_timesteps, policy=policy, n_envs=n_envs,
                     normalize=norm, policy_kwargs=policy_kwargs, kwargs=kwargs,
                     source=str(path), raw=dict(data[env_id]))


def default_agent_config(algo: str) -> Path:
    """``configs/agents/<algo>.yaml`` in the working directory or the source tree."""
    for base in (Path.cwd(), Path(__file__).resolve().parents[1]):
        p = base / "configs" / "agents" / f"{algo}.yaml"
        if p.exists():
            return p
    raise ConfigError(f"no configs/agents/{algo}.yaml here or in the source tree; "
                      "pass --agent-config PATH")


# -------------------------------------------------------------------------- data windows


def embargo_bars(cfg: Config) -> int:
    """The longest lookback: observation window, features, correlation and VaR windows."""
    if cfg.train.embargo_bars is not None:
        return cfg.train.embargo_bars
    return max(cfg.env.window, lookback(cfg.env.features), cfg.portfolio.correlation_window,
               cfg.risk.var_window, cfg.sizing.volatility_window)


def split_windows(md: MarketData, cfg: Config) -> dict[str, Window]:
    """Train | embargo | validation | embargo | test, in time, by the ``train`` fractions."""
    T = md.n_bars
    gap = embargo_bars(cfg)
    a = int(T * cfg.train.train_fraction)
    b = a + gap + int(T * cfg.train.validation_fraction)
    windows = {"train": Window(0, a), "validation": Window(a + gap, b),
               "test": Window(b + gap, T)}
    short = [k for k, w in windows.items() if len(w) < 2 * cfg.env.window + 2]
    if short:
        from ffe_gym.data import DataError

        raise DataError(f"{T} bars are too few for train/validation/test windows with an "
                        f"embargo of {gap} bars ({short[0]} would hold "
                        f"{max(len(windows[short[0]]), 0)} bars)", file=md.source)
    return windows


# -------------------------------------------------------------------------- training


def training_config(cfg: Config, spec: AgentSpec) -> Config:
    """The env config an agent trains (and is later evaluated) with."""
    env: dict[str, Any] = {}
    if spec.policy == "MlpPolicy" and cfg.env.observation != "flat":
        env["observation"] = "flat"
    if spec.algo in CONTINUOUS_ONLY and cfg.env.action_scheme in ("discrete", "single"):
        raise ConfigError(f"{spec.algo} needs a continuous action space; set "
                          "env.action_scheme to signals or weights")
    if spec.algo in DISCRETE_ONLY and cfg.env.action_scheme != "single":
        env["action_scheme"] = "single"  # DQN's one Discrete space: one asset per step
    return from_dict(Config, merge(to_dict(cfg), {"env": env})) if env else copy.deepcopy(cfg)


def _make_callback():
    return PortfolioScalars()


def PortfolioScalars(verbose: int = 0) -> Any:
    """A callback logging each finished episode's portfolio statistics (return, sharpe,
    max_drawdown, turnover, costs, ...) as ``portfolio/*`` TensorBoard scalars.

    Works with ``SB3VecEnv`` (``info["portfolio"]``) and with any SB3 vec env of
    ``PortfolioEnv`` (``info["portfolio_episode"]`` at the last step), so rl_zoo3 users add it
    in their hyperparameter file: ``callback: ffe_agents.sb3.PortfolioScalars``."""
    from stable_baselines3.common.callbacks import BaseCallback

    class _PortfolioScalars(BaseCallback):
        def _on_step(self) -> bool:
            for info in self.locals.get("infos", ()):
                stats = info.get("portfolio") or info.get("portfolio_episode")
                if stats:
                    for key, value in stats.items():
                        self.logger.record_mean(f"portfolio/{key}", float(value))
            return True

    return _PortfolioScalars(verbose)


def _vec_env(cfg: Config, md: MarketData, n: int, options: dict | None, seed: int):
    from stable_baselines3.common.vec_env import VecMonitor

    from ffe_gym.env import SB3VecEnv

    venv = SB3VecEnv(n, cfg, md, options=options, threads=cfg.train.env_threads)
    venv.seed(seed)
    return VecMonitor(venv)


def latest_checkpoint(folder: Path) -> Path:
    """The checkpoint with the most steps in ``folder`` (or its ``checkpoints/``)."""
    folder = Path(folder)
    if folder.is_file():
        return folder
    ckpt = folder / "checkpoints" if (folder / "checkpoints").is_dir() else folder
    found = sorted(ckpt.glob("model_*_steps.zip"),
                   key=lambda p: int(re.findall(r"_(\d+)_steps", p.name)[0]))
    if not found:
        raise ConfigError(f"{folder}: no checkpoint (model_<n>_steps.zip) to resume from")
    return found[-1]


def is_eiie(spec: AgentSpec) -> bool:
    return spec.policy == "EIIEPolicy"


def policy_setup(spec: AgentSpec, cfg: Config) -> dict[str, Any]:
    """The policy kwargs ``spec`` trains with under ``cfg``: for ``EIIEPolicy`` its alias is
    registered and ``n_features`` filled in from ``env.features.names`` (a value the YAML
    states must agree)."""
    kwargs = dict(spec.policy_kwargs)
    if not is_eiie(spec):
        return kwargs
    if spec.algo not in ("ppo", "a2c"):
        raise ConfigError(f"{spec.source}: policy EIIEPolicy is for ppo and a2c (an "
                          f"actor-critic policy); {spec.algo} uses MultiInputPolicy")
    importlib.import_module("ffe_agents.eiie")  # registers the alias on PPO and A2C
    f = len(cfg.env.features.names)
    if kwargs.setdefault("n_features", f) != f:
        raise ConfigError(f"{spec.source}: policy_kwargs.n_features is {kwargs['n_features']} "
                          f"but env.features.names has {f} features; set it to {f} or remove "
                          "it (ffe-gym fills it in; rl_zoo3 needs it)")
    if cfg.env.observation != "dict":
        raise ConfigError(f"{spec.source}: EIIEPolicy reads the dict observation; set "
                          "env.observation: dict")
    return kwargs


def _normalizer(spec: AgentSpec, cfg: Config, venv: Any, **kwargs: Any) -> Any:
    """``VecNormalize`` around ``venv``; for ``EIIEPolicy`` statistics shared across assets
    (:class:`ffe_agents.eiie.AssetNormalize`)."""
    from stable_baselines3.common.vec_env import VecNormalize

    if is_eiie(spec):
        from ffe_agents.eiie import AssetNormalize

        return AssetNormalize(venv, len(cfg.env.features.names), **kwargs)
    return VecNormalize(venv, **kwargs)


def _eval_callback(eval_env: Any, cfg: Config, out: Path, n_envs: int, normalize: bool) -> Any:
    """SB3's ``EvalCallback`` (deterministic policy on the validation window, logged as
    ``eval/mean_reward``), which also saves the normalisation statistics of each new best model
    beside it (``best/vecnormalize.pkl``) and evaluates once more when training ends, so the
    last model is a candidate too."""
    from stable_baselines3.common.callbacks import BaseCallback, EvalCallback

    class SaveStats(BaseCallback):
        def _on_step(self) -> bool:
            if normalize:
                self.model.get_env().save(str(out / "best" / "vecnormalize.pkl"))
            return True

    class Validation(EvalCallback):
        def _on_training_end(self) -> None:
            if self.n_calls and self.n_calls % self.eval_freq:
                freq, self.eval_freq = self.eval_freq, self.n_calls
                try:
                    self._on_step()
                finally:
                    self.eval_freq = freq

    return Validation(eval_env, eval_freq=max(cfg.train.eval_freq // n_envs, 1),
                      n_eval_episodes=cfg.train.eval_episodes,
                      best_model_save_path=str(out / "best"), log_path=str(out / "eval"),
                      deterministic=True, verbose=0, callback_on_new_best=SaveStats())


def train(spec: AgentSpec, cfg: Config, md: MarketData, out: str | Path, *, seed: int = 0,
          timesteps: int | None = None, resume: str | Path | None = None,
          progress: bool = True, windows: dict[str, Window] | None = None,
          init: str | Path | None = None) -> Any:
    """Train ``spec`` on the training window of ``md``, write the run folder ``out``, return the
    model.

    Writes ``model.zip`` (the last model), ``best/`` (the model with the best validation
    return, with its ``vecnormalize.pkl``), ``vecnormalize.pkl`` (when normalising),
    ``config.yaml`` (the resolved env config), ``agent.yaml`` (the hyperparameters),
    ``manifest.json`` (with ``model``: the file :func:`load_policy` evaluates, chosen by
    ``train.evaluate_model``), ``eval/evaluations.npz`` (validation return against steps),
    ``tb/`` (TensorBoard) and ``checkpoints/``.

    :param resume: a checkpoint file or a run folder: training continues from the latest
        checkpoint to ``timesteps`` in total, on the same TensorBoard curve.
    :param windows: explicit train / validation / test windows (a walk-forward fold); default
        :func:`split_windows`.
    :param init: a run folder written by this function (a warm start: the previous fold's):
        training starts from the model its manifest names (weights and optimiser state) and
        from its normalisation statistics; the manifest records it as ``warm_start``.
    """
    import torch
    from stable_baselines3.common.callbacks import CheckpointCallback
    from stable_baselines3.common.vec_env import VecNormalize

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(cfg.train.torch_threads)
    cfg = training_config(cfg, spec)
    policy_kwargs = policy_setup(spec, cfg)
    total = int(timesteps if timesteps is not None else spec.n_timesteps)
    windows = windows or split_windows(md, cfg)
    train_md = windows["train"].of(md)
    val = windows["validation"]
    eval_cfg = from_dict(Config, merge(to_dict(cfg), {"env": {"episode_bars": None}}))
    env = _vec_env(cfg, train_md, spec.n_envs, None, seed)
    eval_env = _vec_env(eval_cfg, md.slice(0, val.stop), 1,
                        {"start": val.start, "end": val.stop - 1}, seed + 10_000)
    Algo = algo_class(spec.algo)
    norm_path = out / "vecnormalize.pkl"
    if resume is not None:
        ckpt = latest_checkpoint(Path(resume))
        if spec.normalize is not None:
            stats = ckpt.with_name(ckpt.name.replace("model_", "model_vecnormalize_")
                                   .replace(".zip", ".pkl"))
            env = VecNormalize.load(str(stats), env)
            eval_env = _normalizer(spec, cfg, eval_env, training=False, norm_reward=False,
                                   **_eval_norm_kwargs(spec.normalize))
        model = Algo.load(str(ckpt), env=env, device=cfg.train.device,
                          tensorboard_log=str(out / "tb"))
    else:
        if spec.normalize is not None:
            env = _normalizer(spec, cfg, env, **spec.normalize)
            eval_env = _normalizer(spec, cfg, eval_env, training=False, norm_reward=False,
                                   **_eval_norm_kwargs(spec.normalize))
        try:
            model = Algo(spec.policy, env, seed=seed, verbose=0, device=cfg.train.device,
                         tensorboard_log=str(out / "tb"), policy_kwargs=policy_kwargs,
                         **spec.kwargs)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{spec.source}: {exc}") from None
    warm = None
    if init is not None:
        warm = _start_from(model, Path(init), spec.normalize is not None)
    n_envs = spec.n_envs
    callbacks = [
        _eval_callback(eval_env, cfg, out, n_envs, spec.normalize is not None),
        CheckpointCallback(save_freq=max(cfg.train.checkpoint_freq // n_envs, 1),
                           save_path=str(out / "checkpoints"), name_prefix="model",
                           save_vecnormalize=spec.normalize is not None),
        _make_callback(),
    ]
    remaining = total - (model.num_timesteps if resume is not None else 0)
    if remaining > 0:
        model.learn(total_timesteps=remaining, callback=callbacks, progress_bar=progress,
                    tb_log_name=spec.algo, reset_num_timesteps=resume is None)
    model.save(str(out / "model.zip"))
    if spec.normalize is not None:
        model.get_env().save(str(norm_path))
    chosen = "model.zip"  # an untrained model (0 steps: the untrained twin) has no validation
    if cfg.train.evaluate_model == "best" and model.num_timesteps > 0:
        if not (out / "best" / "best_model.zip").is_file():
            raise RuntimeError(f"{out}: no validation run saved a best model "
                               "(train.evaluate_model: best)")
        chosen = "best/best_model.zip"
    write_yaml(out / "config.yaml", to_dict(cfg))
    write_yaml(out / "agent.yaml", {ENV_ID: spec.raw})
    write_json(out / "manifest.json", manifest(
        config=to_dict(cfg), data_hash=md.digest(), data=md.describe(),
        seeds={"seed": seed},
        extra={"algo": spec.algo, "agent_config": spec.source, "timesteps": model.num_timesteps,
               "normalize": spec.normalize is not None, "model": chosen,
               "warm_start": warm,
               "windows": {k: [w.start, w.stop] for k, w in windows.items()},
               "window_times": {k: [str(md.index[w.start]), str(md.index[w.stop - 1])]
                                for k, w in windows.items()}}))
    env.close()
    eval_env.close()
    return model


def _start_from(model: Any, folder: Path, normalize: bool) -> dict[str, Any]:
    """Load the weights (and optimiser state) of the model ``folder``'s manifest names into
    ``model``, and its running normalisation statistics into ``model``'s env; what was loaded,
    for the manifest."""
    import json
    import pickle

    man = json.loads((folder / "manifest.json").read_text())
    chosen = folder / man.get("model", "model.zip")
    model.set_parameters(str(chosen), exact_match=True, device=model.device)
    env = model.get_env()
    if normalize:
        with open(chosen.parent / "vecnormalize.pkl", "rb") as fh:
            stats = pickle.load(fh)
        env.obs_rms, env.ret_rms = stats.obs_rms, stats.ret_rms
    return {"windows": man.get("windows"), "model": man.get("model", "model.zip"),
            "timesteps": man.get("timesteps")}


def _eval_norm_kwargs(normalize: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in normalize.items() if k not in ("norm_reward", "training")}


# -------------------------------------------------------------------------- the policy


class SB3Policy(PolicyBase):
    """A trained SB3 model as a :class:`ffe_gym.evaluation.Policy`.

    Observations are normalised with the saved ``VecNormalize`` statistics, frozen. Actions
    are deterministic. A recurrent policy keeps its hidden state across one episode. An
    ``EIIEPolicy`` acts on any number of assets: bound to an env whose N differs from the one it
    was trained on, it is rebuilt for the env's spaces with the same weights
    (:func:`ffe_agents.eiie.resize`; SB3's check that the saved spaces match is bypassed for
    this policy only, whose parameters do not depend on N).

    :param model: the loaded SB3 model.
    :param env_config: the ``env`` section it was trained with (its observation layout).
    :param normalizer: the frozen ``VecNormalize`` or None.
    """

    def __init__(self, model: Any, env_config: dict[str, Any], normalizer: Any = None,
                 name: str = "sb3") -> None:
        self.model = model
        self.policy = model.policy
        self.env_config = env_config
        self.normalizer = normalizer
        self.name = name
        self._state = None
        self._start = np.ones(1, dtype=bool)

    def env_overrides(self) -> dict[str, Any]:
        return dict(self.env_config)

    def bind(self, layout: Any) -> None:
        """Fit an ``EIIEPolicy`` to the env's number of assets (class doc)."""
        n = getattr(self.model.policy, "n_assets", None)
        if n is None or n == layout.n_assets:
            self.policy = self.model.policy
            return
        from gymnasium import spaces

        from ffe_agents.eiie import resize

        k = layout.n_assets
        w, f = layout.window, len(layout.features)
        box = lambda size: spaces.Box(-np.inf, np.inf, (size,), dtype=np.float32)  # noqa: E731
        obs = spaces.Dict({"market": box(w * k * f), "positions": box(k * len(
            layout.position_fields)), "account": box(len(layout.account_fields))})
        old = self.model.policy.action_space
        if isinstance(old, spaces.MultiDiscrete):
            act: Any = spaces.MultiDiscrete([int(old.nvec[0])] * k)
        else:
            act = spaces.Box(-1.0, 1.0, (k + (1 if old.shape[0] == n + 1 else 0),),
                             dtype=np.float32)
        self.policy = resize(self.model.policy, obs, act)

    def reset(self, seed: int | None = None) -> None:
        self._state = None
        self._start = np.ones(1, dtype=bool)

    def _batch(self, observation: Any) -> Any:
        if isinstance(observation, Mapping):
            obs = {k: np.asarray(v)[None] for k, v in observation.items()}
        else:
            obs = np.asarray(observation)[None]
        if self.normalizer is not None:
            obs = self.normalizer.normalize_obs(obs)
        return obs

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        action, self._state = self.policy.predict(self._batch(observation), state=self._state,
                                                  episode_start=self._start,
                                                  deterministic=True)
        self._start = np.zeros(1, dtype=bool)
        return action[0]


def _zoo_yaml(path: Path) -> Any:
    """An rl_zoo3 ``config.yml`` / ``args.yml``: YAML with ``OrderedDict`` and tuple tags.
    Those two tags are read; any other Python tag is refused (no object is constructed)."""
    import yaml

    class Loader(yaml.SafeLoader):
        pass

    def ordered(loader: Any, node: Any) -> dict:
        (pairs,) = loader.construct_sequence(node, deep=True)
        return {k: v for k, v in pairs}

    Loader.add_constructor("tag:yaml.org,2002:python/object/apply:collections.OrderedDict",
                           ordered)
    Loader.add_constructor("tag:yaml.org,2002:python/tuple",
                           lambda loader, node: tuple(loader.construct_sequence(node)))
    try:
        return yaml.load(path.read_text(), Loader=Loader)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not an rl_zoo3 file this loader reads ({exc})") from None


def zoo_run(path: str | Path) -> dict[str, Path] | None:
    """The files of an rl_zoo3 run folder (``logs/<algo>/<env>_<id>``): its model
    (``<env>.zip``, else ``best_model.zip``) and the ``<env>/`` folder with ``args.yml``,
    ``config.yml`` and ``vecnormalize.pkl``; None when ``path`` is not one."""
    folder = Path(path)
    if not folder.is_dir():
        return None
    for stats in sorted(p for p in folder.iterdir() if (p / "args.yml").is_file()):
        for model in (folder / f"{stats.name}.zip", folder / "best_model.zip"):
            if model.is_file():
                return {"model": model, "stats": stats}
    return None


def _zero(_: float) -> float:
    return 0.0


# what rl_zoo3's enjoy script passes to ``load``: the training schedules it pickles (its own
# ``lin_<x>`` functions, which would need rl_zoo3 to unpickle) are not needed to act
ZOO_CUSTOM_OBJECTS: dict[str, Any] = {"learning_rate": 0.0, "lr_schedule": _zero,
                                      "clip_range": _zero}


def load_zoo_policy(path: str | Path, **kwargs: Any) -> SB3Policy:
    """An rl_zoo3 run folder as a policy: the model, its frozen ``VecNormalize`` statistics
    (when ``config.yml`` says ``normalize``) and the env's ``config`` from the ``env_kwargs``
    in ``args.yml`` (a config path or mapping, as given to ``gym.make``)."""
    import pickle

    found = zoo_run(path)
    if found is None:
        raise ConfigError(f"{path}: not an rl_zoo3 run folder (needs <env>/args.yml beside "
                          "<env>.zip or best_model.zip)")
    args = _zoo_yaml(found["stats"] / "args.yml") or {}
    hyper = _zoo_yaml(found["stats"] / "config.yml") if (found["stats"] / "config.yml").is_file() \
        else {}
    algo = str(args.get("algo") or Path(path).parent.name)
    from ffe_gym.config import coerce_config

    env_kwargs = args.get("env_kwargs") or {}
    cfg = coerce_config(env_kwargs.get("config"))
    try:  # the zoo pickles its own schedules (lin_3e-4): replaced as its enjoy script does
        model = algo_class(algo).load(str(found["model"]), device="cpu",
                                      custom_objects=ZOO_CUSTOM_OBJECTS)
    except ImportError as exc:
        raise ConfigError(f"{found['model']}: the model needs a module that is not installed "
                          f"({exc}); install it, or retrain without it") from None
    normalizer = None
    vec = found["stats"] / "vecnormalize.pkl"
    if hyper.get("normalize") and vec.is_file():
        with open(vec, "rb") as fh:
            normalizer = pickle.load(fh)
        normalizer.training = False
        normalizer.norm_reward = False
    elif hyper.get("normalize"):
        raise ConfigError(f"{found['stats']}: config.yml says normalize but vecnormalize.pkl "
                          "is missing")
    return SB3Policy(model, to_dict(cfg)["env"], normalizer,
                     name=kwargs.get("name", f"{algo}:{Path(path).name}"))


def load_policy(path: str | Path, **kwargs: Any) -> SB3Policy:
    """Load a run folder written by :func:`train` (the model its manifest names: the best on
    validation unless ``train.evaluate_model`` said ``final``), a ``model.zip`` inside one, or
    an rl_zoo3 run folder (:func:`load_zoo_policy`)."""
    import json
    import pickle

    path = Path(path)
    folder = path.parent if path.is_file() else path
    man_file = folder / "manifest.json"
    if not man_file.exists() and zoo_run(path) is not None:
        return load_zoo_policy(path, **kwargs)

    if not man_file.exists():
        raise ConfigError(f"{path}: not a trained run (needs model.zip and manifest.json, or "
                          "an rl_zoo3 run folder)")
    man = json.loads(man_file.read_text())
    model_file = path if path.is_file() else folder / man.get("model", "model.zip")
    if not model_file.exists():
        raise ConfigError(f"{path}: not a trained run ({model_file.relative_to(folder)} is "
                          "missing)")
    if man["config"]["env"].get("observation") == "dict" and man.get("algo") in ("ppo", "a2c"):
        importlib.import_module("ffe_agents.eiie")  # an EIIEPolicy model unpickles its class
    Algo = algo_class(man["algo"])
    model = Algo.load(str(model_file), device="cpu")
    normalizer = None
    if man.get("normalize"):
        with open(model_file.parent / "vecnormalize.pkl", "rb") as fh:
            normalizer = pickle.load(fh)
        normalizer.training = False
        normalizer.norm_reward = False
    return SB3Policy(model, man["config"]["env"], normalizer,
                     name=kwargs.get("name", f"{man['algo']}:{folder.name}"))
