"""Market statistics computed once per market and shared by every book.

Volatility slippage, the volatility sizers and stops, correlation sizing and the VaR check read
statistics that depend on the market alone, never on a book. They used to be rescanned for
every book, every candidate, every step (cost linear in each window). Here:

- ``vol``: the rolling standard deviation of bar returns over ``sizing.volatility_window``,
  a (T, N) float64 table computed once (only when volatility slippage, an inverse-volatility
  or volatility-target sizer, or volatility stops are on). Each entry is computed with the
  same sums in the same order as the scan, so it is bitwise the scan.
- ``pairs``: the (N, N) correlations over ``portfolio.correlation_window`` at every bar, a
  (T, N, N) table from the same rolling sums as ``cov`` (0 where an asset's returns are all
  equal in the window, as the scan gives for a closed market), so correlation sizing is
  O(held) lookups a candidate instead of O(held x window). Within 1e-13 of the scan
  (tests/test_statistics.py); a factor at exactly the threshold could round the other way.
  Used when the table fits, ``T N^2 <= PAIR_BUDGET`` (4 M entries, 32 MB: N = 10 up to
  T = 40,000; the packaged daily and hourly data fit). Beyond that cutoff the pairs are
  scanned where needed (all pairs of T = 100k x N = 100 would take 8 GB; a per-bar cache would
  not help: books of a vector env start at random bars, so it is evicted before reuse).
- ``cov``: the (N, N) covariance of the VaR window at every bar, a (T, N, N) table computed
  once in O(T N^2) (sums of shifted returns updated a row at a time and recomputed exactly
  every window; error under 5e-14 of sd_i sd_j in the tests, means 100 sd included). The
  parametric VaR check is then ``z sqrt(h w' S w)``: O(held^2) once a decision plus O(held)
  a candidate, instead of O(held x window) plus O(window). Same cutoff, ``T N^2 <=
  PAIR_BUDGET``; beyond it, and for historical VaR (O(window log window) a candidate), the
  book's return series is scanned. The refusals are the scan's (compared over random steps in
  tests/test_statistics.py).
"""

from __future__ import annotations

import numpy as np

from ffe_gym.portfolio import layout as L

PAIR_BUDGET = 4 * 1024 * 1024  # float64 entries of a T x N^2 table (32 MB)


class MarketStatistics:
    """:param returns: (T, N) simple returns (row 0 zero); :param params: the kernel's
    parameter vector (``build_params``), which says which statistics are needed."""

    def __init__(self, returns: np.ndarray, params: np.ndarray) -> None:
        from ffe_gym.portfolio import kernel

        T, N = returns.shape
        p = params
        needs_vol = (p[L.P_VOL_SLIPPAGE] > 0.0 or p[L.P_SIZER] >= 2
                     or p[L.P_STOP_VOL] > 0.0)
        self.vol = (kernel.rolling_std(returns, int(p[L.P_VOL_WINDOW])) if needs_vol
                    else np.zeros((max(T, 1), N)))  # never read when not needed
        sizing_by_correlation = p[L.P_SIZER] == 0 and np.isfinite(p[L.P_CORR_THRESHOLD])
        self.cached = bool(sizing_by_correlation and T * N * N <= PAIR_BUDGET)
        self.pairs = (kernel.rolling_corr(returns, int(p[L.P_CORR_WINDOW])) if self.cached
                      else np.zeros((1, 1, 1)))  # never read when not cached
        parametric_var = np.isfinite(p[L.P_MAX_VAR]) and p[L.P_VAR_HISTORICAL] == 0.0
        self.shared_cov = bool(parametric_var and T * N * N <= PAIR_BUDGET)
        self.cov = (kernel.rolling_cov(returns, int(p[L.P_VAR_WINDOW])) if self.shared_cov
                    else np.zeros((1, 1, 1)))

    @property
    def nbytes(self) -> int:
        return int(self.vol.nbytes + self.pairs.nbytes + self.cov.nbytes)
