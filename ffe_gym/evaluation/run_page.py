"""One evaluated run as files: its series as CSV (JSON on request) and an interactive HTML page.

:func:`write_run` writes, into one folder:

* ``equity.csv``: per bar, the policy's equity, drawdown and gross exposure (a share of
  equity), and the
  reference's equity and drawdown when there is one;
* ``weights.csv``: per decision, each asset's signed position value over equity, and cash;
* ``trades.csv``: every fill (:meth:`ffe_gym.portfolio.journal.Journal.trades`; ``reason`` says
  whether a signal, a stop, a take-profit, the portfolio stop, a margin call or ruin closed it);
* ``refusals.csv``: per decision, each asset whose opening a rule refused, and the rule (the
  names of :data:`ffe_gym.portfolio.layout.REFUSAL_NAMES`); orders scaled down rather than
  refused are counted in ``summary.json``'s ``refusals`` (``scaled``), not per asset;
* ``attribution.csv``: per asset, realised and open P&L, fees, borrow, trades, wins;
* ``tearsheet.csv``: the standard metrics of the policy and of the reference, and
  ``monthly.csv``: the policy's return in each calendar month;
* ``summary.json`` (what ``evaluate --json`` writes) and, with ``json=True``, ``run.json``: every
  table above in one file;
* ``run.html``: one self-contained page (plotly.js inline; it opens offline): equity and
  drawdown against the reference, weights over time, each asset's price with its trades and
  exits marked, refusals by rule over time, per-asset attribution, and the tearsheet.

The tearsheet uses the project's own metrics (:mod:`ffe_gym.metrics`), the definitions every
table of ``compare`` uses and the tests check against empyrical, rather than quantstats, which
would bring yfinance, seaborn and a second definition of each ratio. One run on one window is
one sample: the page shows no interval (``compare`` gives intervals over windows and seeds)
and says so.

Plotly comes with the ``eval`` extra; without it the CSV files are written and the page is not.
"""

from __future__ import annotations

import html
import json
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ffe_gym.manifest import write_json

if TYPE_CHECKING:
    from ffe_gym.data import MarketData
    from ffe_gym.evaluation.rollout import EpisodeResult

TEARSHEET = (  # (metric, label, format): the rows of the tearsheet, in order
    ("total_return", "Total return", "pct"), ("cagr", "CAGR", "pct"),
    ("volatility", "Volatility (annualised)", "pct"), ("sharpe", "Sharpe", "num"),
    ("sortino", "Sortino", "num"), ("max_drawdown", "Max drawdown", "pct"),
    ("calmar", "Calmar", "num"), ("var_95", "VaR 95% (per bar)", "pct3"),
    ("cvar_95", "CVaR 95% (per bar)", "pct3"), ("trades", "Trades (closing fills)", "int"),
    ("win_rate", "Win rate", "pct"), ("profit_factor", "Profit factor", "num"),
    ("turnover", "Turnover (x mean equity)", "num"), ("exposure", "Mean gross exposure", "pct"),
    ("final_equity", "Final equity", "money"),
)
EXITS = {"stop": ("stop-loss", "#d62728", "x"), "take_profit": ("take-profit", "#2ca02c", "star"),
         "portfolio_stop": ("portfolio stop", "#9467bd", "square"),
         "margin_call": ("margin call", "#8c564b", "diamond"), "ruin": ("ruin", "#000000", "x")}


def _drawdown(equity: pd.Series) -> pd.Series:
    return equity / equity.cummax() - 1.0


def run_tables(result: EpisodeResult, md: MarketData,
               reference: EpisodeResult | None = None) -> dict[str, pd.DataFrame]:
    """Every table :func:`write_run` writes, by file stem."""
    eq = pd.DataFrame({"equity": result.equity, "drawdown": _drawdown(result.equity),
                       "gross_exposure": result.gross_exposure / result.equity})
    if reference is not None:
        ref = reference.equity.reindex(eq.index)
        eq["reference_equity"] = ref
        eq["reference_drawdown"] = _drawdown(ref)
    eq.index.name = "time"
    weights = result.weights if result.weights is not None else pd.DataFrame()
    weights = weights.assign(cash=1.0 - weights.sum(axis=1))
    weights.index.name = "time"
    refused = result.refused if result.refused is not None else pd.DataFrame(
        columns=["time", "bar", "asset", "reason"])
    attribution = pd.DataFrame([asdict(a) for a in result.attribution])
    sheet = {"metric": [m for m, _, _ in TEARSHEET],
             result.policy: [result.metrics.get(m) for m, _, _ in TEARSHEET]}
    if reference is not None:
        sheet[f"reference: {reference.policy}"] = [reference.metrics.get(m)
                                                    for m, _, _ in TEARSHEET]
    return {"equity": eq.reset_index(), "weights": weights.reset_index(),
            "trades": result.trades, "refusals": refused, "attribution": attribution,
            "tearsheet": pd.DataFrame(sheet), "monthly": monthly_returns(result.equity)}


def monthly_returns(equity: pd.Series) -> pd.DataFrame:
    """The return of each calendar month (from the last equity of the month before, or the
    start), with the month's first and last bar: a partial month is marked by its bars."""
    if len(equity) < 2:
        return pd.DataFrame(columns=["month", "return", "first", "last"])
    idx = equity.index
    if idx.tz is not None:  # calendar months in UTC
        idx = idx.tz_convert("UTC").tz_localize(None)
    month = idx.to_period("M")
    s = pd.Series(equity.to_numpy(), index=idx)
    last = s.groupby(month).last()
    before = last.shift(1)
    before.iloc[0] = float(s.iloc[0])
    first_bar = pd.Series(idx, index=idx).groupby(month).first()
    last_bar = pd.Series(idx, index=idx).groupby(month).last()
    return pd.DataFrame({"month": last.index.astype(str), "return": (last / before - 1.0).values,
                         "first": first_bar.astype(str).values,
                         "last": last_bar.astype(str).values})


def write_run(out: str | Path, result: EpisodeResult, md: MarketData, *,
              reference: EpisodeResult | None = None, reference_text: str = "",
              summary: dict[str, Any] | None = None, json_tables: bool = False,
              page: bool = True) -> list[Path]:
    """Write one run's files into ``out`` (created); the paths written.

    :param result: the policy's episode.
    :param md: the data it ran on (prices for the trades chart).
    :param reference: the reference's episode on the same window, or None.
    :param reference_text: what the reference is, shown beside it.
    :param summary: the JSON summary to write as ``summary.json`` (default ``result.summary()``).
    :param json_tables: also write ``run.json`` with every table.
    :param page: write ``run.html`` (needs plotly: the ``eval`` extra).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tables = run_tables(result, md, reference)
    written = []
    for stem, df in tables.items():
        path = out / f"{stem}.csv"
        df.to_csv(path, index=False)
        written.append(path)
    path = out / "summary.json"
    write_json(path, summary if summary is not None else result.summary())
    written.append(path)
    if json_tables:
        path = out / "run.json"
        write_json(path, {k: json.loads(v.to_json(orient="records", date_format="iso"))
                          for k, v in tables.items()})
        written.append(path)
    if page:
        path = out / "run.html"
        path.write_text(html_page(result, md, tables, reference=reference,
                                  reference_text=reference_text), encoding="utf-8")
        written.append(path)
    return written


def write_with_reference(out: str | Path, result: EpisodeResult, md: MarketData, cfg: Any,
                         window: tuple[int, int], *, reference: str = "market", seed: int = 0,
                         summary: dict[str, Any] | None = None, json_tables: bool = False
                         ) -> list[Path]:
    """:func:`write_run` with the reference's episode (``market``, ``ucrp`` or ``none``) run on
    the bars the policy's episode covered, under every rule off and the same data, fills and
    costs; without plotly the files are written and the page is not (said on stderr)."""
    import sys

    from ffe_gym.evaluation import env_for, resolve_policy, rollout
    from ffe_gym.evaluation.experiment import REFERENCE_TEXT, REFERENCES, reference_config

    ref, text = None, ""
    if reference != "none":
        ref_policy = resolve_policy(REFERENCES[reference])
        ref_env = env_for(ref_policy, reference_config(cfg), md)
        last = int(md.index.get_loc(result.end))  # the episode may have ended early
        ref = rollout(ref_policy, ref_env, window=(window[0], last), seed=seed)
        text = (REFERENCE_TEXT[reference] + "; every risk rule off; the same window, data, "
                "fills and costs")
    try:
        import plotly  # noqa: F401
        page = True
    except ImportError:
        page = False
        print("plotly is not installed (pip install 'ffe-gym[eval]'): the CSV files are "
              "written, run.html is not", file=sys.stderr)
    return write_run(out, result, md, reference=ref, reference_text=text, summary=summary,
                     json_tables=json_tables, page=page)


# ------------------------------------------------------------------------------ the page


def _fmt(value: Any, kind: str) -> str:
    if value is None or (isinstance(value, float) and not np.isfinite(value)):
        return "-"
    if kind == "pct":
        return f"{value:.2%}"
    if kind == "pct3":
        return f"{value:.3%}"
    if kind == "int":
        return f"{int(value)}"
    if kind == "money":
        return f"{value:,.2f}"
    return f"{value:.2f}"


def _figures(result: EpisodeResult, md: MarketData, tables: dict[str, pd.DataFrame],
             reference: EpisodeResult | None) -> list[tuple[str, str, Any]]:
    """(anchor, title, plotly figure) of each chart."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    eq = tables["equity"]
    figs = []
    f = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.7, 0.3],
                      vertical_spacing=0.04)
    f.add_trace(go.Scatter(x=eq["time"], y=eq["equity"], name=result.policy,
                           line={"width": 1.4}), 1, 1)
    f.add_trace(go.Scatter(x=eq["time"], y=eq["drawdown"], name=f"{result.policy} drawdown",
                           fill="tozeroy", line={"width": 0.8, "color": "#d62728"},
                           showlegend=False), 2, 1)
    if reference is not None:
        name = f"reference: {reference.policy}"
        f.add_trace(go.Scatter(x=eq["time"], y=eq["reference_equity"], name=name,
                               line={"width": 1.1, "dash": "dot", "color": "#7f7f7f"}), 1, 1)
        f.add_trace(go.Scatter(x=eq["time"], y=eq["reference_drawdown"], name=f"{name} drawdown",
                               line={"width": 0.8, "dash": "dot", "color": "#7f7f7f"},
                               showlegend=False), 2, 1)
    f.update_yaxes(title_text="equity", row=1, col=1)
    f.update_yaxes(title_text="drawdown", tickformat=".0%", row=2, col=1)
    figs.append(("equity", "Equity and drawdown", f))

    w = tables["weights"]
    f = go.Figure()
    for col in w.columns:
        if col != "time":
            f.add_trace(go.Scatter(x=w["time"], y=w[col], name=col, line={"shape": "hv",
                                   "width": 1.0}, visible=True if col != "cash" else
                                   "legendonly"))
    f.update_yaxes(title_text="weight (signed value / equity)", tickformat=".0%")
    figs.append(("weights", "Weights at each decision (click a name to show or hide it)", f))

    figs.append(("prices", "Prices, trades and exits (choose the asset)",
                 _prices_figure(result, md, tables["trades"])))

    r = tables["refusals"]
    f = go.Figure()
    if len(r):
        span = pd.Timestamp(r["time"].max()) - pd.Timestamp(result.start)
        freq = "h" if span <= pd.Timedelta(days=7) else "D" if span <= pd.Timedelta(
            days=180) else "W"
        times = pd.to_datetime(r["time"])
        if times.dt.tz is not None:
            times = times.dt.tz_convert("UTC").dt.tz_localize(None)
        counts = r.assign(period=times.dt.to_period(freq).dt.start_time).groupby(
            ["period", "reason"]).size().unstack(fill_value=0)
        for reason in counts.columns:
            f.add_trace(go.Bar(x=counts.index, y=counts[reason], name=reason))
        f.update_layout(barmode="stack")
        label = {"h": "hour", "D": "day", "W": "week"}[freq]
        f.update_yaxes(title_text=f"openings refused per {label}")
    figs.append(("refusals", "Refusals by rule over time", f))

    a = tables["attribution"]
    f = go.Figure()
    if len(a):
        f.add_trace(go.Bar(x=a["symbol"], y=a["realized"], name="realised",
                           marker_color="#1f77b4"))
        f.add_trace(go.Bar(x=a["symbol"], y=a["unrealized"], name="open",
                           marker_color="#9ecae1"))
        f.add_trace(go.Bar(x=a["symbol"], y=-(a["fees"] + a["borrow"]),
                           name="costs (fees + borrow)", marker_color="#d62728"))
        f.add_trace(go.Scatter(x=a["symbol"], y=a["pnl"], name="P&L (net)", mode="markers",
                               marker={"color": "black", "size": 9, "symbol": "diamond"}))
        f.update_layout(barmode="relative")
        f.update_yaxes(title_text="currency")
    figs.append(("attribution", "Per-asset attribution", f))
    for _, _, fig in figs:
        fig.update_layout(height=420, margin={"l": 60, "r": 20, "t": 20, "b": 40},
                          legend={"orientation": "h", "y": -0.15}, template="plotly_white")
    return figs


def _prices_figure(result: EpisodeResult, md: MarketData, trades: pd.DataFrame) -> Any:
    import plotly.graph_objects as go

    lo, hi = md.index.get_loc(result.start), md.index.get_loc(result.end)
    times = md.index[lo:hi + 1]
    f = go.Figure()
    groups: list[list[int]] = []
    for j, sym in enumerate(md.symbols):
        first = len(f.data)
        f.add_trace(go.Scatter(x=times, y=md.close[lo:hi + 1, j], name=f"{sym} close",
                               line={"width": 1.0, "color": "#1f77b4"}, visible=j == 0))
        t = trades[trades["asset"] == sym]
        signal = t[t["reason"] == "signal"]
        for action, symbol, color in (("BUY", "triangle-up", "#2ca02c"),
                                      ("SELL", "triangle-down", "#d62728")):
            s = signal[signal["action"] == action]
            f.add_trace(go.Scatter(x=s["time"], y=s["price"], mode="markers", name=action,
                                   marker={"symbol": symbol, "color": color, "size": 9},
                                   visible=j == 0, text=s["units"].map("{:+.6g} units".format),
                                   hovertemplate="%{x}<br>%{y}<br>%{text}"))
        for reason, (label, color, symbol) in EXITS.items():
            s = t[t["reason"] == reason]
            if len(s):
                f.add_trace(go.Scatter(x=s["time"], y=s["price"], mode="markers", name=label,
                                       marker={"symbol": symbol, "color": color, "size": 11,
                                               "line": {"width": 1}}, visible=j == 0))
        groups.append(list(range(first, len(f.data))))
    n = len(f.data)
    buttons = []
    for j, sym in enumerate(md.symbols):
        visible = [False] * n
        for k in groups[j]:
            visible[k] = True
        buttons.append({"label": sym, "method": "update", "args": [{"visible": visible}]})
    f.update_layout(updatemenus=[{"buttons": buttons, "x": 0.0, "y": 1.12, "xanchor": "left",
                                  "direction": "down"}])
    f.update_yaxes(title_text="price")
    return f


def html_page(result: EpisodeResult, md: MarketData, tables: dict[str, pd.DataFrame], *,
              reference: EpisodeResult | None = None, reference_text: str = "") -> str:
    """The run page: one HTML document with plotly.js inline."""
    from plotly.offline import get_plotlyjs

    flags = []
    if md.is_synthetic:
        flags.append("SYNTHETIC DATA: the prices are simulated, not a market's.")
    if result.hindsight:
        flags.append("HINDSIGHT: this policy read prices after its decision bars; it is a "
                     "bound, not a strategy.")
    if not result.policy_stats.get("reproducible", True):
        flags.append("NOT REPRODUCIBLE: " + "; ".join(result.policy_stats.get(
            "unreproducible") or []))
    esc = html.escape
    sheet = tables["tearsheet"]
    cols = [c for c in sheet.columns if c != "metric"]
    rows = "".join(
        f"<tr><th>{esc(label)}</th>"
        + "".join(f"<td>{_fmt(sheet.loc[i, c], kind)}</td>" for c in cols) + "</tr>"
        for i, (_, label, kind) in enumerate(TEARSHEET))
    monthly = tables["monthly"]
    months = "".join(f"<tr><th>{esc(m)}</th><td>{r:.2%}</td><td>{esc(a)} .. {esc(b)}</td></tr>"
                     for m, r, a, b in monthly.itertuples(index=False))
    refusals = result.refusals
    refused_total = ", ".join(f"{k} {v}" for k, v in refusals.items() if v) or "none"
    # "scaled" counts orders scaled down, not refused: the chart below shows refusals only
    charts = []
    for anchor, title, fig in _figures(result, md, tables, reference):
        charts.append(f"<h2 id='{anchor}'>{esc(title)}</h2>"
                      + fig.to_html(full_html=False, include_plotlyjs=False,
                                    config={"responsive": True, "displaylogo": False}))
    ref_line = (f"<p>Reference: <b>{esc(reference.policy)}</b>: {esc(reference_text)}</p>"
                if reference is not None else "<p>No reference run.</p>")
    head = [f"Data: {md.describe()}",
            f"Window: {result.start} .. {result.end} ({result.metrics.get('bars')} bars, "
            f"{result.steps} decisions; ended: {result.status})"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>ffe-gym run: {esc(result.policy)}</title>
<script>{get_plotlyjs()}</script>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5em auto; max-width: 1200px;
       padding: 0 1em; color: #222; }}
.flag {{ background: #fde8e8; border-left: 4px solid #c00; padding: .4em .8em; }}
table {{ border-collapse: collapse; margin: .5em 0; }}
th, td {{ border-bottom: 1px solid #ddd; padding: .2em .8em; text-align: right; }}
th {{ text-align: left; font-weight: 500; }}
.cols {{ display: flex; flex-wrap: wrap; gap: 2em; }}
</style></head><body>
<h1>{esc(result.policy)}</h1>
{"".join(f"<p class='flag'>{esc(x)}</p>" for x in flags)}
{"".join(f"<p>{esc(x)}</p>" for x in head)}
{ref_line}
<p>One run on one window: every figure here is one sample, with no interval. <code>compare</code>
scores a policy over many windows and seeds, with intervals.</p>
<div class="cols"><div><h2 id="tearsheet">Tearsheet</h2>
<table><tr><th>metric</th>{"".join(f"<th>{esc(c)}</th>" for c in cols)}</tr>{rows}</table>
<p>Refused or scaled openings: {esc(refused_total)}.</p></div>
<div><h2 id="monthly">Monthly returns</h2>
<table><tr><th>month</th><th>return</th><th>bars</th></tr>{months}</table></div></div>
{"".join(charts)}
</body></html>
"""
