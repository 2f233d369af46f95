"""Observations: named 1-D float32 arrays with finite bounds.

``market``     W * N * F features of the last W bars (oldest first), order (bar, asset, feature):
               ``view(obs)`` reshapes it to (W, N, F).
``positions``  N * P, order (asset, field), fields ``POSITION_FIELDS``:
               weight (position value / equity, signed), unrealized_return (signed return since
               entry), stop_distance and target_distance (signed share of price left before the
               level is hit; 0 when flat or no level).
``account``    ``ACCOUNT_FIELDS``: equity / initial - 1, cash / equity, gross and net exposure /
               equity, drawdown from the reference (>= 0 when below it), cooldown bars left /
               cooldown_bars.

Every value is clipped to ``+-clip``. The ``flat`` variant concatenates the three in that order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from gymnasium import spaces
from numba import njit, prange

from ffe_gym.jit_cache import fresh_cache
from ffe_gym.portfolio import Portfolio
from ffe_gym.portfolio import layout as L

POSITION_FIELDS = ("weight", "unrealized_return", "stop_distance", "target_distance")
ACCOUNT_FIELDS = ("equity_return", "cash_share", "gross_exposure", "net_exposure", "drawdown",
                  "cooldown")


_F32 = np.dtype(np.float32)


def check_buffer(out: Any, shape: tuple[int, ...]) -> None:
    """Refuse a caller's output buffer the compiled code would write past or misread: not a
    writeable, aligned, C-contiguous float32 array of exactly ``shape``. Checked on every
    call that writes into it, not remembered by identity: ``out.shape = ...`` reshapes the
    same object in place."""
    if not (isinstance(out, np.ndarray) and out.dtype == _F32 and out.shape == shape
            and out.flags.carray):
        raise ValueError(f"out must be a writeable C-contiguous float32 array of shape "
                         f"{shape}, got {type(out).__name__} {getattr(out, 'dtype', '')} "
                         f"{getattr(out, 'shape', '')}")


@dataclass(frozen=True)
class ObservationLayout:
    """How to read one observation by name: what policies (rule-based, LLM) are given.

    :param window: W bars.
    :param symbols: the N asset names, in order (policies that must not see them use indices).
    :param features: the F feature names, in order.
    :param flat: observations are one flat array rather than a dict.
    :param action_scheme: the env's action scheme.
    :param n_assets: N.
    :param bar_seconds: the typical bar length (median spacing of the data), 0 if unknown.
    :param decision_bars: bars between two decisions (median), 0 if unknown.
    :param decision_seconds: calendar time between two decisions (median), 0 if unknown.
    :param fee_rate: proportional fee per fill; :param slippage: adverse slippage per fill.
    :param allow_short: whether SELL from flat opens a short.
    :param clip: every feature value is clipped to +-clip (``env.features.clip``).

    The last five describe the setting a decision is taken in (the rules, not the data after
    the decision); the LLM ensemble states them in its prompt.
    """

    window: int
    symbols: tuple[str, ...]
    features: tuple[str, ...]
    flat: bool
    action_scheme: str
    position_fields: tuple[str, ...] = POSITION_FIELDS
    account_fields: tuple[str, ...] = ACCOUNT_FIELDS
    bar_seconds: float = 0.0
    decision_bars: int = 0
    decision_seconds: float = 0.0
    fee_rate: float = 0.0
    slippage: float = 0.0
    allow_short: bool = True
    clip: float = 10.0

    @property
    def n_assets(self) -> int:
        return len(self.symbols)

    def _parts(self, obs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if isinstance(obs, dict):
            return (np.asarray(obs["market"]), np.asarray(obs["positions"]),
                    np.asarray(obs["account"]))
        o = np.asarray(obs)
        m = self.window * self.n_assets * len(self.features)
        p = self.n_assets * len(self.position_fields)
        return o[..., :m], o[..., m:m + p], o[..., m + p:]

    def market(self, obs: Any) -> np.ndarray:
        """(W, N, F) features, oldest bar first."""
        return self._parts(obs)[0].reshape(self.window, self.n_assets, len(self.features))

    def feature(self, obs: Any, name: str) -> np.ndarray:
        """(W, N) history of one feature."""
        if name not in self.features:
            raise KeyError(f"feature {name!r} is not in this env's observation "
                           f"(features: {', '.join(self.features)})")
        return self.market(obs)[:, :, self.features.index(name)]

    def positions(self, obs: Any) -> dict[str, np.ndarray]:
        """Per-asset position fields, each (N,)."""
        p = self._parts(obs)[1].reshape(self.n_assets, len(self.position_fields))
        return {name: p[:, k] for k, name in enumerate(self.position_fields)}

    def account(self, obs: Any) -> dict[str, float]:
        a = self._parts(obs)[2]
        return {name: float(a[k]) for k, name in enumerate(self.account_fields)}


class ObservationBuilder:
    """Builds a batch of observations from the engine state and the precomputed features.

    :param features: (T, N, F) float32 features.
    :param window: W bars per observation.
    :param clip: bound of every value.
    :param flat: one Box instead of a Dict.
    :param cooldown_bars: to scale the cooldown field.
    :param threads: numba threads the books' observations are written on (1: serial; the
        same bytes either way).
    """

    def __init__(self, features: np.ndarray, window: int, clip: float, flat: bool,
                 cooldown_bars: int, threads: int = 1) -> None:
        self.threads = int(threads)
        self.features = features
        self._flat = np.ascontiguousarray(features).reshape(-1)  # a view: bars are contiguous
        self.window = window
        self.clip = float(clip)
        self.flat = flat
        self.cooldown_bars = max(int(cooldown_bars), 1)
        _, N, F = features.shape
        self.shape = (window, N, F)
        self.sizes = {"market": window * N * F, "positions": N * len(POSITION_FIELDS),
                      "account": len(ACCOUNT_FIELDS)}
        self._offsets = np.arange(-window + 1, 1)
        self.total = sum(self.sizes.values())
        m, p = self.sizes["market"], self.sizes["positions"]
        self._parts_at = ((0, m), (m, m + p), (m + p, self.total))
        self._parts_slices = tuple(slice(i, j) for i, j in self._parts_at)
        self._parts_index = tuple((Ellipsis, sl) for sl in self._parts_slices)
        box = {k: spaces.Box(-self.clip, self.clip, (n,), dtype=np.float32)
               for k, n in self.sizes.items()}
        self.dict_space = spaces.Dict(box)
        self.space = (spaces.Box(-self.clip, self.clip, (sum(self.sizes.values()),),
                                 dtype=np.float32) if flat else self.dict_space)

    def build(self, pf: Portfolio, out: np.ndarray | None = None
              ) -> dict[str, np.ndarray] | np.ndarray:
        """Observations of all B books: a dict of (B, size) arrays, or (B, total); fresh
        arrays every call, or views of ``out`` (a (B, total) float32 buffer, overwritten)."""
        if out is None:
            out = np.empty((pf.n_books, self.total), dtype=np.float32)
        else:
            check_buffer(out, (pf.n_books, self.total))
        if self.threads > 1 and pf.n_books > 1:
            _fill_threaded(min(self.threads, pf.n_books), self._flat, self.window,
                           pf.market.close, pf.pos, pf.acct, pf.clock, pf.params,
                           1.0 / self.cooldown_bars, self.clip, out)
        else:
            _fill(self._flat, self.window, pf.market.close, pf.pos, pf.acct, pf.clock,
                  pf.params, 1.0 / self.cooldown_bars, self.clip, out)
        return self.split(out)

    @property
    def fill_args(self) -> tuple[np.ndarray, int, float, float]:
        """What :func:`fill_range` reads besides the engine state: the flat features, W, the
        cooldown scale and the clip (for callers that fuse the fill with the step)."""
        return self._flat, self.window, 1.0 / self.cooldown_bars, self.clip

    def split(self, out: np.ndarray) -> dict[str, np.ndarray] | np.ndarray:
        """A filled (B, total) or (total,) buffer as this builder's observations: itself
        (flat) or a dict of views of its parts."""
        if self.flat:
            return out
        m, p, a = self._parts_index
        return {"market": out[m], "positions": out[p], "account": out[a]}

    def split_row(self, row: np.ndarray) -> dict[str, np.ndarray] | np.ndarray:
        """:meth:`split` of one (total,) observation (a third cheaper: the single env's
        step)."""
        if self.flat:
            return row
        m, p, a = self._parts_slices
        return {"market": row[m], "positions": row[p], "account": row[a]}

    def build_one(self, pf: Portfolio) -> dict[str, np.ndarray] | np.ndarray:
        """The observation of book 0 of a one-book portfolio: 1-D arrays (fresh every call)."""
        out = np.empty((1, self.total), dtype=np.float32)
        _fill(self._flat, self.window, pf.market.close, pf.pos, pf.acct, pf.clock,
              pf.params, 1.0 / self.cooldown_bars, self.clip, out)
        return self.split_row(out[0])

    def view(self, obs: dict | np.ndarray) -> np.ndarray:
        """The market part of one observation (dict, flat array or market vector) as (W, N, F)."""
        if isinstance(obs, dict):
            market = obs["market"]
        else:
            market = np.asarray(obs)[..., : self.sizes["market"]]
        return np.asarray(market).reshape(*np.shape(market)[:-1], *self.shape)


@njit(cache=True)
def _clip(x, c):
    if x > c:
        return c
    if x < -c:
        return -c
    return x


@njit(cache=True)
def _fill(flat, window, close, pos, acct, clock, p, cooldown_scale, clip, out):
    """Write every book's observation (market, positions, account) into ``out`` (B, total).

    ``flat`` is the (T * N * F,) feature array: one bar's N * F values are contiguous.
    """
    fill_range(0, pos.shape[0], flat, window, close, pos, acct, clock, p, cooldown_scale,
               clip, out)


@njit(cache=True, parallel=True)
def _fill_threaded(n_chunks, flat, window, close, pos, acct, clock, p, cooldown_scale, clip,
                   out):
    """:func:`_fill` with the books split into ``n_chunks`` contiguous ranges on numba's
    threads (each book writes only its own row)."""
    B = pos.shape[0]
    for k in prange(n_chunks):
        fill_range(k * B // n_chunks, (k + 1) * B // n_chunks, flat, window, close, pos,
                   acct, clock, p, cooldown_scale, clip, out)


@njit(cache=True)
def fill_range(b0, b1, flat, window, close, pos, acct, clock, p, cooldown_scale, clip, out):
    N = close.shape[1]
    per_bar = flat.shape[0] // close.shape[0]
    m = window * per_bar
    for b in range(b0, b1):
        t = clock[b, L.BAR]
        row = out[b]
        src = flat[(t - window + 1) * per_bar: (t + 1) * per_bar]
        for k in range(m):  # memcpy speed: indices known >= 0 (a slice assignment, or an
            row[k] = src[k]  # index that could be negative, copies at half of it)
        k = m
        eq = acct[b, L.EQUITY]
        inv = 1.0 / eq if eq > 0.0 else 0.0
        net = 0.0
        for i in range(N):
            u = pos[b, i, L.UNITS]
            c = close[t, i]
            w = u * c * inv
            net += u * c
            unreal = 0.0
            stop_d = 0.0
            target_d = 0.0
            if u != 0.0:
                sgn = 1.0 if u > 0.0 else -1.0
                unreal = sgn * (c / pos[b, i, L.ENTRY] - 1.0)
                st = pos[b, i, L.STOP]
                tg = pos[b, i, L.TARGET]
                if np.isfinite(st):
                    stop_d = sgn * (c - st) / c
                if np.isfinite(tg):
                    target_d = sgn * (tg - c) / c
            row[k] = _clip(w, clip)
            row[k + 1] = _clip(unreal, clip)
            row[k + 2] = _clip(stop_d, clip)
            row[k + 3] = _clip(target_d, clip)
            k += 4
        ref = acct[b, L.BASE] if p[L.P_DD_FROM_INITIAL] > 0.0 else acct[b, L.PEAK]
        row[k] = _clip(eq / p[L.P_INITIAL] - 1.0, clip)
        row[k + 1] = _clip(acct[b, L.CASH] * inv, clip)
        row[k + 2] = _clip(acct[b, L.GROSS] * inv, clip)
        row[k + 3] = _clip(net * inv, clip)
        row[k + 4] = _clip(1.0 - eq / ref, clip)
        row[k + 5] = _clip(clock[b, L.COOLDOWN] * cooldown_scale, clip)


fresh_cache(globals())  # the compiled code on disk must come from these sources (jit_cache)
