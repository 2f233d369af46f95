"""Honest statistics for comparing policies.

After Agarwal et al., "Deep RL at the Edge of the Statistical Precipice" (NeurIPS 2021); written
here because rliable does not import with pandas 3. Scores are arrays of shape (runs, tasks):
a task is a (dataset, fold) test window, a run is a seed.

* :func:`iqm`: interquartile mean over all runs and tasks (the mean of the middle 50%: 25% cut
  from each end, ``floor(0.25 n)`` values, as ``scipy.stats.trim_mean``).
* :func:`stratified_bootstrap_ci`: percentile interval of a statistic, resampling runs with
  replacement within each task (the tasks stay fixed).
* :func:`probability_of_improvement`: P(X > Y) averaged over tasks, each the Mann-Whitney
  statistic over all run pairs of that task (ties count one half).
* :func:`performance_profile`: the share of run scores above each threshold tau.

For one equity curve:

* :func:`block_bootstrap_sharpe_ci`: a moving-block bootstrap interval for the annualised
  Sharpe ratio (returns are autocorrelated; i.i.d. resampling would understate the spread).
* :func:`deflated_sharpe_ratio`: Bailey and Lopez de Prado (2014): the probability that the
  true Sharpe ratio exceeds the best one expected from ``n_trials`` unskilled trials, given the
  sample length, skewness and kurtosis.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
from scipy import stats as st

EULER_GAMMA = 0.5772156649015329


def iqm(scores: np.ndarray) -> float:
    """Interquartile mean of all values (25% trimmed from each end)."""
    x = np.sort(np.asarray(scores, dtype=np.float64).ravel())
    cut = int(0.25 * len(x))
    return float(x[cut: len(x) - cut].mean())


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


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(X > Y): per task, the share of run pairs (i, j) with x_i > y_j (ties 1/2), averaged
    over tasks. ``x`` and ``y`` are (runs, tasks) with the same tasks."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim == 1:
        x, y = x[:, None], y[:, None]
    per_task = []
    for t in range(x.shape[1]):
        a, b = x[:, t][:, None], y[:, t][None, :]
        per_task.append(float(np.mean((a > b) + 0.5 * (a == b))))
    return float(np.mean(per_task))


def probability_of_improvement_ci(x: np.ndarray, y: np.ndarray, reps: int = 1000,
                                  confidence: float = 0.95,
                                  seed: int = 0) -> tuple[float, float, float]:
    """P(X > Y) with a stratified bootstrap interval (runs of both resampled per task)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    rng = np.random.default_rng(seed)
    cols_x = np.arange(x.shape[1])
    boot = np.empty(reps)
    for r in range(reps):
        ix = rng.integers(0, x.shape[0], x.shape)
        iy = rng.integers(0, y.shape[0], y.shape)
        boot[r] = probability_of_improvement(x[ix, cols_x], y[iy, cols_x])
    a = (1.0 - confidence) / 2.0
    return (probability_of_improvement(x, y), float(np.quantile(boot, a)),
            float(np.quantile(boot, 1.0 - a)))


def performance_profile(scores: np.ndarray, taus: np.ndarray) -> np.ndarray:
    """Share of all run scores strictly above each tau."""
    x = np.asarray(scores, dtype=np.float64).ravel()
    return np.array([(x > t).mean() for t in np.asarray(taus)])


def sharpe(returns: np.ndarray, periods_per_year: float) -> float:
    r = np.asarray(returns, dtype=np.float64)
    sd = r.std(ddof=1)
    return float(r.mean() / sd * math.sqrt(periods_per_year)) if sd > 0 else 0.0


def block_bootstrap_sharpe_ci(returns: np.ndarray, periods_per_year: float,
                              block: int | None = None, reps: int = 2000,
                              confidence: float = 0.95,
                              seed: int = 0) -> tuple[float, float, float]:
    """(Sharpe, low, high) with a moving-block bootstrap of the returns.

    :param block: block length in bars; default ``round(n ** (1/3))`` (at least 1).
    """
    r = np.asarray(returns, dtype=np.float64)
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
