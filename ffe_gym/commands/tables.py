"""Rich tables of a backtest: Portfolio Performance, Per-Asset Attribution, Recent Trades."""

from __future__ import annotations

import math

import pandas as pd
from rich.table import Table

from ffe_gym.portfolio.book import AssetAttribution


def _missing(x: float | None) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def _pct(x: float | None, digits: int = 2) -> str:
    return "n/a" if _missing(x) else f"{x * 100:.{digits}f}%"


def _num(x: float | None, fmt: str = ",.2f") -> str:
    return "n/a" if _missing(x) else format(x, fmt)


def performance_table(metrics: dict, initial: float, title: str) -> Table:
    t = Table(title=title, show_header=True, header_style="bold")
    t.add_column("Metric")
    t.add_column("Value", justify="right")
    final = metrics["final_equity"]
    rows = [
        ("Initial balance", _num(initial)),
        ("Final equity", _num(final)),
        ("P&L", _num(final - initial)),
        ("Total return", _pct(metrics["total_return"])),
        ("CAGR", _pct(metrics["cagr"])),
        ("Sharpe (annualised)", _num(metrics["sharpe"], ".2f")),
        ("Sortino", _num(metrics["sortino"], ".2f")),
        ("Max drawdown", _pct(metrics["max_drawdown"])),
        ("Calmar", _num(metrics["calmar"], ".2f")),
        ("VaR / CVaR 95% (per bar)",
         f"{_pct(metrics['var_95'], 3)} / {_pct(metrics['cvar_95'], 3)}"),
        ("Trades (closing fills)", str(metrics["trades"])),
        ("Win rate", _pct(metrics["win_rate"], 1)),
        ("Profit factor", _num(metrics["profit_factor"], ".2f")),
        ("Turnover (x mean equity)", _num(metrics["turnover"], ".1f")),
        ("Mean gross exposure", _pct(metrics["exposure"], 1)),
    ]
    for name, value in rows:
        t.add_row(name, value)
    return t


def attribution_table(rows: list[AssetAttribution]) -> Table:
    t = Table(title="Per-Asset Attribution (Costs = fees + borrow; Open = unrealised)",
              header_style="bold")
    for col in ("Asset", "P&L", "Realised", "Open", "Costs", "Trades", "Win", "% init",
                "Share"):
        t.add_column(col, justify="left" if col == "Asset" else "right")
    for a in rows:
        t.add_row(a.symbol, _num(a.pnl), _num(a.realized), _num(a.unrealized),
                  _num(a.fees + a.borrow), str(a.trades), _pct(a.win_rate, 1),
                  f"{a.pnl_pct_initial:.2f}%", _pct(a.share_of_total, 1))
    return t


def trades_table(trades: pd.DataFrame, n: int = 10) -> Table:
    t = Table(title=f"Recent Trades (last {min(n, len(trades))} of {len(trades)})",
              header_style="bold")
    for col in ("Date", "Asset", "Action", "Price", "P&L", "Return %", "Reason"):
        t.add_column(col, justify="right" if col in ("Price", "P&L", "Return %") else "left",
                     no_wrap=col in ("Date", "Reason"))
    for row in trades.tail(n).itertuples():
        t.add_row(f"{row.time:%Y-%m-%d %H:%M}", row.asset, row.action, f"{row.price:,.6g}",
                  _num(row.pnl), _num(row.return_pct, ".2f"), row.reason)
    return t


def refusals_table(refusals: dict[str, int]) -> Table:
    t = Table(title="Orders refused or scaled, by reason", header_style="bold")
    t.add_column("Reason")
    t.add_column("Count", justify="right")
    for name, k in refusals.items():
        if k:
            t.add_row(name, str(k))
    if not any(refusals.values()):
        t.add_row("none", "0")
    return t


def stats_table(stats: dict) -> Table:
    """A policy's own figures. For an ensemble: one column per member, one row per figure,
    then the ensemble-wide counters."""
    members = stats.get("members") if isinstance(stats.get("members"), dict) else None
    t = Table(title="Policy statistics", header_style="bold")
    t.add_column("figure")
    if members:
        for name in members:
            t.add_column(name, justify="right")
        figures = [k for k in next(iter(members.values())) if k != "error_kinds"]
        for k in figures:
            t.add_row(k, *[_num(r.get(k), ",.3g") if isinstance(r.get(k), float)
                           else str(r.get(k)) for r in members.values()])
        kinds = sorted({k for r in members.values() for k in r.get("error_kinds", {})})
        for kind in kinds:
            t.add_row(f"errors: {kind}",
                      *[str(r.get("error_kinds", {}).get(kind, 0)) for r in members.values()])
    rest = {k: v for k, v in stats.items() if k != "members" and v not in (None, {}, [])}
    if rest:
        width = len(members) if members else 1
        for k, v in rest.items():
            text = _num(v, ",.3g") if isinstance(v, float) else str(v)
            t.add_row(k, text, *[""] * (width - 1))
    return t
