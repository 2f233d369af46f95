"""One compiled call an env step: the engine, the settling and the observations of every book.

An env step is the engine's decision step (:mod:`ffe_gym.portfolio.kernel`), then per book what
the env reads off it (traded notional, drawdown, the log reward, the running episode
statistics, the end flags: :func:`settle_range`), then the observations
(:func:`~ffe_gym.env.observations.fill_range`). :func:`step_observe` runs the three for every
book in one call; :func:`step_observe_threaded` splits the books into contiguous ranges on
numba's threads, each range stepped, settled and observed by one thread while its books are
still in that core's cache. Books share only read-only market data, so both give the same
bytes. A refused action changes nothing: float32 signals are checked and decoded at the start
of the call, before any book is stepped; other actions were checked and loaded into the
engine's buffers before it (:meth:`~ffe_gym.env.actions.Signals.stage`).

The arguments that stay the same from step to step come first and the four that change
(``active``, ``scheme``, ``raw``, ``out``) last, so that the env binds the first once
(:func:`entry_point` and ``functools.partial``).

``acc`` (``ACC_ROWS``, B) float64 holds the per-book sums the env keeps between steps and what
the last step did; ``flags`` (2, B) the terminated and truncated flags.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange

from ffe_gym.env.actions import RAW_SIGNALS, signals_into
from ffe_gym.env.observations import fill_range
from ffe_gym.jit_cache import fresh_cache
from ffe_gym.portfolio import layout as L
from ffe_gym.portfolio.kernel import book_views, step_range

# rows of ``acc``: equity before the step, cumulative traded notional at the last step, what
# the step traded, its drawdown and floored log return, then the episode statistics
(BEFORE, TRADED_LAST, TRADED, DRAWDOWN, LOG_RETURN,
 EP_STEPS, EP_BARS, EP_SUM, EP_SUM2, EP_PEAK, EP_MAXDD) = range(11)
ACC_ROWS = 11
TERMINATED, TRUNCATED = 0, 1


@njit(cache=True)
def settle_range(b0, b1, acct, clock, n_curve, dd_from_initial, floor, stepped, acc, flags):
    """After a step, for books b0..b1-1: traded notional, drawdown from its reference, the
    floored log return, the running episode statistics (a book that did not step adds a zero
    return) and the terminated / truncated flags."""
    for b in range(b0, b1):
        eq = acct[b, L.EQUITY]
        acc[TRADED, b] = acct[b, L.TRADED] - acc[TRADED_LAST, b]
        acc[TRADED_LAST, b] = acct[b, L.TRADED]
        acc[DRAWDOWN, b] = 1.0 - eq / (acct[b, L.BASE] if dd_from_initial else acct[b, L.PEAK])
        r = 0.0
        if stepped[b]:
            r = np.log(max(eq, floor) / acc[BEFORE, b])
            acc[EP_STEPS, b] += 1.0
            acc[EP_BARS, b] += n_curve[b]
        acc[LOG_RETURN, b] = r
        acc[EP_SUM, b] += r
        acc[EP_SUM2, b] += r * r
        if eq > acc[EP_PEAK, b]:
            acc[EP_PEAK, b] = eq
        d = 1.0 - eq / acc[EP_PEAK, b]
        if d > acc[EP_MAXDD, b]:
            acc[EP_MAXDD, b] = d
        status = clock[b, L.STATUS]
        flags[TERMINATED, b] = status == L.STOPPED or status == L.RUINED
        flags[TRUNCATED, b] = status == L.ENDED


@njit(cache=True)
def _chunk(b0, b1, active, scheme, intents, market, per_asset, p, books, acc, flags, floor,
           observe):
    """Step, settle and observe books b0..b1-1: ``intents``, ``market``, ``per_asset``, ``p``
    and ``books`` as :func:`~ffe_gym.portfolio.kernel.step_range` takes them; ``observe`` is
    ``(features, window, cooldown_scale, clip, out)`` for :func:`fill_range`."""
    pos, acct, clock, count, curve, gross_curve, n_curve, fills, n_fills, refused = books
    features, window, cooldown_scale, clip, out = observe
    for b in range(b0, b1):
        acc[BEFORE, b] = acct[b, L.EQUITY]
    step_range(b0, b1, active, scheme, intents, market, per_asset, p, books)
    settle_range(b0, b1, acct, clock, n_curve, p[L.P_DD_FROM_INITIAL] > 0.0, floor, active,
                 acc, flags)
    fill_range(b0, b1, features, window, market[3], pos, acct, clock, p, cooldown_scale, clip,
               out)


@njit(cache=True)
def _decode(scheme, raw, dead_band, dirs, confs):
    """(error code, the scheme the engine steps with): RAW_SIGNALS checks and decodes the
    float32 actions ``raw`` into the intents (:func:`~ffe_gym.env.actions.signals_into`;
    nothing is written unless all are valid); any other scheme was loaded before the call."""
    if scheme != RAW_SIGNALS:
        return 0, scheme
    return signals_into(raw, dead_band, dirs, confs), L.SIGNALS


@njit(cache=True)
def step_observe(dirs, fbook, ibook, o, h, lo_, c, tradable, R, vol, pc, cov, next_dec, per_asset,
                 p, acc, flags, floor, features, window, cooldown_scale, clip, dead_band,
                 active, scheme, raw, out):
    """Step the books with ``active[b]`` (the engine's arguments as
    :attr:`~ffe_gym.portfolio.Portfolio.kernel_args`), settle every book into ``acc`` and
    ``flags`` and write every book's observation into ``out`` (B, total), in one call.

    With ``scheme`` RAW_SIGNALS the (B, N) float32 actions ``raw`` are first checked and
    decoded (:func:`~ffe_gym.env.actions.signals_into`); their error code (non-zero) is
    returned before anything changes. Returns 0 when the books were stepped."""
    B, N = dirs.shape
    (pos, acct, curve, gross_curve, fills, confs, weights, clock, count, n_curve, n_fills,
     refused) = book_views(fbook, ibook, B, N, int(p[L.P_MAX_STEP_BARS]))
    error, scheme = _decode(scheme, raw, dead_band, dirs, confs)
    if error != 0:
        return error
    _chunk(0, B, active, scheme, (dirs, confs, weights),
           (o, h, lo_, c, tradable, R, vol, pc, cov, next_dec), per_asset, p,
           (pos, acct, clock, count, curve, gross_curve, n_curve, fills, n_fills, refused), acc,
           flags, floor, (features, window, cooldown_scale, clip, out))
    return 0


@njit(cache=True, parallel=True)
def step_observe_threaded(n_chunks, dirs, fbook, ibook, o, h, lo_, c, tradable, R, vol, pc, cov,
                          next_dec, per_asset, p, acc, flags, floor, features, window,
                          cooldown_scale, clip, dead_band, active, scheme, raw, out):
    """:func:`step_observe` with the books split into ``n_chunks`` contiguous ranges on
    numba's threads (the same bytes: each range has its own scratch and writes only its
    books' rows)."""
    B, N = dirs.shape
    (pos, acct, curve, gross_curve, fills, confs, weights, clock, count, n_curve, n_fills,
     refused) = book_views(fbook, ibook, B, N, int(p[L.P_MAX_STEP_BARS]))
    error, scheme = _decode(scheme, raw, dead_band, dirs, confs)
    if error != 0:
        return error
    intents = (dirs, confs, weights)
    market = (o, h, lo_, c, tradable, R, vol, pc, cov, next_dec)
    books = (pos, acct, clock, count, curve, gross_curve, n_curve, fills, n_fills, refused)
    observe = (features, window, cooldown_scale, clip, out)
    for k in prange(n_chunks):
        _chunk(k * B // n_chunks, (k + 1) * B // n_chunks, active, scheme, intents, market,
               per_asset, p, books, acc, flags, floor, observe)
    return 0


def entry_point(dispatcher: Any, args: tuple) -> Callable[..., Any]:
    """The compiled code of a numba ``dispatcher`` for the types of ``args`` (compiled now or
    loaded from the cache), to be called without numba's dispatch.

    A dispatcher types every argument at every call to pick the compiled code; its entry point
    only converts them. It does not check
    them either, so the caller must pass arguments of exactly the types of ``args`` (dtype,
    dimensions, layout) at every call: a wrong type is read as the right one. An argument
    given as a numba type stands for itself (e.g. an any-strides array type for a caller's
    array).
    """
    if not hasattr(dispatcher, "compile"):  # NUMBA_DISABLE_JIT=1: the plain function
        return dispatcher
    return dispatcher.compile(tuple(a if isinstance(a, numba.types.Type) else numba.typeof(a)
                                    for a in args))


fresh_cache(globals())  # the compiled code on disk must come from these sources (jit_cache)
