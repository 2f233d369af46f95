"""Per-book summary figures and per-asset attribution, compiled: one pass over the state.

``summarize`` fills ``book`` (fields ``layout.B_*``) and ``assets`` (N, fields ``layout.A_*``)
for book b at its current bar. Portfolio.attribution, the env's ``info`` and reports all read
it, so the attribution arithmetic exists once.
"""

from __future__ import annotations

from numba import njit

from ffe_gym.jit_cache import fresh_cache
from ffe_gym.portfolio import layout as L
from ffe_gym.portfolio.kernel import _var, _window_start, var_horizon


@njit(cache=True)
def summarize(b, close, R, next_dec, p, pos, acct, clock, refused, book, assets, series):
    """Fill ``book`` and ``assets`` for book b; ``series`` is scratch of length var_window."""
    t = clock[b, L.BAR]
    eq = acct[b, L.EQUITY]
    N = close.shape[1]
    gross = 0.0
    net = 0.0
    fees = 0.0
    borrow = 0.0
    pnl = 0.0
    for i in range(N):
        u = pos[b, i, L.UNITS]
        v = u * close[t, i]
        unreal = u * (close[t, i] - pos[b, i, L.ENTRY]) if u != 0.0 else 0.0
        a = assets[i]
        a[L.A_WEIGHT] = v / eq if eq > 0.0 else 0.0
        a[L.A_REALIZED] = pos[b, i, L.REALIZED]
        a[L.A_UNREALIZED] = unreal
        a[L.A_FEES] = pos[b, i, L.FEES]
        a[L.A_BORROW] = pos[b, i, L.BORROW]
        a[L.A_PNL] = pos[b, i, L.REALIZED] + unreal - pos[b, i, L.FEES] - pos[b, i, L.BORROW]
        a[L.A_TRADES] = pos[b, i, L.TRADES]
        a[L.A_WINS] = pos[b, i, L.WINS]
        a[L.A_GROSS_WIN] = pos[b, i, L.GROSS_WIN]
        a[L.A_GROSS_LOSS] = pos[b, i, L.GROSS_LOSS]
        gross += abs(v)
        net += v
        fees += a[L.A_FEES]
        borrow += a[L.A_BORROW]
        pnl += a[L.A_PNL]
    ref = acct[b, L.BASE] if p[L.P_DD_FROM_INITIAL] > 0.0 else acct[b, L.PEAK]
    var = 0.0
    lo = _window_start(t, int(p[L.P_VAR_WINDOW]))
    n = t - lo + 1 if t >= 1 else 0
    if eq > 0.0 and n >= 2:
        series[:n] = 0.0
        for i in range(N):
            u = pos[b, i, L.UNITS]
            if u != 0.0:
                w = u * close[t, i] / eq
                for s in range(n):
                    series[s] += w * R[lo + s, i]
        var = _var(series, n, p, var_horizon(p, t, next_dec[t]))
    book[L.B_EQUITY] = eq
    book[L.B_CASH] = acct[b, L.CASH]
    book[L.B_DRAWDOWN] = 1.0 - eq / ref
    book[L.B_VAR] = var
    book[L.B_GROSS] = gross / eq if eq > 0.0 else 0.0
    book[L.B_NET] = net / eq if eq > 0.0 else 0.0
    book[L.B_FEES] = fees
    book[L.B_BORROW] = borrow
    book[L.B_PNL] = pnl
    nr = 0
    for i in range(N):
        if refused[b, i] != 0:
            nr += 1
    book[L.B_REFUSED] = nr


fresh_cache(globals())  # the compiled code on disk must come from these sources (jit_cache)
