"""Names of the fields in the engine's state and output arrays.

The engine keeps state in a few dense arrays so that numba can step B books in one call:

* ``pos``   float64 (B, N, NPOS): per book and asset, the fields ``P_*`` below;
* ``acct``  float64 (B, NACCT):  cash, equity, peak, gross exposure, traded notional;
* ``clock`` int64   (B, NCLOCK): current bar, last bar of the window, cooldown, status;
* ``count`` int64   (B, NCOUNT): refusals by reason (indexed by ``R_*``) and scaled orders.

Module-level integers are compile-time constants for numba.
"""

# --- per asset (pos[b, i, :])
UNITS = 0  # signed: shorts negative
ENTRY = 1  # average entry price (fill prices, slippage included)
STOP = 2  # stop-loss level (NaN: none)
TARGET = 3  # take-profit level (NaN: none)
REALIZED = 4  # realised P&L on fill prices
FEES = 5  # fees paid (entry and exit, proportional and fixed)
BORROW = 6  # borrow charged on short notional
TRADES = 7  # closing fills (full or partial)
WINS = 8  # closing fills whose P&L net of their fees is > 0
OPEN_FEES = 9  # entry fees of the open position not yet attributed to a closing fill
GROSS_WIN = 10  # sum of net P&L of winning closing fills
GROSS_LOSS = 11  # sum of -net P&L of losing closing fills
REENTRY = 12  # openings of this asset are refused at decision bars t < REENTRY (after an exit)
PENDING = 13  # 1: the portfolio stop must sell this position at its market's next real open
NPOS = 14

# --- per book (acct[b, :])
CASH = 0
EQUITY = 1  # cash + sum(units * close) at the current bar
PEAK = 2  # peak equity for the drawdown stop
GROSS = 3  # sum |units * close| at the current bar
TRADED = 4  # cumulative traded notional (for turnover)
BASE = 5  # drawdown reference with drawdown_reference initial: the initial balance, or the
# equity at the last flat portfolio stop (so flat equity below the old floor does not re-fire)
NACCT = 6

# --- per book (clock[b, :])
BAR = 0  # current bar: the last bar whose close has been seen
END = 1  # last bar of this book's window
COOLDOWN = 2  # bars left during which openings are blocked
STATUS = 3
WAITING = 4  # positions of closed markets the portfolio stop still has to liquidate
STOP_WAIT = 5  # 1: a terminating portfolio stop ends the book once WAITING reaches 0
CALLED = 6  # 1: a margin call happened since the last decision (a second one closes in full)
NCLOCK = 7

# statuses
RUNNING = 0
ENDED = 1  # end of the window: truncated
STOPPED = 2  # portfolio stop with on_portfolio_stop=terminate: terminated
RUINED = 3  # equity at or below the ruin floor: terminated
STATUS_NAMES = ("running", "end_of_data", "portfolio_stop", "ruin")

# refusal reasons (refused[b, i] and count[b, reason])
R_NONE = 0
R_MAX_POSITIONS = 1
R_CASH = 2
R_SHORT_CAP = 3
R_GROSS_CAP = 4
R_VAR = 5
R_COOLDOWN = 6
R_NOT_TRADABLE = 7
R_NO_SHORTING = 8
R_CASH_AT_FILL = 9
R_ZERO_SIZE = 10
R_REENTRY = 11  # the asset left through its stop-loss or take-profit less than reentry_bars ago
C_SCALED = 12  # orders scaled down (count only)
C_PENDING = 13  # portfolio-stop liquidations of closed markets deferred to their next open
R_MARGIN = 14  # an opening the initial margin does not allow (shorts; every opening with borrowing)
C_MARGIN_CALL = 15  # margin calls: bars whose close broke the maintenance margin (count only)
NCOUNT = 16
REFUSAL_NAMES = ("", "max_positions", "cash", "short_cap", "gross_cap", "var", "cooldown",
                 "not_tradable", "no_shorting", "cash_at_fill", "zero_size", "reentry", "scaled",
                 "pending_liquidation", "margin", "margin_call")

# --- fills (fills[b, k, :])
F_BAR = 0
F_ASSET = 1
F_UNITS = 2  # signed traded units: + buy, - sell
F_PRICE = 3  # fill price, slippage included
F_FEE = 4
F_PNL = 5  # realised P&L of a closing fill (0 for an opening)
F_NET = 6  # closing fill: P&L minus its fee and its share of entry fees
F_REASON = 7
F_CLOSING = 8  # 1.0 for a closing / reducing fill
NFILL = 9

# fill reasons
SIGNAL = 0
STOP_LOSS = 1
TAKE_PROFIT = 2
PORTFOLIO_STOP = 3
MARGIN_CALL = 4  # reduced at a close that broke the maintenance margin
RUIN = 5  # liquidated when equity reached the ruin floor
REASON_NAMES = ("signal", "stop", "take_profit", "portfolio_stop", "margin_call", "ruin")

# --- summary of one book (summary.summarize: book[:], assets[i, :])
B_EQUITY, B_CASH, B_DRAWDOWN, B_VAR, B_GROSS, B_NET, B_FEES, B_BORROW, B_PNL = range(9)
B_REFUSED = 9  # assets refused at the last step
NBOOK = 10
A_WEIGHT, A_REALIZED, A_UNREALIZED, A_FEES, A_BORROW, A_PNL, A_TRADES, A_WINS = range(8)
A_GROSS_WIN, A_GROSS_LOSS = 8, 9
NASSET = 10

# --- parameters (params[:])
P_MAX_POSITIONS = 0
P_CORR_THRESHOLD = 1
P_CORR_WINDOW = 2
P_MAX_VAR = 3  # inf: off
P_MAX_DRAWDOWN = 4  # inf: off
P_SIZER = 5  # index into SIZERS
P_BASE = 6  # risk_per_trade / stop_loss, or risk_per_trade
P_MIN_CONF = 7
P_VOL_WINDOW = 8
P_TARGET_VOL = 9
P_STOP_LOSS = 10  # NaN: off
P_TAKE_PROFIT = 11  # NaN: off
P_INTRABAR = 12
P_NEXT_OPEN = 13
P_ALLOW_SHORT = 14
P_SHORT_CAP = 15  # inf: off
P_GROSS_CAP = 16  # inf: off
P_VAR_HISTORICAL = 17
P_VAR_WINDOW = 18
P_VAR_Z = 19  # standard normal quantile of the VaR confidence
P_VAR_TAIL = 20  # 1 - confidence
P_DD_FROM_INITIAL = 21
P_STOP_FLAT = 22
P_COOLDOWN = 23
P_INITIAL = 24
P_RUIN = 25  # equity floor in currency
P_VOL_SLIPPAGE = 26
P_PERIODS_PER_YEAR = 27
P_REENTRY = 28  # bars an asset stays blocked after its own stop-loss / take-profit exit
P_STOP_VOL = 29  # 1: stop_loss / take_profit are multiples of sigma_bar * sqrt(P_STOP_HORIZON)
P_STOP_HORIZON = 30  # median bars per decision
P_RISK_PER_TRADE = 31
P_BASE_RISK = 32  # 1: sizing base is risk_per_trade / stop distance
P_INIT_MARGIN = 33  # initial margin (see kernel._margin_terms)
P_MAINT_MARGIN = 34  # maintenance margin, checked at every close
P_BORROWING = 35  # 1: cash may go negative (longs on credit); margin on gross exposure
P_MARGIN_RATE = 36  # per year, charged per bar on negative cash
P_CORR_HEDGE = 37  # 1: correlation_mode hedge_aware (side_i x side_j x rho)
P_PAIR_CACHE = 38  # 1: correlations from the shared cache (statistics.py)
P_SHARED_COV = 39  # 1: parametric VaR from the shared rolling covariance (statistics.py)
P_MAX_STEP_BARS = 40  # M: bars one decision step can span (the curve buffers' width)
P_VAR_HORIZON = 41  # bars the VaR limit looks ahead (0: the decision interval)
NPARAM = 42

# --- per-asset parameters (per_asset[k, i])
A_FEE_RATE, A_FIXED_FEE, A_SLIPPAGE, A_BORROW_RATE = range(4)
A_RANK = 4  # the asset's place in symbol order: ties go by it, never by the column
A_AT_RANK = 5  # the asset (column) at each place in symbol order
NPER_ASSET = 6

# action schemes of the kernel
SIGNALS = 0
WEIGHTS = 1

SIZERS = ("correlation_adjusted", "fixed_fraction", "inverse_volatility", "volatility_target")
