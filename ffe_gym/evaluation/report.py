"""Reports of a comparison: a terminal table, CSV / JSON files, one self-contained HTML file.

The HTML embeds its plots as PNG data (no other file is needed to read it): IQM scores with
their intervals, probability of improvement, performance profiles, equity curves per fold with
bands across seeds, drawdowns, weights over time, per-asset attribution, and the experiment's
config. Matplotlib draws on its own Agg canvases here; the global backend is left alone.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ffe_gym.manifest import atomic_write, write_json


def terminal_table(agg: dict[str, Any], title: str):
    from rich.table import Table

    t = Table(title=title, header_style="bold")
    for col in ("agent", f"IQM score ({agg['score']}) [95% CI]", "Sharpe", "return",
                "max DD", "turnover", "trades"):
        t.add_column(col, justify="left" if col == "agent" else "right")
    def fmt(v: float | None, spec: str) -> str:
        return "n/a" if v is None or not np.isfinite(v) else format(v, spec)

    for r in sorted(agg["table"], key=lambda r: -r["iqm"]):
        t.add_row(r["agent"], f"{r['iqm']:+.2f} [{r['iqm_low']:+.2f}, {r['iqm_high']:+.2f}]",
                  fmt(r["sharpe"], ".2f"), fmt(r["total_return"], "+.2%"),
                  fmt(r["max_drawdown"], ".2%"), fmt(r["turnover"], ".1f"),
                  fmt(r["trades"], ".0f"))
    return t


def write_files(out: Path, df: pd.DataFrame, agg: dict[str, Any]) -> None:
    atomic_write(out / "results.csv", df.to_csv(index=False))
    atomic_write(out / "summary.csv", pd.DataFrame(agg["table"]).to_csv(index=False))
    write_json(out / "summary.json", agg)


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figure(w: float = 8, h: float = 4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h))
    FigureCanvasAgg(fig)
    return fig


def _interval_plot(agg: dict[str, Any]) -> str:
    rows = sorted(agg["table"], key=lambda r: r["iqm"])
    fig = _figure(8, 0.5 * len(rows) + 1.2)
    ax = fig.subplots()
    y = np.arange(len(rows))
    ax.errorbar([r["iqm"] for r in rows], y,
                xerr=[[r["iqm"] - r["iqm_low"] for r in rows],
                      [r["iqm_high"] - r["iqm"] for r in rows]], fmt="o", capsize=4)
    ax.set_yticks(y, [r["agent"] for r in rows])
    ax.axvline(0.0, color="grey", lw=0.8)
    ax.set_xlabel(f"IQM of {agg['score']} (95% stratified bootstrap CI)")
    return _png(fig)


def _poi_plot(agg: dict[str, Any]) -> str:
    agents = [r["agent"] for r in agg["table"]]
    n = len(agents)
    m = np.full((n, n), np.nan)
    for i, a in enumerate(agents):
        for j, b in enumerate(agents):
            if a != b:
                m[i, j] = agg["probability_of_improvement"][f"{a} > {b}"][0]
    fig = _figure(1.0 + 0.7 * n, 0.8 + 0.6 * n)
    ax = fig.subplots()
    im = ax.imshow(m, vmin=0, vmax=1, cmap="RdBu")
    ax.set_xticks(range(n), agents, rotation=45, ha="right")
    ax.set_yticks(range(n), agents)
    for i in range(n):
        for j in range(n):
            if i != j:
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=7)
    ax.set_title("P(row > column)")
    fig.colorbar(im, ax=ax)
    return _png(fig)


def _profile_plot(agg: dict[str, Any]) -> str:
    fig = _figure()
    ax = fig.subplots()
    for a, prof in agg["profiles"].items():
        ax.plot(agg["taus"], prof, label=a)
    ax.set_xlabel(f"threshold tau on {agg['score']}")
    ax.set_ylabel("share of runs with score > tau")
    ax.legend(fontsize=7)
    return _png(fig)


def _curves(df: pd.DataFrame) -> dict[tuple[str, int], dict[str, list[pd.Series]]]:
    out: dict[tuple[str, int], dict[str, list[pd.Series]]] = {}
    for row in df.itertuples():
        eq = pd.read_csv(Path(row.folder) / "equity.csv", index_col="time",
                         parse_dates=True)["equity"]
        out.setdefault((row.dataset, row.fold), {}).setdefault(row.agent, []).append(eq)
    return out


def _equity_plots(df: pd.DataFrame) -> list[tuple[str, str]]:
    figs = []
    for (dataset, fold), agents in _curves(df).items():
        fig = _figure(9, 6)
        ax_eq, ax_dd = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
        for agent, curves in agents.items():
            frame = pd.concat(curves, axis=1).ffill()
            mid = frame.median(axis=1)
            line, = ax_eq.plot(mid.index, mid, lw=1.0, label=agent)
            ax_eq.fill_between(mid.index, frame.min(axis=1), frame.max(axis=1), alpha=0.15,
                               color=line.get_color())
            dd = (frame / frame.cummax() - 1.0).median(axis=1)
            ax_dd.plot(dd.index, dd, lw=0.8, color=line.get_color())
        ax_eq.set_ylabel("equity (median, band: min-max over seeds)")
        ax_dd.set_ylabel("drawdown (median)")
        ax_eq.legend(fontsize=7, ncol=3)
        fig.autofmt_xdate()
        figs.append((f"{dataset}, fold {fold}", _png(fig)))
    return figs


def _weights_plot(df: pd.DataFrame) -> str:
    first = df.sort_values(["dataset", "fold", "seed"]).groupby("agent").head(1)
    n = len(first)
    fig = _figure(9, 1.6 * n + 0.5)
    axes = np.atleast_1d(fig.subplots(n, 1, sharex=True))
    for ax, row in zip(axes, first.itertuples(), strict=True):
        w = pd.read_csv(Path(row.folder) / "weights.csv", index_col="time", parse_dates=True)
        for col in w.columns:
            ax.step(w.index, w[col], where="post", lw=0.7, label=col)
        ax.set_ylabel(row.agent, fontsize=7)
    axes[0].legend(fontsize=6, ncol=6, loc="upper left")
    axes[0].set_title("weights per decision (first fold, first seed)")
    fig.autofmt_xdate()
    return _png(fig)


def _attribution_plot(rows: list[dict[str, Any]]) -> str:
    per: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        for a in r["attribution"]:
            per.setdefault(r["agent"], {}).setdefault(a["symbol"], []).append(a["pnl"])
    agents = list(per)
    symbols = list(dict.fromkeys(s for a in agents for s in per[a]))
    fig = _figure(9, 4)
    ax = fig.subplots()
    width = 0.8 / max(1, len(agents))
    x = np.arange(len(symbols))
    for k, a in enumerate(agents):
        ax.bar(x + k * width, [np.mean(per[a].get(s, [0.0])) for s in symbols], width, label=a)
    ax.set_xticks(x + 0.4 - width / 2, symbols, rotation=30, ha="right")
    ax.set_ylabel("mean P&L per run (net of costs)")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.legend(fontsize=7, ncol=3)
    return _png(fig)


def html_report(path: Path, *, title: str, df: pd.DataFrame, rows: list[dict[str, Any]],
                agg: dict[str, Any], config: dict[str, Any], synthetic: bool) -> Path:
    """Write one self-contained HTML report and return its path."""
    img = '<img src="data:image/png;base64,{}" alt="{}">'
    table = pd.DataFrame(agg["table"]).sort_values("iqm", ascending=False)
    poi = pd.DataFrame([{"pair": k, "P": v[0], "low": v[1], "high": v[2]}
                        for k, v in agg["probability_of_improvement"].items()])
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        "<p class=warn>SYNTHETIC DATA: these figures show the machinery, not a market.</p>"
        if synthetic else "",
        f"<p>Score: {html.escape(agg['score'])}, per test window; {agg['tasks']} tasks "
        f"(dataset x fold) x seeds {agg['seeds']}. IQM = interquartile mean; intervals are "
        "95% stratified bootstrap (runs resampled within each task).</p>",
        "<h2>Aggregates</h2>", table.to_html(index=False, float_format=lambda v: f"{v:.4g}"),
        img.format(_interval_plot(agg), "IQM intervals"),
        "<h2>Probability of improvement</h2>", img.format(_poi_plot(agg), "P(improvement)"),
        poi.to_html(index=False, float_format=lambda v: f"{v:.3f}"),
        "<h2>Performance profiles</h2>", img.format(_profile_plot(agg), "profiles"),
        "<h2>Equity and drawdown per fold</h2>",
        *[f"<h3>{html.escape(name)}</h3>" + img.format(png, name)
          for name, png in _equity_plots(df)],
        "<h2>Weights over time</h2>", img.format(_weights_plot(df), "weights"),
        "<h2>Per-asset attribution</h2>", img.format(_attribution_plot(rows), "attribution"),
        "<h2>All runs</h2>", df.drop(columns=["folder"]).to_html(
            index=False, float_format=lambda v: f"{v:.4g}"),
        "<h2>Config</h2>",
        f"<pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>",
    ]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;}"
             "table{border-collapse:collapse;font-size:12px;margin:1em 0;}"
             "td,th{border:1px solid #ccc;padding:2px 6px;} img{max-width:100%;}"
             ".warn{color:#a00;font-weight:bold;} pre{background:#f6f6f6;padding:1em;}")
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")
    atomic_write(path, doc)
    return path

