"""Honest statistics for comparing policies.

After Agarwal et al., "Deep RL at the Edge of the Statistical Precipice" (NeurIPS 2021); written
here because rliable does not import with pandas 3. Scores are arrays of shape (runs, tasks):
a task is a (dataset, fold) test window, a run is a seed. NaN marks a missing or undefined
score; it is left out (callers count it).

* :func:`iqm`: interquartile mean over all runs and tasks (the mean of the middle 50%: 25% cut
  from each end, ``floor(0.25 n)`` values, as ``scipy.stats.trim_mean``).
* :func:`two_stage_bootstrap_ci`: percentile interval of a statistic, resampling the tasks
  (windows) with replacement, then the runs with replacement within each drawn task. Windows
  are the main source of doubt in a backtest, so a deterministic agent (one run per window)
  still gets an honest interval from its windows.
* :func:`stratified_bootstrap_ci`: the rliable interval (runs resampled within each task, the
  tasks fixed); it has zero width for a deterministic agent, so the comparison does not use it.
* :func:`probability_of_improvement`: P(X > Y) averaged over tasks, each the Mann-Whitney
  statistic over all run pairs of that task (ties count one half); its interval is two-stage.
* :func:`performance_profile`: the share of run scores above each threshold tau.

For one equity curve:

* :func:`block_bootstrap_sharpe_ci`: a moving-block bootstrap interval for the annualised
  Sharpe ratio (returns are autocorrelated; i.i.d. resampling would understate the spread).
* :func:`deflated_sharpe_ratio`: Bailey and Lopez de Prado (2014): the probability that the
  true Sharpe ratio exceeds the best one expected from ``n_trials`` unskilled trials, given the
  sample length, skewness and kurtosis.

Across everything an experiment tried:

* :func:`superiority_tests`: Hansen's SPA test and Romano-Wolf StepM from ``arch.bootstrap``
  (stationary bootstrap) of per-bar losses against the reference's.
* :func:`paired_ratio_ci`: a paired two-stage interval for a ratio of two rule variants (the
  seed's claims: returns with and without correlation sizing, drawdown with and without risk
  management).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd
from scipy import stats as st

EULER_GAMMA = 0.5772156649015329


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of the finite values (25% trimmed from each end); NaN when none."""
    x = np.asarray(scores, dtype=np.float64).ravel()
    x = np.sort(x[np.isfinite(x)])
    if len(x) == 0:
        return float("nan")
    cut = int(0.25 * len(x))
    return float(x[cut: len(x) - cut].mean())


def _iqm_rows(x: np.ndarray) -> np.ndarray:
    """IQM of each row of a 2-D array (all values finite)."""
    x = np.sort(x, axis=1)
    n = x.shape[1]
    cut = int(0.25 * n)
    return x[:, cut: n - cut].mean(axis=1)


def _columns(scores: np.ndarray) -> list[np.ndarray]:
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    return [c[np.isfinite(c)] for c in x.T]


def two_stage_bootstrap_ci(scores: np.ndarray,
                           statistic: Callable[[np.ndarray], float] = iqm, reps: int = 2000,
                           confidence: float = 0.95,
                           seed: int = 0) -> tuple[float, float, float]:
    """(point, low, high): the statistic over all finite scores and its percentile interval
    from a two-stage bootstrap: draw the tasks (columns) with replacement, then within each
    drawn task its runs (finite rows) with replacement.

    :param scores: (runs, tasks); NaN cells are left out, a task with no finite run is dropped.
    """
    cols = [c for c in _columns(scores) if len(c)]
    if not cols:
        return float("nan"), float("nan"), float("nan")
    point = statistic(np.concatenate(cols))
    rng = np.random.default_rng(seed)
    k = len(cols)
    a = (1.0 - confidence) / 2.0
    sizes = {len(c) for c in cols}
    if len(sizes) == 1 and statistic is iqm:  # rectangular: one vectorised pass
        n = sizes.pop()
        x = np.stack(cols, axis=1)  # (n, k)
        tasks = rng.integers(0, k, (reps, 1, k))
        runs = rng.integers(0, n, (reps, n, k))
        boot = _iqm_rows(x[runs, tasks].reshape(reps, n * k))
    else:
        boot = np.empty(reps)
        for r in range(reps):
            drawn = rng.integers(0, k, k)
            boot[r] = statistic(np.concatenate(
                [cols[t][rng.integers(0, len(cols[t]), len(cols[t]))] for t in drawn]))
    return point, float(np.quantile(boot, a)), float(np.quantile(boot, 1.0 - a))


def stratified_bootstrap_ci(scores: np.ndarray, statistic: Callable[[np.ndarray], float] = iqm,
                            reps: int = 2000, confidence: float = 0.95,
                            seed: int = 0) -> tuple[float, float, float]:
    """(point, low, high): the statistic and its percentile interval.

    :param scores: (runs, tasks); runs are resampled with replacement within each task.
    """
    x = np.asarray(scores, dtype=np.float64)
    if x.ndim == 1:
        x = x[:, None]
    rng = np.random.default_rng(seed)
    n, k = x.shape
    boot = np.empty(reps)
    cols = np.arange(k)
    for r in range(reps):
        idx = rng.integers(0, n, (n, k))
        boot[r] = statistic(x[idx, cols])
    a = (1.0 - confidence) / 2.0
    return statistic(x), float(np.quantile(boot, a)), float(np.quantile(boot, 1.0 - a))


def _comparisons(x: np.ndarray, y: np.ndarray) -> list[np.ndarray]:
    """Per task shared by both (finite runs on each side): the matrix 1[x_i > y_j] + 1/2 tie."""
    out = []
    for a, b in zip(_columns(x), _columns(y), strict=True):
        if len(a) and len(b):
            out.append((a[:, None] > b[None, :]) + 0.5 * (a[:, None] == b[None, :]))
    return out


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y): per task, the share of run pairs (i, j) with x_i > y_j (ties 1/2), averaged
    over tasks. ``x`` and ``y`` are (runs, tasks) with the same tasks; a task where either side
    has no finite score is left out (NaN when none is left)."""
    cmp = _comparisons(x, y)
    return float(np.mean([c.mean() for c in cmp])) if cmp else float("nan")


def probability_of_improvement_ci(x: np.ndarray, y: np.ndarray, reps: int = 1000,
                                  confidence: float = 0.95,
                                  seed: int = 0) -> tuple[float, float, float]:
    """P(X > Y) with a two-stage bootstrap interval: tasks drawn with replacement, then the
    runs of both sides resampled within each drawn task."""
    cmp = _comparisons(x, y)
    if not cmp:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    k = len(cmp)
    drawn = rng.integers(0, k, (reps, k))
    per_slot = np.empty((reps, k))
    for t, c in enumerate(cmp):
        slots = drawn == t
        m = int(slots.sum())
        if m:
            ix = rng.integers(0, c.shape[0], (m, c.shape[0]))
            iy = rng.integers(0, c.shape[1], (m, c.shape[1]))
            per_slot[slots] = c[ix[:, :, None], iy[:, None, :]].mean(axis=(1, 2))
    boot = per_slot.mean(axis=1)
    a = (1.0 - confidence) / 2.0
    return (float(np.mean([c.mean() for c in cmp])), float(np.quantile(boot, a)),
            float(np.quantile(boot, 1.0 - a)))


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Share of the finite run scores strictly above each tau."""
    x = np.asarray(scores, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return np.full(len(np.asarray(taus)), np.nan)
    return np.array([(x > t).mean() for t in np.asarray(taus)])


def sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    r = np.asarray(returns, dtype=np.float64)
    sd = r.std(ddof=1)
    return float(r.mean() / sd * math.sqrt(periods_per_year)) if sd > 0 else 0.0


def block_bootstrap_sharpe_ci(returns: np.ndarray, periods_per_year: float,
                              block: int | None = None, reps: int = 2000,
                              confidence: float = 0.95, seed: int = 0,
                              risk_free: float = 0.0) -> tuple[float, float, float]:
    """(Sharpe, low, high) with a moving-block bootstrap of the returns.

    :param block: block length in bars; default ``round(n ** (1/3))`` (at least 1).
    :param risk_free: constant annual rate, subtracted per bar as in
        :func:`ffe_gym.metrics.compute_metrics`, so the interval stands beside that Sharpe.
    """
    r = np.asarray(returns, dtype=np.float64)
    if risk_free:
        r = r - ((1.0 + risk_free) ** (1.0 / periods_per_year) - 1.0)
    n = len(r)
    if n < 3:
        raise ValueError("need at least 3 returns for a Sharpe interval")
    b = block or max(1, round(n ** (1.0 / 3.0)))
    rng = np.random.default_rng(seed)
    n_blocks = math.ceil(n / b)
    starts_max = n - b + 1
    boot = np.empty(reps)
    offsets = np.arange(b)
    for k in range(reps):
        starts = rng.integers(0, starts_max, n_blocks)
        sample = r[(starts[:, None] + offsets).ravel()[:n]]
        boot[k] = sharpe(sample, periods_per_year)
    a = (1.0 - confidence) / 2.0
    return sharpe(r, periods_per_year), float(np.quantile(boot, a)), float(
        np.quantile(boot, 1.0 - a))


def expected_max_sharpe(n_trials: int, sharpe_variance: float) -> float:
    """SR_0: the expected maximum of ``n_trials`` per-period Sharpe ratios with true mean 0."""
    if n_trials < 2:
        return 0.0
    z1 = st.norm.ppf(1.0 - 1.0 / n_trials)
    z2 = st.norm.ppf(1.0 - 1.0 / (n_trials * math.e))
    return math.sqrt(sharpe_variance) * ((1.0 - EULER_GAMMA) * z1 + EULER_GAMMA * z2)


def deflated_sharpe_ratio(returns: np.ndarray, n_trials: int,
                          sharpe_variance: float) -> float:
    """Probability that the per-period Sharpe ratio of ``returns`` beats the best expected from
    ``n_trials`` unskilled trials whose per-period Sharpe ratios have variance
    ``sharpe_variance``; corrects for skewness, kurtosis and sample length."""
    r = np.asarray(returns, dtype=np.float64)
    n = len(r)
    sd = r.std(ddof=1)
    if n < 3 or sd == 0:
        return float("nan")
    sr = r.mean() / sd
    skew = st.skew(r)
    kurt = st.kurtosis(r, fisher=False)
    sr0 = expected_max_sharpe(n_trials, sharpe_variance)
    denom = math.sqrt(max(1e-12, 1.0 - skew * sr + (kurt - 1.0) / 4.0 * sr * sr))
    return float(st.norm.cdf((sr - sr0) * math.sqrt(n - 1) / denom))


def paired_ratio_ci(a: np.ndarray, b: np.ndarray,
                    statistic: Callable[[np.ndarray, np.ndarray], np.ndarray],
                    reps: int = 2000, confidence: float = 0.95,
                    seed: int = 0) -> tuple[float, float, float]:
    """(point, low, high) of ``statistic(a, b)`` for paired (runs, tasks) arrays: the two-stage
    bootstrap draws tasks, then runs, with the same indices on both sides (a run of ``a`` is
    paired with the run of ``b`` on the same seed and window).

    :param statistic: maps two arrays of shape (reps, m) to (reps,) values (vectorised), e.g.
        ``lambda x, y: x.mean(1) / y.mean(1)``. Tasks with a non-finite cell are left out.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    keep = np.isfinite(x).all(axis=0) & np.isfinite(y).all(axis=0)
    x, y = x[:, keep], y[:, keep]
    if x.size == 0:
        return float("nan"), float("nan"), float("nan")
    n, k = x.shape
    with np.errstate(divide="ignore", invalid="ignore"):
        point = float(statistic(x.reshape(1, -1), y.reshape(1, -1))[0])
        rng = np.random.default_rng(seed)
        tasks = rng.integers(0, k, (reps, 1, k))
        runs = rng.integers(0, n, (reps, n, k))
        boot = statistic(x[runs, tasks].reshape(reps, -1), y[runs, tasks].reshape(reps, -1))
    boot = boot[np.isfinite(boot)]
    if len(boot) == 0:
        return point, float("nan"), float("nan")
    q = (1.0 - confidence) / 2.0
    return point, float(np.quantile(boot, q)), float(np.quantile(boot, 1.0 - q))


def superiority_tests(benchmark: np.ndarray, models: dict[str, np.ndarray], *,
                      size: float = 0.05, reps: int = 1000, block_size: int | None = None,
                      seed: int = 0) -> dict:
    """Hansen's SPA test and Romano and Wolf's StepM (``arch.bootstrap``) of ``models``
    against ``benchmark``; every input is a per-bar loss series of the same length (here minus
    the log return, so a lower loss is better).

    The stationary bootstrap's mean block length is ``block_size``, or the median over models
    of Politis and White's optimal length for the loss differential (at least 1).

    :returns: ``block_size``, ``bars``, ``spa`` (p-values lower / consistent / upper of
        "no model beats the benchmark"), ``superior`` (the models StepM finds better at
        ``size``, family-wise), ``identical`` (models whose losses equal the benchmark's: not
        tested) and ``mean_gain`` (mean loss of the benchmark minus the model's, per bar).
    """
    from arch.bootstrap import SPA, StepM, optimal_block_length

    bench = np.asarray(benchmark, dtype=np.float64)
    tested = {k: np.asarray(v, dtype=np.float64) for k, v in models.items()}
    identical = [k for k, v in tested.items() if np.std(bench - v) == 0.0]
    tested = {k: v for k, v in tested.items() if k not in identical}
    out: dict = {"bars": len(bench), "identical": identical, "size": size, "reps": reps,
                 "mean_gain": {k: float(np.mean(bench - v)) for k, v in tested.items()}}
    if not tested or len(bench) < 10:
        out.update(block_size=None, spa=None, superior=[])
        return out
    frame = pd.DataFrame(tested)
    if block_size is None:
        diffs = frame.sub(bench, axis=0)
        lengths = optimal_block_length(diffs.to_numpy())["stationary"].to_numpy()
        block_size = max(1, math.ceil(float(np.median(lengths))))
    spa = SPA(bench, frame, block_size=block_size, reps=reps, bootstrap="stationary",
              seed=seed)
    spa.compute()
    stepm = StepM(bench, frame, size=size, block_size=block_size, reps=reps,
                  bootstrap="stationary", seed=seed)
    stepm.compute()
    out.update(block_size=block_size,
               spa={k: float(v) for k, v in spa.pvalues.items()},
               superior=[str(m) for m in stepm.superior_models])
    return out
