"""Experiments: agents x seeds x datasets x walk-forward folds, as independent jobs.

An experiment YAML (``configs/experiments/*.yaml``)::

    name: default
    config: {risk: {on_portfolio_stop: flat}}      # the same data, costs and limits for all
    datasets: [{name: synthetic, data: {source: synthetic}}]
    folds: {n_folds: 2, train: 3000, validation: 600, test: 600}   # bars; embargo: longest lookback
    seeds: [0, 1, 2]
    baseline: equal-weight                          # scores are normalised against it
    agents:
      - {name: momentum, policy: momentum}
      - {name: ppo, train: {agent: ppo, timesteps: 8000, n_envs: 4}}
      - {name: llm, policy: llm-ensemble, kwargs: {config: configs/agents/llm_embedded.yaml},
         decide_every: 24}

Each job is a pure function of a picklable :class:`JobSpec`: it builds its data, trains its
agent where one is trained (on the fold's train window, validated on its validation window),
evaluates on the fold's test window, and writes
``<root>/<experiment>/<dataset>/fold<k>/<agent>/seed<s>/`` (metrics.json, equity.csv,
trades.csv, weights.csv, manifest.json, the model) atomically: into a temporary folder, renamed
when complete. A job whose metrics.json exists is skipped, so a killed comparison resumes and
loses nothing finished. Agents are named by strings (``ffe_gym`` never imports ``ffe_agents``).
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ffe_gym.config import Config, ConfigError, from_dict, load_yaml_as, merge, to_dict
from ffe_gym.data import MarketData, market_from_config
from ffe_gym.data.splits import Fold, Window, walk_forward
from ffe_gym.features import lookback
from ffe_gym.manifest import manifest, write_json


@dataclass
class DatasetSpec:
    name: str
    data: dict[str, Any] = field(default_factory=dict)  # the ``data`` section for this dataset


@dataclass
class FoldSpec:
    n_folds: int = 2
    train: int = 3000
    validation: int = 600
    test: int = 600
    embargo: int | None = None  # bars; None: the longest lookback of the config
    anchored: bool = False


@dataclass
class TrainSpec:
    agent: str  # ppo, a2c, sac, td3, recurrent_ppo
    timesteps: int
    agent_config: str | None = None  # default configs/agents/<agent>.yaml
    n_envs: int | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)


@dataclass
class AgentEntry:
    name: str
    policy: str | None = None  # a registered name, "module:Class"; None when trained
    kwargs: dict[str, Any] = field(default_factory=dict)
    train: TrainSpec | None = None
    decide_every: Any = None  # bars or an offset: how often this agent decides (stops: every bar)

    def __post_init__(self) -> None:
        if (self.policy is None) == (self.train is None):
            raise ConfigError(f"agents.{self.name}: give exactly one of policy or train")


@dataclass
class ExperimentConfig:
    name: str
    datasets: list[DatasetSpec]
    agents: list[AgentEntry]
    description: str = ""
    config: dict[str, Any] = field(default_factory=dict)
    folds: FoldSpec = field(default_factory=FoldSpec)
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    baseline: str = "equal-weight"
    score: str = "sharpe"

    def __post_init__(self) -> None:
        names = [a.name for a in self.agents]
        if len(set(names)) != len(names):
            raise ConfigError("agents: names must be unique")
        if self.baseline not in names:
            self.agents.append(AgentEntry(name=self.baseline, policy=self.baseline))


def load_experiment(path: str | Path) -> ExperimentConfig:
    exp = load_yaml_as(ExperimentConfig, path, "experiment")
    for d in exp.datasets:  # check every dataset's config now, not in a worker later
        dataset_config(exp, d)
    return exp


def dataset_config(exp: ExperimentConfig, dataset: DatasetSpec) -> Config:
    try:
        return from_dict(Config, merge(exp.config, {"data": dataset.data}))
    except ConfigError as exc:
        raise ConfigError(f"datasets.{dataset.name}: {exc}") from None


@dataclass(frozen=True)
class JobSpec:
    """Everything one job needs; picklable, so any backend can run it."""

    root: str
    experiment: str
    dataset: str
    config: dict[str, Any]  # the resolved Config as a dict
    fold: int
    windows: dict[str, tuple[int, int]]
    agent: dict[str, Any]  # an AgentEntry as a dict
    seed: int

    @property
    def folder(self) -> Path:
        return (Path(self.root) / self.experiment / self.dataset / f"fold{self.fold}"
                / self.agent["name"] / f"seed{self.seed}")


def embargo_for(cfg: Config) -> int:
    return max(cfg.env.window, lookback(cfg.env.features), cfg.portfolio.correlation_window,
               cfg.risk.var_window, cfg.sizing.volatility_window)


_MARKETS: dict[str, MarketData] = {}


def _market(cfg: Config) -> MarketData:
    key = json.dumps(to_dict(cfg.data), sort_keys=True)
    if key not in _MARKETS:
        _MARKETS[key] = market_from_config(cfg.data)
    return _MARKETS[key]


def folds_for(exp: ExperimentConfig, cfg: Config, md: MarketData) -> list[Fold]:
    f = exp.folds
    gap = f.embargo if f.embargo is not None else embargo_for(cfg)
    return walk_forward(md.n_bars, n_folds=f.n_folds, train=f.train, validation=f.validation,
                        test=f.test, embargo=gap, anchored=f.anchored)


def jobs(exp: ExperimentConfig, root: str | Path) -> list[JobSpec]:
    """Every job of the experiment, in a stable order."""
    out = []
    for d in exp.datasets:
        cfg = dataset_config(exp, d)
        md = _market(cfg)
        for fold in folds_for(exp, cfg, md):
            windows = {k: (w.start, w.stop) for k, w in
                       (("train", fold.train), ("validation", fold.validation),
                        ("test", fold.test))}
            for agent in exp.agents:
                for seed in exp.seeds:
                    out.append(JobSpec(str(root), exp.name, d.name, to_dict(cfg), fold.index,
                                       windows, asdict(agent), int(seed)))
    return out


def _agent_config(spec: JobSpec) -> Config:
    cfg = from_dict(Config, copy.deepcopy(spec.config))
    every = spec.agent.get("decide_every")
    if every is not None:
        cfg.portfolio.rebalancing_frequency = every
        cfg = from_dict(Config, to_dict(cfg))  # re-check
    return cfg


def _policy(spec: JobSpec, cfg: Config, md: MarketData, work: Path):
    from ffe_gym.evaluation.policy import resolve_policy

    agent = spec.agent
    if agent["train"] is None:
        return resolve_policy(agent["policy"], **agent["kwargs"])
    t = agent["train"]
    sb3 = importlib.import_module("ffe_agents.sb3")  # named, not imported: see the docstring
    path = t["agent_config"] or sb3.default_agent_config(t["agent"])
    aspec = sb3.load_agent_spec(path, algo=t["agent"])
    if t["n_envs"]:
        aspec.n_envs = t["n_envs"]
    aspec.kwargs.update({k: sb3._schedules(v) for k, v in t["hyperparameters"].items()})
    windows = {k: Window(*v) for k, v in spec.windows.items()}
    sb3.train(aspec, cfg, md, work / "model", seed=spec.seed, timesteps=t["timesteps"],
              progress=False, windows=windows)
    return sb3.load_policy(work / "model", name=agent["name"])


def run_job(spec: JobSpec) -> dict[str, Any]:
    """Run one job (or read its finished result) and return its summary row."""
    from ffe_gym.evaluation.rollout import env_for, rollout
    from ffe_gym.evaluation.statistics import block_bootstrap_sharpe_ci, sharpe

    folder = spec.folder
    done = folder / "metrics.json"
    if done.exists():
        return json.loads(done.read_text()) | {"skipped": True}
    if folder.exists():
        shutil.rmtree(folder)  # an unfinished folder from a killed run
    work = folder.parent / f".tmp-{folder.name}-{os.getpid()}"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    cfg = _agent_config(spec)
    md = _market(cfg)
    policy = _policy(spec, cfg, md, work)
    env = env_for(policy, cfg, md)
    start, stop = spec.windows["test"]
    result = rollout(policy, env, window=(start, stop - 1), seed=spec.seed)
    close = getattr(policy, "close", None)
    if close is not None:
        close()
    eq = result.equity.to_numpy()
    rets = eq[1:] / eq[:-1] - 1.0
    ppy = md.periods_per_year
    ci = (block_bootstrap_sharpe_ci(rets, ppy, reps=500, seed=spec.seed)
          if len(rets) >= 3 and np.std(rets) > 0 else (sharpe(rets, ppy), None, None))
    pd.DataFrame({"equity": result.equity, "gross_exposure": result.gross_exposure}).to_csv(
        work / "equity.csv", index_label="time")
    result.trades.to_csv(work / "trades.csv", index=False)
    result.weights.to_csv(work / "weights.csv", index_label="time")
    row = {"experiment": spec.experiment, "dataset": spec.dataset, "fold": spec.fold,
           "agent": spec.agent["name"], "seed": spec.seed, "start": str(result.start),
           "end": str(result.end), "steps": result.steps, "status": result.status,
           "synthetic": result.synthetic, **result.metrics,
           "sharpe_ci_low": ci[1], "sharpe_ci_high": ci[2],
           "attribution": [asdict(a) for a in result.attribution],
           "refusals": result.refusals, "policy_stats": result.policy_stats,
           "folder": str(folder)}
    write_json(work / "manifest.json", manifest(
        config=to_dict(cfg), data_hash=md.digest(), data=md.describe(),
        seeds={"seed": spec.seed}, extra={"job": asdict(spec) | {"config": None}}))
    write_json(work / "metrics.json", row)  # last: its presence marks the job done
    os.replace(work, folder)
    return row | {"skipped": False}
