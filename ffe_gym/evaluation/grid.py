"""Run a list of jobs on a backend, then aggregate them into honest comparisons.

Backends: ``serial``; ``process`` (a process pool on this machine); ``ray`` (``pip install
'ffe-gym[ray]'``; ``address`` connects to a cluster, None starts a local one; usage stats and the
dashboard are off; workers import the packages themselves). Jobs already done are read back,
not recomputed, whichever backend runs them. In parallel backends the seeds of one agent on one
fold run one after another in the same worker (a chain), so that an agent whose replies are
cached (the LLM ensemble) computes them once instead of racing itself; chains run in parallel.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from multiprocessing import get_context
from typing import Any

import numpy as np
import pandas as pd

from ffe_gym.evaluation.experiment import ExperimentConfig, JobSpec, run_job
from ffe_gym.evaluation.statistics import (
    deflated_sharpe_ratio,
    iqm,
    performance_profile,
    probability_of_improvement_ci,
    stratified_bootstrap_ci,
)

BACKENDS = ("serial", "process", "ray")


def run_jobs(specs: Sequence[JobSpec], backend: str = "serial", workers: int | None = None,
             address: str | None = None, progress: bool = True,
             on_result: Callable[[dict], None] | None = None) -> list[dict[str, Any]]:
    """Run ``specs``; results come back in the order of ``specs``."""
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r} (allowed: {', '.join(BACKENDS)})")
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    results: list[dict[str, Any] | None] = [None] * len(specs)
    bar = Progress("[progress.description]{task.description}", BarColumn(),
                   MofNCompleteColumn(), TimeElapsedColumn(), disable=not progress)
    with bar:
        task = bar.add_task(f"jobs ({backend})", total=len(specs))

        def done(i: int, row: dict[str, Any]) -> None:
            results[i] = row
            bar.advance(task)
            if on_result is not None:
                on_result(row)

        if backend == "serial":
            for i, spec in enumerate(specs):
                done(i, run_job(spec))
        elif backend == "process":
            n = workers or max(1, (os.cpu_count() or 1))
            with ProcessPoolExecutor(max_workers=n, mp_context=get_context("spawn")) as pool:
                futures = {pool.submit(run_chain, [specs[i] for i in chain]): chain
                           for chain in chains(specs)}
                for f in as_completed(futures):
                    for i, row in zip(futures[f], f.result(), strict=True):
                        done(i, row)
        else:
            _run_ray(specs, address, workers, done)
    return [r for r in results if r is not None]


def chains(specs: Sequence[JobSpec]) -> list[list[int]]:
    """Indices of ``specs`` grouped by (dataset, fold, agent), seeds in order."""
    groups: dict[tuple, list[int]] = {}
    for i, s in enumerate(specs):
        groups.setdefault((s.dataset, s.fold, s.agent["name"]), []).append(i)
    return list(groups.values())


def run_chain(specs: Sequence[JobSpec]) -> list[dict[str, Any]]:
    """Run jobs one after another (see the module docstring)."""
    return [run_job(s) for s in specs]


def _run_ray(specs, address, workers, done) -> None:
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise ImportError("the ray backend needs ray: pip install 'ffe-gym[ray]'") from None
    started = not ray.is_initialized()
    if started:
        kwargs = {"include_dashboard": False, "log_to_driver": False,
                  "configure_logging": False}
        if address is None and workers:
            kwargs["num_cpus"] = workers
        ray.init(address=address, **kwargs)
    try:
        remote = ray.remote(num_cpus=1)(run_chain)
        refs = {remote.remote([specs[i] for i in chain]): chain for chain in chains(specs)}
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            for ref in ready:
                for i, row in zip(refs[ref], ray.get(ref), strict=True):
                    done(i, row)
    finally:
        if started:
            ray.shutdown()


# ------------------------------------------------------------------------------- aggregation


def results_frame(rows: list[dict[str, Any]], exp: ExperimentConfig) -> pd.DataFrame:
    """One row per job with ``score``: the agent's score minus the baseline's on the same
    dataset, fold and seed (so folds and datasets pool). A metric that is undefined for a run
    (the Sharpe ratio of a run that never moved) counts as 0 in the score."""
    keep = [k for k in rows[0] if k not in ("attribution", "refusals", "policy_stats")]
    df = pd.DataFrame([{k: r.get(k) for k in keep} for r in rows])
    metric = df[exp.score].astype(float).fillna(0.0)
    base = metric[df["agent"] == exp.baseline]
    base.index = pd.MultiIndex.from_frame(df.loc[base.index, ["dataset", "fold", "seed"]])
    ref = base.reindex(pd.MultiIndex.from_frame(df[["dataset", "fold", "seed"]])).to_numpy()
    df["score"] = metric.to_numpy() - ref
    return df


def score_matrix(df: pd.DataFrame, agent: str) -> np.ndarray:
    """(runs, tasks): seeds x (dataset, fold) of one agent's normalised scores."""
    sub = df[df["agent"] == agent].pivot(index="seed", columns=["dataset", "fold"],
                                         values="score")
    return sub.to_numpy(dtype=float)


def aggregate(df: pd.DataFrame, exp: ExperimentConfig, reps: int = 2000) -> dict[str, Any]:
    """IQM with stratified bootstrap intervals, probability of improvement for every pair,
    performance profiles, means of the raw metrics, and the deflated Sharpe ratio of each
    agent's best run given every run the experiment tried."""
    agents = list(dict.fromkeys(df["agent"]))
    mats = {a: score_matrix(df, a) for a in agents}
    table = []
    all_scores = np.concatenate([m.ravel() for m in mats.values()])
    finite = all_scores[np.isfinite(all_scores)]
    taus = np.linspace(finite.min(), finite.max(), 41) if len(finite) else np.zeros(1)
    per_period = df["sharpe"].astype(float) / np.sqrt(_ppy(df))
    sr_var = float(np.nanvar(per_period, ddof=1)) if len(df) > 1 else 0.0
    for a in agents:
        m = np.nan_to_num(mats[a], nan=0.0)
        point, lo, hi = stratified_bootstrap_ci(m, iqm, reps=reps)
        sub = df[df["agent"] == a]
        best = sub.loc[sub["sharpe"].astype(float).idxmax()] if sub["sharpe"].notna().any() \
            else None
        dsr = None
        if best is not None and sr_var > 0:
            eq = pd.read_csv(os.path.join(best["folder"], "equity.csv"))["equity"].to_numpy()
            dsr = deflated_sharpe_ratio(eq[1:] / eq[:-1] - 1.0, n_trials=len(df),
                                        sharpe_variance=sr_var)
        table.append({"agent": a, "iqm": point, "iqm_low": lo, "iqm_high": hi,
                      **{col: _mean(sub, col) for col in ("sharpe", "total_return",
                                                          "max_drawdown", "turnover",
                                                          "trades")},
                      "runs": len(sub), "deflated_sharpe_best": dsr})
    poi = {}
    for a in agents:
        for b in agents:
            if a != b:
                poi[f"{a} > {b}"] = probability_of_improvement_ci(
                    np.nan_to_num(mats[a]), np.nan_to_num(mats[b]), reps=max(200, reps // 4))
    profiles = {a: performance_profile(np.nan_to_num(mats[a]), taus).tolist() for a in agents}
    return {"table": table, "probability_of_improvement": poi, "taus": taus.tolist(),
            "profiles": profiles, "score": f"{exp.score} minus {exp.baseline}'s",
            "tasks": int(df.groupby(["dataset", "fold"]).ngroups),
            "seeds": sorted(int(s) for s in df["seed"].unique())}


def _mean(sub: pd.DataFrame, col: str) -> float | None:
    """Mean over runs; None when the metric is undefined for every run."""
    v = sub[col].astype(float)
    return float(v.mean()) if v.notna().any() else None


def _ppy(df: pd.DataFrame) -> float:
    # bars per year from any finished run's window (all runs share the calendar per dataset)
    bars = df["bars"].astype(float)
    start = pd.to_datetime(df["start"])
    end = pd.to_datetime(df["end"])
    years = ((end - start).dt.total_seconds() / (365 * 86400)).replace(0, np.nan)
    ppy = (bars / years).median()
    return float(ppy) if np.isfinite(ppy) and ppy > 0 else 252.0
