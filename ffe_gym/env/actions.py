"""Action schemes: how an action becomes per-asset intents or target weights for the engine.

* ``signals``: float32 ``Box(-1, 1, (N,))``. Sign = direction (SELL < 0 < BUY), magnitude =
  confidence; ``|a| < dead_band`` is HOLD. What the LLM ensemble emits.
* ``discrete``: ``MultiDiscrete([2k + 1] * N)`` with k = ``confidence_levels``: index i means
  level s = i - k, direction sign(s), confidence |s| / k. With k = 1: 0 SELL, 1 HOLD, 2 BUY.
* ``single``: ``Discrete(2N + 1)``, one asset at a time (for DQN and any agent that needs one
  flat discrete space): 0 holds every position, 1 + i BUYs asset i and N + 1 + i SELLs it at
  confidence 1, every other asset HOLD. The same intents as ``signals`` with one nonzero entry,
  so sizing and every rule apply as they do there.
* ``weights``: float32 ``Box(-1, 1, (N + 1,))``, the last entry is cash. Target weights
  ``w = a / sum(|a|)`` over the N + 1 entries; with shorting disabled negatives are clipped to 0
  first; all zero means all cash. No sizing; the limits still apply.

Every scheme's ``load`` checks the batch it is given and raises ``ValueError`` naming the problem
(shape, dtype, NaN, out of range) before anything changes, then writes it into the engine's
buffers; the env steps with what was loaded (:mod:`ffe_gym.env.stepping`). ``stage`` is what
the env calls: a float32 signals batch is passed to the compiled step raw, checked and decoded
inside the same call (the same checks and messages), anything else is loaded first.
"""

from __future__ import annotations

from typing import Any

import numba
import numpy as np
from gymnasium import spaces
from numba import njit

from ffe_gym.jit_cache import fresh_cache
from ffe_gym.portfolio import Portfolio
from ffe_gym.portfolio import layout as L


def _check(a: np.ndarray, shape: tuple[int, ...], what: str) -> None:
    if a.shape != shape:
        raise ValueError(f"{what} action must have shape {shape[1:]} per env "
                         f"(batch {shape}), got {a.shape}")


RAW_SIGNALS = -1  # the scheme code of raw float32 signals, checked and decoded inside the step
NO_ACTIONS = np.zeros((0, 0), dtype=np.float32)  # the step's raw actions when none are passed
_F4, _F8 = np.dtype(np.float32), np.dtype(np.float64)  # native byte order


class Signals:
    """Per-asset signed confidence in [-1, 1]; a dead band around 0 is HOLD."""

    name = "signals"

    def __init__(self, n_assets: int, dead_band: float) -> None:
        self.n_assets = n_assets
        self.dead_band = dead_band
        self.space = spaces.Box(-1.0, 1.0, (n_assets,), dtype=np.float32)
        self._into: dict[np.dtype, Any] = {}  # dtype -> the compiled mapping's entry point

    def stage(self, pf: Portfolio, actions: np.ndarray,
              shape: tuple[int, int]) -> tuple[int, np.ndarray]:
        """What the env's compiled step takes: (scheme code, raw actions). A (B, N) float32
        batch (the action space's dtype, any strides) is passed raw, to be checked and decoded
        inside the step's call before anything else (``RAW_SIGNALS``; :meth:`refuse` gives
        the error); any other batch is checked and loaded here (:meth:`load`)."""
        a = np.asarray(actions)
        if a.dtype is _F4 and a.shape == shape:
            return RAW_SIGNALS, a
        return self.load(pf, a), NO_ACTIONS

    def load(self, pf: Portfolio, actions: np.ndarray) -> int:
        """Check a (B, N) batch and write its intents into the engine's buffers; the scheme
        code the compiled step takes (:mod:`ffe_gym.env.stepping`)."""
        a = np.asarray(actions)
        if a.dtype is not _F4 and a.dtype is not _F8:
            if a.dtype.kind != "f":
                raise ValueError(f"signals action must be a float array, got dtype {a.dtype}")
            # float16, longdouble, another byte order: the compiled mapping takes native f4, f8
            a = a.astype(np.float64)
        _check(a, (pf.n_books, self.n_assets), "signals")
        dirs, confs = pf.intent_buffers()
        into = self._into.get(a.dtype) or self._bind(a, dirs, confs)
        self.refuse(into(a, self.dead_band, dirs, confs), a)
        return L.SIGNALS

    @staticmethod
    def refuse(error: int, a: np.ndarray) -> None:
        """Raise the ValueError of :func:`signals_into`'s error code (0: none)."""
        if error == 1:
            raise ValueError("signals action contains NaN")
        if error == 2:
            raise ValueError(f"signals action must lie in [-1, 1], got max |a| = "
                             f"{np.abs(a).max():.6g}")

    def _bind(self, a: np.ndarray, dirs: np.ndarray, confs: np.ndarray) -> Any:
        """The compiled mapping for a's dtype, called without numba's dispatch
        (:func:`~ffe_gym.env.stepping.entry_point`); typed for any strides, since the actions
        are the caller's arrays (the dtype is the only type that varies: 2-D is checked)."""
        from ffe_gym.env.stepping import entry_point

        self._into[a.dtype] = fn = entry_point(
            signals_into, (any_strides(a.dtype), self.dead_band, dirs, confs))
        return fn

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_into": {}}  # compiled entry points are bound again


def any_strides(dtype: np.dtype) -> Any:
    """numba's type of a read-only 2-D array of ``dtype`` with any strides."""
    return numba.types.Array(numba.from_dtype(dtype), 2, "A", readonly=True)


@njit(cache=True)
def signals_into(a, dead_band, dirs, confs):
    """Map signed confidences to intents in place; 1: NaN, 2: out of range, 0: done.

    Nothing is written unless the whole batch is valid.
    """
    B, N = a.shape
    for b in range(B):
        for i in range(N):
            x = a[b, i]
            if np.isnan(x):
                return 1
            if abs(x) > 1.0 + 1e-6:
                return 2
    for b in range(B):
        for i in range(N):
            x = float(a[b, i])
            m = min(abs(x), 1.0)
            confs[b, i] = m
            if m == 0.0 or m < dead_band:
                dirs[b, i] = 0
            else:
                dirs[b, i] = 1 if x > 0.0 else -1
    return 0


class Discrete:
    """SELL / HOLD / BUY per asset, optionally with confidence levels."""

    name = "discrete"

    def __init__(self, n_assets: int, levels: int) -> None:
        self.n_assets = n_assets
        self.levels = levels
        self.space = spaces.MultiDiscrete([2 * levels + 1] * n_assets)

    def stage(self, pf: Portfolio, actions: np.ndarray,
              shape: tuple[int, int]) -> tuple[int, np.ndarray]:
        """(scheme code, raw actions) for the env's compiled step: loaded here."""
        return self.load(pf, actions), NO_ACTIONS

    def load(self, pf: Portfolio, actions: np.ndarray) -> int:
        """Check a (B, N) batch and write its intents into the engine's buffers."""
        a = np.asarray(actions)
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"discrete action must be an integer array, got dtype {a.dtype}")
        _check(a, (pf.n_books, self.n_assets), "discrete")
        k = self.levels
        if (a < 0).any() or (a > 2 * k).any():
            raise ValueError(f"discrete action entries must be in 0..{2 * k}")
        s = a.astype(np.int64) - k
        return pf.load_signals(np.sign(s).astype(np.int8), np.abs(s) / k)


class Single:
    """One asset at a time: HOLD all, or BUY or SELL one asset (a flat ``Discrete``)."""

    name = "single"

    def __init__(self, n_assets: int) -> None:
        self.n_assets = n_assets
        self.space = spaces.Discrete(2 * n_assets + 1)

    def intents(self, actions: np.ndarray, n_books: int) -> tuple[np.ndarray, np.ndarray]:
        """(B, N) directions and confidences of a (B,) batch of choices."""
        a = np.asarray(actions)
        if not np.issubdtype(a.dtype, np.integer):
            raise ValueError(f"single action must be an integer array, got dtype {a.dtype}")
        _check(a, (n_books,), "single")
        N = self.n_assets
        if (a < 0).any() or (a > 2 * N).any():
            raise ValueError(f"single action entries must be in 0..{2 * N} (0 HOLD, 1..{N} BUY "
                             f"asset i - 1, {N + 1}..{2 * N} SELL asset i - {N + 1})")
        dirs = np.zeros((n_books, N), dtype=np.int8)
        chosen = np.flatnonzero(a > 0)
        choice = a[chosen].astype(np.int64) - 1
        dirs[chosen, choice % N] = np.where(choice < N, 1, -1)
        return dirs, np.abs(dirs).astype(np.float64)

    def stage(self, pf: Portfolio, actions: np.ndarray,
              shape: tuple[int, ...]) -> tuple[int, np.ndarray]:
        """(scheme code, raw actions) for the env's compiled step: loaded here."""
        return self.load(pf, actions), NO_ACTIONS

    def load(self, pf: Portfolio, actions: np.ndarray) -> int:
        """Check a (B,) batch and write its intents into the engine's buffers."""
        return pf.load_signals(*self.intents(actions, pf.n_books))


class Weights:
    """Target weights over N assets plus cash."""

    name = "weights"

    def __init__(self, n_assets: int, allow_short: bool) -> None:
        self.n_assets = n_assets
        self.long_only = not allow_short
        self.space = spaces.Box(-1.0, 1.0, (n_assets + 1,), dtype=np.float32)

    def target(self, actions: np.ndarray, n_books: int) -> np.ndarray:
        """(B, N) target weights of a batch of actions."""
        a = np.asarray(actions)
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"weights action must be a float array, got dtype {a.dtype}")
        _check(a, (n_books, self.n_assets + 1), "weights")
        if np.isnan(a).any():
            raise ValueError("weights action contains NaN")
        if np.abs(a).max(initial=0.0) > 1.0 + 1e-6:
            raise ValueError("weights action must lie in [-1, 1]")
        w = a.astype(np.float64)
        if self.long_only:
            w = np.maximum(w, 0.0)
        total = np.abs(w).sum(axis=1, keepdims=True)
        w = np.divide(w, total, out=np.zeros_like(w), where=total > 0)
        return w[:, : self.n_assets]

    def stage(self, pf: Portfolio, actions: np.ndarray,
              shape: tuple[int, int]) -> tuple[int, np.ndarray]:
        """(scheme code, raw actions) for the env's compiled step: loaded here."""
        return self.load(pf, actions), NO_ACTIONS

    def load(self, pf: Portfolio, actions: np.ndarray) -> int:
        """Check a (B, N + 1) batch and write its target weights into the engine's buffer."""
        return pf.load_weights(self.target(actions, pf.n_books))


def make_scheme(name: str, n_assets: int, *, dead_band: float, levels: int,
                allow_short: bool) -> Signals | Discrete | Single | Weights:
    if name == "signals":
        return Signals(n_assets, dead_band)
    if name == "discrete":
        return Discrete(n_assets, levels)
    if name == "single":
        return Single(n_assets)
    if name == "weights":
        return Weights(n_assets, allow_short)
    raise ValueError(f"unknown action scheme {name!r}")


fresh_cache(globals())  # the compiled code on disk must come from these sources (jit_cache)
