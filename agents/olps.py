"""Online portfolio selection (OLPS) baselines, as policies in the loop.

Each one is a long-only portfolio b on the simplex, chosen at every decision from the price
relatives x = close[now] / close[previous decision] of the period just ended (read from the
env's causal :class:`~ffe_gym.env.market_view.MarketView`: only bars <= the decision bar),
and acts through the ``weights`` scheme (no cash). The first decision holds 1/N. Costs, limits
and stops apply as to every policy; without them, wealth is the product of ``b_t . x_{t+1}``
(tests/test_olps.py checks it against direct numpy implementations).

* :class:`EG`: exponentiated gradient (Helmbold, Schapire, Singer and Warmuth 1998),
  ``b_i <- b_i exp(eta x_i / b.x)`` normalised; ``eta = 0.05``. ``eta = 0`` is the uniform
  constant-rebalanced portfolio (UCRP).
* :class:`OLMAR`: online moving-average reversion (Li and Hoi 2012), OLMAR-1: the predicted
  relative is the ``window``-decision moving average of closes over the current close; the
  passive-aggressive step ``lambda = max(0, (eps - b.x~) / |x~ - mean(x~)|^2)`` towards it, then
  the projection onto the simplex; ``eps = 10``, ``window = 5``.
* :class:`BCRP`: the best constant-rebalanced portfolio of the episode, in HINDSIGHT: at the
  first decision it reads the whole episode's closes (``MarketView.hindsight_close``), finds
  ``argmax_b sum_t log(b . x_t)`` over decision periods (Cover 1991; an active-set Newton
  method on the simplex, :func:`maximize_on_simplex`), and rebalances to it. A labelled upper
  bound: an experiment entry must say ``hindsight: true`` (the comparison refuses it
  otherwise) and it is never a contender or in the SPA test.
* :class:`UP`: Cover's (1991) universal portfolio, approximated by 1,000 CRPs sampled
  uniformly on the simplex (seeded), weighted by their wealth.
* :class:`ONS`: online Newton step (Agarwal, Hazan, Kale and Schapire 2006), delta 1/8,
  beta 1, eta 0; the projection in A's norm by :func:`maximize_on_simplex`.
* :class:`CORN`: correlation-driven nonparametric learning (Li, Hoi and Gopalkrishnan 2011),
  CORN-U, window 5, rho 0.1; the log-optimal portfolio of the matched periods' relatives.
* :class:`Anticor`: Borodin, El-Yaniv and Gogan (2004), window 30.
* :class:`CWMR`: confidence-weighted mean reversion, CWMR-Var (Li et al. 2013), confidence
  0.95, eps -0.5 on log M.
* :class:`PAMR`: passive-aggressive mean reversion (Li, Zhao, Hoi and Gopalkrishnan 2012),
  PAMR: ``loss = max(0, b.x - eps)``, ``tau = loss / |x - mean(x)|^2``, ``b <- proj(b - tau (x -
  mean(x)))``; ``eps = 0.5``.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from ffe_agents.baselines import _Baseline
from ffe_gym.data import symbol_ranks


def project_simplex(v: np.ndarray) -> np.ndarray:
    """The Euclidean projection of ``v`` onto the probability simplex (Duchi, Shalev-Shwartz,
    Singer and Chandra 2008)."""
    u = np.sort(v)[::-1]
    css = np.cumsum(u) - 1.0
    k = np.arange(1, len(v) + 1)
    rho = int(np.nonzero(u - css / k > 0)[0][-1])
    return np.maximum(v - css[rho] / (rho + 1), 0.0)


class _OnlinePortfolio(_Baseline):
    """The shared loop: remember the decision bar and b, update from the period's relatives."""

    name = "olps"

    def __init__(self) -> None:
        self._view: Any = None
        self._b: np.ndarray | None = None
        self._bar = -1

    def bind_market(self, view: Any) -> None:
        self._view = view

    def reset(self, seed: int | None = None) -> None:
        self._b = None
        self._bar = -1

    def start(self, close: np.ndarray) -> None:
        """The first decision's hook (prices at that bar)."""

    def update(self, b: np.ndarray, x: np.ndarray, close: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        if self._view is None:
            raise RuntimeError(f"{type(self).__name__}.act before bind_market(view); use "
                               "ffe_gym.evaluation.rollout")
        view = self._view
        bar = view.bar
        close = view.close(1)[0]
        if self._b is None:
            n = len(close)
            b = np.full(n, 1.0 / n)
            self.start(close)
        else:
            b = self.update(self._b, view.relatives(self._bar), close)
        self._b, self._bar = b, bar
        return np.append(b, 0.0)


class EG(_OnlinePortfolio):
    """Exponentiated gradient. :param eta: learning rate (0: UCRP)."""

    name = "eg"

    def __init__(self, eta: float = 0.05) -> None:
        super().__init__()
        self.eta = float(eta)

    def update(self, b: np.ndarray, x: np.ndarray, close: np.ndarray) -> np.ndarray:
        w = b * np.exp(self.eta * x / float(b @ x))
        return w / w.sum()


class OLMAR(_OnlinePortfolio):
    """Online moving-average reversion (OLMAR-1). :param eps: reversion threshold;
    :param window: decisions in the moving average of closes."""

    name = "olmar"

    def __init__(self, eps: float = 10.0, window: int = 5) -> None:
        super().__init__()
        self.eps = float(eps)
        self.window = int(window)
        self._closes: deque[np.ndarray] = deque(maxlen=self.window)

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._closes = deque(maxlen=self.window)

    def start(self, close: np.ndarray) -> None:
        self._closes.append(close.copy())

    def update(self, b: np.ndarray, x: np.ndarray, close: np.ndarray) -> np.ndarray:
        self._closes.append(close.copy())
        predicted = np.mean(self._closes, axis=0) / close
        dev = predicted - predicted.mean()
        norm = float(dev @ dev)
        lam = 0.0 if norm == 0.0 else max(0.0, (self.eps - float(b @ predicted)) / norm)
        return project_simplex(b + lam * dev)


class PAMR(_OnlinePortfolio):
    """Passive-aggressive mean reversion (PAMR). :param eps: sensitivity."""

    name = "pamr"

    def __init__(self, eps: float = 0.5) -> None:
        super().__init__()
        self.eps = float(eps)

    def update(self, b: np.ndarray, x: np.ndarray, close: np.ndarray) -> np.ndarray:
        dev = x - x.mean()
        norm = float(dev @ dev)
        loss = max(0.0, float(b @ x) - self.eps)
        tau = 0.0 if norm == 0.0 else loss / norm
        return project_simplex(b - tau * dev)


def maximize_on_simplex(fg: Any, hess: Any, b0: np.ndarray, tol: float = 1e-10,
                        max_iter: int = 1000) -> np.ndarray:
    """Maximise a smooth concave function on the probability simplex by an active-set Newton
    method, from ``b0`` (its support is the first face).

    ``fg(b) -> (value, gradient, aux)`` and ``hess(S, aux) -> H[S, S]`` (the Hessian on the
    support S only: the work grows with the support, not with N). Each iteration takes the
    Newton step on the face ``{sum b = 1, b_i = 0 off S}`` (a KKT system), backtracks until
    the value rises (Armijo), and a step that would make a weight negative stops at 0 and
    drops that asset from the face. When the face's step vanishes (below ``tol``, or a step
    that no longer moves the weights: rounding), the asset off the face whose gradient
    exceeds the face's multiplier most enters; none left is the KKT point. Weights off the
    support are exactly 0: no solver residue."""
    b = np.array(b0, dtype=np.float64)
    b /= b.sum()
    support = b > 0
    f, g, aux = fg(b)
    stalled = False
    for _ in range(max_iter):
        S = np.flatnonzero(support)
        k = len(S)
        K = np.zeros((k + 1, k + 1))
        K[:k, :k] = hess(S, aux)
        K[:k, k] = -1.0
        K[k, :k] = 1.0
        rhs = np.append(-g[S], 0.0)
        try:
            sol = np.linalg.solve(K, rhs)
        except np.linalg.LinAlgError:  # collinear assets on the face: any solution serves
            sol = np.linalg.lstsq(K, rhs, rcond=None)[0]
        d = np.zeros_like(b)
        d[S] = sol[:k]
        mu = sol[k]
        if stalled or np.max(np.abs(d)) <= tol:
            stalled = False
            off = np.flatnonzero(~support)
            if len(off):
                j = off[np.argmax(g[off])]
                if g[j] > mu + tol * (1.0 + abs(mu)):
                    support[j] = True
                    continue
            return b
        neg = d < 0
        alpha_max = float(np.min(-b[neg] / d[neg])) if neg.any() else np.inf
        alpha = min(1.0, alpha_max)
        slope = float(g @ d)
        while True:
            trial = np.maximum(b + alpha * d, 0.0)
            if alpha >= alpha_max:  # the blocking weight is exactly 0
                trial[np.flatnonzero(neg)[np.argmin(-b[neg] / d[neg])]] = 0.0
            ft, gt, at = fg(trial / trial.sum())
            if ft >= f + 1e-4 * alpha * slope or alpha < 1e-14:
                break
            alpha *= 0.5
        stalled = bool(np.array_equal(trial / trial.sum(), b))
        b = trial / trial.sum()
        support &= b > 0
        f, g, aux = ft, gt, at
    raise RuntimeError(f"the simplex Newton method did not converge in {max_iter} steps")


def best_crp(relatives: np.ndarray, start: np.ndarray | None = None) -> np.ndarray:
    """The log-optimal constant-rebalanced portfolio of (T, N) price relatives:
    ``argmax_b sum_t log(b . x_t)`` on the simplex (concave), by
    :func:`maximize_on_simplex` from ``start`` (default 1/N). At the optimum the gradient is
    T on the support and at most T off it (checked in the tests)."""
    x = np.asarray(relatives, dtype=np.float64)
    n = x.shape[1]
    b0 = np.full(n, 1.0 / n) if start is None else np.asarray(start, dtype=np.float64)
    if len(x) == 0:
        return np.full(n, 1.0 / n)

    def fg(b: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
        r = x @ b
        w = x / r[:, None]
        return float(np.sum(np.log(r))), w.sum(axis=0), w

    def hess(S: np.ndarray, w: np.ndarray) -> np.ndarray:
        ws = w[:, S]
        return -(ws.T @ ws)

    # a warm start on a support that cannot be optimal still converges (assets enter)
    return maximize_on_simplex(fg, hess, np.where(b0 > 0, b0, 0.0) if b0.sum() > 0
                               else np.full(n, 1.0 / n))


class BCRP(_OnlinePortfolio):
    """Best constant-rebalanced portfolio in hindsight (module doc): a bound, not a policy.

    :param decide_every: bars between decisions, as the env decides (the relatives it
        optimises are over the same periods); 1 by default."""

    name = "bcrp"

    def __init__(self, decide_every: int = 1) -> None:
        super().__init__()
        self.decide_every = int(decide_every)

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        if self._view is None:
            raise RuntimeError("BCRP.act before bind_market(view); use "
                               "ffe_gym.evaluation.rollout")
        if self._b is None:
            future = self._view.hindsight_close()[:: self.decide_every]
            self._b = best_crp(future[1:] / future[:-1])
        return np.append(self._b, 0.0)


class UP(_OnlinePortfolio):
    """Cover's (1991) universal portfolio, approximated by sampling: ``samples`` constant-
    rebalanced portfolios drawn uniformly on the simplex (Dirichlet(1, ..., 1), seeded), each
    weighted by the wealth it would have made; b is their wealth-weighted mean.

    :param samples: CRPs in the mixture; :param seed: their draw."""

    name = "up"

    def __init__(self, samples: int = 1000, seed: int = 0) -> None:
        super().__init__()
        self.samples = int(samples)
        self.seed = int(seed)
        self._crps: np.ndarray | None = None
        self._log_wealth: np.ndarray | None = None

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._crps = None
        self._log_wealth = None

    def start(self, close: np.ndarray) -> None:
        rng = np.random.default_rng(self.seed)
        # drawn per symbol (sorted) once bound to a market, so permuting the assets permutes
        # the portfolios; unbound (called directly), in column order
        draws = rng.dirichlet(np.ones(len(close)), self.samples)
        self._crps = draws if self._view is None else draws[:, symbol_ranks(self._view.symbols)]
        self._log_wealth = np.zeros(self.samples)

    def update(self, b: np.ndarray, x: np.ndarray, close: np.ndarray) -> np.ndarray:
        self._log_wealth += np.log(self._crps @ x)
        w = np.exp(self._log_wealth - self._log_wealth.max())
        return (w @ self._crps) / w.sum()


class ONS(_OnlinePortfolio):
    """Online Newton step (Agarwal, Hazan, Kale and Schapire 2006), with its published
    parameters ``delta = 1/8``, ``beta = 1``, ``eta = 0``: ``A += g g'``, ``c += (1 + 1/beta) g``
    with ``g = x / b.x``, then b is the projection of ``delta A^-1 c`` onto the simplex in the
    norm of A, mixed with 1/N by ``eta``. A starts as the identity, as in Li and Hoi's OLPS
    toolbox and universal-portfolios' ``ONS`` (which projects with cvxopt's QP solver; here
    :func:`project_simplex_in`, the same optimum)."""

    name = "ons"

    def __init__(self, delta: float = 0.125, beta: float = 1.0, eta: float = 0.0) -> None:
        super().__init__()
        self.delta, self.beta, self.eta = float(delta), float(beta), float(eta)
        self._A: np.ndarray | None = None
        self._c: np.ndarray | None = None

    def start(self, close: np.ndarray) -> None:
        n = len(close)
        self._A = np.eye(n)
        self._c = np.zeros(n)

    def update(self, b: np.ndarray, x: np.ndarray, close: np.ndarray) -> np.ndarray:
        g = x / float(b @ x)
        self._A += np.outer(g, g)
        self._c += (1.0 + 1.0 / self.beta) * g
        q = self.delta * np.linalg.solve(self._A, self._c)
        p = project_simplex_in(q, self._A)
        return (1.0 - self.eta) * p + self.eta / len(p)


def project_simplex_in(q: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``argmin_{p in simplex} (p - q)' A (p - q)`` (A positive definite), by
    :func:`maximize_on_simplex` from the Euclidean projection (exact on each face: the
    objective is quadratic)."""

    def fg(p: np.ndarray) -> tuple[float, np.ndarray, None]:
        Ad = A @ (p - q)
        return -float((p - q) @ Ad), -2.0 * Ad, None

    def hess(S: np.ndarray, _: None) -> np.ndarray:
        return -2.0 * A[np.ix_(S, S)]

    return maximize_on_simplex(fg, hess, project_simplex(q))


class CORN(_OnlinePortfolio):
    """Correlation-driven nonparametric learning (Li, Hoi and Gopalkrishnan 2011), CORN-U with
    its published ``window = 5`` and ``rho = 0.1``: among past decision periods whose preceding
    ``window`` relatives correlate with the latest ``window`` above ``rho``, the log-optimal
    portfolio of the relatives that followed them (``best_crp``); 1/N when none matches."""

    name = "corn"

    def __init__(self, window: int = 5, rho: float = 0.1) -> None:
        super().__init__()
        self.window = int(window)
        self.rho = float(rho)
        self._x: list[np.ndarray] = []
        self._last: np.ndarray | None = None  # the previous solution: the next one's start

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._x = []
        self._last = None

    def update(self, b: np.ndarray, x: np.ndarray, close: np.ndarray) -> np.ndarray:
        self._x.append(x.copy())
        X = np.array(self._x)
        T, n = X.shape
        w = self.window
        if T <= w:
            return np.full(n, 1.0 / n)
        # every past window X[s:s+w] (followed by X[s+w]) against the latest, vectorised
        past = np.lib.stride_tricks.sliding_window_view(X[:T - 1], (w, n))[:, 0]
        past = past.reshape(T - w, w * n)
        latest = X[T - w:].ravel()
        pc = past - past.mean(axis=1, keepdims=True)
        lc = latest - latest.mean()
        norms = np.sqrt((pc * pc).sum(axis=1)) * np.sqrt(lc @ lc)
        with np.errstate(invalid="ignore", divide="ignore"):
            corr = np.where(norms > 0, (pc @ lc) / norms, -np.inf)
        matched = X[w:][corr >= self.rho]
        if not len(matched):
            self._last = None
            return np.full(n, 1.0 / n)
        self._last = best_crp(matched, start=self._last)
        return self._last


class Anticor(_OnlinePortfolio):
    """Anticor (Borodin, El-Yaniv and Gogan 2004), ``window = 30``: compare the log relatives
    of the last two windows; money moves from asset i to asset j when i did better in the
    latest window and i's earlier window correlates positively with j's latest one
    (``claim_ij = M_ij + max(-M_ii, 0) + max(-M_jj, 0)``), out of the drifted portfolio.
    Holds its portfolio until 2 x window decisions have been seen."""

    name = "anticor"

    def __init__(self, window: int = 30) -> None:
        super().__init__()
        self.window = int(window)
        self._x: list[np.ndarray] = []

    def reset(self, seed: int | None = None) -> None:
        super().reset(seed)
        self._x = []

    def update(self, b: np.ndarray, x: np.ndarray, close: np.ndarray) -> np.ndarray:
        self._x.append(x.copy())
        drifted = b * x / float(b @ x)
        w = self.window
        if len(self._x) < 2 * w:
            return drifted
        lx = np.log(np.array(self._x[-2 * w:]))
        lx1, lx2 = lx[:w], lx[w:]
        mu1, mu2 = lx1.mean(axis=0), lx2.mean(axis=0)
        sd1, sd2 = lx1.std(axis=0, ddof=1), lx2.std(axis=0, ddof=1)
        cov = (lx1 - mu1).T @ (lx2 - mu2) / (w - 1)
        den = np.outer(sd1, sd2)
        m = np.divide(cov, den, out=np.zeros_like(cov), where=den > 0)
        n = len(b)
        claim = np.zeros((n, n))
        for i in range(n):
            for j in range(n):
                if i != j and mu2[i] >= mu2[j] and m[i, j] > 0:
                    claim[i, j] = m[i, j] + max(-m[i, i], 0.0) + max(-m[j, j], 0.0)
        total = claim.sum(axis=1, keepdims=True)
        transfer = np.divide(drifted[:, None] * claim, total, out=np.zeros_like(claim),
                             where=total > 0)
        out = drifted + transfer.sum(axis=0) - transfer.sum(axis=1)
        out = np.clip(out, 0.0, None)
        return out / out.sum()


class CWMR(_OnlinePortfolio):
    """Confidence-weighted mean reversion, CWMR-Var (Li, Hoi, Zhao and Gopalkrishnan 2013).

    The portfolio is the mean mu of a Gaussian N(mu, S) over portfolios. After relatives x,
    with M = mu.x, V = x'Sx and x_bar the S-diagonal-weighted mean of x, the step lambda >= 0
    is the larger root of ``a l^2 + b l + c = 0``, where f = (V - x_bar x'S1) / M^2,
    a = 2 theta V f, b = f + 2 theta V (eps - log M), c = eps - log M - theta V; then
    ``mu <- proj(mu - lambda S (x - x_bar) / M)`` and ``S^-1 <- S^-1 + 2 lambda theta diag(x)^2``,
    S rescaled to trace 1/N^2. theta = Phi^-1(confidence). Defaults: confidence 0.95 and
    eps = -0.5 on log M (the paper's recommended values); S starts at I / N^2. These are the
    update and defaults of the universal-portfolios package's ``CWMR_VAR`` class (its
    ``CWMR`` class is the other variant, CWMR-Stdev); where the quadratic has no real root
    lambda is 0 here, where that class takes the square root of a negative number.
    """

    name = "cwmr"

    def __init__(self, eps: float = -0.5, confidence: float = 0.95) -> None:
        super().__init__()
        if not 0.0 < confidence < 1.0:
            raise ValueError("confidence must lie in (0, 1)")
        from statistics import NormalDist

        self.eps = float(eps)
        self.theta = NormalDist().inv_cdf(confidence)
        self._S: np.ndarray | None = None

    def start(self, close: np.ndarray) -> None:
        n = len(close)
        self._S = np.eye(n) / n**2

    def update(self, b: np.ndarray, x: np.ndarray, close: np.ndarray) -> np.ndarray:
        S, th, n = self._S, self.theta, len(b)
        M = float(b @ x)
        V = float(x @ S @ x)
        x_bar = float(np.diag(S) @ x / np.trace(S))
        f = (V - x_bar * float(x @ S.sum(axis=1))) / M**2
        gap = self.eps - np.log(M)
        a, bq, c = 2.0 * th * V * f, f + 2.0 * th * V * gap, gap - th * V
        lam = 0.0
        if a != 0.0:
            disc = bq * bq - 4.0 * a * c
            if disc >= 0.0:
                lam = max(0.0, (-bq + np.sqrt(disc)) / (2.0 * a),
                          (-bq - np.sqrt(disc)) / (2.0 * a))
        lam = min(lam, 1e7)  # numerically bounded
        mu = b - lam * S @ (x - x_bar) / M
        S = np.linalg.inv(np.linalg.inv(S) + 2.0 * lam * th * np.diag(x * x))
        self._S = S / (n**2 * np.trace(S))
        return project_simplex(mu)
