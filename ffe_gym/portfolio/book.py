"""Portfolio: the accounting of B books over one market, in one place.

The state lives in dense arrays (see :mod:`ffe_gym.portfolio.layout`); each decision step is one
call into the compiled kernel (:mod:`ffe_gym.portfolio.kernel`). The single environment uses
B = 1, the vector environment B = n: the same class, never a second copy of the accounting.
"""

from __future__ import annotations

from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

from ffe_gym.config import Config
from ffe_gym.data.calendar import decision_bars
from ffe_gym.data.market import MarketData, symbol_ranks
from ffe_gym.portfolio import layout as L


def _compiled():
    """The numba modules, imported on first use: decorating with ``cache=True`` touches the
    cache directory, which ``import ffe_gym`` must not do."""
    from ffe_gym.portfolio import kernel, summary

    return kernel, summary


def build_params(config: Config, market: MarketData,
                 next_decision: np.ndarray | None = None) -> np.ndarray:
    """The kernel's parameter vector (indices ``layout.P_*``) from a config.

    :param next_decision: the decision table (:func:`decision_bars`); computed when None.
    """
    pf, sz, rk, ex = config.portfolio, config.sizing, config.risk, config.execution
    if next_decision is None:
        next_decision = decision_bars(market.index, pf.rebalancing_frequency)
    steps = next_decision - np.arange(market.n_bars)
    steps = steps[steps > 0]
    longest = int(steps.max()) if steps.size else 1
    p = np.zeros(L.NPARAM)
    off = np.inf
    p[L.P_MAX_POSITIONS] = off if pf.max_positions is None else pf.max_positions
    p[L.P_CORR_THRESHOLD] = off if pf.correlation_threshold is None else pf.correlation_threshold
    p[L.P_CORR_WINDOW] = pf.correlation_window
    p[L.P_CORR_HEDGE] = float(pf.correlation_mode == "hedge_aware")
    p[L.P_MAX_VAR] = off if pf.max_portfolio_risk is None else pf.max_portfolio_risk
    p[L.P_MAX_DRAWDOWN] = off if pf.max_drawdown is None else pf.max_drawdown
    p[L.P_SIZER] = L.SIZERS.index(pf.position_sizing)
    p[L.P_BASE] = (sz.risk_per_trade / rk.stop_loss if sz.base == "risk"
                   else sz.risk_per_trade)
    p[L.P_MIN_CONF] = sz.min_confidence_factor
    p[L.P_VOL_WINDOW] = sz.volatility_window
    p[L.P_TARGET_VOL] = sz.target_volatility
    p[L.P_STOP_LOSS] = np.nan if rk.stop_loss is None else rk.stop_loss
    p[L.P_TAKE_PROFIT] = np.nan if rk.take_profit is None else rk.take_profit
    p[L.P_INTRABAR] = float(rk.intrabar_stops)
    p[L.P_NEXT_OPEN] = float(ex.price == "next_open")
    p[L.P_ALLOW_SHORT] = float(rk.allow_short)
    p[L.P_SHORT_CAP] = off if rk.max_short_exposure is None else rk.max_short_exposure
    p[L.P_GROSS_CAP] = off if rk.max_gross_exposure is None else rk.max_gross_exposure
    p[L.P_VAR_HISTORICAL] = float(rk.var_method == "historical")
    p[L.P_VAR_WINDOW] = rk.var_window
    p[L.P_VAR_Z] = NormalDist().inv_cdf(rk.var_confidence)
    p[L.P_VAR_TAIL] = 1.0 - rk.var_confidence
    p[L.P_DD_FROM_INITIAL] = float(rk.drawdown_reference == "initial")
    p[L.P_STOP_FLAT] = float(rk.on_portfolio_stop == "flat")
    p[L.P_COOLDOWN] = rk.cooldown_bars
    p[L.P_INITIAL] = pf.initial_balance
    p[L.P_RUIN] = ruin_floor(config)
    p[L.P_VOL_SLIPPAGE] = ex.volatility_slippage
    p[L.P_PERIODS_PER_YEAR] = market.periods_per_year
    p[L.P_REENTRY] = longest if rk.reentry_bars is None else rk.reentry_bars
    p[L.P_STOP_VOL] = float(rk.stop_mode == "volatility")
    p[L.P_STOP_HORIZON] = float(np.median(steps)) if steps.size else 1.0
    p[L.P_RISK_PER_TRADE] = sz.risk_per_trade
    p[L.P_BASE_RISK] = float(sz.base == "risk")
    p[L.P_INIT_MARGIN] = rk.initial_margin
    p[L.P_MAINT_MARGIN] = rk.maintenance_margin
    p[L.P_BORROWING] = float(rk.allow_borrowing)
    p[L.P_MARGIN_RATE] = ex.margin_rate
    p[L.P_VAR_HORIZON] = 0.0 if rk.var_horizon_bars is None else rk.var_horizon_bars
    return p


RUIN_MIN = 1e-9  # the smallest ruin floor, as a share of the initial balance


def ruin_floor(config: Config) -> float:
    """Equity (currency) at or below which a book is ruined: ``risk.ruin_floor`` of the
    initial balance, never below ``RUIN_MIN`` of it (a floor of 0 would let equity sink to
    denormal numbers, and log rewards and observations to infinities). The engine and the
    env's reward use this one floor."""
    return max(config.risk.ruin_floor, RUIN_MIN) * config.portfolio.initial_balance


def build_costs(config: Config, market: MarketData) -> dict[str, np.ndarray]:
    """Per-asset fee rate, fixed fee, slippage and borrow rate, with overrides applied."""
    ex = config.execution
    n = market.n_assets
    costs = {"fee_rate": np.full(n, ex.fee_rate), "fixed_fee": np.full(n, ex.fixed_fee),
             "slippage": np.full(n, ex.slippage), "borrow_rate": np.full(n, ex.borrow_rate)}
    for sym, ov in ex.overrides.items():
        if sym not in market.symbols:
            from ffe_gym.config import ConfigError

            raise ConfigError(f"execution.overrides.{sym}: unknown symbol "
                              f"(available: {', '.join(market.symbols)})")
        j = market.symbols.index(sym)
        for name in costs:
            value = getattr(ov, name)
            if value is not None:
                costs[name][j] = value
    return costs


def per_asset_params(costs: dict[str, np.ndarray], symbols: tuple[str, ...]) -> np.ndarray:
    """The kernel's (``NPER_ASSET``, N) per-asset parameters (rows ``layout.A_*``): the costs
    of :func:`build_costs`, each asset's place in symbol order and the asset at each place.
    Wherever a rule must choose among equals it goes by the place, so permuting the columns
    permutes every result and changes none."""
    n = len(symbols)
    out = np.zeros((L.NPER_ASSET, n))
    for row, name in ((L.A_FEE_RATE, "fee_rate"), (L.A_FIXED_FEE, "fixed_fee"),
                      (L.A_SLIPPAGE, "slippage"), (L.A_BORROW_RATE, "borrow_rate")):
        out[row] = costs[name]
    ranks = symbol_ranks(symbols)
    out[L.A_RANK] = ranks
    out[L.A_AT_RANK, ranks] = np.arange(n)
    return out


def simple_returns(close: np.ndarray) -> np.ndarray:
    """``close[t] / close[t-1] - 1`` with row 0 set to 0."""
    r = np.zeros_like(close)
    r[1:] = close[1:] / close[:-1] - 1.0
    return r


@dataclass
class AssetAttribution:
    """Where one asset's P&L came from (currency; shares of the initial balance)."""

    symbol: str
    realized: float
    unrealized: float
    fees: float
    borrow: float
    trades: int
    wins: int
    win_rate: float | None
    gross_win: float
    gross_loss: float
    pnl: float  # realised + unrealised - fees - borrow
    pnl_pct_initial: float
    share_of_total: float | None  # None when the total P&L is 0


def _check_threads(threads: int) -> int:
    threads = int(threads)
    if threads > 1:
        import numba

        most = numba.config.NUMBA_NUM_THREADS
        if threads > most:
            raise ValueError(f"threads={threads}: numba has {most} threads here "
                             "(NUMBA_NUM_THREADS)")
    elif threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    return threads


_VIEWS = ("pos", "acct", "curve", "gross_curve", "fills", "_confs", "_weights", "clock",
          "count", "n_curve", "n_fills", "refused", "_kernel_args")


class Portfolio:
    """B books trading N assets of one :class:`MarketData` under one :class:`Config`.

    :param market: the aligned panel.
    :param config: rules, limits and costs (defaults when None).
    :param n_books: B, the number of books stepped together.
    :param threads: numba threads the books are split over at each step (1: serial). The
        result is the same bit for bit; it pays from a few hundred books (``--sections env`` of
        ``scripts/benchmark.py``).

    Usage: ``reset(start, end)`` then ``step_signals(direction, confidence)`` or
    ``step_weights(weights)`` until ``done`` is all True. After a step, ``fills``,
    ``curve`` and ``refused`` describe that step (views valid until the next step).
    """

    def __init__(self, market: MarketData, config: Config | None = None, n_books: int = 1,
                 threads: int = 1):
        self.market = market
        self.config = config if config is not None else Config()
        self.n_books = B = int(n_books)
        N = market.n_assets
        freq = self.config.portfolio.rebalancing_frequency
        self.next_decision = decision_bars(market.index, freq)
        self.params = build_params(self.config, market, self.next_decision)
        self.per_asset = per_asset_params(build_costs(self.config, market), market.symbols)
        # views of its rows
        self.fee_rate, self.fixed_fee, self.slippage, self.borrow_rate = self.per_asset[:4]
        self.returns = simple_returns(market.close)
        from ffe_gym.portfolio.statistics import MarketStatistics

        self.stats = MarketStatistics(self.returns, self.params)  # shared by every book
        self.params[L.P_PAIR_CACHE] = float(self.stats.cached)
        self.params[L.P_SHARED_COV] = float(self.stats.shared_cov)
        self.max_step_bars = int(np.max(self.next_decision - np.arange(market.n_bars))) or 1
        self.params[L.P_MAX_STEP_BARS] = self.max_step_bars
        self._kernel, self._summarize = _compiled()[0], _compiled()[1].summarize
        nf, ni = self._kernel.book_sizes(B, N, self.max_step_bars)
        self._bind(np.zeros(nf), np.zeros(ni, dtype=np.int64), np.zeros((B, N), dtype=np.int8))
        self._all = np.ones(B, dtype=np.bool_)
        self._book_shape, self._row_shape = (B, N), (N,)  # what step_signals accepts
        self._series = np.zeros(max(self.config.risk.var_window, 1))
        self.threads = _check_threads(threads)
        self.reset()

    def _bind(self, fbook: np.ndarray, ibook: np.ndarray, dirs: np.ndarray) -> None:
        """The state arrays (``pos``, ``acct``, ``clock``, ...) as views of two buffers, and
        the kernel's arguments after (active, scheme) bound once: 15 arguments instead of 25
        (numba's dispatch costs about 60 ns an array); the arrays are only written in place."""
        self._fbook, self._ibook, self._dirs = fbook, ibook, dirs
        (self.pos, self.acct, self.curve, self.gross_curve, self.fills, self._confs,
         self._weights, self.clock, self.count, self.n_curve, self.n_fills,
         self.refused) = self._kernel.book_views(fbook, ibook, self.n_books,
                                                 self.market.n_assets, self.max_step_bars)
        md = self.market
        self._kernel_args = (
            dirs, fbook, ibook, md.open, md.high, md.low, md.close, md.tradable, self.returns,
            self.stats.vol, self.stats.pairs, self.stats.cov, self.next_decision, self.per_asset,
            self.params)

    def __getstate__(self) -> dict:
        # the state arrays are views of the buffers: pickle (and deepcopy) the buffers and
        # carve the views again, so that a copy's views are its own buffers'
        state = {k: v for k, v in self.__dict__.items() if k not in _VIEWS}
        state["_kernel"] = state["_summarize"] = None
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._kernel, self._summarize = _compiled()[0], _compiled()[1].summarize
        self._bind(self._fbook, self._ibook, self._dirs)

    # ------------------------------------------------------------------ state
    def reset(self, start: int | np.ndarray = 0, end: int | np.ndarray | None = None,
              books: np.ndarray | None = None) -> None:
        """Start books (all, or the boolean mask ``books``) flat at bar ``start``.

        :param start: first decision bar (its close is the first mark), per book or shared.
        :param end: last bar of the window (inclusive); default the last bar of the data.
            ``end == start`` starts a book at its last bar: its state is readable (the live
            loop's newest observation) and it has nothing to step.
        """
        sel = self._all if books is None else np.asarray(books, dtype=bool)
        T = self.market.n_bars
        end = T - 1 if end is None else end
        start_arr = np.broadcast_to(np.asarray(start, dtype=np.int64), (self.n_books,))
        end_arr = np.broadcast_to(np.asarray(end, dtype=np.int64), (self.n_books,))
        bad = sel & ((start_arr < 0) | (end_arr > T - 1) | (start_arr > end_arr))
        if bad.any():
            b = int(np.argmax(bad))
            raise ValueError(f"need 0 <= start <= end <= {T - 1}, got start={start_arr[b]}, "
                             f"end={end_arr[b]} for book {b}")
        init = self.config.portfolio.initial_balance
        self.pos[sel] = 0.0
        self.pos[sel, :, L.STOP] = np.nan
        self.pos[sel, :, L.TARGET] = np.nan
        self.acct[sel] = 0.0
        self.acct[sel, L.CASH] = init
        self.acct[sel, L.EQUITY] = init
        self.acct[sel, L.PEAK] = init
        self.acct[sel, L.BASE] = init
        self.clock[sel, L.BAR] = start_arr[sel]
        self.clock[sel, L.END] = end_arr[sel]
        self.clock[sel, L.COOLDOWN] = 0
        self.clock[sel, L.STATUS] = L.RUNNING
        self.clock[sel, L.WAITING] = 0
        self.clock[sel, L.STOP_WAIT] = 0
        self.clock[sel, L.CALLED] = 0
        self.count[sel] = 0
        self.n_fills[sel] = 0
        self.n_curve[sel] = 0
        self.refused[sel] = 0

    def get_state(self) -> dict[str, np.ndarray]:
        """Copies of every state array (positions, account, clock, counters)."""
        return {"pos": self.pos.copy(), "acct": self.acct.copy(), "clock": self.clock.copy(),
                "count": self.count.copy()}

    def set_state(self, state: dict[str, np.ndarray]) -> None:
        """Restore a state taken by :meth:`get_state` (same B and N)."""
        for name in ("pos", "acct", "clock", "count"):
            getattr(self, name)[...] = state[name]

    # ------------------------------------------------------------------ stepping
    def _run(self, scheme: int, active: np.ndarray | None) -> None:
        act = self._all if active is None else np.asarray(active, dtype=np.bool_)
        kernel = self._kernel
        if self.threads > 1:
            import numba

            numba.set_num_threads(self.threads)
            kernel.step_books_threaded(self.threads, act, scheme, *self._kernel_args)
        else:
            kernel.step_books(act, scheme, *self._kernel_args)

    def _intents(self, direction: np.ndarray, confidence: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
        """(B or 1, N) intents, shapes and dtype checked (the values are checked compiled)."""
        d = np.asarray(direction)
        cf = np.asarray(confidence, dtype=np.float64)
        got = d.shape
        if got != cf.shape or (got != self._book_shape and got != self._row_shape):
            raise ValueError(f"direction and confidence must have shape {self._book_shape} or "
                             f"{self._row_shape}, got {d.shape} and {cf.shape}")
        if d.dtype.kind not in "biuf":
            raise ValueError(f"direction must be numeric, got dtype {d.dtype}")
        if len(got) == 1:
            d, cf = d[None], cf[None]
        return d, cf

    @staticmethod
    def _raise_bad_intents(bad: int) -> None:
        if bad == 1:
            raise ValueError("direction must be -1, 0 or +1")
        if bad == 2:
            raise ValueError("confidence must be finite and in [0, 1]")

    def step_signals(self, direction: np.ndarray, confidence: np.ndarray,
                     active: np.ndarray | None = None) -> None:
        """One decision step from per-asset intents.

        :param direction: (B, N) or (N,) in {-1, 0, +1}: SELL, HOLD, BUY.
        :param confidence: same shape, in [0, 1].
        :param active: optional (B,) mask of books to step.
        """
        d, cf = self._intents(direction, confidence)
        # compiled: check everything, then copy and step, in one call (numpy's checks cost
        # about 9 us a decision); a refused input changes nothing
        if self.threads > 1:
            bad = self._kernel.load_signals(d, cf, self._dirs, self._confs)
            if bad == 0:
                self._run(L.SIGNALS, active)
        else:
            act = self._all if active is None else np.asarray(active, dtype=np.bool_)
            bad = self._kernel.step_signal_books(d, cf, act, *self._kernel_args)
        self._raise_bad_intents(bad)

    def load_signals(self, direction: np.ndarray, confidence: np.ndarray) -> int:
        """Check intents as :meth:`step_signals` does and copy them into
        :meth:`intent_buffers` without stepping; returns the scheme code the compiled step
        takes (:mod:`ffe_gym.env.stepping`)."""
        d, cf = self._intents(direction, confidence)
        self._raise_bad_intents(self._kernel.load_signals(d, cf, self._dirs, self._confs))
        return L.SIGNALS

    def intent_buffers(self) -> tuple[np.ndarray, np.ndarray]:
        """The (B, N) direction and confidence buffers, for callers that fill them directly
        (already validated) and then call :meth:`step_buffered_signals`."""
        return self._dirs, self._confs

    def step_buffered_signals(self, active: np.ndarray | None = None) -> None:
        """Step with the intents already written into :meth:`intent_buffers`."""
        self._run(L.SIGNALS, active)

    def step_weights(self, weights: np.ndarray, active: np.ndarray | None = None) -> None:
        """One decision step to target weights (share of equity per asset, signed).

        NaN keeps an asset's position as it is. No sizing; limits apply to increases.
        """
        self._run(self.load_weights(weights), active)

    def load_weights(self, weights: np.ndarray) -> int:
        """Check target weights as :meth:`step_weights` does and copy them into the engine's
        buffer without stepping; returns the scheme code the compiled step takes."""
        w = np.asarray(weights, dtype=np.float64)
        shape = self._weights.shape
        if w.shape not in (shape, shape[1:]):
            raise ValueError(f"weights must have shape {shape} or {shape[1:]}, got {w.shape}")
        if np.any(np.isinf(w)):
            raise ValueError("weights must be finite (NaN keeps a position)")
        self._weights[:] = w
        return L.WEIGHTS

    @property
    def kernel_args(self) -> tuple[np.ndarray, ...]:
        """The arrays the compiled step reads and writes, in the order of
        ``kernel.step_books`` after (active, scheme): for callers that fuse their own compiled
        pass with the step (:mod:`ffe_gym.env.stepping`). Written only in place."""
        return self._kernel_args

    # ------------------------------------------------------------------ views
    @property
    def bar(self) -> np.ndarray:
        return self.clock[:, L.BAR]

    @property
    def status(self) -> np.ndarray:
        return self.clock[:, L.STATUS]

    @property
    def done(self) -> np.ndarray:
        return self.clock[:, L.STATUS] != L.RUNNING

    @property
    def equity(self) -> np.ndarray:
        return self.acct[:, L.EQUITY]

    @property
    def cash(self) -> np.ndarray:
        return self.acct[:, L.CASH]

    @property
    def units(self) -> np.ndarray:
        return self.pos[:, :, L.UNITS]

    def prices(self) -> np.ndarray:
        """(B, N) closes at each book's current bar."""
        return self.market.close[self.clock[:, L.BAR]]

    def weights(self) -> np.ndarray:
        """(B, N) signed position value / equity at each book's current bar."""
        eq = self.equity[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(eq != 0, self.units * self.prices() / eq, 0.0)

    def unrealized(self) -> np.ndarray:
        u = self.units
        return np.where(u != 0, u * (self.prices() - self.pos[:, :, L.ENTRY]), 0.0)

    def drawdown(self) -> np.ndarray:
        ref = (self.acct[:, L.BASE] if self.params[L.P_DD_FROM_INITIAL] > 0
               else self.acct[:, L.PEAK])
        return 1.0 - self.equity / ref

    def refusals(self, b: int = 0) -> dict[str, int]:
        """Cumulative refused openings by reason (and orders scaled down) for book b."""
        return {name: int(self.count[b, k]) for k, name in enumerate(L.REFUSAL_NAMES) if k}

    def summary(self, b: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Book figures (fields ``layout.B_*``) and per-asset attribution (N, ``layout.A_*``)
        of book b at its current bar: one compiled pass, fresh arrays."""
        book = np.empty(L.NBOOK)
        assets = np.empty((self.market.n_assets, L.NASSET))
        self._summarize(b, self.market.close, self.returns, self.next_decision, self.params,
                        self.pos, self.acct, self.clock, self.refused, book, assets,
                        self._series)
        return book, assets

    def attribution(self, b: int = 0) -> list[AssetAttribution]:
        """Per-asset attribution of book b at its current bar."""
        book, a = self.summary(b)
        total = book[L.B_PNL]
        init = self.config.portfolio.initial_balance
        out = []
        for j, sym in enumerate(self.market.symbols):
            trades = int(a[j, L.A_TRADES])
            pnl = float(a[j, L.A_PNL])
            out.append(AssetAttribution(
                symbol=sym, realized=float(a[j, L.A_REALIZED]),
                unrealized=float(a[j, L.A_UNREALIZED]), fees=float(a[j, L.A_FEES]),
                borrow=float(a[j, L.A_BORROW]), trades=trades, wins=int(a[j, L.A_WINS]),
                win_rate=float(a[j, L.A_WINS] / trades) if trades else None,
                gross_win=float(a[j, L.A_GROSS_WIN]), gross_loss=float(a[j, L.A_GROSS_LOSS]),
                pnl=pnl, pnl_pct_initial=pnl / init * 100.0,
                share_of_total=pnl / float(total) if total != 0 else None))
        return out

    def step_fills(self, b: int = 0) -> np.ndarray:
        """(n, NFILL) fills of the last step of book b (a copy)."""
        return self.fills[b, : self.n_fills[b]].copy()
