"""Reports of a comparison: a terminal table, CSV / JSON files, one self-contained HTML file.

Every table says what stands behind it: the reference, the rule set, the data (and what is
synthetic, close-only or hindsight), the windows with their dates, how many windows and runs
stand behind each interval, and how the intervals and tests were computed
(:func:`notes`). The HTML embeds its plots as PNG data (no other file is needed to read it).
Matplotlib draws on its own Agg canvases here; the global backend is left alone.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ffe_gym.manifest import atomic_write, write_json

MIN_WINDOWS = 8  # fewer test windows: a table says its intervals cannot mean much


def _missing(v: Any) -> bool:
    return v is None or (isinstance(v, float) and not math.isfinite(v))


def num(v: Any, spec: str = ".2f") -> str:
    return "n/a" if _missing(v) else format(v, spec)


def pct(v: Any, digits: int = 1, sign: bool = False) -> str:
    return "n/a" if _missing(v) else f"{v * 100:{'+' if sign else ''}.{digits}f}%"


def ordered(agg: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows: per rule variant, the ranked rows (at least ``MIN_WINDOWS`` windows with a
    score) best first by IQM score, then the rows not ranked: the one order used
    everywhere."""
    variants = {v: k for k, v in enumerate(agg["variants"])}
    return sorted(agg["table"], key=lambda r: (
        variants.get(r["variant"], 0), not r.get("ranked", True), _missing(r["iqm"]),
        -(r["iqm"] if not _missing(r["iqm"]) else 0)))


def label(agg: dict[str, Any], row: dict[str, Any]) -> str:
    """The key of a row in the aggregates (probability of improvement, profiles, tests)."""
    return f"{row['agent']} [{row['variant']}]" if len(agg["variants"]) > 1 else row["agent"]


def display(agg: dict[str, Any], row: dict[str, Any], variant: bool = True) -> str:
    """A row's name in tables: its label, with controls marked."""
    name = row["agent"]
    if row.get("control"):
        name += " (control)"
    return f"{name} [{row['variant']}]" if variant and len(agg["variants"]) > 1 else name


def verdicts(agg: dict[str, Any]) -> list[str]:
    """One line per rule variant: who beats the reference (StepM), who is distinguishable
    from doing nothing and from untrained, with the intervals behind it."""
    out = []
    superior = set(agg["tests"].get("superior") or [])
    for v in agg["variants"]:
        rows = [r for r in ordered(agg) if r["variant"] == v and not r.get("control")
                and not r["hindsight"]]
        ranked = [r for r in rows if r.get("ranked", True) and not _missing(r["iqm"])]
        beat = [label(agg, r) for r in rows if label(agg, r) in superior]
        above = [r for r in rows if r.get("vs_cash") is not None
                 and not _missing(r["vs_cash"][1]) and r["vs_cash"][1] > 0]
        below = [r for r in rows if r.get("vs_cash") is not None
                 and not _missing(r["vs_cash"][2]) and r["vs_cash"][2] < 0]
        same = [r for r in rows if r not in above and r not in below
                and r.get("vs_cash") is not None]
        untrained = [r["agent"] for r in rows if r.get("vs_untrained") is not None
                     and not _missing(r["vs_untrained"][1])
                     and r["vs_untrained"][1] <= 0 <= r["vs_untrained"][2]]
        top = ranked[0] if ranked else None
        parts = [f"{v}: " + (f"best {top['agent']} {_interval(top)} over {top['windows']} "
                             "windows" if top else "no ranked agent")]
        parts.append("beats the reference (StepM): " + (", ".join(beat) or "none"))
        parts.append("above doing nothing: " + (", ".join(
            f"{r['agent']} {_ci(r['vs_cash'])}" for r in above) or "none"))
        if below:
            parts.append("below it: " + ", ".join(r["agent"] for r in below))
        if same:
            parts.append("not distinguishable from it: " + ", ".join(r["agent"] for r in same))
        if untrained:
            parts.append("not distinguishable from untrained: " + ", ".join(untrained))
        out.append("; ".join(parts) + ".")
    return out


def _ci(ci: Any) -> str:
    return f"{ci[0]:+.2f} [{num(ci[1], '+.2f')}, {num(ci[2], '+.2f')}]"


def _interval(r: dict[str, Any]) -> str:
    if _missing(r["iqm"]):
        return "n/a (no defined score)"
    return f"{r['iqm']:+.2f} [{num(r['iqm_low'], '+.2f')}, {num(r['iqm_high'], '+.2f')}]"


def _verdict(r: dict[str, Any]) -> str:
    if r["hindsight"]:
        return "hindsight"
    return {None: "-", True: "yes", False: "no"}[r.get("beats_reference")]


def notes(agg: dict[str, Any], data: str = "") -> list[str]:
    """The lines that say what a table can and cannot show."""
    ref = agg["reference"]
    w = agg["windows"]
    span = f"{w[0]['start'][:10]} .. {w[-1]['end'][:10]}" if w else "none"
    lengths = sorted({x["bars"] for x in w})
    returns = sorted({x["returns"] for x in w})
    tests = agg["tests"]
    out = [
        f"Score: {agg['score']} on the same test window. Reference: {ref['text']}; no stop, "
        f"cap, VaR or drawdown rule; the same fills and costs (mean over its {ref['windows']} "
        f"windows: Sharpe {num(ref['sharpe'])}, return {pct(ref['total_return'], sign=True)}, "
        f"max drawdown {pct(ref['max_drawdown'])}).",
    ]
    for v, text in agg["rules"].items():
        out.append(f"Rules [{v}]: {text}.")
    out.append("Every agent, baselines included, trades under its variant's rules (so "
               "'buy-and-hold' is buy-and-hold under them); the reference under none. "
               "Controls: cash (doing nothing: Sharpe 0 by definition, every window) and each "
               "trained agent's untrained twin; 'not distinguishable' means the paired "
               "per-window interval of the difference contains 0.")
    idx = agg.get("index")
    if idx:
        out.append(f"Index line: {idx['text']}, bought at each window's first close and held, "
                   f"no costs (a yardstick, not a trade; mean over its {idx['windows']} "
                   f"windows: Sharpe {num(idx['sharpe'])}, return "
                   f"{pct(idx['total_return'], sign=True)}); scores stay against the "
                   f"reference.")
    if data:
        out.append(f"Data: {data}. Risk-free rate {agg['risk_free'] * 100:.2f}% a year.")
    out.append(
        f"Windows: {len(w)} walk-forward test windows of {'/'.join(map(str, lengths))} bars "
        f"({'/'.join(map(str, returns))} returns each), {span}. Intervals: 95% two-stage "
        f"bootstrap ({agg['reps']} resamples: windows drawn with replacement, then runs within "
        "each window), so a deterministic agent's interval "
        "comes from its windows; 'windows x runs' says what stands behind each.")
    if w:
        out.append("Window dates: " + "; ".join(
            f"{x['dataset']}/{x['fold']} {x['start'][:10]}..{x['end'][:10]}" for x in w) + ".")
    if len(w) < MIN_WINDOWS:
        out.append(f"Only {len(w)} test windows: too few for any interval here to mean much.")
    if tests.get("spa") is not None:
        sup = ", ".join(tests["superior"]) or "none"
        out.append(
            f"Beats the reference (Romano-Wolf StepM, 5% family-wise, over every non-hindsight "
            f"agent and variant but the controls; '-': not tested, a control or returns "
            f"identical to the reference's): {sup}. Hansen's SPA p-value that none does: "
            f"{tests['spa']['consistent']:.3f} (consistent). Per-bar log returns (mean over "
            f"seeds), {tests['bars']} bars over all windows, loss = minus the return"
            + (", each agent's scaled per window to the reference's volatility (so a lower "
               "loss is a higher Sharpe ratio, the score's meaning, not more exposure)"
               if tests.get("scaled") else "") + ", "
            f"stationary bootstrap with mean block {tests['block_size']} bars, "
            f"{tests['reps']} resamples (arch.bootstrap).")
    out.append(f"Deflated Sharpe (DSR): the probability that a configuration's pooled test "
               f"returns (every window, seeds averaged) have a Sharpe ratio above the best "
               f"expected from {agg['n_trials']} unskilled configurations (every agent x rule "
               f"variant tried, controls excepted).")
    return out


def learning_lines(agg: dict[str, Any]) -> list[str]:
    """One line per trained agent: did validation return improve with training?"""
    out = []
    for agent, c in (agg.get("learning") or {}).items():
        out.append(
            f"Learning [{agent}]: validation log return, median of {c['runs']} trained models "
            f"(folds x seeds): {c['first']:+.3f} at the first validation "
            f"({c['first_steps']:,} steps), best {c['best']:+.3f}, last {c['last']:+.3f} "
            f"({c['last_steps']:,} steps); the best came after the first in {c['improved']} of "
            f"{c['runs']}. Each test window evaluates its run's best model on validation.")
    return out


def diagnostic_lines(agg: dict[str, Any]) -> list[str]:
    """One line per (agent, variant) that ran the placebo / permutation diagnostic."""
    out = []
    metric = agg["metric"]
    for r in ordered(agg):
        d = r.get("diagnostic")
        if not d:
            continue
        parts = [f"Uses its data? [{label(agg, r)}]: {d['windows']} windows, "
                 f"{d['decisions']} decisions"]
        if d.get("note"):
            parts.append(d["note"])
        p = d.get("placebo")
        if p is not None:
            parts.append(f"placebo (each decision sees another decision's market features of "
                         f"the same window, its own book): {p['changed']:.1%} of decisions "
                         f"change, {metric} real - placebo {_ci(p['difference'])}")
        q = d.get("permuted")
        if q is not None:
            parts.append(f"assets rotated: {q['changed']:.1%} of decisions change, {metric} "
                         f"real - rotated {_ci(q['difference'])}")
        out.append("; ".join(parts) + " (95% bootstrap over windows).")
    return out


def terminal_table(agg: dict[str, Any], title: str):
    from rich import box
    from rich.table import Table

    t = Table(title=title, header_style="bold", box=box.SIMPLE_HEAD, padding=(0, 1),
              collapse_padding=True, pad_edge=False)
    multi = len(agg["variants"]) > 1
    cols = ["agent", f"IQM {agg['metric']} - ref [95% CI]", "win x runs", "Sharpe",
            "return", "max DD", "expo", "fills", "beats ref", "DSR"]
    for col in cols:
        t.add_column(col, justify="left" if col == "agent" else "right", no_wrap=True)
    previous = None
    for r in ordered(agg):
        group = (r["variant"], r.get("ranked", True))
        if group != previous:
            if previous is not None:
                t.add_section()
            if multi and (previous is None or previous[0] != r["variant"]):
                t.add_row(f"[bold]{r['variant']}[/bold]", *[""] * (len(cols) - 1))
        previous = group
        per = "1" if r["deterministic"] else str(r["runs_per_window"])
        t.add_row(display(agg, r, variant=False), _interval(r), f"{r['windows']} x {per}",
                  num(r["sharpe"]), pct(r["total_return"], sign=True), pct(r["max_drawdown"]),
                  pct(r["exposure"]), num(r["fills"], ".0f"), _verdict(r),
                  num(r["deflated_sharpe"]))
    ref = agg["reference"]
    t.add_section()
    t.add_row(f"reference: {ref['name']}", "0 by definition", f"{ref['windows']} x 1",
              num(ref["sharpe"]), pct(ref["total_return"], sign=True),
              pct(ref["max_drawdown"]), pct(ref["exposure"]), num(ref["fills"], ".0f"), "", "")
    idx = agg.get("index")
    if idx:
        t.add_row(f"index: {idx['name']}", _interval(idx), f"{idx['windows']} x 1",
                  num(idx["sharpe"]), pct(idx["total_return"], sign=True),
                  pct(idx["max_drawdown"]), "100.0%", "", "", "")
    return t


def flag_lines(agg: dict[str, Any]) -> list[str]:
    return [f"{label(agg, r)}: " + "; ".join(r["flags"]) for r in ordered(agg) if r["flags"]]


def ratio_text(e: dict[str, Any]) -> str:
    """The return ratio with its interval, only where it means something: both mean returns
    positive and every resampled denominator too (else the ratio flips sign or explodes)."""
    rr = e["return_ratio"]
    if min(e["mean_return"]) <= 0 or _missing(rr[1]) or rr[1] <= 0:
        return "n/a (returns not all positive)"
    return f"{num(rr[0])}x [{num(rr[1])}, {num(rr[2])}]"


def effect_lines(agg: dict[str, Any]) -> list[str]:
    out = []
    for e in agg["effects"]:
        rd, dd = e["return_difference"], e["drawdown_reduction"]
        out.append(
            f"{e['agent']}: {e['base']} vs {e['variant']}: mean return "
            f"{pct(e['mean_return'][0], sign=True)} vs {pct(e['mean_return'][1], sign=True)} "
            f"(difference {pct(rd[0], sign=True)} [{pct(rd[1], sign=True)}, "
            f"{pct(rd[2], sign=True)}], ratio {ratio_text(e)}); mean max drawdown "
            f"{pct(e['mean_drawdown'][0])} vs {pct(e['mean_drawdown'][1])} (reduction "
            f"{pct(dd[0], 0)} [{pct(dd[1], 0)}, {pct(dd[2], 0)}])")
    return out


def write_files(out: Path, df: pd.DataFrame, agg: dict[str, Any]) -> None:
    atomic_write(out / "results.csv", df.to_csv(index=False))
    atomic_write(out / "summary.csv", pd.DataFrame(ordered(agg)).to_csv(index=False))
    write_json(out / "summary.json", agg)


# ------------------------------------------------------------------------------------ plots


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode()


def _figure(w: float = 8, h: float = 4):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(w, h), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _interval_plot(agg: dict[str, Any]) -> str:
    rows = [r for r in reversed(ordered(agg)) if not _missing(r["iqm"])]
    fig = _figure(8, 0.45 * len(rows) + 1.2)
    ax = fig.subplots()
    y = np.arange(len(rows))
    lo = [r["iqm"] - r["iqm_low"] if not _missing(r["iqm_low"]) else 0 for r in rows]
    hi = [r["iqm_high"] - r["iqm"] if not _missing(r["iqm_high"]) else 0 for r in rows]
    ax.errorbar([r["iqm"] for r in rows], y, xerr=[lo, hi], fmt="o", capsize=4)
    ax.set_yticks(y, [f"{display(agg, r)} ({r['windows']}x"
                      f"{1 if r['deterministic'] else r['runs_per_window']})" for r in rows])
    ax.axvline(0.0, color="black", lw=0.8, ls="--")
    ax.set_xlabel(f"IQM of {agg['score']} (95% two-stage bootstrap; windows x runs)")
    return _png(fig)


def _poi_plot(agg: dict[str, Any]) -> str:
    names = [label(agg, r) for r in ordered(agg)]
    n = len(names)
    m = np.full((n, n), np.nan)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if a != b:
                m[i, j] = agg["probability_of_improvement"][f"{a} > {b}"][0]
    fig = _figure(1.5 + 0.75 * n, 1.0 + 0.6 * n)
    ax = fig.subplots()
    im = ax.imshow(m, vmin=0, vmax=1, cmap="RdBu")
    ax.set_xticks(range(n), names, rotation=45, ha="right")
    ax.set_yticks(range(n), names)
    for i in range(n):
        for j in range(n):
            if i != j and np.isfinite(m[i, j]):
                dark = abs(m[i, j] - 0.5) > 0.3
                ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=9,
                        color="white" if dark else "black")
    ax.set_title("P(row > column), same windows")
    fig.colorbar(im, ax=ax)
    return _png(fig)


def _profile_plot(agg: dict[str, Any]) -> str:
    fig = _figure()
    ax = fig.subplots()
    for name in [label(agg, r) for r in ordered(agg)]:
        ax.plot(agg["taus"], agg["profiles"][name], label=name)
    ax.set_xlabel(f"threshold tau on {agg['score']}")
    ax.set_ylabel("share of runs with score > tau")
    ax.legend(fontsize=7)
    return _png(fig)


def _learning_plot(agent: str, c: dict[str, Any]) -> str:
    """Validation return against steps: one thin line per fold and seed, the median bold."""
    fig = _figure(8, 3.6)
    ax = fig.subplots()
    for curve in c["curves"]:
        ax.plot(curve["steps"], curve["returns"], color="tab:blue", alpha=0.25, lw=0.8)
    lengths = {len(curve["steps"]) for curve in c["curves"]}
    if len(lengths) == 1:
        steps = c["curves"][0]["steps"]
        ax.plot(steps, np.median([curve["returns"] for curve in c["curves"]], axis=0),
                color="black", lw=2, label=f"median of {c['runs']}")
        ax.legend(fontsize=8)
    ax.axhline(0.0, color="grey", lw=0.8, ls="--")
    ax.set_xlabel("training steps")
    ax.set_ylabel("validation log return")
    ax.set_title(f"{agent}: one line per fold and seed")
    return _png(fig)


def _equity_plots(df: pd.DataFrame, agg: dict[str, Any]) -> list[tuple[str, str]]:
    base = agg["variants"][0]
    order = [r["agent"] for r in ordered(agg) if r["variant"] == base]
    figs = []
    ref = df[df["role"] == "reference"]
    for (dataset, fold), runs in df[df["role"] == "agent"].groupby(["dataset", "fold"]):
        fig = _figure(9, 5.5)
        ax_eq, ax_dd = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
        for agent in order:
            sub = runs[(runs["agent"] == agent) & (runs["variant"] == base)]
            if sub.empty:
                continue
            frame = pd.concat([_equity(f) for f in sub["folder"]], axis=1).ffill()
            mid = frame.median(axis=1)
            line, = ax_eq.plot(mid.index, mid, lw=1.0, label=agent)
            if frame.shape[1] > 1:
                ax_eq.fill_between(mid.index, frame.min(axis=1), frame.max(axis=1), alpha=0.12,
                                   color=line.get_color())
            ax_dd.plot(mid.index, mid / mid.cummax() - 1.0, lw=0.8, color=line.get_color())
        r = ref[(ref["dataset"] == dataset) & (ref["fold"] == fold)]
        if not r.empty:
            eq = _equity(r["folder"].iloc[0])
            ax_eq.plot(eq.index, eq, color="black", lw=1.6, ls="--",
                       label=f"reference: {agg['reference']['name']}")
            ax_dd.plot(eq.index, eq / eq.cummax() - 1.0, color="black", lw=1.2, ls="--")
        ax_eq.set_ylabel("equity (median over seeds)")
        ax_dd.set_ylabel("drawdown")
        ax_eq.legend(fontsize=7, ncol=3)
        for label_ in ax_dd.get_xticklabels():
            label_.set_rotation(30)
            label_.set_ha("right")
        figs.append((f"{dataset}, window {fold}", _png(fig)))
    return figs


def _equity(folder: str) -> pd.Series:
    return pd.read_csv(Path(folder) / "equity.csv", index_col="time", parse_dates=True)["equity"]


def _attribution_plot(rows: list[dict[str, Any]], agg: dict[str, Any]) -> str:
    per: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        name = label(agg, r) if r.get("role") == "agent" else f"reference: {r['agent']}"
        for a in r.get("attribution", []):  # a failed job has none
            per.setdefault(name, {}).setdefault(a["symbol"], []).append(a["pnl"])
    order = [label(agg, r) for r in ordered(agg)]
    agents = [a for a in order if a in per] + [a for a in per if a not in order]
    symbols = list(dict.fromkeys(s for a in agents for s in per[a]))
    fig = _figure(9, 4)
    ax = fig.subplots()
    width = 0.8 / max(1, len(agents))
    x = np.arange(len(symbols))
    for k, a in enumerate(agents):
        ax.bar(x + k * width, [np.mean(per[a].get(s, [0.0])) for s in symbols], width, label=a)
    ax.set_xticks(x + 0.4 - width / 2, symbols)
    ax.set_ylabel("mean P&L per run (net of costs)")
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.legend(fontsize=7, ncol=3)
    return _png(fig)


# ------------------------------------------------------------------------------------- HTML


def _table_html(rows: list[list[str]], header: list[str]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>"
                   for r in rows)
    return f"<div class=scroll><table><tr>{head}</tr>{body}</table></div>"


def _failures_html(agg: dict[str, Any]) -> str:
    failed = agg.get("failures") or []
    if not failed:
        return ""
    rows = [[f["dataset"], f["variant"], f["fold"], f["agent"], f["seed"], f["error"]]
            for f in failed]
    return ("<h2 class=warn>Failed jobs</h2><p class=warn>These jobs failed and are left out "
            "of every figure below; rerun the comparison to retry them.</p>"
            + _table_html(rows, ["dataset", "variant", "window", "agent", "seed", "error"]))


def _activity_html(rows: list[dict[str, Any]], agg: dict[str, Any]) -> str:
    """Per agent (and variant): costs, turnover, exposure, trade statistics, refusals by limit."""
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        if r.get("reuse") == "failed":
            continue
        name = (label(agg, r) if r.get("role") == "agent"
                else f"reference: {r['agent']}")
        by.setdefault(name, []).append(r)
    names = [label(agg, r) for r in ordered(agg)] + [n for n in by if n.startswith("reference")]

    def mean(runs: list[dict[str, Any]], key: str) -> float | None:
        v = [x[key] for x in runs if not _missing(x.get(key))]
        return float(np.mean(v)) if v else None

    table = []
    for n in names:
        runs = by.get(n, [])
        if not runs:
            continue
        refusals: dict[str, float] = {}
        for x in runs:
            for k, v in (x.get("refusals") or {}).items():
                refusals[k] = refusals.get(k, 0.0) + v / len(runs)
        table.append([n, len(runs), f"{num(mean(runs, 'costs'), ',.0f')}",
                      num(mean(runs, "turnover"), ".1f"), pct(mean(runs, "exposure")),
                      num(mean(runs, "trades"), ".0f"), pct(mean(runs, "win_rate")),
                      num(mean(runs, "avg_win"), ",.1f"), num(mean(runs, "avg_loss"), ",.1f"),
                      num(mean(runs, "holding_bars"), ".1f"),
                      ", ".join(f"{k} {v:.1f}" for k, v in sorted(refusals.items()) if v)
                      or "none"])
    header = ["agent", "runs", "costs (fees + borrow)", "turnover", "exposure", "trades",
              "win rate", "avg win", "avg loss", "holding (bars)", "refused openings by limit"]
    return ("<h2>Costs, trades and refusals (means per run)</h2>"
            "<p>Costs and average win / loss in account currency (10,000 initial); turnover "
            "is traded notional over mean equity; holding is bars from opening to closing a "
            "position; refusals are openings a limit refused (scaled: orders cut to cash).</p>"
            + _table_html(table, header) + _llm_html(by))


def _llm_html(by: dict[str, list[dict[str, Any]]]) -> str:
    table = []
    for name, runs in by.items():
        for member in dict.fromkeys(m for x in runs
                                    for m in (x.get("policy_stats") or {}).get("members", {})):
            stats = [x["policy_stats"]["members"][member] for x in runs
                     if member in (x.get("policy_stats") or {}).get("members", {})]
            total = {k: sum(st.get(k) or 0 for st in stats)
                     for k in ("calls", "cache_hits", "answers", "parse_failures",
                               "fallbacks", "errors")}
            lat = [st["latency_mean_s"] for st in stats if st.get("latency_mean_s") is not None]
            misses = sum((x["policy_stats"].get("deadline_misses") or 0) for x in runs)
            table.append([name, member, *total.values(),
                          num(float(np.mean(lat)), ".2f") if lat else "n/a (cached)", misses])
    if not table:
        return ""
    return ("<h2>Language models</h2><p>Per member over all its runs: live calls, replies "
            "replayed from the cache, readable answers, parse failures, fallbacks (HOLD), "
            "errors, mean latency of live calls, decisions that missed the deadline.</p>"
            + _table_html(table, ["agent", "member", "calls", "cache hits", "answers",
                                  "parse failures", "fallbacks", "errors", "latency (s)",
                                  "deadline misses"]))


PERCENT = ("total_return", "cagr", "volatility", "max_drawdown", "var_95", "cvar_95",
           "win_rate", "exposure")
RATIO = ("sharpe", "sortino", "calmar", "profit_factor", "score", "reference_metric",
         "sharpe_ci_low", "sharpe_ci_high", "turnover", "turnover_per_year", "holding_bars")


def _runs_html(df: pd.DataFrame) -> str:
    keep = [c for c in ("dataset", "variant", "fold", "agent", "seed", "window_start",
                        "window_end", "status", "score", "sharpe", "sharpe_ci_low",
                        "sharpe_ci_high", "total_return", "max_drawdown", "volatility",
                        "turnover", "exposure", "trades", "fills", "win_rate", "holding_bars",
                        "final_equity") if c in df.columns]
    rows = []
    for r in df[keep].itertuples(index=False):
        cells = []
        for c, v in zip(keep, r, strict=True):
            if c in PERCENT:
                cells.append(pct(v))
            elif c in RATIO:
                cells.append(num(v))
            elif c in ("window_start", "window_end"):
                cells.append(str(v)[:10])
            elif c == "final_equity":
                cells.append(num(v, ",.0f"))
            elif c in ("trades", "fills"):
                cells.append(num(float(v), ".0f") if not _missing(v) else "n/a")
            else:
                cells.append("n/a" if _missing(v) else str(v))
        rows.append(cells)
    return _table_html(rows, keep)


def html_report(path: Path, *, title: str, df: pd.DataFrame, rows: list[dict[str, Any]],
                agg: dict[str, Any], config: dict[str, Any], synthetic: bool,
                data: str = "") -> Path:
    """Write one self-contained HTML report and return its path."""
    img = '<img src="data:image/png;base64,{}" alt="{}">'
    multi = len(agg["variants"]) > 1
    main = [[display(agg, r), _interval(r),
             f"{r['windows']} x {1 if r['deterministic'] else r['runs_per_window']}",
             num(r["sharpe"]), pct(r["total_return"], sign=True), pct(r["max_drawdown"]),
             num(r["turnover"], ".1f"), pct(r["exposure"]), num(r["fills"], ".0f"),
             pct(r["win_rate"]), _verdict(r), num(r["deflated_sharpe"]),
             "; ".join(r["flags"])] for r in ordered(agg)]
    ref = agg["reference"]
    idx = agg.get("index")
    if idx:
        main.append([f"index: {idx['name']}", _interval(idx), f"{idx['windows']} x 1",
                     num(idx["sharpe"]), pct(idx["total_return"], sign=True),
                     pct(idx["max_drawdown"]), "", "100.0%", "", "", "", "", idx["text"]])
    main.append([f"reference: {ref['name']}", "0 by definition", f"{ref['windows']} x 1",
                 num(ref["sharpe"]), pct(ref["total_return"], sign=True),
                 pct(ref["max_drawdown"]), num(ref["turnover"], ".1f"), pct(ref["exposure"]),
                 num(ref["fills"], ".0f"), pct(ref["win_rate"]), "", "", ref["text"]])
    header = ["agent" + (" [rules]" if multi else ""), f"IQM {agg['metric']} - ref [95% CI]",
              "windows x runs", "Sharpe", "return", "max DD", "turnover", "exposure", "fills",
              "win rate", "beats ref", "DSR", "notes"]
    poi = [[k, num(v[0]), f"[{num(v[1])}, {num(v[2])}]"]
           for k, v in agg["probability_of_improvement"].items()]
    windows = [[w["dataset"], w["fold"], w["start"][:10], w["end"][:10], w["bars"]]
               for w in agg["windows"]]
    effects = [[e["agent"], f"{e['base']} vs {e['variant']}",
                f"{pct(e['mean_return'][0], sign=True)} vs {pct(e['mean_return'][1], sign=True)}",
                f"{pct(e['return_difference'][0], sign=True)} "
                f"[{pct(e['return_difference'][1], sign=True)}, "
                f"{pct(e['return_difference'][2], sign=True)}]", ratio_text(e),
                f"{pct(e['mean_drawdown'][0])} vs {pct(e['mean_drawdown'][1])}",
                f"{pct(e['drawdown_reduction'][0], 0)} [{pct(e['drawdown_reduction'][1], 0)}, "
                f"{pct(e['drawdown_reduction'][2], 0)}]"] for e in agg["effects"]]
    runs = df
    parts = [
        f"<h1>{html.escape(title)}</h1>",
        "<p class=warn>SYNTHETIC DATA: these figures show the machinery, not a market.</p>"
        if synthetic else "",
        "<h2>Verdicts</h2>",
        "".join(f"<p class=verdict>{html.escape(line)}</p>" for line in verdicts(agg)),
        "".join(f"<p>{html.escape(line)}</p>" for line in notes(agg, data)),
        _failures_html(agg),
        "<h2>Aggregates</h2>", _table_html(main, header),
        img.format(_interval_plot(agg), "IQM intervals"),
        *([
            "<h2>Learning curves</h2>",
            "".join(f"<p>{html.escape(line)}</p>" for line in learning_lines(agg)),
            *[img.format(_learning_plot(a, c), f"learning curve {a}")
              for a, c in agg["learning"].items()]] if agg.get("learning") else []),
        *([
            "<h2>Does a policy use its data?</h2>",
            "<p>Placebo: the agent runs each window again, each decision seeing the market "
            "features of another decision of the same window (its own positions and account). "
            "An agent whose decisions change in fewer than 5% of its steps is flagged "
            "'ignores its input'; one whose paired difference real - placebo has an interval "
            "containing 0, 'no evidence that it uses its input'. Rotated: the assets' columns "
            "in another order, the actions put back; any change means the policy reads "
            "columns by position.</p>",
            "".join(f"<p>{html.escape(line)}</p>" for line in diagnostic_lines(agg))]
          if diagnostic_lines(agg) else []),
        "<h2>Test windows</h2>",
        _table_html(windows, ["dataset", "window", "first bar", "last bar", "bars"]),
    ]
    if effects:
        parts += ["<h2>Rule variants: effects</h2>",
                  "<p>Paired by window and seed; intervals are two-stage bootstrap. Return "
                  "difference and ratio: mean total return under the base rules minus / over "
                  "the variant's (the ratio only where returns are positive); drawdown "
                  "reduction = 1 - mean |max DD| base / variant.</p>",
                  _table_html(effects, ["agent", "variants", "mean return",
                                        "return difference", "return ratio", "mean max DD",
                                        "drawdown reduction"])]
    parts += [
        "<h2>Probability of improvement</h2>", img.format(_poi_plot(agg), "P(improvement)"),
        _table_html(poi, ["pair", "P", "95% CI"]),
        "<h2>Performance profiles</h2>", img.format(_profile_plot(agg), "profiles"),
        "<h2>Equity and drawdown per window (reference dashed)</h2>",
        *[f"<h3>{html.escape(name)}</h3>" + img.format(png, name)
          for name, png in _equity_plots(df, agg)],
        _activity_html(rows, agg),
        "<h2>Per-asset attribution</h2>", img.format(_attribution_plot(rows, agg),
                                                     "attribution"),
        "<h2>All runs</h2>", "<p>n/a: undefined (a flat curve has no Sharpe ratio).</p>",
        _runs_html(runs),
        "<h2>Config</h2>",
        f"<pre>{html.escape(yaml.safe_dump(config, sort_keys=False))}</pre>",
    ]
    style = ("body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;}"
             "table{border-collapse:collapse;font-size:12px;margin:1em 0;}"
             "td,th{border:1px solid #ccc;padding:2px 6px;} img{max-width:100%;}"
             ".scroll{overflow-x:auto;max-width:100%;}"
             ".warn{color:#a00;font-weight:bold;} pre{background:#f6f6f6;padding:1em;"
             "overflow-x:auto;}")
    doc = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
           f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>")
    atomic_write(path, doc)
    return path
