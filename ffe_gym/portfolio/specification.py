"""The decision step in plain Python: the specification of the engine's rules.

This module says what one decision step of one book does, rule by rule, in the order of
:mod:`ffe_gym.portfolio.kernel`'s docstring. It is the documentation of the rules, written to
be read top to bottom; the compiled kernel is the implementation, and
``tests/test_specification.py`` checks that the two agree on every fill, refusal, count,
cash, position, equity and attribution over generated markets, configurations and actions.
It is never used in the step path (it runs at Python speed, thousands of times slower).

A step of book b at decision bar t (its last seen close), for the next decision bar t':

1. **Intents** (:func:`read_intents`): a target weight or a signal per asset becomes a
   closing leg (never refused) and an opening candidate with a priority (|target weight|, or
   the signal's confidence). Assets whose market is closed at the fill bar, and shorts where
   shorting is off, are refused here.
2. **The shadow book** (:class:`Shadow`): the book after the closing legs, at t's closes with
   their slippage and fees: every limit is checked against it, and each opening that passes is
   added to it before the next is looked at.
3. **Openings, ranked** (:func:`ranked`): by descending priority, ties by the symbol's place
   in sorted order, never by column.
4. **Limits**, for each opening in that order (:func:`check_opening`): the cooldown after a
   portfolio stop, the re-entry wait after a stop or target exit, ``max_positions``, the size
   (:func:`opening_units`: a zero or non-finite size is refused), cash or initial margin
   (:func:`margin_terms`), the short cap, the gross cap, the VaR limit (:func:`var_of`). A
   refusal is counted with its reason and changes nothing. Openings that together overdraw
   are scaled by one factor first: a weights rebalance (:func:`scale_rebalance`), signals of
   equal conviction (:func:`scale_equals`).
5. **Fills** (:func:`fill_decision`): closing legs, then openings in priority order, at t's
   close or at the next bar's open, with adverse slippage and fees (:func:`fill`); at the next
   open the cash check is repeated and the openings scaled down together rather than
   overdrawing.
6. **The bars up to t'** (:func:`run_bars`), each in this order: a pending portfolio-stop sale
   at its market's first real open, stop-loss and take-profit exits (:func:`exit_level`),
   marking, borrow on shorts, interest on negative cash, the maintenance margin
   (:func:`margin_call`), the cooldown's countdown, the peak, the portfolio drawdown stop
   (:func:`drawdown_stop`), ruin.

Attribution is kept per asset as the fills happen: realised P&L on fill prices, fees, borrow
charges, closing trades, wins (net of their fees and their share of the entry fees), gross
wins and losses; unrealised P&L is ``units x (close - entry)``.

Statistics (volatility, correlation, VaR) are computed here from their definitions over the
returns window ending at bar t, where the kernel reads tables shared by every book
(:mod:`ffe_gym.portfolio.statistics`) or scans, whichever is faster: the differential test
runs both of the kernel's paths against these definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from ffe_gym.config import Config
from ffe_gym.data.calendar import decision_bars
from ffe_gym.data.market import MarketData, symbol_ranks
from ffe_gym.portfolio import layout as L
from ffe_gym.portfolio.book import build_costs, ruin_floor, simple_returns

TOL = 1e-9  # rounding is neither a shortfall nor room: the tolerance of every money check
WEIGHT_TOL = 1e-9  # weights: a target or change below this share of equity is no trade
NAN = math.nan


def sign(x: float) -> float:
    return 1.0 if x > 0.0 else (-1.0 if x < 0.0 else 0.0)


# ------------------------------------------------------------------ the rules, from a config
@dataclass(frozen=True)
class Rules:
    """The config's numbers the step reads, with "off" as None (or inf for a count)."""

    initial: float
    max_positions: float
    corr_threshold: float | None
    corr_window: int
    hedge_aware: bool
    max_var: float | None
    var_historical: bool
    var_window: int
    var_z: float
    var_tail: float
    var_horizon: int | None
    max_drawdown: float | None
    sizer: str
    base_risk: bool
    risk_per_trade: float
    min_conf: float
    vol_window: int
    target_vol: float
    stop_loss: float | None
    take_profit: float | None
    stop_by_volatility: bool
    stop_horizon: float
    intrabar: bool
    next_open: bool
    allow_short: bool
    short_cap: float | None
    gross_cap: float | None
    dd_from_initial: bool
    stop_flat: bool
    cooldown: int
    ruin: float
    vol_slippage: float
    periods_per_year: float
    reentry: int
    init_margin: float
    maint_margin: float
    borrowing: bool
    margin_rate: float
    fee_rate: np.ndarray
    fixed_fee: np.ndarray
    slippage: np.ndarray
    borrow_rate: np.ndarray

    @classmethod
    def of(cls, config: Config, market: MarketData, next_decision: np.ndarray) -> Rules:
        pf, sz, rk, ex = config.portfolio, config.sizing, config.risk, config.execution
        steps = next_decision - np.arange(market.n_bars)
        steps = steps[steps > 0]
        costs = build_costs(config, market)
        return cls(
            initial=pf.initial_balance,
            max_positions=math.inf if pf.max_positions is None else pf.max_positions,
            corr_threshold=pf.correlation_threshold, corr_window=pf.correlation_window,
            hedge_aware=pf.correlation_mode == "hedge_aware", max_var=pf.max_portfolio_risk,
            var_historical=rk.var_method == "historical", var_window=rk.var_window,
            var_z=NormalDist().inv_cdf(rk.var_confidence), var_tail=1.0 - rk.var_confidence,
            var_horizon=rk.var_horizon_bars, max_drawdown=pf.max_drawdown,
            sizer=pf.position_sizing, base_risk=sz.base == "risk",
            risk_per_trade=sz.risk_per_trade, min_conf=sz.min_confidence_factor,
            vol_window=sz.volatility_window, target_vol=sz.target_volatility,
            stop_loss=rk.stop_loss, take_profit=rk.take_profit,
            stop_by_volatility=rk.stop_mode == "volatility",
            # volatility stops: k x sigma over the median bars of a decision
            stop_horizon=float(np.median(steps)) if steps.size else 1.0,
            intrabar=rk.intrabar_stops, next_open=ex.price == "next_open",
            allow_short=rk.allow_short, short_cap=rk.max_short_exposure,
            gross_cap=rk.max_gross_exposure,
            dd_from_initial=rk.drawdown_reference == "initial",
            stop_flat=rk.on_portfolio_stop == "flat", cooldown=rk.cooldown_bars,
            ruin=ruin_floor(config), vol_slippage=ex.volatility_slippage,
            periods_per_year=market.periods_per_year,
            # re-entry: by default the longest decision interval
            reentry=(int(steps.max()) if steps.size else 1) if rk.reentry_bars is None
            else rk.reentry_bars,
            init_margin=rk.initial_margin, maint_margin=rk.maintenance_margin,
            borrowing=rk.allow_borrowing, margin_rate=ex.margin_rate,
            fee_rate=costs["fee_rate"], fixed_fee=costs["fixed_fee"],
            slippage=costs["slippage"], borrow_rate=costs["borrow_rate"])

    def base_size(self, stop_distance: float) -> float:
        """The opening's base, a share of equity: ``risk_per_trade / stop distance`` (sizing
        base ``risk``; the distance of a volatility stop is the asset's own) or
        ``risk_per_trade`` (``notional``)."""
        if not self.base_risk:
            return self.risk_per_trade
        if self.stop_by_volatility:
            return self.risk_per_trade / stop_distance
        return self.risk_per_trade / self.stop_loss


# ------------------------------------------------------------------ statistics of the market
def window_start(t: int, window: int) -> int:
    """First row of a window ending at t (inclusive); row 0 has no return."""
    return max(t - window + 1, 1)


def volatility(R: np.ndarray, t: int, i: int, window: int) -> float:
    """Sample standard deviation of asset i's returns over the window ending at t (0 with
    fewer than two)."""
    x = R[window_start(t, window):t + 1, i]
    return float(np.std(x, ddof=1)) if x.size >= 2 else 0.0


def correlation(R: np.ndarray, t: int, i: int, j: int, window: int) -> float:
    """Pearson correlation of assets i and j over the window ending at t; 0 with fewer than
    two returns or where either asset's returns are all equal (a closed market)."""
    lo = window_start(t, window)
    if t - lo + 1 < 2:
        return 0.0
    x, y = R[lo:t + 1, i], R[lo:t + 1, j]
    if np.all(x == x[0]) or np.all(y == y[0]):
        return 0.0
    dx, dy = x - x.mean(), y - y.mean()
    return float((dx @ dy) / math.sqrt((dx @ dx) * (dy @ dy)))


def var_of(R: np.ndarray, t: int, w: np.ndarray, rules: Rules, horizon: float) -> float:
    """VaR, a positive share of equity, of the book with weights ``w`` over ``horizon`` bars,
    from the returns of the ``risk.var_window`` bars ending at t: parametric ``z sqrt(h w'S
    w)`` with S the sample covariance, or historical ``-quantile(w'r, 1 - confidence)
    sqrt(h)``; 0 with fewer than two returns."""
    lo = window_start(t, rules.var_window)
    n = t - lo + 1 if t >= 1 else 0
    if n < 2:
        return 0.0
    held = np.flatnonzero(w)
    window = R[lo:t + 1][:, held]
    if rules.var_historical:
        v = -float(np.quantile(window @ w[held], rules.var_tail)) * math.sqrt(horizon)
        return max(v, 0.0)
    quad = float(w[held] @ np.cov(window, rowvar=False, ddof=1).reshape(
        len(held), len(held)) @ w[held])
    return rules.var_z * math.sqrt(quad * horizon) if quad > 0.0 else 0.0


# ------------------------------------------------------------------ the book
@dataclass
class Position:
    """One asset of the book, with its attribution."""

    units: float = 0.0  # signed: shorts negative
    entry: float = 0.0  # average entry price (fill prices, slippage included)
    stop: float = NAN  # stop-loss level (NaN: none)
    target: float = NAN  # take-profit level
    realized: float = 0.0
    fees: float = 0.0
    borrow: float = 0.0
    trades: int = 0  # closing fills
    wins: int = 0  # closing fills whose net P&L is > 0
    open_fees: float = 0.0  # entry fees not yet attributed to a closing fill
    gross_win: float = 0.0
    gross_loss: float = 0.0
    reentry: float = 0.0  # openings are refused at decision bars t < reentry
    pending: bool = False  # the portfolio stop sells it at its market's next real open


@dataclass(frozen=True)
class Fill:
    bar: int
    asset: int
    units: float  # + buy, - sell
    price: float  # slippage included
    fee: float
    pnl: float  # a closing fill's realised P&L
    net: float  # a closing fill's P&L minus its fee and its share of the entry fees
    reason: int  # layout.SIGNAL, STOP_LOSS, ...
    closing: bool


@dataclass
class Book:
    """The state of one book between decisions."""

    n_assets: int
    initial: float
    positions: list[Position] = field(default_factory=list)
    cash: float = 0.0
    equity: float = 0.0
    peak: float = 0.0
    base: float = 0.0  # the drawdown reference with drawdown_reference initial
    gross: float = 0.0
    traded: float = 0.0
    bar: int = 0
    end: int = 0
    cooldown: int = 0
    status: int = L.RUNNING
    waiting: int = 0  # pending portfolio-stop sales
    stop_wait: bool = False  # a terminating stop ends the book once they are done
    called: bool = False  # a margin call since the last decision
    counts: list[int] = field(default_factory=list)  # by layout.R_* / C_*

    def reset(self, start: int, end: int) -> None:
        self.positions = [Position() for _ in range(self.n_assets)]
        self.cash = self.equity = self.peak = self.base = self.initial
        self.gross = self.traded = 0.0
        self.bar, self.end = start, end
        self.cooldown, self.status, self.waiting = 0, L.RUNNING, 0
        self.stop_wait = self.called = False
        self.counts = [0] * L.NCOUNT


@dataclass
class StepRecord:
    """What one step did: fills in order, each asset's last refusal, the equity at each bar."""

    fills: list[Fill] = field(default_factory=list)
    refused: dict[int, int] = field(default_factory=dict)
    curve: list[float] = field(default_factory=list)


def refuse(book: Book, record: StepRecord, i: int, reason: int) -> None:
    record.refused[i] = reason
    book.counts[reason] += 1


# ------------------------------------------------------------------ fills and their costs
def slippage(rules: Rules, R: np.ndarray, i: int, bar: int) -> float:
    """Adverse slippage of a fill of asset i in ``bar``: its base slippage plus
    ``volatility_slippage`` x its volatility up to the bar before (from bar 2 on)."""
    if rules.vol_slippage > 0.0 and bar >= 2:
        return rules.slippage[i] + rules.vol_slippage * volatility(R, bar - 1, i,
                                                                   rules.vol_window)
    return rules.slippage[i]


def fee(rules: Rules, i: int, q: float, px: float) -> float:
    return rules.fee_rate[i] * abs(q) * px + rules.fixed_fee[i]


def fill(book: Book, record: StepRecord, rules: Rules, bar: int, i: int, q: float, px: float,
         reason: int, sl: float = NAN, tp: float = NAN) -> None:
    """Trade q units (never crossing zero) of asset i at px. A closing fill realises P&L on
    the average entry and takes its share of the entry fees; an opening (or an increase)
    moves the average entry and sets the stop and target at fractions ``sl``, ``tp`` of it."""
    p = book.positions[i]
    u = p.units
    f = fee(rules, i, q, px)
    book.cash -= q * px + f
    book.traded += abs(q) * px
    p.fees += f
    pnl = net = 0.0
    closing = u != 0.0 and (u > 0.0) != (q > 0.0)
    if closing:
        closed = -q
        pnl = closed * (px - p.entry)
        share = p.open_fees * (closed / u)
        net = pnl - f - share
        p.realized += pnl
        p.trades += 1
        if net > 0.0:
            p.wins += 1
            p.gross_win += net
        else:
            p.gross_loss -= net
        p.units = u + q
        if p.units == 0.0:
            p.entry, p.stop, p.target, p.open_fees = 0.0, NAN, NAN, 0.0
        else:
            p.open_fees -= share
    else:
        p.units = u + q
        p.entry = (u * p.entry + q * px) / p.units
        s = sign(p.units)
        p.open_fees += f
        p.stop = p.entry * (1.0 - s * sl)
        p.target = p.entry * (1.0 + s * tp)
    record.fills.append(Fill(bar, i, q, px, f, pnl, net, reason, closing))


def margin_terms(rules: Rules, i: int, q: float, ref: float, px: float, cash: float,
                 net: float, gross: float, short: float) -> tuple[float, float]:
    """``(num, den)`` of the initial margin for an opening of q units valued at ``ref``,
    filled at ``px``: it fits while ``|q| den <= num``. Without borrowing collateral is cash:
    ``cash' >= short' (1 + m)`` after the fill (a long pays ``px (1 + fee)`` a unit, a short
    brings ``px (1 - fee)`` and adds ``ref`` of short value). With borrowing
    ``equity' >= m gross'``, the fill costing equity its slippage and fee."""
    m, fr, fixed = rules.init_margin, rules.fee_rate[i], rules.fixed_fee[i]
    if rules.borrowing:
        return cash + net - m * gross - fixed, m * ref + abs(ref - px) + fr * px
    num = cash - short * (1.0 + m) - fixed
    if q > 0.0:
        return num, px * (1.0 + fr)
    return num, ref * (1.0 + m) - px * (1.0 - fr)


def common_factor(needs: list[float], fixed: list[float], budget: float, cash: float) -> float:
    """The one factor (< 1) that fits openings needing ``needs`` (``|q| den``) and their
    fixed fees into ``budget`` (``num + fixed``, the same for every opening); 1 when they fit
    up to rounding, or when not even the fixed fees fit (each then meets its own check)."""
    need, fixed_total = sum(needs), sum(fixed)
    tol = TOL * (1.0 + abs(cash))
    if need <= 0.0 or need + fixed_total - budget <= tol or budget - fixed_total <= tol:
        return 1.0
    return (budget - fixed_total) / need


# ------------------------------------------------------------------ 1. intents
@dataclass
class Decision:
    """Bar t, the fill bar, the book's equity at t, and what the intents made of it."""

    t: int
    t_next: int
    fill_bar: int
    equity: float
    slip: dict[int, float] = field(default_factory=dict)  # at the fill bar, per asset traded
    closes: dict[int, float] = field(default_factory=dict)  # closing legs (units), by asset
    candidates: dict[int, float] = field(default_factory=dict)  # weights: units; signals: side
    priority: dict[int, float] = field(default_factory=dict)
    units_after: list[float] = field(default_factory=list)  # after the closing legs
    conf: dict[int, float] = field(default_factory=dict)  # signals: each asset's confidence
    scaled: set[int] = field(default_factory=set)  # orders counted as scaled down this step


def read_intents(book: Book, record: StepRecord, rules: Rules, market: MarketData,
                 R: np.ndarray, d: Decision, scheme: int, action: tuple[np.ndarray, ...]
                 ) -> None:
    """Closing legs and opening candidates from the intents, asset by asset.

    Weights: NaN keeps the position; a target below ``WEIGHT_TOL`` of equity is 0; a short
    target without shorting is refused (a held long is still closed); a change within
    ``WEIGHT_TOL`` of equity is no trade. A flip closes and opens the other side; a smaller
    target on the same side reduces (to 0 if what is left is dust); anything else opens or
    adds the difference. Signals: BUY opens a long (closing a short first), SELL closes a
    long or, flat, opens a short; HOLD or the held side keeps. An asset whose market is
    closed at the fill bar is refused (``not_tradable``)."""
    t, c = d.t, market.close
    d.units_after = [p.units for p in book.positions]
    for i in range(market.n_assets):
        u = book.positions[i].units
        if scheme == L.WEIGHTS:
            wt = float(action[0][i])
            if math.isnan(wt):
                continue
            if abs(wt) < WEIGHT_TOL:
                wt = 0.0
            tu = wt * d.equity / c[t, i]
            if tu < 0.0 and not rules.allow_short:
                refuse(book, record, i, L.R_NO_SHORTING)
                tu = 0.0
            if abs(tu - u) * c[t, i] <= WEIGHT_TOL * abs(d.equity):
                continue
        else:
            side = int(action[0][i])
            if side == 0 or side * u > 0.0:
                continue
        if not market.tradable[d.fill_bar, i]:
            refuse(book, record, i, L.R_NOT_TRADABLE)
            continue
        d.slip[i] = slippage(rules, R, i, d.fill_bar)
        if scheme == L.WEIGHTS:
            if u != 0.0 and (tu == 0.0 or (tu > 0.0) != (u > 0.0)):  # close (and flip)
                d.closes[i], d.units_after[i] = -u, 0.0
                if tu != 0.0:
                    d.candidates[i], d.priority[i] = tu, abs(wt)
            elif u != 0.0 and abs(tu) < abs(u):  # reduce
                if abs(tu) * c[t, i] <= WEIGHT_TOL * abs(d.equity):
                    tu = 0.0
                d.closes[i], d.units_after[i] = tu - u, tu
            else:  # open or add
                d.candidates[i], d.priority[i] = tu - u, abs(wt)
        else:
            if u != 0.0:
                d.closes[i], d.units_after[i] = -u, 0.0
            if side > 0 or u == 0.0:
                if side < 0 and not rules.allow_short:
                    refuse(book, record, i, L.R_NO_SHORTING)
                    continue
                d.candidates[i], d.priority[i] = float(side), float(action[1][i])


# ------------------------------------------------------------------ 2. the shadow book
@dataclass
class Shadow:
    """The book as the decision sees it at t's close: cash after the closing legs and the
    openings taken so far, what is held, gross, net and short value."""

    cash: float
    units: list[float]
    gross: float = 0.0
    net: float = 0.0
    short: float = 0.0

    def held(self) -> list[int]:
        return [j for j, u in enumerate(self.units) if u != 0.0]


def shadow_after_closes(book: Book, rules: Rules, market: MarketData, d: Decision) -> Shadow:
    c = market.close[d.t]
    cash = book.cash
    for i, q in d.closes.items():
        px = c[i] * (1.0 + sign(q) * d.slip[i])
        cash -= q * px + fee(rules, i, q, px)
    s = Shadow(cash, list(d.units_after))
    for j in s.held():
        v = s.units[j] * c[j]
        s.gross += abs(v)
        s.net += v
        if v < 0.0:
            s.short -= v
    return s


# ------------------------------------------------------------------ 3. openings, ranked
def ranked(d: Decision, ranks: np.ndarray) -> list[int]:
    """Candidates by descending priority, ties by the symbol's place in sorted order."""
    return sorted(d.candidates, key=lambda i: (-d.priority[i], ranks[i]))


def stop_distances(rules: Rules, R: np.ndarray, d: Decision, i: int) -> tuple[float, float]:
    """The stop-loss and take-profit distances of an opening, fractions of its entry:
    the configured fractions, or multiples of the asset's volatility at t over the median
    decision interval (NaN, no level, without volatility)."""
    sl = NAN if rules.stop_loss is None else rules.stop_loss
    tp = NAN if rules.take_profit is None else rules.take_profit
    if rules.stop_by_volatility:
        scale = volatility(R, d.t, i, rules.vol_window) * math.sqrt(rules.stop_horizon)
        return (sl * scale, tp * scale) if scale > 0.0 else (NAN, NAN)
    return sl, tp


# ------------------------------------------------------------------ 4. sizing and limits
def correlation_factor(m: float, threshold: float) -> float:
    """``1 - 0.5 (m - thr) / (1 - thr)`` above the threshold, else 1; in [0.5, 1]."""
    m = min(m, 1.0)
    if m > threshold:
        return min(1.0, max(0.5, 1.0 - 0.5 * (m - threshold) / (1.0 - threshold)))
    return 1.0


def max_correlation(rules: Rules, R: np.ndarray, t: int, i: int, side: float,
                    shadow: Shadow) -> float:
    """The correlation that sizes an opening of asset i: the largest |rho| with an asset
    held in the shadow book, or with ``hedge_aware`` the largest ``side_i side_j rho`` (a
    hedge is not cut); 0 with nothing held."""
    m = 0.0
    for j in shadow.held():
        if j == i:
            continue
        rho = correlation(R, t, i, j, rules.corr_window)
        r = (rho if (side > 0.0) == (shadow.units[j] > 0.0) else -rho) if rules.hedge_aware \
            else abs(rho)
        m = max(m, r)
    return m


def opening_units(rules: Rules, market: MarketData, R: np.ndarray, d: Decision,
                  shadow: Shadow, i: int, side: float, conf: float, scale: float) -> float:
    """A signal's opening of asset i in units (signed): equity x base x the sizer's factor x
    max(min_confidence_factor, confidence) / close, times ``scale`` (a group of equals)."""
    t = d.t
    base = rules.base_size(stop_distances(rules, R, d, i)[0])
    conf_f = max(rules.min_conf, conf)
    eq = d.equity
    if rules.sizer == "fixed_fraction":
        notional = eq * base
    elif rules.sizer == "correlation_adjusted":
        if rules.corr_threshold is None:
            notional = eq * base * conf_f
        else:
            m = max_correlation(rules, R, t, i, side, shadow)
            notional = eq * base * correlation_factor(m, rules.corr_threshold) * conf_f
    elif rules.sizer == "inverse_volatility":  # relative to the market's mean volatility at t
        sigmas = [volatility(R, t, j, rules.vol_window) for j in range(market.n_assets)]
        positive = [s for s in sigmas if s > 0.0]
        mean_sigma = sum(positive) / len(positive) if positive else 0.0
        factor = min(mean_sigma / sigmas[i], 4.0) if sigmas[i] > 0.0 else 1.0
        notional = eq * base * factor * conf_f
    else:  # volatility target: the position alone at target_volatility a year
        ann = volatility(R, t, i, rules.vol_window) * math.sqrt(rules.periods_per_year)
        notional = eq * conf_f if ann <= 0.0 else eq * rules.target_vol / ann * conf_f
    return side * scale * notional / market.close[t, i]


def refused_before_sizing(rules: Rules, book: Book, d: Decision, shadow: Shadow,
                          i: int) -> int:
    """The limits that do not depend on the size: the re-entry wait after a stop or target
    exit, then ``max_positions`` (a new position only)."""
    if shadow.units[i] != 0.0:  # a top-up of a held position
        return 0
    if d.t < book.positions[i].reentry:
        return L.R_REENTRY
    if len(shadow.held()) >= rules.max_positions:
        return L.R_MAX_POSITIONS
    return 0


def check_opening(book: Book, record: StepRecord, rules: Rules, market: MarketData,
                  R: np.ndarray, d: Decision, shadow: Shadow, i: int, q: float,
                  rebalance: bool, horizon: float) -> float:
    """The size-dependent limits of an opening of q units, in order; its units if it passes
    (added to the shadow book), else 0 with the refusal counted.

    Cash or initial margin (a weights rebalance is cut to what fits instead, counted as
    scaled), the short cap and the gross cap (multiples of equity), the VaR limit of the
    shadow book with the opening. A book at exactly a cap is within it (``1e-9``)."""
    t, c = d.t, market.close[d.t]
    eq = d.equity
    if not (abs(q) > 0.0 and math.isfinite(q)) or eq <= 0.0:
        refuse(book, record, i, L.R_ZERO_SIZE)
        return 0.0
    px = c[i] * (1.0 + sign(q) * d.slip[i])
    num, den = margin_terms(rules, i, q, c[i], px, shadow.cash, shadow.net, shadow.gross,
                            shadow.short)
    if abs(q) * den - num > TOL * (1.0 + abs(shadow.cash)):
        room = num / den if den > 0.0 and num > TOL * (1.0 + abs(shadow.cash)) else 0.0
        if rebalance and room > 0.0:
            q = room if q > 0.0 else -room
            record_scaled(book, d, i)
        else:
            refuse(book, record, i, L.R_CASH if q > 0.0 and not rules.borrowing
                   else L.R_MARGIN)
            return 0.0
    add = abs(q) * c[i]
    if q < 0.0 and rules.short_cap is not None and \
            shadow.short + add > rules.short_cap * eq * (1.0 + TOL):
        refuse(book, record, i, L.R_SHORT_CAP)
        return 0.0
    if rules.gross_cap is not None and shadow.gross + add > rules.gross_cap * eq * (1.0 + TOL):
        refuse(book, record, i, L.R_GROSS_CAP)
        return 0.0
    if rules.max_var is not None:
        w = np.array([u * c[j] / eq for j, u in enumerate(shadow.units)])
        w[i] += q * c[i] / eq
        if var_of(R, t, w, rules, horizon) > rules.max_var:
            refuse(book, record, i, L.R_VAR)
            return 0.0
    shadow.units[i] += q
    shadow.gross += add
    shadow.net += q * c[i]
    if q < 0.0:
        shadow.short += add
    shadow.cash -= q * px + fee(rules, i, q, px)
    return q


def record_scaled(book: Book, d: Decision, i: int) -> None:
    """Count an order scaled down, once a step."""
    if i not in d.scaled:
        d.scaled.add(i)
        book.counts[L.C_SCALED] += 1


def needs_of(rules: Rules, d: Decision, shadow: Shadow, orders: dict[int, float],
             ref: np.ndarray) -> tuple[list[float], list[float], float]:
    """What openings of ``orders`` units valued at ``ref`` take of the initial-margin budget
    (``|q| den`` each), their fixed fees, and the budget."""
    needs, fixed, budget = [], [], 0.0
    for i, q in orders.items():
        if q == 0.0:
            continue
        px = ref[i] * (1.0 + sign(q) * d.slip[i])
        num, den = margin_terms(rules, i, q, ref[i], px, shadow.cash, shadow.net,
                                shadow.gross, shadow.short)
        needs.append(abs(q) * den if den > 0.0 else 0.0)
        fixed.append(rules.fixed_fee[i])
        budget = num + rules.fixed_fee[i]
    return needs, fixed, budget


def let_through(rules: Rules, book: Book, d: Decision, shadow: Shadow,
                order: list[int]) -> list[int]:
    """Of the openings in ``order``, those the re-entry wait and the position cap let
    through, each new position counted as it would be taken."""
    held = len(shadow.held())
    out = []
    for i in order:
        if shadow.units[i] == 0.0:
            if d.t < book.positions[i].reentry or held >= rules.max_positions:
                continue
            held += 1
        out.append(i)
    return out


def scale_rebalance(rules: Rules, book: Book, market: MarketData, d: Decision,
                    shadow: Shadow, order: list[int]) -> None:
    """Weights: the purchases let through (:func:`let_through`), when together they overdraw
    the cash or margin, are each scaled by one factor: a rebalance that overdraws buys a
    little less of every name, never less of the names that come last."""
    through = let_through(rules, book, d, shadow, order)
    orders = {i: d.candidates[i] for i in through}
    f = common_factor(*needs_of(rules, d, shadow, orders, market.close[d.t]), shadow.cash)
    if f < 1.0:
        for i in through:
            if d.candidates[i] != 0.0:
                d.candidates[i] *= f
                record_scaled(book, d, i)


def scale_equals(rules: Rules, book: Book, market: MarketData, R: np.ndarray, d: Decision,
                 shadow: Shadow, group: list[int]) -> dict[int, float]:
    """Signals: openings of equal conviction (``group``, by symbol) let through by the
    re-entry wait and the position cap, sized at the shadow book as it stands, that together
    need more cash or margin than it has are each sized down by one factor rather than the
    last ones being refused. Returns each member's factor."""
    through = let_through(rules, book, d, shadow, group)
    orders = {i: opening_units(rules, market, R, d, shadow, i, d.candidates[i],
                               d.conf[i], 1.0) for i in through}
    orders = {i: q for i, q in orders.items() if abs(q) > 0.0 and math.isfinite(q)}
    f = common_factor(*needs_of(rules, d, shadow, orders, market.close[d.t]), shadow.cash)
    if f >= 1.0:
        return {}
    for i in through:
        record_scaled(book, d, i)
    return dict.fromkeys(through, f)


def take_openings(book: Book, record: StepRecord, rules: Rules, market: MarketData,
                  R: np.ndarray, d: Decision, shadow: Shadow, scheme: int,
                  ranks: np.ndarray) -> list[tuple[int, float]]:
    """Every candidate in rank order through the limits: the openings taken, in order."""
    order = ranked(d, ranks)
    if book.cooldown > 0 or book.waiting > 0:  # after a portfolio stop
        for i in order:
            refuse(book, record, i, L.R_COOLDOWN)
        return []
    horizon = rules.var_horizon if rules.var_horizon is not None \
        else max(d.t_next - d.t, 1)
    if scheme == L.WEIGHTS:
        scale_rebalance(rules, book, market, d, shadow, order)
    taken: list[tuple[int, float]] = []
    factor: dict[int, float] = {}
    level = None
    for k, i in enumerate(order):
        if scheme == L.SIGNALS and d.priority[i] != level:  # the first of a conviction
            level = d.priority[i]
            group = sorted((j for j in order[k:] if d.priority[j] == level),
                           key=lambda j: ranks[j])
            if len(group) > 1:
                factor.update(scale_equals(rules, book, market, R, d, shadow, group))
        reason = refused_before_sizing(rules, book, d, shadow, i)
        if reason:
            refuse(book, record, i, reason)
            continue
        if scheme == L.WEIGHTS:
            q = d.candidates[i]
        else:
            q = opening_units(rules, market, R, d, shadow, i, d.candidates[i], d.conf[i],
                              factor.get(i, 1.0))
        q = check_opening(book, record, rules, market, R, d, shadow, i, q,
                          scheme == L.WEIGHTS, horizon)
        if q != 0.0:
            taken.append((i, q))
    return taken


# ------------------------------------------------------------------ 5. fills
def fill_decision(book: Book, record: StepRecord, rules: Rules, market: MarketData,
                  R: np.ndarray, d: Decision, taken: list[tuple[int, float]]) -> None:
    """Closing legs (by asset), then openings in priority order, at t's close or at the next
    bar's open. At the fill the cash or margin check is repeated on the book as it is: with
    next-open fills the openings are first scaled by one factor when together they no longer
    fit (prices moved), then any that still does not is cut to its room or refused
    (``cash_at_fill``)."""
    fb = d.fill_bar
    ref = market.open[fb] if rules.next_open else market.close[d.t]
    for i in sorted(d.closes):
        q = d.closes[i]
        fill(book, record, rules, fb, i, q, ref[i] * (1.0 + sign(q) * d.slip[i]), L.SIGNAL)
    at_fill = Shadow(book.cash, [p.units for p in book.positions])
    for j in at_fill.held():
        v = at_fill.units[j] * ref[j]
        at_fill.net += v
        at_fill.gross += abs(v)
        if v < 0.0:
            at_fill.short -= v
    orders = dict(taken)
    if rules.next_open and orders:
        f = common_factor(*needs_of(rules, d, at_fill, orders, ref), book.cash)
        if f < 1.0:
            for i in orders:
                orders[i] *= f
                record_scaled(book, d, i)
    for i, _ in taken:
        q = orders[i]
        px = ref[i] * (1.0 + sign(q) * d.slip[i])
        num, den = margin_terms(rules, i, q, ref[i], px, book.cash, at_fill.net,
                                at_fill.gross, at_fill.short)
        if abs(q) * den - num > TOL * (1.0 + abs(book.cash)):
            room = num / den if den > 0.0 and num > TOL * (1.0 + abs(book.cash)) else 0.0
            if room <= 0.0:
                refuse(book, record, i, L.R_CASH_AT_FILL)
                continue
            q = room if q > 0.0 else -room
            record_scaled(book, d, i)
        sl, tp = stop_distances(rules, R, d, i)
        fill(book, record, rules, fb, i, q, px, L.SIGNAL, sl, tp)
        at_fill.net += q * ref[i]
        at_fill.gross += abs(q) * ref[i]
        if q < 0.0:
            at_fill.short -= q * ref[i]


# ------------------------------------------------------------------ 6. the bars
def exit_level(u: float, stop: float, target: float, o: float, h: float, lo: float,
               c: float, intrabar: bool) -> tuple[float, int]:
    """(price, reason) of a stop-loss or take-profit hit in one bar, or (NaN, -1).

    Intrabar: a gap through a level fills at the open; else the stop is assumed hit first
    when the bar's range reaches both. On closes: the close against each level."""
    long = u > 0.0
    if intrabar:
        if (o <= stop) if long else (o >= stop):
            return o, L.STOP_LOSS
        if (o >= target) if long else (o <= target):
            return o, L.TAKE_PROFIT
        if (lo <= stop) if long else (h >= stop):
            return stop, L.STOP_LOSS
        if (h >= target) if long else (lo <= target):
            return target, L.TAKE_PROFIT
    else:
        if (c <= stop) if long else (c >= stop):
            return c, L.STOP_LOSS
        if (c >= target) if long else (c <= target):
            return c, L.TAKE_PROFIT
    return NAN, -1


def mark(book: Book, close: np.ndarray) -> tuple[float, float, float]:
    """(equity, gross, short) at these closes."""
    eq, gross, short = book.cash, 0.0, 0.0
    for j, p in enumerate(book.positions):
        if p.units != 0.0:
            v = p.units * close[j]
            eq += v
            gross += abs(v)
            if v < 0.0:
                short -= v
    return eq, gross, short


def exit_price(rules: Rules, R: np.ndarray, i: int, s: int, level: float, u: float) -> float:
    """A sale (of a long) or a cover (of a short) at ``level`` with adverse slippage."""
    return level * (1.0 - sign(u) * slippage(rules, R, i, s))


def margin_call(book: Book, record: StepRecord, rules: Rules, market: MarketData,
                R: np.ndarray, s: int) -> bool:
    """The maintenance margin at bar s's close: ``cash >= short (1 + m)`` (``equity >= m
    gross`` with borrowing). When broken, a fraction f of every position of an open market
    is sold at the close, f the smallest that restores the rule (selling changes it by
    ``f sum(gain) - fixed fees``; a long's gain is its value net of costs without
    borrowing, else ``m value - costs``); all of it on a second call before the next
    decision. True when it sold."""
    c, m = market.close[s], rules.maint_margin
    eq, gross, short = mark(book, c)
    gain = fixed = 0.0
    movable = 0
    for i, p in enumerate(book.positions):
        u = p.units
        if u == 0.0 or not market.tradable[s, i]:
            continue
        px = exit_price(rules, R, i, s, c[i], u)
        cost = abs(u) * abs(c[i] - px) + rules.fee_rate[i] * abs(u) * px
        gain += (abs(u * c[i]) - cost) if (u > 0.0 and not rules.borrowing) \
            else (m * abs(u * c[i]) - cost)
        fixed += rules.fixed_fee[i]
        movable += 1
    need = eq - m * gross if rules.borrowing else book.cash - short * (1.0 + m)
    if movable == 0 or need >= -TOL * (1.0 + abs(eq)):
        return False
    f = min(1.0, (fixed - need) / gain) if not book.called and gain > 0.0 else 1.0
    book.called = True
    book.counts[L.C_MARGIN_CALL] += 1
    for i, p in enumerate(book.positions):
        u = p.units
        if u == 0.0 or not market.tradable[s, i]:
            continue
        fill(book, record, rules, s, i, -u if f >= 1.0 else -f * u,
             exit_price(rules, R, i, s, c[i], u), L.MARGIN_CALL)
    return True


def drawdown_stop(book: Book, record: StepRecord, rules: Rules, market: MarketData,
                  R: np.ndarray, s: int) -> None:
    """Equity below (1 - max_drawdown) of the peak (or of the initial balance, or the
    equity at the last flat stop): every position of an open market is sold at the close; a
    closed market's at its next real open (pending, counted), never at its carried close.
    ``flat``: a cooldown follows and the reference restarts at this equity; ``terminate``:
    the book ends, once the pending sales are done."""
    for i, p in enumerate(book.positions):
        if p.units == 0.0:
            continue
        if market.tradable[s, i]:
            fill(book, record, rules, s, i, -p.units,
                 exit_price(rules, R, i, s, market.close[s, i], p.units), L.PORTFOLIO_STOP)
        else:
            p.pending = True
            book.waiting += 1
            book.counts[L.C_PENDING] += 1
    eq = mark(book, market.close[s])[0]
    if rules.stop_flat:
        book.cooldown = rules.cooldown
        book.peak = book.base = eq
    elif book.waiting > 0:
        book.stop_wait = True
    else:
        book.status = L.STOPPED


def run_bars(book: Book, record: StepRecord, rules: Rules, market: MarketData,
             R: np.ndarray, t: int, t_next: int) -> None:
    """Bars t+1..t' after the fills, each in the order of the module docstring; the book
    stops at the first bar that ends it."""
    per_bar = 1.0 / rules.periods_per_year
    o, h, lo, c = market.open, market.high, market.low, market.close
    for s in range(t + 1, t_next + 1):
        ended = False
        for i, p in enumerate(book.positions):  # exits, on open markets
            u = p.units
            if u == 0.0 or not market.tradable[s, i]:
                continue
            if p.pending:  # the portfolio stop's sale, at the first real open
                fill(book, record, rules, s, i, -u, exit_price(rules, R, i, s, o[s, i], u),
                     L.PORTFOLIO_STOP)
                p.pending = False
                book.waiting -= 1
                ended = ended or (book.waiting == 0 and book.stop_wait)
                continue
            level, why = exit_level(u, p.stop, p.target, o[s, i], h[s, i], lo[s, i], c[s, i],
                                    rules.intrabar)
            if why >= 0:
                fill(book, record, rules, s, i, -u, exit_price(rules, R, i, s, level, u), why)
                p.reentry = s + rules.reentry
        for i, p in enumerate(book.positions):  # borrow on shorts, at the close
            if p.units < 0.0 and rules.borrow_rate[i] > 0.0:
                charge = -p.units * c[s, i] * rules.borrow_rate[i] * per_bar
                book.cash -= charge
                p.borrow += charge
        eq, gross, _ = mark(book, c[s])
        if book.cash < 0.0 and rules.margin_rate > 0.0 and gross > 0.0:
            # interest on borrowed cash, charged to the positions it finances by value
            charge = -book.cash * rules.margin_rate * per_bar
            book.cash -= charge
            for i, p in enumerate(book.positions):
                if p.units != 0.0:
                    p.borrow += charge * abs(p.units * c[s, i]) / gross
        if gross > 0.0:
            margin_call(book, record, rules, market, R, s)
        if book.cooldown > 0:
            book.cooldown -= 1
        eq, gross, _ = mark(book, c[s])
        book.peak = max(book.peak, eq)
        ref = book.base if rules.dd_from_initial else book.peak
        if rules.max_drawdown is not None and eq < ref * (1.0 - rules.max_drawdown) \
                and book.waiting == 0:
            drawdown_stop(book, record, rules, market, R, s)
            eq, gross, _ = mark(book, c[s])
        if ended:
            book.status = L.STOPPED
        if eq <= rules.ruin and book.status == L.RUNNING:  # ruin: liquidate what can be
            for i, p in enumerate(book.positions):
                if p.units != 0.0 and market.tradable[s, i]:
                    fill(book, record, rules, s, i, -p.units,
                         exit_price(rules, R, i, s, c[s, i], p.units), L.RUIN)
            eq, gross, _ = mark(book, c[s])
            book.status = L.RUINED
        book.equity, book.gross, book.bar = eq, gross, s
        record.curve.append(eq)
        if book.status != L.RUNNING:
            break
    if book.status == L.RUNNING and book.bar >= book.end:
        book.status = L.ENDED


# ------------------------------------------------------------------ one decision step
class SpecifiedPortfolio:
    """One book stepped by this module: the specification, runnable.

    :param market: the aligned panel.
    :param config: rules, limits and costs.

    ``reset(start, end)``, then ``step(scheme, action)`` with ``scheme`` ``layout.SIGNALS``
    and ``action = (direction, confidence)`` (N,) each, or ``layout.WEIGHTS`` and
    ``action = (weights,)``; it returns the step's :class:`StepRecord`.
    """

    def __init__(self, market: MarketData, config: Config) -> None:
        self.market = market
        self.next_decision = decision_bars(market.index,
                                           config.portfolio.rebalancing_frequency)
        self.rules = Rules.of(config, market, self.next_decision)
        self.returns = simple_returns(market.close)
        self.ranks = symbol_ranks(market.symbols)
        self.book = Book(market.n_assets, config.portfolio.initial_balance)
        self.book.reset(0, market.n_bars - 1)

    def reset(self, start: int = 0, end: int | None = None) -> None:
        self.book.reset(start, self.market.n_bars - 1 if end is None else end)

    def step(self, scheme: int, action: tuple[np.ndarray, ...]) -> StepRecord:
        book, rules, market, R = self.book, self.rules, self.market, self.returns
        record = StepRecord()
        if book.status != L.RUNNING:
            return record
        t = book.bar
        book.called = False
        if t >= book.end:
            book.status = L.ENDED
            return record
        d = Decision(t, min(int(self.next_decision[t]), book.end),
                     t + 1 if rules.next_open else t, book.equity)
        if scheme == L.SIGNALS:
            d.conf = dict(enumerate(map(float, action[1])))
        read_intents(book, record, rules, market, R, d, scheme, action)
        shadow = shadow_after_closes(book, rules, market, d)
        taken = take_openings(book, record, rules, market, R, d, shadow, scheme, self.ranks)
        fill_decision(book, record, rules, market, R, d, taken)
        run_bars(book, record, rules, market, R, t, d.t_next)
        return record
