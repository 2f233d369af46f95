"""Rewards: plain callables over a batch of books, chosen in config (``env.reward``).

A reward function is called after each decision step with a :class:`StepOutcome` and returns
(B,) float64. It may have ``reset(books)`` (a boolean mask) for per-episode state. Costs are
always inside the reward: equity is after fees, slippage and borrow. The configured penalties
are applied on top: ``- drawdown_penalty * drawdown - turnover_penalty * traded / equity``.

``kind`` may also be ``"module:callable"``: the callable gets the number of books and returns the
reward function.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ffe_gym.config import ConfigError, RewardConfig


@dataclass
class StepOutcome:
    """What one decision step did to each book (arrays of shape (B,))."""

    equity_before: np.ndarray
    equity: np.ndarray
    floor: float  # equity is floored here for the reward (ruin: a clipped reward)
    traded: np.ndarray  # traded notional in the step
    drawdown: np.ndarray  # drawdown from the reference after the step


class RewardFunction(Protocol):
    def __call__(self, outcome: StepOutcome) -> np.ndarray: ...


def log_return(outcome: StepOutcome) -> np.ndarray:
    """``log(equity / equity_before)`` with equity floored at the ruin floor."""
    return np.log(np.maximum(outcome.equity, outcome.floor) / outcome.equity_before)


class DifferentialSharpe:
    """Moody and Saffell's differential Sharpe ratio of simple step returns.

    With exponential moving averages A (returns) and B (squared returns) at rate eta:
    ``D = (B dA - A dB / 2) / (B - A^2)^1.5``, 0 while the variance estimate is ~0.
    """

    def __init__(self, n_books: int, eta: float) -> None:
        self.eta = eta
        self.a = np.zeros(n_books)
        self.b = np.zeros(n_books)

    def reset(self, books: np.ndarray) -> None:
        self.a[books] = 0.0
        self.b[books] = 0.0

    def __call__(self, outcome: StepOutcome) -> np.ndarray:
        r = np.maximum(outcome.equity, outcome.floor) / outcome.equity_before - 1.0
        da = r - self.a
        db = r * r - self.b
        var = self.b - self.a**2
        with np.errstate(divide="ignore", invalid="ignore"):
            d = np.where(var > 1e-12, (self.b * da - 0.5 * self.a * db) / var**1.5, 0.0)
        self.a += self.eta * da
        self.b += self.eta * db
        return d


class Reward:
    """The configured reward with its penalties, for B books."""

    def __init__(self, cfg: RewardConfig, n_books: int) -> None:
        self.cfg = cfg
        if cfg.kind == "log_return":
            self.fn: RewardFunction = log_return
        elif cfg.kind == "differential_sharpe":
            self.fn = DifferentialSharpe(n_books, cfg.dsr_eta)
        elif ":" in cfg.kind:
            module, _, name = cfg.kind.partition(":")
            try:
                factory = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as exc:
                raise ConfigError(f"env.reward.kind: cannot load {cfg.kind!r} ({exc})") from None
            self.fn = factory(n_books)
        else:
            raise ConfigError(f"env.reward.kind: {cfg.kind!r} is not log_return, "
                              "differential_sharpe or 'module:callable'")

    def reset(self, books: np.ndarray) -> None:
        reset = getattr(self.fn, "reset", None)
        if reset is not None:
            reset(books)

    def __call__(self, outcome: StepOutcome) -> np.ndarray:
        r = np.asarray(self.fn(outcome), dtype=np.float64)
        if self.cfg.drawdown_penalty:
            r = r - self.cfg.drawdown_penalty * np.maximum(outcome.drawdown, 0.0)
        if self.cfg.turnover_penalty:
            r = r - self.cfg.turnover_penalty * outcome.traded / outcome.equity_before
        return r
