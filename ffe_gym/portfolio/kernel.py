"""The decision step, compiled with numba and batched over B books.

The rules are specified in plain Python in :mod:`ffe_gym.portfolio.specification`, one
function per rule; ``tests/test_specification.py`` checks this kernel against it. A change to
a rule is made in both. This is the only place where the accounting of a run happens.
``step_books`` loops over books in ``step_range`` (the step is that loop's body); one book
and B books therefore run the same instructions. The rules (numbers
refer to the design's "one decision step"):

1-2. Intents become closing legs (never refused) and opening candidates, ordered by descending
     confidence (weights: |target weight|), ties by symbol, never by column. Limits are
     checked at the decision bar's close, in the order cooldown, re-entry after a stop or
     target exit, max_positions, size, cash and initial margin, short cap, gross cap, VaR
     (over ``risk.var_horizon_bars``); a refusal is counted with its reason and changes
     nothing. Weights: purchases that together overdraw the cash or margin are scaled by one
     factor (``_pro_rata_targets``); signals: openings of equal conviction that together
     overdraw are sized down by one factor (``_tie_group``), any other opening that does not
     fit is refused.
3.   Opening notional = equity * base * factors (see ``_opening_notional``).
5.   Fills at close[t] or open[t+1] with adverse slippage and fees; with next_open the cash
     and margin check is repeated at the fill and the openings are scaled down by one factor
     rather than overdrawing (``_pro_rata``).
6.   Each bar after the fill: stop-loss / take-profit (intrabar or on the close); levels are
     fractions of the entry, or multiples of the asset's volatility fixed at entry.
7.   Mark to market, borrow on shorts, interest on negative cash, maintenance margin (a margin
     call reduces positions at the close), portfolio drawdown stop, ruin (liquidates). The
     stop sells a closed market's position at that market's next real open (counted), never
     at its carried close; openings wait until every such sale is done, and a terminating
     stop ends the book then.

Margin (``_margin_terms``, ``_margin_call``). Without borrowing collateral is cash: a long is
paid in full, short proceeds stay in cash as collateral, and the rule is
``cash >= short_value * (1 + margin)``: initial margin after an opening, maintenance at
every close. With borrowing: ``equity >= margin * gross``. So cash is never negative at a
close without borrowing unless every position of an open market is gone and the book is
ruined.

Windows of returns end at the decision bar t (inclusive): only bars <= t are used.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from ffe_gym.jit_cache import fresh_cache
from ffe_gym.portfolio import layout as L

SIGNALS = L.SIGNALS
WEIGHTS = L.WEIGHTS
# weights: a target weight, or a change of a position's value, below this share of equity is
# no trade (solver residue, rounding of a drifted portfolio); the same for every column order
WEIGHT_TOL = 1e-9


@njit(cache=True)
def correlation_factor(m: float, threshold: float) -> float:
    """``1 - 0.5 (m - thr) / (1 - thr)`` above the threshold, else 1; always in [0.5, 1]
    (a computed |correlation| can exceed 1 by rounding, 1.0000000000000002)."""
    if m > 1.0:
        m = 1.0
    if m > threshold:
        f = 1.0 - 0.5 * (m - threshold) / (1.0 - threshold)
        return min(1.0, max(0.5, f))
    return 1.0


@njit(cache=True)
def _window_start(t, window):
    lo = t - window + 1
    return lo if lo > 1 else 1


@njit(cache=True)
def _mean_ss(R, lo, t, i):
    """Mean and centred sum of squares of ``R[lo..t, i]``, in two passes."""
    n = t - lo + 1
    m = 0.0
    for s in range(lo, t + 1):
        m += R[s, i]
    m /= n
    ss = 0.0
    for s in range(lo, t + 1):
        d = R[s, i] - m
        ss += d * d
    return m, ss


@njit(cache=True)
def _std(R, lo, t, i):
    n = t - lo + 1
    if n < 2:
        return 0.0
    return np.sqrt(_mean_ss(R, lo, t, i)[1] / (n - 1))


@njit(cache=True)
def _var(series, n, p, horizon):
    """VaR (a positive share of equity) of per-bar portfolio returns over ``horizon`` bars."""
    if n < 2:
        return 0.0
    if p[L.P_VAR_HISTORICAL] > 0.0:
        v = -np.quantile(series[:n], p[L.P_VAR_TAIL])
    else:
        m = 0.0
        for s in range(n):
            m += series[s]
        m /= n
        ss = 0.0
        for s in range(n):
            d = series[s] - m
            ss += d * d
        v = p[L.P_VAR_Z] * np.sqrt(ss / (n - 1))
    v *= np.sqrt(horizon)
    return v if v > 0.0 else 0.0


@njit(cache=True)
def rolling_std(R, window):
    """``vol[t, i] = _std(R, _window_start(t, window), t, i)`` for every bar: the same sums
    in the same order as a scan at the decision, so every lookup is bitwise the rescan."""
    T, N = R.shape
    vol = np.zeros((T, N))
    for t in range(T):
        lo = _window_start(t, window)
        for i in range(N):
            vol[t, i] = _std(R, lo, t, i)
    return vol


@njit(cache=True)
def _add_row(R, s, sign, shift, sx, sxy):
    N = R.shape[1]
    for i in range(N):
        xi = R[s, i] - shift[i]
        sx[i] += sign * xi
        for j in range(i, N):
            sxy[i, j] += sign * xi * (R[s, j] - shift[j])


@njit(cache=True)
def rolling_cov(R, window):
    """``cov[t]``: the (N, N) sample covariance of rows ``_window_start(t, window)..t``, for
    every bar, in O(T N^2): sums of shifted returns updated a row at a time (add the new row,
    drop the rows that left) and recomputed exactly around the window's mean every
    ``window`` bars, so rounding cannot drift."""
    T, N = R.shape
    out = np.zeros((T, N, N))
    sx = np.zeros(N)
    sxy = np.zeros((N, N))
    shift = np.zeros(N)
    lo_prev = 1
    since = window  # the first bar recomputes
    for t in range(1, T):
        lo = _window_start(t, window)
        n = t - lo + 1
        if since >= window:
            for i in range(N):
                m = 0.0
                for s in range(lo, t + 1):
                    m += R[s, i]
                shift[i] = m / n
            sx[:] = 0.0
            sxy[:, :] = 0.0
            for s in range(lo, t + 1):
                _add_row(R, s, 1.0, shift, sx, sxy)
            since = 0
        else:
            _add_row(R, t, 1.0, shift, sx, sxy)
            for s in range(lo_prev, lo):
                _add_row(R, s, -1.0, shift, sx, sxy)
            since += 1
        lo_prev = lo
        if n >= 2:
            for i in range(N):
                for j in range(i, N):
                    v = (sxy[i, j] - sx[i] * sx[j] / n) / (n - 1)
                    out[t, i, j] = v
                    out[t, j, i] = v
    return out


@njit(cache=True)
def rolling_corr(R, window):
    """``corr[t]``: the (N, N) Pearson correlations of rows ``_window_start(t, window)..t``,
    from :func:`rolling_cov`; 0 where either asset's returns are all equal in the window (a
    closed market's carried prices: exactly what the scan returns there)."""
    T, N = R.shape
    out = rolling_cov(R, window)
    changed = np.zeros(N, dtype=np.int64)  # the last row whose return differs from the one before
    for t in range(1, T):
        lo = _window_start(t, window)
        for i in range(N):
            if t > 1 and R[t, i] != R[t - 1, i]:
                changed[i] = t
        for i in range(N):
            flat_i = changed[i] <= lo
            for j in range(i, N):
                v = 0.0
                if not (flat_i or changed[j] <= lo):
                    den = out[t, i, i] * out[t, j, j]
                    if den > 0.0:
                        v = out[t, i, j] / np.sqrt(den)
                if i != j:
                    out[t, i, j] = v
                    out[t, j, i] = v
        for i in range(N):
            out[t, i, i] = 0.0 if changed[i] <= lo or out[t, i, i] <= 0.0 else 1.0
    return out


@njit(cache=True, inline="always")
def var_horizon(p, t, t_next):
    """Bars the VaR limit looks ahead from decision bar t: ``risk.var_horizon_bars``, or the
    decision interval ``t_next - t`` (at least 1) when that is null (``P_VAR_HORIZON`` 0)."""
    if p[L.P_VAR_HORIZON] > 0.0:
        return p[L.P_VAR_HORIZON]
    return float(max(t_next - t, 1))


@njit(cache=True, inline="always")
def _parametric_trial(series, n, R, lo, i, w, z, horizon):
    """Parametric VaR of ``series + w * R[lo:lo+n, i]`` in one pass (sums of x and x^2)."""
    if n < 2:
        return 0.0
    sx = 0.0
    sxx = 0.0
    for s in range(n):
        x = series[s] + w * R[lo + s, i]
        sx += x
        sxx += x * x
    var = (sxx - sx * sx / n) / (n - 1)
    if var <= 0.0:
        return 0.0
    return z * np.sqrt(var * horizon)


@njit(cache=True)
def _slippage(base, per_vol, bar, vol_before):
    """Adverse slippage fraction of a fill in ``bar``: the asset's ``base`` plus ``per_vol`` x
    its volatility up to bar - 1 (``vol_before``, read by the caller), from bar 2 on.

    Scalars only, like every helper called in the step's loops: numba brackets a call to a
    helper that takes arrays and branches with reference-count updates it does not remove
    (atomic, about 20 ns a call; they were a fifth of a 100-asset step)."""
    if per_vol > 0.0 and bar >= 2:
        return base + per_vol * vol_before
    return base


@njit(cache=True)
def _fee(q, px, fee_rate, fixed_fee):
    return fee_rate * abs(q) * px + fixed_fee


@njit(cache=True)
def _fill(pos, acct, fills, b, nf, bar, i, q, px, fee_rate, fixed_fee, reason, sl, tp):
    """Trade ``q`` units (signed, + buy) of asset i at ``px``; ``q`` never crosses zero.

    An opening (or an increase) sets the stop and target at ``sl`` and ``tp`` (fractions of
    the average entry; NaN: none) from the entry."""
    u = pos[b, i, L.UNITS]
    fee = _fee(q, px, fee_rate, fixed_fee)
    acct[b, L.CASH] -= q * px + fee
    acct[b, L.TRADED] += abs(q) * px
    pos[b, i, L.FEES] += fee
    pnl = 0.0
    net = 0.0
    closing = u != 0.0 and (u > 0.0) != (q > 0.0)
    if closing:
        closed = -q  # units leaving the position, same sign as u
        entry = pos[b, i, L.ENTRY]
        pnl = closed * (px - entry)
        share = pos[b, i, L.OPEN_FEES] * (closed / u)
        net = pnl - fee - share
        pos[b, i, L.REALIZED] += pnl
        pos[b, i, L.TRADES] += 1.0
        if net > 0.0:
            pos[b, i, L.WINS] += 1.0
            pos[b, i, L.GROSS_WIN] += net
        else:
            pos[b, i, L.GROSS_LOSS] -= net
        new_u = u + q
        if new_u == 0.0:
            pos[b, i, L.ENTRY] = 0.0
            pos[b, i, L.STOP] = np.nan
            pos[b, i, L.TARGET] = np.nan
            pos[b, i, L.OPEN_FEES] = 0.0
        else:
            pos[b, i, L.OPEN_FEES] -= share
        pos[b, i, L.UNITS] = new_u
    else:
        new_u = u + q
        entry = (u * pos[b, i, L.ENTRY] + q * px) / new_u
        sgn = 1.0 if new_u > 0.0 else -1.0
        pos[b, i, L.UNITS] = new_u
        pos[b, i, L.ENTRY] = entry
        pos[b, i, L.OPEN_FEES] += fee
        pos[b, i, L.STOP] = entry * (1.0 - sgn * sl)
        pos[b, i, L.TARGET] = entry * (1.0 + sgn * tp)
    row = fills[b, nf]
    row[L.F_BAR] = bar
    row[L.F_ASSET] = i
    row[L.F_UNITS] = q
    row[L.F_PRICE] = px
    row[L.F_FEE] = fee
    row[L.F_PNL] = pnl
    row[L.F_NET] = net
    row[L.F_REASON] = reason
    row[L.F_CLOSING] = 1.0 if closing else 0.0
    return nf + 1


@njit(cache=True)
def _margin_terms(q, ref, px, fr, fixed, cash, net, gross, short, m, borrowing):
    """``(num, den)`` of the initial-margin rule for an opening of ``|q|`` units, sign(q),
    valued at ``ref`` and filled at ``px``: the opening is allowed while ``|q| * den <= num``.

    Without borrowing: ``cash' >= short' * (1 + m)`` after the fill (a long pays
    ``px (1 + fee)`` per unit; a short brings ``px (1 - fee)`` and adds ``ref`` of short value).
    With borrowing: ``equity' >= m * gross'``, where the fill costs equity its slippage and fee.
    """
    if borrowing:
        return (cash + net - m * gross - fixed,
                m * ref + abs(ref - px) + fr * px)
    num = cash - short * (1.0 + m) - fixed
    if q > 0.0:
        return num, px * (1.0 + fr)
    return num, ref * (1.0 + m) - px * (1.0 - fr)


@njit(cache=True, inline="always")
def _margin_call(b, s, c, tradable, vol, fee_rate, fixed_fee, slip, p, pos, acct, clock, count,
                 fills, nf):
    """Maintenance margin at the close of bar ``s``; returns the new fill count.

    The requirement ``need`` is ``cash - short * (1 + m)`` (``equity - m * gross`` with
    borrowing) and must be >= 0. Selling a fraction f of every position of an open market
    changes it by ``f * sum(gain_i) - sum(fixed fees)``: a long's gain is its value net of
    slippage and fee (without borrowing), anything else ``m * value - costs``. f is the
    smallest that restores the rule, 1 on a second call before the next decision."""
    N = c.shape[1]
    vslip = p[L.P_VOL_SLIPPAGE]
    m = p[L.P_MAINT_MARGIN]
    borrowing = p[L.P_BORROWING] > 0.0
    cash = acct[b, L.CASH]
    eq = cash
    gross = 0.0
    short = 0.0
    gain = 0.0
    fixed = 0.0
    movable = 0
    for i in range(N):
        u = pos[b, i, L.UNITS]
        if u == 0.0:
            continue
        v = u * c[s, i]
        eq += v
        gross += abs(v)
        if u < 0.0:
            short -= v
        if tradable[s, i]:
            px = c[s, i] * (1.0 - np.sign(u) * _slippage(slip[i], vslip, s, vol[s - 1, i]))
            cost = abs(u) * abs(c[s, i] - px) + fee_rate[i] * abs(u) * px
            if u > 0.0 and not borrowing:
                gain += abs(v) - cost
            else:
                gain += m * abs(v) - cost
            fixed += fixed_fee[i]
            movable += 1
    need = eq - m * gross if borrowing else cash - short * (1.0 + m)
    if movable == 0 or need >= -1e-9 * (1.0 + abs(eq)):
        return nf
    f = 1.0
    if clock[b, L.CALLED] == 0 and gain > 0.0:
        f = min(1.0, (fixed - need) / gain)
    clock[b, L.CALLED] = 1
    count[b, L.C_MARGIN_CALL] += 1
    for i in range(N):
        u = pos[b, i, L.UNITS]
        if u == 0.0 or not tradable[s, i]:
            continue
        q = -u if f >= 1.0 else -f * u
        px = c[s, i] * (1.0 - np.sign(u) * _slippage(slip[i], vslip, s, vol[s - 1, i]))
        nf = _fill(pos, acct, fills, b, nf, s, i, q, px, fee_rate[i], fixed_fee[i],
                   L.MARGIN_CALL, np.nan, np.nan)
    return nf


@njit(cache=True)
def _liquidate(b, s, c, tradable, vol, fee_rate, fixed_fee, slip, p, pos, acct, fills, nf,
               reason):
    """Close every position of an open market at bar ``s``'s close; returns the fill count."""
    vslip = p[L.P_VOL_SLIPPAGE]
    for i in range(c.shape[1]):
        u = pos[b, i, L.UNITS]
        if u != 0.0 and tradable[s, i]:
            px = c[s, i] * (1.0 - np.sign(u) * _slippage(slip[i], vslip, s, vol[s - 1, i]))
            nf = _fill(pos, acct, fills, b, nf, s, i, -u, px, fee_rate[i], fixed_fee[i],
                       reason, np.nan, np.nan)
    return nf


@njit(cache=True)
def _mark(b, s, c, pos, acct):
    """(equity, gross) of book b at bar ``s``'s close."""
    eq = acct[b, L.CASH]
    gross = 0.0
    for i in range(c.shape[1]):
        u = pos[b, i, L.UNITS]
        if u != 0.0:
            eq += u * c[s, i]
            gross += abs(u * c[s, i])
    return eq, gross


@njit(cache=True)
def _exit_level(u, stop, target, o, h, lo, c, intrabar):
    """(price, reason) of a stop or target hit in one bar, or (nan, -1)."""
    if intrabar:
        if u > 0.0:
            if o <= stop:
                return o, L.STOP_LOSS
            if o >= target:
                return o, L.TAKE_PROFIT
            if lo <= stop:
                return stop, L.STOP_LOSS
            if h >= target:
                return target, L.TAKE_PROFIT
        else:
            if o >= stop:
                return o, L.STOP_LOSS
            if o <= target:
                return o, L.TAKE_PROFIT
            if h >= stop:
                return stop, L.STOP_LOSS
            if lo <= target:
                return target, L.TAKE_PROFIT
    else:
        if u > 0.0:
            if c <= stop:
                return c, L.STOP_LOSS
            if c >= target:
                return c, L.TAKE_PROFIT
        else:
            if c >= stop:
                return c, L.STOP_LOSS
            if c <= target:
                return c, L.TAKE_PROFIT
    return np.nan, -1


@njit(cache=True)
def _max_corr(R, pc, cached, hedge, lo, t, i, side, units_after, held_idx, n_held, moments):
    """The correlation of an opening of asset i (``side`` +1 long, -1 short) with the held
    assets ``held_idx[:n_held]`` that sizes it (the design, point 3): the largest |rho|, or
    with ``hedge`` the largest side_i x side_j x rho (a hedge is not cut); 0 with none.

    rho comes from the market's table (``cached``) or is scanned over rows lo..t: each asset's
    window mean and centred sum of squares once a decision (``moments``: mean, sum of squares,
    ready; cleared by the caller), then one pass a pair, the sums of a two-pass scan in its
    order (bit for bit, tested). One call a candidate with the scan written out inside: numba
    brackets each call of a helper that takes arrays and branches with atomic reference-count
    updates, which cost more than a 30-bar pair."""
    n = t - lo + 1
    m = 0.0
    for k in range(n_held):
        j = held_idx[k]
        if j == i:
            continue
        if cached:
            rho = pc[t, i, j]
        elif n < 2:
            rho = 0.0
        else:
            for z in range(2):
                a = i if z == 0 else j
                if moments[2, a] == 0.0:  # once an asset a decision: a call is cheap here
                    moments[0, a], moments[1, a] = _mean_ss(R, lo, t, a)
                    moments[2, a] = 1.0
            mi = moments[0, i]
            mj = moments[0, j]
            sij = 0.0
            for s in range(lo, t + 1):
                sij += (R[s, i] - mi) * (R[s, j] - mj)
            sii = moments[1, i]
            sjj = moments[1, j]
            rho = 0.0 if sii <= 0.0 or sjj <= 0.0 else sij / np.sqrt(sii * sjj)
        if hedge:
            r = rho if (side > 0.0) == (units_after[j] > 0.0) else -rho
        else:
            r = abs(rho)
        if r > m:
            m = r
    return m


@njit(cache=True)
def _opening_notional(equity, conf, base, sizer, min_conf, threshold, m, sigma_i, mean_sigma,
                      target_vol, sqrt_ppy):
    """Notional of an opening (the design, point 3) with confidence ``conf`` and base size
    ``base`` (a share of ``equity``): ``m`` is its correlation with the book (:func:`_max_corr`),
    ``sigma_i`` its volatility, ``mean_sigma`` the mean positive volatility of the market at
    that bar. Scalars only (see :func:`_max_corr`)."""
    conf_f = max(min_conf, conf)
    if sizer == 1:  # fixed fraction
        return equity * base
    if sizer == 0:  # correlation adjusted
        if threshold == np.inf:  # adjustment off
            return equity * base * conf_f
        return equity * base * correlation_factor(m, threshold) * conf_f
    if sizer == 2:  # inverse volatility, relative to the cross-sectional mean volatility
        factor = 1.0
        if sigma_i > 0.0:
            factor = min(mean_sigma / sigma_i, 4.0)
        return equity * base * factor * conf_f
    # volatility target: the position alone has annualised volatility target_volatility
    ann = sigma_i * sqrt_ppy
    if ann <= 0.0:
        return equity * conf_f
    return equity * target_vol / ann * conf_f


@njit(cache=True)
def _before(pa, a, pb, b):
    """Candidate a (priority pa) is taken before b (pb): higher priority, ties by the lower
    place in symbol order (the heap holds places, ``layout.A_RANK``, never columns, so no
    result depends on the order of the assets). Bitwise operators, not ``or`` / ``and``: no
    branch to mispredict."""
    return (pa > pb) | ((pa == pb) & (a < b))


@njit(cache=True)
def _sift_down(heap, hp, k, n):
    """Restore the heap below position k (of n); ``hp[k]`` is the priority of ``heap[k]``."""
    x = heap[k]
    px = hp[k]
    while True:
        c = 2 * k + 1
        if c >= n:
            break
        if c + 1 < n and _before(hp[c + 1], heap[c + 1], hp[c], heap[c]):
            c += 1
        if not _before(hp[c], heap[c], px, x):
            break
        heap[k] = heap[c]
        hp[k] = hp[c]
        k = c
    heap[k] = x
    hp[k] = px


@njit(cache=True)
def _heapify(heap, hp, n):
    """Arrange the candidates ``heap[:n]`` (places in symbol order; their priorities beside
    them in ``hp``, so that sifting needs no indirect loads) as a binary heap whose root is
    the first to take (:func:`_before`). O(n), no allocation. The step pops them in order
    (:func:`_take_first`) and heaps them only when it needs their order: a step that refuses
    every candidate left without looking at it (each fails a rule before sizing) never orders
    them."""
    for k in range(n // 2 - 1, -1, -1):
        _sift_down(heap, hp, k, n)


@njit(cache=True)
def _early_refusal(new, waiting, held, max_positions, pre_check, base, equity, conf_f, side,
                   close, slip, fr, fixed, cash, net, gross, short, m, borrowing):
    """The refusal of an opening before it is sized (0: none; it goes on to the full
    checks): its re-entry wait, the full position cap, and with ``pre_check`` (signals,
    correlation sizing, positions held) the cash or margin rule failed by even half its
    unadjusted size. The correlation factor lies in [0.5, 1], so the opening is at least half
    that size (exactly: a power of two); when even that fails the rule (monotone in |q|), so
    does every size, and the correlation scan is not needed. A function of the candidate and
    the shadow book alone: while the shadow book stays the same, the candidates left can be
    given it in any order."""
    if new and waiting:
        return L.R_REENTRY
    if new and held >= max_positions:
        return L.R_MAX_POSITIONS
    if pre_check:
        q_lo = side * (equity * base * 0.5 * conf_f) / close
        if abs(q_lo) > 0.0 and np.isfinite(q_lo + q_lo):
            px = close * (1.0 + np.sign(q_lo) * slip)
            num, den = _margin_terms(q_lo, close, px, fr, fixed, cash, net, gross, short, m,
                                     borrowing)
            if den >= 0.0 and abs(q_lo) * den - num > 1e-9 * (1.0 + abs(cash)):
                return L.R_CASH if q_lo > 0.0 and not borrowing else L.R_MARGIN
    return 0


@njit(cache=True, inline="always")
def _budget_factor(q, ref, slip, fr, fixed, cash, net, gross, short, m, borrowing):
    """(need, budget) of one opening of ``q`` units valued at ``ref``: what it takes of the
    initial-margin budget of :func:`_margin_terms` (``|q| * den``, its fixed fee apart), and
    that budget before any fixed fee. Openings draw on one budget additively (``num`` falls by
    exactly ``|q| den + fixed`` after each, for longs and shorts, with or without borrowing),
    so a set of openings fits when the sum of their needs and fixed fees does."""
    px = ref * (1.0 + np.sign(q) * slip)
    num, den = _margin_terms(q, ref, px, fr, fixed, cash, net, gross, short, m, borrowing)
    return (abs(q) * den if den > 0.0 else 0.0), num + fixed


@njit(cache=True, inline="always")
def _scale(i, f, q, scaled, count):
    """Scale the order of asset i by ``f``, counting each scaled order once."""
    q[i] *= f
    if scaled[i] == 0.0:
        count[L.C_SCALED] += 1
        scaled[i] = 1.0


@njit(cache=True, inline="always")
def _factor(need, fixed_total, budget, cash):
    """The common factor (< 1) that fits orders needing ``need`` plus their fixed fees into
    ``budget``; 1 when they fit (up to rounding) or when nothing can be bought (the orders
    then meet their own checks one by one)."""
    tol = 1e-9 * (1.0 + abs(cash))
    if need <= 0.0 or need + fixed_total - budget <= tol or budget - fixed_total <= tol:
        return 1.0
    return (budget - fixed_total) / need


@njit(cache=True)
def _pro_rata_targets(heap, hp, n, sorted_c, sorted_p, at_rank, cand, units_after, reentry,
                      t, max_positions, held, close, slip, fr, fixed, cash, net, gross, short,
                      m, borrowing, scaled, count):
    """Weights: order the ``n`` candidates (``heap[:n]``, places in symbol order) by priority
    and leave them sorted in ``heap`` (a sorted array is a heap). Those the re-entry wait and
    the position cap let through (largest targets first, ties by symbol) are scaled together
    when they overdraw (:func:`_pro_rata`): a rebalance that overdraws buys a little less of
    every name, never less of the names that come last. When even all of them fit, nothing is
    ordered (False: the heap is left to the step); else True."""
    for k in range(n):  # every candidate's place turned into its asset, for _needs_of
        sorted_c[k] = int(at_rank[heap[k]])
    need, fixed_total, budget = _needs_of(sorted_c, n, cand, close, t, slip, fr, fixed, cash,
                                          net, gross, short, m, borrowing)
    if need <= 0.0 or need + fixed_total - budget <= 1e-9 * (1.0 + abs(cash)):
        return False  # all fit: the cap only removes purchases, so the ones let through too
        # (not when even the fixed fees of all fail: those let through may fit, scaled)
    _heapify(heap, hp, n)
    left = n
    for k in range(n):
        sorted_p[k] = hp[0]
        sorted_c[k], left = _take_first(heap, hp, left)
    through = 0  # the assets let through, written over sorted_c once its places are copied
    held_now = held
    for k in range(n):
        heap[k] = sorted_c[k]
        hp[k] = sorted_p[k]
        i = int(at_rank[sorted_c[k]])
        new = units_after[i] == 0.0
        if new and (t < reentry[i] or held_now >= max_positions):
            continue  # refused before it is sized: it needs nothing
        if new:
            held_now += 1
        sorted_c[through] = i
        through += 1
    _pro_rata(sorted_c, through, cand, close, t, slip, fr, fixed, cash, net, gross, short, m,
              borrowing, scaled, count)
    return True


@njit(cache=True, inline="always")
def _needs_of(assets, n, q, px, row, slip, fr, fixed, cash, net, gross, short, m,
              borrowing):
    """(need, fixed fees, budget) of the openings of ``assets[:n]`` (units ``q``, valued at
    ``px[row]``) at the book (cash, net, gross, short): :func:`_budget_factor` summed."""
    need = 0.0
    fixed_total = 0.0
    budget = 0.0
    for k in range(n):
        i = assets[k]
        if q[i] != 0.0:
            d, budget = _budget_factor(q[i], px[row, i], slip[i], fr[i], fixed[i], cash, net,
                                       gross, short, m, borrowing)
            need += d
            fixed_total += fixed[i]
    return need, fixed_total, budget


@njit(cache=True, inline="always")
def _factor_of(assets, n, q, px, row, slip, fr, fixed, cash, net, gross, short, m,
               borrowing):
    """The :func:`_factor` of the openings of ``assets[:n]`` (:func:`_needs_of`)."""
    need, fixed_total, budget = _needs_of(assets, n, q, px, row, slip, fr, fixed, cash, net,
                                          gross, short, m, borrowing)
    return _factor(need, fixed_total, budget, cash)


@njit(cache=True)
def _pro_rata(assets, n, q, px, row, slip, fr, fixed, cash, net, gross, short, m, borrowing,
              scaled, count):
    """The openings of ``assets[:n]`` (units ``q``, valued at ``px[row]``): when together they
    need more cash or margin than the book has (:func:`_budget_factor`), each is scaled by one
    factor so that they fit, whatever their order. At the decision for a weights rebalance; at
    the fill for every opening, when the prices moved since the decision."""
    f = _factor_of(assets, n, q, px, row, slip, fr, fixed, cash, net, gross, short, m,
                   borrowing)
    if f < 1.0:
        for k in range(n):
            if q[assets[k]] != 0.0:
                _scale(assets[k], f, q, scaled, count)


@njit(cache=True, inline="always")
def _signal_notional(R, pc, p, sizer, corr_lo, t, i, side, units_after, held_idx, held,
                     moments, equity, conf, base, vol_ti, mean_sigma, sqrt_ppy):
    """The notional of a signal's opening of asset i at the shadow book (held_idx[:held]):
    the correlation with the assets held then (:func:`_max_corr`) and the sizer."""
    m = 0.0
    if sizer == 0 and p[L.P_CORR_THRESHOLD] != np.inf:
        m = _max_corr(R, pc, p[L.P_PAIR_CACHE] > 0.0, p[L.P_CORR_HEDGE] > 0.0, corr_lo, t, i,
                      side, units_after, held_idx, held, moments)
    return _opening_notional(equity, conf, base, sizer, p[L.P_MIN_CONF],
                             p[L.P_CORR_THRESHOLD], m, vol_ti, mean_sigma,
                             p[L.P_TARGET_VOL], sqrt_ppy)


@njit(cache=True)
def _tie_group(r, pr, heap, hp, n_left, members, at_rank, t, reentry, held, max_positions,
               R, pc, p, sizer, corr_lo, cand, units_after, held_idx, moments, equity, confs,
               sl_d, base_risk, vol_t, mean_sigma, sqrt_ppy, c_t, slip, fr, fixed, cash, net,
               gross, short, m, borrowing, tie_scale, scaled, count):
    """Signals: the candidate just taken (place ``r``, priority ``pr``) and those left with
    the same priority are openings of equal conviction. Of them, those the re-entry wait and
    the position cap let through (by symbol), sized at the shadow book as it stands, when
    together they need more cash or margin than it has, each is sized down by one factor
    (``tie_scale``) rather than the last ones being refused: an upper bound of their needs,
    since each one opened can only shrink the next one's correlation factor. True when it
    scaled them."""
    g = 1
    members[0] = r
    for k in range(n_left):
        if hp[k] == pr:
            members[g] = heap[k]
            g += 1
    ranked = np.sort(members[:g])
    need = 0.0
    fixed_total = 0.0
    budget = 0.0
    held_now = held
    through = 0
    for k in range(g):
        i = int(at_rank[ranked[k]])
        if t < reentry[i] or held_now >= max_positions:
            continue  # refused before it is sized
        held_now += 1
        base = p[L.P_RISK_PER_TRADE] / sl_d[i] if base_risk else p[L.P_BASE]
        q = cand[i] * _signal_notional(R, pc, p, sizer, corr_lo, t, i, cand[i], units_after,
                                       held_idx, held, moments, equity, confs[i], base,
                                       vol_t[i], mean_sigma, sqrt_ppy) / c_t[i]
        if abs(q) > 0.0 and np.isfinite(q):
            d, budget = _budget_factor(q, c_t[i], slip[i], fr[i], fixed[i], cash, net, gross,
                                       short, m, borrowing)
            need += d
            fixed_total += fixed[i]
        members[through] = i
        through += 1
    f = _factor(need, fixed_total, budget, cash)
    if f >= 1.0:
        return False
    for k in range(through):
        i = members[k]
        tie_scale[i] = f
        if scaled[i] == 0.0:
            count[L.C_SCALED] += 1
            scaled[i] = 1.0
    return True


@njit(cache=True)
def _equals_left(heap, hp, n, early, at_rank, tie_p):
    """Signals: whether a candidate left that fails the cash or margin rule at half its
    size has an equal (same conviction) left whose group was not sized yet (``tie_p``):
    :func:`_tie_group` may scale them down until they fit, so refusing every candidate left
    at once would be wrong."""
    for k in range(n):
        e = early[int(at_rank[heap[k]])]
        if (e == L.R_CASH or e == L.R_MARGIN) and hp[k] != tie_p:
            for k2 in range(n):
                if k2 != k and hp[k2] == hp[k]:
                    return True
    return False


@njit(cache=True)
def _take_first(heap, hp, n):
    """Pop the first candidate off a heap of ``n`` (:func:`_heapify`): (its place, n - 1).

    Floyd's pop: the hole left at the root moves down along the better children to a leaf
    (one comparison a level, and the better child picked without a branch), then the last
    element sifts up from there (most often not at all). Every heap of a strict total order
    pops the same sequence, so this is the order of a stable sort of ``-prio``."""
    i = heap[0]
    n -= 1
    if n > 0:
        x = heap[n]
        px = hp[n]
        k = 0
        c = 1
        while c < n:
            if c + 1 < n and _before(hp[c + 1], heap[c + 1], hp[c], heap[c]):
                c += 1
            heap[k] = heap[c]
            hp[k] = hp[c]
            k = c
            c = 2 * k + 1
        while k > 0:
            up = (k - 1) // 2
            if not _before(px, x, hp[up], heap[up]):
                break
            heap[k] = heap[up]
            hp[k] = hp[up]
            k = up
        heap[k] = x
        hp[k] = px
    return i, n


@njit(cache=True)
def load_signals(d, cf, dirs, confs):
    """Check (B or 1, N) directions in {-1, 0, 1} and confidences in [0, 1], then copy them
    into the (B, N) buffers (one row broadcast to every book). 0: done; 1: a bad direction;
    2: a bad confidence (NaN included); nothing is copied then."""
    B, N = dirs.shape
    R = d.shape[0]
    for r in range(R):
        for i in range(N):
            x = d[r, i]
            if not (x == -1 or x == 0 or x == 1):
                return 1
            c = cf[r, i]
            if not (c >= 0.0 and c <= 1.0):
                return 2
    for b in range(B):
        r = b if R > 1 else 0
        for i in range(N):
            dirs[b, i] = d[r, i]
            confs[b, i] = cf[r, i]
    return 0


@njit(cache=True)
def book_sizes(B, N, M):
    """Lengths of the float64 and int64 buffers that hold the state of B books of N assets
    (M: ``P_MAX_STEP_BARS``); :func:`book_views` carves them."""
    nf = B * N * L.NPOS + B * L.NACCT + 2 * B * M + B * (4 * N + 1) * L.NFILL + 2 * B * N
    ni = B * L.NCLOCK + B * L.NCOUNT + 2 * B + B * N
    return nf, ni


@njit(cache=True)
def book_views(fbook, ibook, B, N, M):
    """The books' state as views of two buffers (few arguments: each costs dispatch time):
    ``pos, acct, curve, gross_curve, fills, confs, weights`` from ``fbook`` and ``clock,
    count, n_curve, n_fills, refused`` from ``ibook``. The one layout, used by the kernel and
    by :class:`~ffe_gym.portfolio.Portfolio` alike."""
    k = 0
    pos = fbook[k:k + B * N * L.NPOS].reshape((B, N, L.NPOS))
    k += B * N * L.NPOS
    acct = fbook[k:k + B * L.NACCT].reshape((B, L.NACCT))
    k += B * L.NACCT
    curve = fbook[k:k + B * M].reshape((B, M))
    k += B * M
    gross_curve = fbook[k:k + B * M].reshape((B, M))
    k += B * M
    fills = fbook[k:k + B * (4 * N + 1) * L.NFILL].reshape((B, 4 * N + 1, L.NFILL))
    k += B * (4 * N + 1) * L.NFILL
    confs = fbook[k:k + B * N].reshape((B, N))
    k += B * N
    weights = fbook[k:k + B * N].reshape((B, N))
    j = 0
    clock = ibook[j:j + B * L.NCLOCK].reshape((B, L.NCLOCK))
    j += B * L.NCLOCK
    count = ibook[j:j + B * L.NCOUNT].reshape((B, L.NCOUNT))
    j += B * L.NCOUNT
    n_curve = ibook[j:j + B]
    j += B
    n_fills = ibook[j:j + B]
    j += B
    refused = ibook[j:j + B * N].reshape((B, N))
    return (pos, acct, curve, gross_curve, fills, confs, weights, clock, count, n_curve,
            n_fills, refused)


@njit(cache=True)
def step_books(active, scheme, dirs, fbook, ibook, o, h, lo_, c, tradable, R, vol, pc, cov,
               next_dec, per_asset, p):
    """One decision step for every book b with ``active[b]``; see the module docstring.

    The books' state is in ``fbook`` and ``ibook`` (:func:`book_views`); ``vol``, the
    correlations ``pc`` and ``cov`` are market statistics shared by every book
    (:class:`~ffe_gym.portfolio.statistics.MarketStatistics`); ``per_asset`` is
    (``NPER_ASSET``, N): fee rate, fixed fee, slippage, borrow rate, and each asset's place in
    symbol order with its inverse (``layout.A_*``)."""
    B, N = dirs.shape
    (pos, acct, curve, gross_curve, fills, confs, weights, clock, count, n_curve, n_fills,
     refused) = book_views(fbook, ibook, B, N, int(p[L.P_MAX_STEP_BARS]))
    step_range(0, B, active, scheme, (dirs, confs, weights),
               (o, h, lo_, c, tradable, R, vol, pc, cov, next_dec), per_asset, p,
               (pos, acct, clock, count, curve, gross_curve, n_curve, fills, n_fills, refused))


@njit(cache=True)
def step_signal_books(d, cf, active, dirs, fbook, ibook, o, h, lo_, c, tradable, R, vol, pc,
                      cov, next_dec, per_asset, p):
    """:func:`load_signals` of the raw intents ``d``, ``cf`` then :func:`step_books`, in one
    call; the check's code (0: stepped; 1, 2: refused, nothing changed)."""
    B, N = dirs.shape
    (pos, acct, curve, gross_curve, fills, confs, weights, clock, count, n_curve, n_fills,
     refused) = book_views(fbook, ibook, B, N, int(p[L.P_MAX_STEP_BARS]))
    bad = load_signals(d, cf, dirs, confs)  # checks everything before it copies
    if bad != 0:
        return bad
    step_range(0, B, active, SIGNALS, (dirs, confs, weights),
               (o, h, lo_, c, tradable, R, vol, pc, cov, next_dec), per_asset, p,
               (pos, acct, clock, count, curve, gross_curve, n_curve, fills, n_fills, refused))
    return 0


@njit(cache=True, parallel=True)
def step_books_threaded(n_chunks, active, scheme, dirs, fbook, ibook, o, h, lo_, c,
                        tradable, R, vol, pc, cov, next_dec, per_asset, p):
    """``step_books`` with the books split into ``n_chunks`` contiguous ranges stepped on
    numba's threads. Books share nothing but read-only market data, so the result is the
    serial one, bit for bit (each range has its own scratch)."""
    B, N = dirs.shape
    (pos, acct, curve, gross_curve, fills, confs, weights, clock, count, n_curve, n_fills,
     refused) = book_views(fbook, ibook, B, N, int(p[L.P_MAX_STEP_BARS]))
    intents = (dirs, confs, weights)
    market = (o, h, lo_, c, tradable, R, vol, pc, cov, next_dec)
    books = (pos, acct, clock, count, curve, gross_curve, n_curve, fills, n_fills, refused)
    for k in prange(n_chunks):
        step_range(k * B // n_chunks, (k + 1) * B // n_chunks, active, scheme, intents, market,
                   per_asset, p, books)


@njit(cache=True)
def step_range(b0, b1, active, scheme, intents, market, per_asset, p, books):
    """Step books b0..b1-1 (those with ``active[b]``): the decision step of the module
    docstring, one book after another.

    :param intents: ``(dirs, confs, weights)``, (B, N) each.
    :param market: ``(open, high, low, close, tradable, returns, vol, pairs, cov,
        next_decision)``: the panel and its shared statistics, read only.
    :param per_asset: (``NPER_ASSET``, N) costs and symbol places (``layout.A_*``).
    :param p: the parameter vector (``layout.P_*``).
    :param books: ``(pos, acct, clock, count, curve, gross_curve, n_curve, fills, n_fills,
        refused)``, the books' state (:func:`book_views`), written in place.

    The step is this loop's body, in four phases marked ``# ---- 1.`` to ``4.`` in the
    specification's order (:mod:`.specification`: intents, the shadow book and its limits,
    fills, the bars to the next decision), not functions called per book: a numba call with
    the arrays of a book step costs more than a flat book's whole step, and phases written as
    functions taking these structures were measured slower at 256 books (numba counts a
    reference of every array a function takes or unpacks, per book; figures in issue 30's
    note). The structures are unpacked once a call, here."""
    dirs, confs, weights = intents
    o, h, lo_, c, tradable, R, vol, pc, cov, next_dec = market
    pos, acct, clock, count, curve, gross_curve, n_curve, fills, n_fills, refused = books
    fee_rate = per_asset[L.A_FEE_RATE]
    fixed_fee = per_asset[L.A_FIXED_FEE]
    slip = per_asset[L.A_SLIPPAGE]
    borrow = per_asset[L.A_BORROW_RATE]
    rank = per_asset[L.A_RANK]  # the heap holds places in symbol order, not columns
    at_rank = per_asset[L.A_AT_RANK]
    vslip = p[L.P_VOL_SLIPPAGE]
    m_init = p[L.P_INIT_MARGIN]
    sqrt_ppy = np.sqrt(p[L.P_PERIODS_PER_YEAR])
    N = c.shape[1]
    work = np.empty((16, N))
    vwork = np.empty((2, max(int(p[L.P_VAR_WINDOW]), 1)))
    # held assets (shadow book); openings in order; candidates; positions after the fills;
    # closing legs; the candidates' early refusals
    iwork = np.empty((7, N), dtype=np.int64)
    # scratch rows (books are stepped one after another, so one set serves all)
    close_q = work[0]
    cand = work[1]  # signals: direction of the opening; weights: units to add
    hp = work[2]  # the priorities of the candidates in heap, beside them
    units_after = work[3]
    open_q = work[4]
    sl_d = work[6]  # stop distance of an opening, fraction of entry (NaN: none)
    tp_d = work[7]
    scaled = work[8]  # 1: this order was already counted as scaled down
    held_w = work[9]  # shared covariance: the shadow book's weights
    moments = work[10:13]  # scanned correlations: window mean, sum of squares, ready
    slip_fb = work[13]  # slippage of a fill at the decision's fill bar
    sorted_p = work[14]  # weights: the candidates' priorities, in their order
    tie_scale = work[15]  # signals: the factor of an opening sized with its equals
    tie_scale[:] = 1.0  # (reset after a book step that scaled a group, not at every step)
    series = vwork[0]  # per-bar returns of the shadow book over the VaR window, built lazily
    trial = vwork[1]
    held_idx = iwork[0]  # the shadow book's held assets, in the order they were seen
    order = iwork[1]  # the openings by priority
    heap = iwork[2]  # the candidates not yet taken, a heap by priority
    live = iwork[3]  # the assets held after the decision's fills, ascending (a superset later)
    closes = iwork[4]  # the assets with a closing leg, ascending
    early = iwork[5]  # signals: each candidate's _early_refusal at the current shadow book
    sorted_c = iwork[6]  # weights: the candidates in order; signals: a group of equals
    for b in range(b0, b1):
        n_fills[b] = 0
        n_curve[b] = 0
        if not active[b]:
            continue
        refused[b, :] = 0
        if clock[b, L.STATUS] != L.RUNNING:
            continue
        t = clock[b, L.BAR]
        end = clock[b, L.END]
        clock[b, L.CALLED] = 0
        if t >= end:
            clock[b, L.STATUS] = L.ENDED
            continue
        t_next = min(next_dec[t], end)
        horizon = var_horizon(p, t, t_next)
        equity = acct[b, L.EQUITY]
        next_open = p[L.P_NEXT_OPEN] > 0.0
        fb = t + 1 if next_open else t
        nf = 0
        vb = fb - 1 if fb >= 1 else 0  # the volatility row before the fill bar (unused below 2)

        # ---- 1. intents -> closing legs and opening candidates (both listed in asset order: the
        # candidates in heap[:n_cands], their priorities beside them in hp). Specification:
        # read_intents
        n_cands = 0
        n_closes = 0
        for i in range(N):  # the scratch rows are reset as the intents are read
            u = pos[b, i, L.UNITS]
            scaled[i] = 0.0
            close_q[i] = 0.0
            cand[i] = 0.0
            open_q[i] = 0.0
            units_after[i] = u
            moments[2, i] = 0.0
            if scheme == WEIGHTS:
                wt = weights[b, i]
                if np.isnan(wt):
                    continue
                if abs(wt) < WEIGHT_TOL:  # solver residue is not a decision
                    wt = 0.0
                tu = wt * equity / c[t, i]
                if tu < 0.0 and p[L.P_ALLOW_SHORT] == 0.0:
                    refused[b, i] = L.R_NO_SHORTING  # the short part: refused
                    count[b, L.R_NO_SHORTING] += 1
                    tu = 0.0  # a held long is still closed
                if abs(tu - u) * c[t, i] <= WEIGHT_TOL * abs(equity):
                    continue  # already there, up to rounding: no dust trades
                if not tradable[fb, i]:
                    refused[b, i] = L.R_NOT_TRADABLE
                    count[b, L.R_NOT_TRADABLE] += 1
                    continue
                # (read only for an asset that trades: a closing leg or a candidate)
                slip_fb[i] = _slippage(slip[i], vslip, fb, vol[vb, i])
                if u != 0.0 and (tu == 0.0 or (tu > 0.0) != (u > 0.0)):
                    close_q[i] = -u
                    closes[n_closes] = i
                    n_closes += 1
                    units_after[i] = 0.0
                    if tu != 0.0:
                        cand[i] = tu
                        heap[n_cands] = int(rank[i])
                        hp[n_cands] = abs(wt)
                        n_cands += 1
                elif u != 0.0 and abs(tu) < abs(u):
                    if abs(tu) * c[t, i] <= WEIGHT_TOL * abs(equity):
                        tu = 0.0  # a reduction that would leave dust closes the position
                    close_q[i] = tu - u
                    closes[n_closes] = i
                    n_closes += 1
                    units_after[i] = tu
                else:
                    cand[i] = tu - u
                    heap[n_cands] = int(rank[i])
                    hp[n_cands] = abs(wt)
                    n_cands += 1
            else:
                d = dirs[b, i]
                if d == 0 or (d > 0 and u > 0.0) or (d < 0 and u < 0.0):
                    continue  # HOLD, BUY long, SELL short: keep
                if not tradable[fb, i]:
                    refused[b, i] = L.R_NOT_TRADABLE
                    count[b, L.R_NOT_TRADABLE] += 1
                    continue
                slip_fb[i] = _slippage(slip[i], vslip, fb, vol[vb, i])
                if u != 0.0:  # BUY while short, SELL while long: close
                    close_q[i] = -u
                    closes[n_closes] = i
                    n_closes += 1
                    units_after[i] = 0.0
                if d > 0 or u == 0.0:  # BUY -> long; SELL flat -> short if allowed
                    if d < 0 and p[L.P_ALLOW_SHORT] == 0.0:
                        refused[b, i] = L.R_NO_SHORTING
                        count[b, L.R_NO_SHORTING] += 1
                        continue
                    cand[i] = d
                    heap[n_cands] = int(rank[i])
                    hp[n_cands] = confs[b, i]
                    n_cands += 1

        # ---- 2. shadow book at the decision bar's close: check each opening against every limit
        # (specification: shadow_after_closes, take_openings, check_opening)
        cash_est = acct[b, L.CASH]
        held = 0
        gross = 0.0
        short = 0.0
        net = 0.0  # signed value of the shadow book: equity estimate = cash_est + net
        borrowing = p[L.P_BORROWING] > 0.0
        any_candidate = n_cands > 0
        for i in range(N):
            q = close_q[i]
            if q != 0.0:
                px = c[t, i] * (1.0 + np.sign(q) * slip_fb[i])
                cash_est -= q * px + _fee(q, px, fee_rate[i], fixed_fee[i])
            if units_after[i] != 0.0:
                held_idx[held] = i
                held += 1
                v = abs(units_after[i]) * c[t, i]
                gross += v
                net += units_after[i] * c[t, i]
                if units_after[i] < 0.0:
                    short += v
        held_closed = held  # held_idx[:held_closed]: the positions left after the closing legs
        var_on = p[L.P_MAX_VAR] < np.inf and any_candidate
        vlo = _window_start(t, int(p[L.P_VAR_WINDOW]))
        nv = t - vlo + 1 if t >= 1 else 0
        series_ready = False
        shared_cov = p[L.P_SHARED_COV] > 0.0 and p[L.P_VAR_HISTORICAL] == 0.0
        quad = 0.0
        trial_quad = 0.0
        sizer = int(p[L.P_SIZER])
        mean_sigma = 0.0  # inverse volatility: the mean of the positive volatilities at t
        if scheme == SIGNALS and sizer == 2 and any_candidate:
            n_sigma = 0
            for i in range(N):
                if vol[t, i] > 0.0:
                    mean_sigma += vol[t, i]
                    n_sigma += 1
            mean_sigma = mean_sigma / n_sigma if n_sigma > 0 else 0.0
        corr_lo = _window_start(t, int(p[L.P_CORR_WINDOW]))
        stop_vol = p[L.P_STOP_VOL] > 0.0
        if stop_vol and any_candidate:
            for k in range(n_cands):
                i = int(at_rank[heap[k]])
                scale = vol[t, i] * np.sqrt(p[L.P_STOP_HORIZON])
                sl_d[i] = p[L.P_STOP_LOSS] * scale if scale > 0.0 else np.nan
                tp_d[i] = p[L.P_TAKE_PROFIT] * scale if scale > 0.0 else np.nan
        else:
            sl_d[:] = p[L.P_STOP_LOSS]
            tp_d[:] = p[L.P_TAKE_PROFIT]
        n_cand = 0  # the candidates taken so far, by priority: order[:n_cand]
        if clock[b, L.COOLDOWN] > 0 or clock[b, L.WAITING] > 0:  # after a portfolio stop
            for k in range(n_cands):
                i = int(at_rank[heap[k]])
                refused[b, i] = L.R_COOLDOWN
                count[b, L.R_COOLDOWN] += 1
            n_left = 0
        else:
            n_left = n_cands
        corr_on = sizer == 0 and p[L.P_CORR_THRESHOLD] != np.inf
        base_risk = stop_vol and p[L.P_BASE_RISK] > 0.0
        max_positions = p[L.P_MAX_POSITIONS]
        # signals: how many candidates left pass _early_refusal at the current shadow book
        # (-1: not counted since it last changed); none: every one left is refused, in any order
        # (a full position cap among them: a signal opens from flat only, so each candidate is
        # a new position and gets its re-entry wait or the cap), unless a group of equals left
        # may be sized down until it fits (_equals_left): then they are taken one by one
        n_pass = -1
        shortcut = True  # signals: may refuse every candidate left at once (n_pass == 0)
        heaped = False
        tie_p = -1.0  # signals: the conviction whose equals were last looked at
        tied = False  # signals: a group of equals was scaled (tie_scale to reset)
        if scheme == WEIGHTS and n_left > 0:  # purchases that overdraw are scaled pro rata
            # (sorted when it scales: a sorted array is a heap already)
            heaped = _pro_rata_targets(heap, hp, n_left, sorted_c, sorted_p, at_rank, cand,
                                       units_after, pos[b, :, L.REENTRY], t, max_positions,
                                       held, c, slip_fb, fee_rate, fixed_fee, cash_est,
                                       net, gross, short, m_init, borrowing, scaled, count[b])
        while n_left > 0:
            pre_check = scheme == SIGNALS and corr_on and held > 0 and equity > 0.0
            if scheme == SIGNALS:
                if n_pass < 0:  # every candidate left, at this shadow book: early[i]
                    n_pass = 0
                    for k in range(n_left):
                        i = int(at_rank[heap[k]])
                        base = p[L.P_RISK_PER_TRADE] / sl_d[i] if base_risk else p[L.P_BASE]
                        early[i] = _early_refusal(
                            units_after[i] == 0.0, t < pos[b, i, L.REENTRY], held,
                            max_positions, pre_check, base * tie_scale[i], equity,
                            max(p[L.P_MIN_CONF], confs[b, i]), cand[i], c[t, i], slip_fb[i],
                            fee_rate[i], fixed_fee[i], cash_est, net, gross, short, m_init,
                            borrowing)
                        if early[i] == 0:
                            n_pass += 1
                if n_pass == 0 and shortcut and _equals_left(heap, hp, n_left, early, at_rank,
                                                             tie_p):
                    shortcut = False  # a group of equals is sized down first: one by one
                if n_pass == 0 and shortcut:
                    for k in range(n_left):
                        i = int(at_rank[heap[k]])
                        refused[b, i] = early[i]
                        count[b, early[i]] += 1
                    break
            if not heaped:
                _heapify(heap, hp, n_left)
                heaped = True
            pr = hp[0]
            r, n_left = _take_first(heap, hp, n_left)
            i = int(at_rank[r])
            order[n_cand] = i
            n_cand += 1
            new = units_after[i] == 0.0
            base = p[L.P_RISK_PER_TRADE] / sl_d[i] if base_risk else p[L.P_BASE]
            if scheme == SIGNALS and pr != tie_p:  # the first of a new level of conviction
                tie_p = pr
                if n_left > 0 and hp[0] == pr and _tie_group(
                        r, pr, heap, hp, n_left, sorted_c, at_rank, t, pos[b, :, L.REENTRY],
                        held, max_positions, R, pc, p, sizer, corr_lo, cand, units_after,
                        held_idx, moments, equity, confs[b], sl_d, base_risk, vol[t],
                        mean_sigma, sqrt_ppy, c[t], slip_fb, fee_rate, fixed_fee, cash_est,
                        net, gross, short, m_init, borrowing, tie_scale, scaled, count[b]):
                    n_pass = -1  # its equals' early refusals at their scaled sizes, again
                    tied = True
                    early[i] = _early_refusal(new, t < pos[b, i, L.REENTRY], held,
                                              max_positions, pre_check, base * tie_scale[i],
                                              equity, max(p[L.P_MIN_CONF], confs[b, i]),
                                              cand[i], c[t, i], slip_fb[i], fee_rate[i],
                                              fixed_fee[i], cash_est, net, gross, short,
                                              m_init, borrowing)
            # (NaN without volatility: zero_size). Signals: counted at this shadow book above
            if scheme == SIGNALS:
                reason = early[i]
            else:
                reason = _early_refusal(new, t < pos[b, i, L.REENTRY], held, max_positions,
                                        False, base, equity, 0.0, cand[i], c[t, i], slip_fb[i],
                                        fee_rate[i], fixed_fee[i], cash_est, net, gross, short,
                                        m_init, borrowing)
            if reason != 0:
                refused[b, i] = reason
                count[b, reason] += 1
                continue
            n_pass -= 1  # (signals: one fewer left that passes; it may still be refused below)
            if scheme == WEIGHTS:
                q = cand[i]
            else:
                q = cand[i] * tie_scale[i] * _signal_notional(
                    R, pc, p, sizer, corr_lo, t, i, cand[i], units_after, held_idx, held,
                    moments, equity, confs[b, i], base, vol[t, i], mean_sigma,
                    sqrt_ppy) / c[t, i]
            if not (abs(q) > 0.0 and np.isfinite(q)) or equity <= 0.0:
                refused[b, i] = L.R_ZERO_SIZE
                count[b, L.R_ZERO_SIZE] += 1
                continue
            px = c[t, i] * (1.0 + np.sign(q) * slip_fb[i])
            num, den = _margin_terms(q, c[t, i], px, fee_rate[i], fixed_fee[i], cash_est, net,
                                     gross, short, m_init, borrowing)
            if abs(q) * den - num > 1e-9 * (1.0 + abs(cash_est)):  # rounding is not a shortfall
                # (nor is it room: what is left within rounding of nothing buys nothing)
                room = num / den if den > 0.0 and num > 1e-9 * (1.0 + abs(cash_est)) else 0.0
                if scheme == WEIGHTS and room > 0.0:  # (rounding after the pro-rata scaling)
                    q = room if q > 0.0 else -room
                    if scaled[i] == 0.0:
                        count[b, L.C_SCALED] += 1
                    scaled[i] = 1.0
                else:
                    reason = L.R_CASH if q > 0.0 and not borrowing else L.R_MARGIN
                    refused[b, i] = reason
                    count[b, reason] += 1
                    continue
            add = abs(q) * c[t, i]
            # (caps up to rounding: a book at exactly its cap is within it, whatever the order
            # its sums were added in)
            if q < 0.0 and short + add > p[L.P_SHORT_CAP] * equity * (1.0 + 1e-9):
                refused[b, i] = L.R_SHORT_CAP
                count[b, L.R_SHORT_CAP] += 1
                continue
            if gross + add > p[L.P_GROSS_CAP] * equity * (1.0 + 1e-9):
                refused[b, i] = L.R_GROSS_CAP
                count[b, L.R_GROSS_CAP] += 1
                continue
            if var_on and shared_cov:  # w' S w from the market's covariance of the VaR window
                w = q * c[t, i] / equity
                if not series_ready:
                    quad = 0.0
                    for j in range(N):
                        held_w[j] = units_after[j] * c[t, j] / equity if units_after[j] != 0.0 \
                            else 0.0
                    for j in range(N):
                        if held_w[j] != 0.0:
                            for k in range(N):
                                if held_w[k] != 0.0:
                                    quad += held_w[j] * held_w[k] * cov[t, j, k]
                    series_ready = True
                cross = 0.0
                for j in range(N):
                    if held_w[j] != 0.0 and j != i:
                        cross += held_w[j] * cov[t, i, j]
                wi = held_w[i] + w  # a top-up of a held asset (weights scheme) included
                trial_quad = quad + 2.0 * (wi - held_w[i]) * cross + \
                    (wi * wi - held_w[i] * held_w[i]) * cov[t, i, i]
                v = 0.0
                if nv >= 2 and trial_quad > 0.0:
                    v = p[L.P_VAR_Z] * np.sqrt(trial_quad * horizon)
                if v > p[L.P_MAX_VAR]:
                    refused[b, i] = L.R_VAR
                    count[b, L.R_VAR] += 1
                    continue
                quad = trial_quad
                held_w[i] = wi
            elif var_on:
                if not series_ready:
                    series[:nv] = 0.0
                    for j in range(N):
                        if units_after[j] != 0.0:
                            wj = units_after[j] * c[t, j] / equity
                            for s in range(nv):
                                series[s] += wj * R[vlo + s, j]
                    series_ready = True
                w = q * c[t, i] / equity
                if p[L.P_VAR_HISTORICAL] > 0.0:
                    for s in range(nv):
                        trial[s] = series[s] + w * R[vlo + s, i]
                    v = _var(trial, nv, p, horizon)
                else:  # parametric: one pass over the window
                    v = _parametric_trial(series, nv, R, vlo, i, w, p[L.P_VAR_Z], horizon)
                if v > p[L.P_MAX_VAR]:
                    refused[b, i] = L.R_VAR
                    count[b, L.R_VAR] += 1
                    continue
                for s in range(nv):
                    series[s] += w * R[vlo + s, i]
            open_q[i] = q
            units_after[i] += q
            n_pass = -1  # the shadow book changed: count again
            if new:
                held_idx[held] = i
                held += 1
            gross += add
            net += q * c[t, i]
            if q < 0.0:
                short += add
            cash_est -= q * px + _fee(q, px, fee_rate[i], fixed_fee[i])

        if tied:  # the sizes are taken: the next book starts from 1 again
            tie_scale[:] = 1.0

        # ---- 3. fills: closing legs first, then openings in priority order (specification:
        # fill_decision)
        for k in range(n_closes):
            i = closes[k]
            q = close_q[i]
            ref = o[fb, i] if next_open else c[t, i]
            px = ref * (1.0 + np.sign(q) * slip_fb[i])
            nf = _fill(pos, acct, fills, b, nf, fb, i, q, px, fee_rate[i], fixed_fee[i],
                       L.SIGNAL, np.nan, np.nan)
        fnet = 0.0  # the book at the fill prices, for the margin check repeated at the fill
        fgross = 0.0
        fshort = 0.0
        for k in range(held_closed):  # the positions after the closing legs, ascending
            i = held_idx[k]
            u = pos[b, i, L.UNITS]
            if u != 0.0:
                v = u * (o[fb, i] if next_open else c[t, i])
                fnet += v
                fgross += abs(v)
                if u < 0.0:
                    fshort -= v
        if next_open and n_cand > 0:  # prices moved since the decision: scale pro rata
            _pro_rata(order, n_cand, open_q, o, fb, slip_fb, fee_rate, fixed_fee,
                            acct[b, L.CASH], fnet, fgross, fshort, m_init, borrowing, scaled,
                            count[b])
        for k in range(n_cand):
            i = order[k]
            q = open_q[i]
            if q == 0.0:
                continue
            ref = o[fb, i] if next_open else c[t, i]
            px = ref * (1.0 + np.sign(q) * slip_fb[i])
            cash = acct[b, L.CASH]
            num, den = _margin_terms(q, ref, px, fee_rate[i], fixed_fee[i], cash, fnet, fgross,
                                     fshort, m_init, borrowing)
            if abs(q) * den - num > 1e-9 * (1.0 + abs(cash)):
                room = num / den if den > 0.0 and num > 1e-9 * (1.0 + abs(cash)) else 0.0
                if room <= 0.0:
                    refused[b, i] = L.R_CASH_AT_FILL
                    count[b, L.R_CASH_AT_FILL] += 1
                    continue
                q = room if q > 0.0 else -room
                if scaled[i] == 0.0:  # one scaled order counts once
                    count[b, L.C_SCALED] += 1
            nf = _fill(pos, acct, fills, b, nf, fb, i, q, px, fee_rate[i], fixed_fee[i],
                       L.SIGNAL, sl_d[i], tp_d[i])
            fnet += q * ref
            fgross += abs(q) * ref
            if q < 0.0:
                fshort -= q * ref

        # ---- 4. the bars up to the next decision: exits, marking, portfolio stop, ruin
        # (specification: run_bars)
        intrabar = p[L.P_INTRABAR] > 0.0
        per_bar_borrow = 1.0 / p[L.P_PERIODS_PER_YEAR]
        m_maint = p[L.P_MAINT_MARGIN]
        n_live = 0  # positions only close from here to the next decision: the exits and the
        for i in range(N):  # marking visit these, in ascending order as a scan over N would
            if pos[b, i, L.UNITS] != 0.0:
                live[n_live] = i
                n_live += 1
        j = 0
        for s in range(t + 1, t_next + 1):
            ended = False
            for k in range(n_live):
                i = live[k]
                u = pos[b, i, L.UNITS]
                if u == 0.0 or not tradable[s, i]:
                    continue
                if pos[b, i, L.PENDING] > 0.0:  # the portfolio stop's sale, at the first real open
                    px = o[s, i] * (1.0 - np.sign(u) * _slippage(slip[i], vslip, s, vol[s - 1, i]))
                    nf = _fill(pos, acct, fills, b, nf, s, i, -u, px, fee_rate[i], fixed_fee[i],
                               L.PORTFOLIO_STOP, np.nan, np.nan)
                    pos[b, i, L.PENDING] = 0.0
                    clock[b, L.WAITING] -= 1
                    if clock[b, L.WAITING] == 0 and clock[b, L.STOP_WAIT] > 0:
                        ended = True  # a terminating stop has sold its last position
                    continue
                level, why = _exit_level(u, pos[b, i, L.STOP], pos[b, i, L.TARGET],
                                         o[s, i], h[s, i], lo_[s, i], c[s, i], intrabar)
                if why >= 0:
                    px = level * (1.0 - np.sign(u) * _slippage(slip[i], vslip, s, vol[s - 1, i]))
                    nf = _fill(pos, acct, fills, b, nf, s, i, -u, px, fee_rate[i], fixed_fee[i],
                               why, np.nan, np.nan)
                    pos[b, i, L.REENTRY] = s + p[L.P_REENTRY]
            eq = acct[b, L.CASH]
            gross = 0.0
            short = 0.0
            for k in range(n_live):
                i = live[k]
                u = pos[b, i, L.UNITS]
                if u != 0.0:
                    v = u * c[s, i]
                    eq += v
                    gross += abs(v)
                    if u < 0.0:
                        short -= v
                        if borrow[i] > 0.0:
                            charge = -v * borrow[i] * per_bar_borrow
                            acct[b, L.CASH] -= charge
                            pos[b, i, L.BORROW] += charge
                            eq -= charge
            if acct[b, L.CASH] < 0.0 and p[L.P_MARGIN_RATE] > 0.0 and gross > 0.0:
                # interest on borrowed cash, charged to the positions it finances by value
                charge = -acct[b, L.CASH] * p[L.P_MARGIN_RATE] * per_bar_borrow
                acct[b, L.CASH] -= charge
                eq -= charge
                for i in range(N):
                    u = pos[b, i, L.UNITS]
                    if u != 0.0:
                        pos[b, i, L.BORROW] += charge * abs(u * c[s, i]) / gross
            # the maintenance margin, as _margin_call computes it (its equity up to rounding):
            # called only when the rule could bind, since a call costs reference counts
            need = eq - m_maint * gross if borrowing else acct[b, L.CASH] - short * (1.0 + m_maint)
            if gross > 0.0 and need < 1e-9 * (1.0 + abs(eq) + gross):
                k0 = nf
                nf = _margin_call(b, s, c, tradable, vol, fee_rate, fixed_fee, slip, p, pos,
                                  acct, clock, count, fills, nf)
                if nf != k0:
                    eq, gross = _mark(b, s, c, pos, acct)
            if clock[b, L.COOLDOWN] > 0:
                clock[b, L.COOLDOWN] -= 1
            if eq > acct[b, L.PEAK]:
                acct[b, L.PEAK] = eq
            ref = acct[b, L.BASE] if p[L.P_DD_FROM_INITIAL] > 0.0 else acct[b, L.PEAK]
            if eq < ref * (1.0 - p[L.P_MAX_DRAWDOWN]) and clock[b, L.WAITING] == 0:
                for i in range(N):
                    u = pos[b, i, L.UNITS]
                    if u == 0.0:
                        continue
                    if tradable[s, i]:
                        sl = _slippage(slip[i], vslip, s, vol[s - 1, i])
                        px = c[s, i] * (1.0 - np.sign(u) * sl)
                        nf = _fill(pos, acct, fills, b, nf, s, i, -u, px, fee_rate[i],
                                   fixed_fee[i], L.PORTFOLIO_STOP, np.nan, np.nan)
                    else:  # a closed market: never sold at its carried close; at its next open
                        pos[b, i, L.PENDING] = 1.0
                        clock[b, L.WAITING] += 1
                        count[b, L.C_PENDING] += 1
                eq, gross = _mark(b, s, c, pos, acct)  # a closed market's: its carried close
                if p[L.P_STOP_FLAT] > 0.0:
                    clock[b, L.COOLDOWN] = int(p[L.P_COOLDOWN])
                    acct[b, L.PEAK] = eq
                    acct[b, L.BASE] = eq  # the reference after a flat stop: from here on
                elif clock[b, L.WAITING] > 0:
                    clock[b, L.STOP_WAIT] = 1  # ends once the closed markets are sold
                else:
                    clock[b, L.STATUS] = L.STOPPED
            if ended:
                clock[b, L.STATUS] = L.STOPPED
            if eq <= p[L.P_RUIN] and clock[b, L.STATUS] == L.RUNNING:
                nf = _liquidate(b, s, c, tradable, vol, fee_rate, fixed_fee, slip, p, pos, acct,
                                fills, nf, L.RUIN)
                eq, gross = _mark(b, s, c, pos, acct)
                clock[b, L.STATUS] = L.RUINED
            acct[b, L.EQUITY] = eq
            acct[b, L.GROSS] = gross
            clock[b, L.BAR] = s
            curve[b, j] = eq
            gross_curve[b, j] = gross
            j += 1
            if clock[b, L.STATUS] != L.RUNNING:
                break
        n_curve[b] = j
        n_fills[b] = nf
        if clock[b, L.STATUS] == L.RUNNING and clock[b, L.BAR] >= end:
            clock[b, L.STATUS] = L.ENDED


fresh_cache(globals())  # the compiled code on disk must come from these sources (jit_cache)
