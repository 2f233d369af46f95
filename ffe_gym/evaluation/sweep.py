"""Hyperparameter sweeps of a trained agent on Ray Tune, scored on validation data only.

An agent entry of an experiment declares what to search::

    - name: ppo
      train:
        agent: ppo
        timesteps: 8192
        sweep: {trials: 8, space: {learning_rate: {loguniform: [1.0e-5, 1.0e-3]},
                                   gamma: {choice: [0.95, 0.99]}}}

``scripts/sweep.py --experiment E --agent ppo`` runs that many trials of the very job function
the grid runs (:func:`~ffe_gym.evaluation.jobs.compute_job`): train on fold 0's train window,
score on fold 0's validation window, which lies before every test window of a walk-forward
experiment, so no test bar is ever seen while choosing. It writes
``runs/<experiment>/sweeps/<agent>.yaml`` (the winning hyperparameters, every trial's
configuration and score, the number of trials, the window). The experiment then evaluates the
winner like any agent with ``train: {..., from_sweep: runs/<experiment>/sweeps/ppo.yaml}``; the
trials count among the configurations tried in the deflated Sharpe ratio (they have no test
returns, so they are not in the SPA test). Kinds of search dimension: ``choice``, ``uniform``,
``loguniform``, ``randint``.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

from ffe_gym.config import ConfigError
from ffe_gym.evaluation.experiment import ExperimentConfig, jobs
from ffe_gym.manifest import write_yaml

KINDS = ("choice", "uniform", "loguniform", "randint")


def search_space(space: dict[str, dict[str, list[Any]]]) -> dict[str, Any]:
    """Ray Tune search dimensions from ``{name: {kind: args}}``."""
    from ray import tune

    out = {}
    for name, dim in space.items():
        if not isinstance(dim, dict) or len(dim) != 1 or next(iter(dim)) not in KINDS:
            raise ConfigError(f"sweep.space.{name}: give one of {', '.join(KINDS)} with its "
                              "arguments, e.g. {loguniform: [1.0e-5, 1.0e-3]}")
        kind, args = next(iter(dim.items()))
        out[name] = tune.choice(list(args)) if kind == "choice" else getattr(tune, kind)(*args)
    return out


def sweep(exp: ExperimentConfig, agent: str, root: str | Path, *, trials: int | None = None,
          address: str | None = None, workers: int | None = None, seed: int = 0) -> Path:
    """Run the sweep of ``agent`` and write its result file; returns the file's path."""
    from ray import tune

    from ffe_gym.evaluation import runner
    from ffe_gym.evaluation.jobs import compute_job

    entry = next((a for a in exp.agents if a.name == agent), None)
    if entry is None or entry.train is None or entry.train.sweep is None:
        raise ConfigError(f"agents.{agent}: needs train.sweep (trials and space) to sweep")
    n = trials or entry.train.sweep.trials
    space = search_space(entry.train.sweep.space)
    root = Path(root).absolute()
    base = next(s for s in jobs(exp, root) if s.agent["name"] == agent and s.fold == 0)
    market = runner._market(base)
    metric = exp.score

    def trial(config: dict[str, Any]) -> dict[str, float]:
        spec_agent = dict(base.agent)
        spec_agent["train"] = dict(spec_agent["train"])
        spec_agent["train"]["hyperparameters"] = {**spec_agent["train"]["hyperparameters"],
                                                  **config}
        spec = dataclasses.replace(base, agent=spec_agent, evaluate="validation",
                                   identity=f"sweep-{agent}")
        result = compute_job(spec, market)
        if "error" in result:
            raise RuntimeError(result["error"])
        value = result["row"].get(metric)
        return {"score": float(value) if value is not None else -math.inf}

    import ray

    started = runner.init_ray(address, workers)
    out = root / exp.name / "sweeps"
    try:
        from ray.tune.search import BasicVariantGenerator

        tuner = tune.Tuner(
            tune.with_resources(trial, {"cpu": 1}), param_space=space,
            tune_config=tune.TuneConfig(num_samples=n, metric="score", mode="max",
                                        search_alg=BasicVariantGenerator(random_state=seed)),
            run_config=tune.RunConfig(name=agent, storage_path=str(out / "tune"), verbose=0))
        grid = tuner.fit()
    finally:
        if started:
            ray.shutdown()
    rows = [{"config": r.config, "score": r.metrics.get("score"),
             "error": str(r.error).splitlines()[0] if r.error else None} for r in grid]
    done = [r for r in rows if r["score"] is not None and r["error"] is None]
    if not done:
        raise RuntimeError(f"every trial of the {agent} sweep failed: {rows[0]['error']}")
    best = max(done, key=lambda r: r["score"])
    train, validation = base.windows["train"], base.windows["validation"]
    path = out / f"{agent}.yaml"
    write_yaml(path, {
        "agent": entry.train.agent, "objective": f"{metric} on fold 0's validation window",
        "train_window": list(train), "validation_window": list(validation),
        "trials": len(rows), "best": _plain(best["config"]), "best_score": best["score"],
        "all": [{"config": _plain(r["config"]), "score": r["score"], "error": r["error"]}
                for r in rows]})
    return path


def _plain(config: dict[str, Any]) -> dict[str, Any]:
    return {k: (float(v) if hasattr(v, "item") and not isinstance(v, int) else v)
            for k, v in config.items()}
