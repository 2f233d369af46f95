"""Does a policy use its data, and only the data it may? Three checks on any policy.

* **Placebo**: the policy runs each window twice, once on its real observations and once with
  each observation's market part (the feature window) replaced by that of another decision of the
  same window, drawn at random (the positions and account stay the book's own). Reported: the
  share of decisions that differ between the two runs, and the paired difference of the window's
  log return (real - placebo) with a bootstrap interval over windows. Flags: "ignores its input"
  when fewer than 5% of decisions change; "no evidence that it uses its input" when the interval
  of the difference contains 0.
* **Permutation**: the same window with the assets' columns in another order; the actions, put
  back in the original order, and the log return should not change (the engine's results never
  depend on the order; a policy that reads columns by position may).
* **Causality**: every price and volume after a bar t perturbed; the policy's actions up to and
  including its decision at t must not change (its fills after t may). A policy that reads the
  future fails here.

``ffe-gym audit POLICY`` (:mod:`ffe_gym.commands.audit`) runs all three on data the user names.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ffe_gym.config import Config, coerce_config
from ffe_gym.data import MarketData
from ffe_gym.evaluation.policy import Policy, hook
from ffe_gym.evaluation.rollout import env_for, rollout
from ffe_gym.features import perturbed_after
from ffe_gym.portfolio import layout as L

IGNORES = 0.05  # below this share of changed decisions, a policy "ignores its input"


def _log_return(result: Any) -> float:
    eq = result.equity.to_numpy()
    return float(np.log(eq[-1] / eq[0]))


DECISION_TOL = 1e-5  # actions closer than this are the same decision: a float32 network fed
# the same inputs in another order differs by about 1e-7 (sums in another order), no more


def _changed(a: Sequence[np.ndarray], b: Sequence[np.ndarray],
             tol: float = DECISION_TOL) -> list[bool]:
    """Per common decision: do the two actions differ by more than ``tol``?"""
    return [bool(np.max(np.abs(np.asarray(x, float) - np.asarray(y, float)), initial=0.0) > tol)
            for x, y in zip(a, b, strict=False)]


def _interval(d: np.ndarray, reps: int = 2000, seed: int = 0) -> tuple[float, float, float] | None:
    """Mean and 95% percentile bootstrap interval over windows; None with fewer than 2."""
    if len(d) < 2:
        return None
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), (reps, len(d)))].mean(axis=1)
    return float(d.mean()), float(np.quantile(means, 0.025)), float(np.quantile(means, 0.975))


@dataclass
class AuditResult:
    """What :func:`audit` found; ``flags`` are the lines a table shows."""

    policy: str
    windows: int
    decisions: int
    placebo_changed: float  # share of decisions that differ under the placebo
    placebo_difference: tuple[float, float, float] | None  # real - placebo log return, interval
    permutation_changed: float  # share of decisions that differ with the columns permuted
    permutation_difference: float  # mean |log return real - permuted|
    causal: bool
    causality_detail: str = ""
    flags: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        pd_ = self.placebo_difference
        diff = ("n/a (one window: no interval)" if pd_ is None else
                f"{pd_[0]:+.4f} [{pd_[1]:+.4f}, {pd_[2]:+.4f}]")
        return [
            f"{self.policy}: {self.windows} windows, {self.decisions} decisions",
            f"placebo (another bar's features, same book): {self.placebo_changed:.1%} of "
            f"decisions change; log return real - placebo {diff} (95% bootstrap over windows)",
            f"permuted assets: {self.permutation_changed:.1%} of decisions change (in the "
            f"original order); mean |log return difference| {self.permutation_difference:.2e}",
            f"causality (prices after a bar t perturbed): "
            f"{'actions up to t unchanged' if self.causal else 'FAILED: ' + self.causality_detail}",
            *[f"flag: {f}" for f in self.flags]]


def placebo_observer(markets: list[Any], rng: np.random.Generator, width: int
                     ) -> Callable[[int, Any], Any]:
    """``rollout``'s ``observe``: decision k sees the market part of another decision's
    observation (``markets``: the real run's, in order), its own positions and account."""
    def observe(k: int, obs: Any) -> Any:
        n = len(markets)
        j = int(rng.integers(0, n - 1)) if n > 1 else 0
        j = j + 1 if n > 1 and j >= k else j  # never itself
        if isinstance(obs, dict):
            return {**obs, "market": markets[j]}
        out = np.array(obs, copy=True)
        out[:width] = markets[j]
        return out
    return observe


def market_part(layout: Any) -> tuple[list[Any], Callable[[int, Any], Any], int]:
    """(markets, observe, width): ``rollout``'s ``observe`` hook that keeps a copy of each
    decision's market part in ``markets`` (the placebo's pool) and passes the observation on."""
    width = layout.window * layout.n_assets * len(layout.features)
    markets: list[Any] = []

    def keep(k: int, obs: Any) -> Any:
        part = obs["market"] if isinstance(obs, dict) else np.asarray(obs)[:width]
        markets.append(np.array(part, copy=True))
        return obs
    return markets, keep, width


def reads_market_view(policy: Any) -> bool:
    """A policy that reads prices through ``bind_market`` (MarketView), not its observation:
    the placebo, which replaces observations, does not reach it."""
    return hook(policy, "bind_market") is not None


@dataclass
class Diagnostic:
    """One window's placebo and permutation runs beside the real run (the comparison grid's
    per-job record; :func:`diagnose`)."""

    decisions: int
    placebo_changed: int | None  # decisions that differ (None: reads MarketView)
    placebo_metrics: dict[str, Any] | None
    permuted_changed: int | None  # None: not run
    permuted_metrics: dict[str, Any] | None
    # why a run's replies depended on the machine's load (an LLM member timed out there)
    unreproducible: list[str] = field(default_factory=list)
    note: str = ""


def diagnose(policy: Policy, config: Config, data: MarketData, window: tuple[int, int],
             real: Any, markets: list[Any], width: int, seed: int = 0,
             permutation: bool = True, risk_free: float = 0.0) -> Diagnostic:
    """The placebo (and, with ``permutation``, the permuted-assets) run of ``policy`` on
    ``window``, beside its real run ``real`` whose decisions' market parts are ``markets``
    (:func:`market_part`). The policy object is reused: ``rollout`` resets it."""
    n = len(real.actions)
    if reads_market_view(policy):
        return Diagnostic(n, None, None, None, None,
                          note="reads prices through MarketView: the placebo does not apply")
    rng = np.random.default_rng([seed, window[0]])
    placebo = rollout(policy, env_for(policy, config, data), window=window, seed=seed,
                      observe=placebo_observer(markets, rng, width), risk_free=risk_free)
    out = Diagnostic(n, sum(_changed(real.actions, placebo.actions)), placebo.metrics,
                     None, None, unreproducible=_unreproducible(placebo, "placebo run"))
    if permutation and data.n_assets > 1:
        perm = np.roll(np.arange(data.n_assets), 1)
        permuted = data.select([data.symbols[i] for i in perm])
        other = rollout(policy, env_for(policy, config, permuted), window=window, seed=seed,
                        risk_free=risk_free)
        back = [_unpermute(a, perm, data.n_assets) for a in other.actions]
        out.permuted_changed = sum(_changed(real.actions, back))
        out.permuted_metrics = other.metrics
        out.unreproducible += _unreproducible(other, "permuted run")
    return out


def _unreproducible(result: Any, what: str) -> list[str]:
    stats = result.policy_stats or {}
    if stats.get("reproducible", True) is not False:
        return []
    return [f"{what}: {w}" for w in stats.get("unreproducible", [])] or [f"{what}: yes"]


def audit(make_policy: Callable[[], Policy], config: Config | Any, data: MarketData,
          windows: Sequence[tuple[int, int]], seed: int = 0) -> AuditResult:
    """Run the three checks of the module doc on ``windows`` (bar ranges, inclusive).

    :param make_policy: a fresh policy per run (the checks must not share its state).
    :param config: the env config (costs, limits) every run uses.
    :param data: the market.
    """
    cfg = coerce_config(config)
    real_r, placebo_r, perm_d = [], [], []
    changed_p: list[bool] = []
    changed_q: list[bool] = []
    name = ""
    rng = np.random.default_rng(seed)
    perm = np.random.default_rng(seed + 1).permutation(data.n_assets)
    if data.n_assets > 1 and (perm == np.arange(data.n_assets)).all():
        perm = np.roll(perm, 1)
    permuted = data.select([data.symbols[i] for i in perm])
    for start, end in windows:
        policy = make_policy()
        name = policy.name
        env = env_for(policy, cfg, data)
        markets, keep, width = market_part(env.unwrapped.layout)
        real = rollout(policy, env, window=(start, end), seed=seed, observe=keep)
        policy = make_policy()
        placebo = rollout(policy, env_for(policy, cfg, data), window=(start, end), seed=seed,
                          observe=placebo_observer(markets, rng, width))
        real_r.append(_log_return(real))
        placebo_r.append(_log_return(placebo))
        changed_p += _changed(real.actions, placebo.actions)
        policy = make_policy()
        other = rollout(policy, env_for(policy, cfg, permuted), window=(start, end), seed=seed)
        back = [_unpermute(a, perm, data.n_assets) for a in other.actions]
        changed_q += _changed(real.actions, back)
        perm_d.append(abs(_log_return(real) - _log_return(other)))
    causal, detail = causality(make_policy, cfg, data, windows[0], seed)
    diff = np.array(real_r) - np.array(placebo_r)
    result = AuditResult(
        policy=name, windows=len(windows), decisions=len(changed_p),
        placebo_changed=float(np.mean(changed_p)) if changed_p else 0.0,
        placebo_difference=_interval(diff, seed=seed),
        permutation_changed=float(np.mean(changed_q)) if changed_q else 0.0,
        permutation_difference=float(np.mean(perm_d)) if perm_d else 0.0,
        causal=causal, causality_detail=detail)
    if result.placebo_changed < IGNORES:
        result.flags.append(f"ignores its input: {result.placebo_changed:.1%} of decisions "
                            f"change under the placebo (< {IGNORES:.0%})")
    ci = result.placebo_difference
    if ci is not None and ci[1] <= 0.0 <= ci[2]:
        result.flags.append("no evidence that it uses its input: the interval of real - placebo "
                            "contains 0")
    if result.permutation_changed > 0:
        result.flags.append(f"depends on the order of the assets: "
                            f"{result.permutation_changed:.1%} of decisions change")
    if not causal:
        result.flags.append("reads the future: " + detail)
    return result


def _unpermute(action: np.ndarray, perm: np.ndarray, n: int) -> np.ndarray:
    """An action on the permuted columns (column i is asset perm[i]) in the original order;
    a trailing cash entry (weights) stays last."""
    a = np.asarray(action)
    out = a.copy()
    out[perm] = a[:n]
    return out


def causality(make_policy: Callable[[], Policy], config: Config, data: MarketData,
              window: tuple[int, int], seed: int = 0) -> tuple[bool, str]:
    """Perturb every price and volume after the middle decision bar of ``window``; the
    policy's actions up to that decision must be the same. (True, "") or (False, what
    changed)."""
    start, end = window
    policy = make_policy()
    env = env_for(policy, config, data)
    bars: list[int] = []

    def note(k: int, obs: Any) -> Any:
        bars.append(int(env.unwrapped.portfolio.clock[0, L.BAR]))
        return obs

    base = rollout(policy, env, window=(start, end), seed=seed, observe=note)
    if len(bars) < 2:
        return True, ""
    k = len(bars) // 2
    t = bars[k]
    policy = make_policy()
    moved = perturbed_after(data, t, np.random.default_rng(seed + 7))
    other = rollout(policy, env_for(policy, config, moved), window=(start, end), seed=seed)
    diff = _changed(base.actions[:k + 1], other.actions[:k + 1])
    if any(diff):
        first = diff.index(True)
        return False, (f"decision {first} (bar {bars[first]}) changed when only prices after "
                       f"bar {t} did")
    return True, ""
