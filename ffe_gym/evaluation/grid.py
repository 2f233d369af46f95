"""Aggregate the rows of an experiment's jobs into honest comparisons (see :func:`aggregate`).

Running the jobs is :mod:`ffe_gym.evaluation.runner`'s.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ffe_gym.evaluation.audit import IGNORES
from ffe_gym.evaluation.experiment import (
    REFERENCE_TEXT,
    ExperimentConfig,
    rules_text,
    variant_config,
)
from ffe_gym.evaluation.jobs import DamagedRun
from ffe_gym.evaluation.report import MIN_WINDOWS
from ffe_gym.evaluation.statistics import (
    deflated_sharpe_ratio,
    iqm,
    paired_ratio_ci,
    performance_profile,
    probability_of_improvement_ci,
    superiority_tests,
    two_stage_bootstrap_ci,
)

# ------------------------------------------------------------------------------- aggregation



LLM_OUTCOMES = ("cache", "new", "timeout", "not_started", "error", "skipped", "replay_miss",
                "parse_failures", "fallbacks")


def results_frame(rows: list[dict[str, Any]], exp: ExperimentConfig) -> pd.DataFrame:
    """One row per job. Agent rows get ``score``: the agent's score metric minus the
    reference's on the same dataset and fold (the same reference for every variant and seed).
    A score is NaN where either metric is undefined (a flat curve's Sharpe): left out of every
    aggregate and counted, never a silent 0."""
    rows = [r for r in rows if r.get("reuse") != "failed"]
    if not rows:
        raise ValueError("no job finished: nothing to aggregate")
    drop = ("attribution", "refusals", "policy_stats", "diagnostic")
    df = pd.DataFrame([{k: v for k, v in r.items() if k not in drop} for r in rows])
    diag = [r.get("diagnostic") or {} for r in rows]
    df["diagnostic_decisions"] = [d.get("decisions") for d in diag]
    for what in ("placebo", "permuted"):
        df[f"{what}_changed"] = [d.get(f"{what}_changed") for d in diag]
        df[f"{what}_metric"] = [(d.get(f"{what}_metrics") or {}).get(exp.score) for d in diag]
    df["diagnostic_note"] = [d.get("note") or "" for d in diag]
    df["input_flags"] = [list((r.get("policy_stats") or {}).get("input_flags") or [])
                         for r in rows]
    df["reproducible"] = [(r.get("policy_stats") or {}).get("reproducible", True) is not False
                          for r in rows]
    df["deadline_misses"] = [(r.get("policy_stats") or {}).get("deadline_misses")
                             for r in rows]
    for k in LLM_OUTCOMES:  # an LLM's prompts per outcome (its run folder's llm_calls.csv)
        df[f"llm_{k}"] = [((r.get("policy_stats") or {}).get("outcomes") or {}).get(k)
                          for r in rows]
    df["capped"] = [(r.get("refusals") or {}).get("max_positions", 0) for r in rows]
    df["copying"] = [_copying_counts(r) for r in rows]
    metric = pd.to_numeric(df[exp.score], errors="coerce").astype(float)
    is_ref = (df["role"] == "reference").to_numpy()
    ref = pd.Series(metric[is_ref].to_numpy(),
                    index=pd.MultiIndex.from_frame(df.loc[is_ref, ["dataset", "fold"]]))
    df["reference_metric"] = ref.reindex(
        pd.MultiIndex.from_frame(df[["dataset", "fold"]])).to_numpy()
    df["score"] = np.where(is_ref, np.nan, metric.to_numpy() - df["reference_metric"])
    return df


def _copying_counts(row: dict[str, Any]) -> dict[str, list[int]] | None:
    """Per LLM member of a trades-reply run: [trades in the table's first max_trades rows,
    trades, max_trades, assets] (None for other runs)."""
    stats = row.get("policy_stats") or {}
    members = stats.get("members") or {}
    k, n = stats.get("max_trades"), stats.get("assets")
    out = {m: [v.get("first_rows", 0), v.get("trades_seen", 0), k, n]
           for m, v in members.items() if v.get("trades_seen") and k and n}
    return out or None


def copying_flags(sub: pd.DataFrame) -> list[str]:
    """An LLM member whose trades, summed over every run of a row, sit in the table's first
    rows (``ffe_agents.llm.ensemble.copying``: at least 90% of at least 12 trades)."""
    total: dict[str, list[int]] = {}
    for counts in sub["copying"] if "copying" in sub else []:
        for m, (first, trades, k, n) in (counts or {}).items():
            t = total.setdefault(m, [0, 0, k, n])
            t[0] += first
            t[1] += trades
    out = []
    for m, (first, trades, k, n) in total.items():
        if trades >= 12 and first >= 0.9 * trades and n > k:
            out.append(f"{m} copies the prompt's order: {first} of {trades} trades in the "
                       f"first {k} rows of the table (ASSET_1..{k}; chance {k / n:.0%}), "
                       f"over {len(sub)} runs")
    return out


def _tasks(df: pd.DataFrame) -> list[tuple[str, int]]:
    ref = df[df["role"] == "reference"]
    return list(dict.fromkeys(zip(ref["dataset"], ref["fold"].astype(int), strict=True)))


def matrix(df: pd.DataFrame, agent: str, variant: str, column: str,
           tasks: list[tuple[str, int]]) -> np.ndarray:
    """(runs, tasks): seeds x (dataset, fold) of one agent's ``column`` under one variant;
    NaN where a run is missing or its value undefined."""
    sub = df[(df["agent"] == agent) & (df["variant"] == variant) & (df["role"] == "agent")]
    wide = sub.pivot(index="seed", columns=["dataset", "fold"], values=column)
    wide = wide.reindex(columns=pd.MultiIndex.from_tuples(tasks, names=["dataset", "fold"]))
    return wide.to_numpy(dtype=float)


EARLY_END = ("ruin", "portfolio_stop")  # statuses of a run that ended before its window did


def _log_returns(folder: str, bars: int, status: str | None = None) -> np.ndarray:
    """A run's per-bar log returns over a window of ``bars`` bars; a run whose status says it
    ended early (ruin, a terminating stop) is flat after its end. Any other length is damage
    (:class:`~ffe_gym.evaluation.jobs.DamagedRun`), never padded."""
    path = os.path.join(folder, "equity.csv")
    eq = pd.read_csv(path)["equity"].to_numpy(dtype=float)
    r = np.log(eq[1:] / eq[:-1])
    if len(r) != bars and not (len(r) < bars and status in EARLY_END):
        raise DamagedRun(f"{path}: {len(r)} returns in a window of {bars} bars, and the run's "
                         f"status is {status!r} (only a run that ended early is shorter); "
                         "it changed after it was checked: run the comparison again")
    out = np.zeros(bars)
    out[: len(r)] = r
    return out


def scale_to(returns: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``returns`` scaled to the volatility of ``reference`` (one window of each): their mean
    is then the reference's volatility times their Sharpe ratio, so comparing means compares
    Sharpe ratios. A riskless series stays as it is (0 for a flat book)."""
    sd = np.std(returns, ddof=1)
    return returns * (np.std(reference, ddof=1) / sd) if sd > 0 else np.array(returns)


def _returns_by_task(df: pd.DataFrame, tasks: list[tuple[str, int]]
                     ) -> tuple[dict[tuple[str, int], np.ndarray],
                                dict[tuple[str, str], list[np.ndarray]]]:
    """Per-bar log returns per test window: the reference's, and each non-hindsight (agent,
    variant)'s, averaged over its seeds (an agent missing a window is left out). Each curve
    is read once; :func:`_concatenated` joins the windows."""
    ref = df[df["role"] == "reference"].set_index(["dataset", "fold"])
    lengths = {t: int(ref.loc[t, "bars"]) for t in tasks}
    bench = {t: _log_returns(ref.loc[t, "folder"], lengths[t], ref.loc[t, "status"])
             for t in tasks}
    models = {}
    agents = df[(df["role"] == "agent") & ~df["hindsight"].astype(bool)]
    for (agent, variant), sub in agents.groupby(["agent", "variant"], sort=False):
        parts = []
        for t in tasks:
            runs = sub[(sub["dataset"] == t[0]) & (sub["fold"] == t[1])]
            if runs.empty:
                break
            parts.append(np.mean([_log_returns(f, lengths[t], st) for f, st in
                                  zip(runs["folder"], runs["status"], strict=True)], axis=0))
        else:
            models[(agent, variant)] = parts
    return bench, models


def _concatenated(bench: dict[tuple[str, int], np.ndarray],
                  models: dict[tuple[str, str], list[np.ndarray]], scaled: bool
                  ) -> tuple[np.ndarray, dict[tuple[str, str], np.ndarray]]:
    """The windows joined; ``scaled``: each agent's returns in a window multiplied by the
    reference's volatility over its own in that window (:func:`scale_to`), so that a higher
    mean is a higher Sharpe ratio, the score's meaning, not a larger exposure."""
    refs = list(bench.values())
    joined = {k: np.concatenate([scale_to(r, b) if scaled else r
                                 for r, b in zip(parts, refs, strict=True)])
              for k, parts in models.items()}
    return np.concatenate(refs), joined


def _flags(sub: pd.DataFrame, m: np.ndarray, lo: float, hi: float, windows: int) -> list[str]:
    out = []
    det = bool(sub["deterministic"].iloc[0])
    if det:
        out.append("deterministic: one run per window, interval from windows alone")
    else:
        multi = m[:, np.isfinite(m).sum(axis=0) >= 2]
        if multi.size and np.all(np.nanstd(multi, axis=0) == 0):
            out.append("FLAG: stochastic, yet every seed gave the same result")
    undefined = int(sub["score"].isna().sum())
    if undefined:
        out.append(f"{undefined} run(s) with an undefined score left out")
    if windows == 0:
        out.append("no window with a defined score: no interval")
    elif windows < MIN_WINDOWS:
        out.append(f"not ranked: only {windows} window(s) with a defined score, fewer than "
                   f"{MIN_WINDOWS}")
    if np.isfinite(lo) and lo == hi:
        out.append("zero-width interval: every resample gave the same IQM (equal scores)")
    misses = pd.to_numeric(sub["deadline_misses"], errors="coerce").fillna(0).sum()
    if misses:
        out.append(f"{int(misses)} deadline miss(es): replies not reproducible")
    if "input_flags" in sub:
        said = sorted({f for flags in sub["input_flags"] for f in (flags or [])}
                      | set(copying_flags(sub)))
        if said:
            out.append("DOES NOT READ THE MARKET (in some runs): " + "; ".join(said))
    unrep = int((~sub["reproducible"].astype(bool)).sum()) if "reproducible" in sub else 0
    if unrep:
        out.append(f"NOT REPRODUCIBLE: {unrep} of {len(sub)} runs depend on the machine's load "
                   "(member timeouts or calls not started; policy_stats.unreproducible says "
                   "which)")
    every = sub["decide_every"].iloc[0]
    if every not in (None, 1) and not (isinstance(every, float) and np.isnan(every)):
        out.append(f"decides every {every} bars (stops every bar)")
    capped = pd.to_numeric(sub["capped"], errors="coerce").fillna(0)
    if capped.sum():
        cap = pd.to_numeric(sub.get("max_positions"), errors="coerce")
        cap = cap.iloc[0] if cap is not None and cap.notna().any() else None
        out.append(f"capped by max_positions{f' ({int(cap)})' if cap else ''}: "
                   f"{int(capped.sum())} openings refused in {int((capped > 0).sum())} of "
                   f"{len(sub)} runs (the largest targets or convictions kept, ties by symbol)")
    if bool(sub["hindsight"].iloc[0]):
        out.append("HINDSIGHT: sees its test window; a bound, not a contender")
    return out


def paired_difference(a: np.ndarray, b: np.ndarray, reps: int = 2000
                      ) -> tuple[float, float, float]:
    """(mean, low, high) of the per-window difference ``a - b`` of two (runs, tasks) score
    matrices on the same windows, with a paired bootstrap over windows: runs are paired by
    seed when both sides have the same runs, else each side is averaged over its runs first
    (a deterministic control has one run per window). Windows where either side is undefined
    are left out."""
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    if x.shape != y.shape:
        with np.errstate(all="ignore"):
            x = np.nanmean(x, axis=0, keepdims=True)
            y = np.nanmean(y, axis=0, keepdims=True)
    return paired_ratio_ci(x, y, lambda u, v: u.mean(1) - v.mean(1), reps=reps)


def _contains_zero(ci: tuple[float, float, float]) -> bool | None:
    return None if not np.isfinite(ci[1]) else bool(ci[1] <= 0.0 <= ci[2])


def learning_curves(df: pd.DataFrame, exp: ExperimentConfig) -> dict[str, dict[str, Any]]:
    """Validation return (the deterministic policy's log return on the fold's validation
    window) against training steps, per trained agent, fold and seed, from each run's
    ``model/eval/evaluations.npz``; one curve per trained model (the variants it is evaluated
    under share it). With the medians over runs of the first, best and last validation and
    how many runs' best came after their first validation (``improved``)."""
    trained = {a.name for a in exp.agents if a.train is not None and a.control is None}
    out: dict[str, dict[str, Any]] = {}
    runs = df[(df["role"] == "agent") & df["agent"].isin(trained) & (df["status"] != "failed")]
    for agent, sub in runs.groupby("agent", sort=False):
        curves = []
        for (dataset, fold, seed), group in sub.groupby(["dataset", "fold", "seed"]):
            path = Path(group["folder"].iloc[0]) / "model" / "eval" / "evaluations.npz"
            if not path.is_file():
                continue
            with np.load(path) as ev:
                steps, returns = ev["timesteps"], ev["results"].mean(axis=1)
            if len(steps):
                curves.append({"dataset": dataset, "fold": int(fold), "seed": int(seed),
                               "steps": steps.tolist(), "returns": returns.tolist()})
        if not curves:
            continue
        first = [c["returns"][0] for c in curves]
        best = [max(c["returns"]) for c in curves]
        last = [c["returns"][-1] for c in curves]
        improved = sum(int(np.argmax(c["returns"]) > 0 and max(c["returns"]) > c["returns"][0])
                       for c in curves)
        out[agent] = {"curves": curves, "runs": len(curves),
                      "first": float(np.median(first)), "best": float(np.median(best)),
                      "last": float(np.median(last)), "improved": improved,
                      "first_steps": int(np.median([c["steps"][0] for c in curves])),
                      "last_steps": int(np.median([c["steps"][-1] for c in curves]))}
    return out


def aggregate(df: pd.DataFrame, exp: ExperimentConfig, reps: int = 2000) -> dict[str, Any]:
    """Scores against the reference: IQM with two-stage bootstrap intervals (windows, then runs
    within windows), the paired per-window differences against the controls (``cash``, and
    a trained agent's untrained twin), probability of improvement for every pair,
    performance profiles, means of the raw metrics, the deflated Sharpe ratio of each
    configuration's pooled test returns, Hansen's SPA and StepM against the reference, and
    the effects of each rule variant."""
    tasks = _tasks(df)
    agents = df[df["role"] == "agent"]
    keys = list(dict.fromkeys(zip(agents["agent"], agents["variant"], strict=True)))
    mats = {k: matrix(df, *k, "score", tasks) for k in keys}
    finite = np.concatenate([m[np.isfinite(m)] for m in mats.values()] or [np.zeros(0)])
    taus = np.linspace(finite.min(), finite.max(), 41) if len(finite) else np.zeros(1)
    entries = {a.name: a for a in exp.agents}
    cash = next((a.name for a in exp.agents if a.control == "cash"), None)
    label = {k: f"{k[0]} [{k[1]}]" if len(exp.variants) > 1 else k[0] for k in keys}
    windows_bench, windows_models = _returns_by_task(df, tasks)
    bench, models = _concatenated(windows_bench, windows_models, exp.score == "sharpe")
    # the deflated Sharpe ratio: each configuration's pooled test returns (every window,
    # seeds averaged), against the configurations tried: every (agent, variant) that is not a
    # control, plus the extra configurations a sweep tried
    _, pooled = _concatenated(windows_bench, windows_models, False)
    tried = [k for k in pooled if entries.get(k[0]) is None or entries[k[0]].control is None]
    extra = sum((int(a.train.trials) - 1) * len(exp.variants)
                for a in exp.agents if a.train is not None and a.control is None)
    n_trials = len(tried) + extra
    srs = [float(np.mean(v) / np.std(v, ddof=1)) for k, v in pooled.items()
           if k in tried and np.std(v, ddof=1) > 0]
    sr_var = float(np.var(srs, ddof=1)) if len(srs) > 1 else 0.0
    table = []
    for k in keys:
        m = mats[k]
        sub = agents[(agents["agent"] == k[0]) & (agents["variant"] == k[1])]
        point, lo, hi = two_stage_bootstrap_ci(m, iqm, reps=reps)
        windows = int((np.isfinite(m).sum(axis=0) > 0).sum())
        entry = entries.get(k[0])
        control = entry.control if entry is not None else None
        dsr = None
        if k in pooled and k in tried and sr_var > 0:
            dsr = deflated_sharpe_ratio(np.expm1(pooled[k]), n_trials=n_trials,
                                        sharpe_variance=sr_var)
        row = {"agent": k[0], "variant": k[1], "iqm": point, "iqm_low": lo,
               "iqm_high": hi, "windows": windows, "runs": int(np.isfinite(m).sum()),
               "runs_per_window": int(np.isfinite(m).sum(axis=0).max(initial=0)),
               "ranked": windows >= MIN_WINDOWS, "control": control,
               "deterministic": bool(sub["deterministic"].iloc[0]),
               "hindsight": bool(sub["hindsight"].iloc[0]),
               **{c: _mean(sub, c) for c in SUMMARY_METRICS},
               "deflated_sharpe": dsr, "vs_cash": None, "vs_untrained": None}
        if cash is not None and k[0] != cash and (cash, k[1]) in mats:
            row["vs_cash"] = paired_difference(m, mats[(cash, k[1])], reps)
        twin = f"{k[0]}-untrained"
        if entry is not None and entry.train is not None and control is None \
                and (twin, k[1]) in mats:
            row["vs_untrained"] = paired_difference(m, mats[(twin, k[1])], reps)
        row["diagnostic"] = diagnostic_summary(df, exp, k[0], k[1], tasks, reps)
        row["flags"] = (_flags(sub, m, lo, hi, windows) + _control_flags(row, cash)
                        + _diagnostic_flags(row["diagnostic"], exp.score))
        table.append(row)
    ref = df[df["role"] == "reference"]
    reference = {"name": exp.reference, "text": REFERENCE_TEXT[exp.reference],
                 "windows": len(ref), **{c: _mean(ref, c) for c in SUMMARY_METRICS}}
    poi = {}
    for a in keys:
        for b in keys:
            if a != b:
                poi[f"{label[a]} > {label[b]}"] = probability_of_improvement_ci(
                    mats[a], mats[b], reps=max(200, reps // 4))
    profiles = {label[k]: performance_profile(mats[k], taus).tolist() for k in keys}
    tested = {label[k]: -v for k, v in models.items()
              if entries.get(k[0]) is None or entries[k[0]].control is None}
    tests = superiority_tests(-bench, tested, reps=max(200, reps // 2))
    tests["scaled"] = exp.score == "sharpe"
    for row in table:
        name = label[(row["agent"], row["variant"])]
        row["beats_reference"] = (None if name not in tests["mean_gain"]
                                  else name in tests["superior"])
    windows = [{"dataset": d, "fold": int(f), "start": r["window_start"], "end": r["window_end"],
                "bars": int(r["bars"]) + 1, "returns": int(r["bars"])}
               for (d, f), r in ref.set_index(["dataset", "fold"]).iterrows()]
    rules = {v: rules_text(variant_config(exp, exp.datasets[0], v)) for v in exp.variants}
    index = index_line(exp, windows, ref, reps) if exp.index else None
    return {"table": table, "reference": reference, "probability_of_improvement": poi,
            "labels": [label[k] for k in keys], "taus": taus.tolist(), "profiles": profiles,
            "score": f"{exp.score} minus the reference's", "metric": exp.score,
            "tasks": len(tasks), "windows": windows, "seeds": [int(s) for s in exp.seeds],
            "reps": reps, "tests": tests, "n_trials": n_trials, "cash": cash,
            "effects": variant_effects(df, exp, tasks, reps),
            "rules_name": exp.rules, "rules": rules, "variants": list(exp.variants),
            "risk_free": exp.risk_free, "index": index,
            "learning": learning_curves(df, exp)}


def index_line(exp: ExperimentConfig, windows: list[dict[str, Any]], ref: pd.DataFrame,
               reps: int) -> dict[str, Any]:
    """The experiment's index (``exp.index``) bought at each test window's first close and
    held to its last, no costs: per-window metrics, their means, and its score against the
    reference with the same interval as an agent's (one run per window)."""
    from ffe_gym.data import load_market
    from ffe_gym.data.packaged import describe_packaged
    from ffe_gym.metrics import compute_metrics

    md = load_market(exp.index["source"], symbols=[exp.index["symbol"]])
    close = pd.Series(md.close[:, 0], index=md.index)
    ref = ref.set_index(["dataset", "fold"])
    runs, scores = [], []
    for w in windows:
        start, end = pd.Timestamp(w["start"]), pd.Timestamp(w["end"])
        curve = close[(close.index >= start) & (close.index <= end)].to_numpy()
        if len(curve) < 3:
            raise ValueError(f"index {exp.index['symbol']}: no prices in the test window "
                             f"{w['start'][:10]} .. {w['end'][:10]}")
        m = compute_metrics(curve, md.periods_per_year, risk_free=exp.risk_free)
        runs.append(m)
        ref_metric = pd.to_numeric(ref.loc[(w["dataset"], w["fold"]), exp.score])
        scores.append(float(m[exp.score]) - float(ref_metric)
                      if m[exp.score] is not None else np.nan)
    point, lo, hi = two_stage_bootstrap_ci(np.array([scores]), iqm, reps=reps)
    frame = pd.DataFrame(runs)
    return {"name": exp.index["symbol"], "text": describe_packaged(md) or md.describe(),
            "windows": len(windows), "iqm": point, "iqm_low": lo, "iqm_high": hi,
            **{c: _mean(frame, c) for c in ("sharpe", "total_return", "max_drawdown")}}


def diagnostic_summary(df: pd.DataFrame, exp: ExperimentConfig, agent: str, variant: str,
                       tasks: list[tuple[str, int]], reps: int = 2000
                       ) -> dict[str, Any] | None:
    """The placebo and permutation record of one (agent, variant) over its windows: shares of
    decisions that changed, and the paired per-window difference of the score metric, real
    minus placebo (and real minus permuted), with a bootstrap interval over windows; None
    when the agent ran no diagnostic there."""
    sub = df[(df["agent"] == agent) & (df["variant"] == variant) & (df["role"] == "agent")]
    have = sub[pd.to_numeric(sub["diagnostic_decisions"], errors="coerce").notna()]
    if have.empty:
        return None
    notes = sorted({n for n in have["diagnostic_note"] if n})
    decisions = int(pd.to_numeric(have["diagnostic_decisions"]).sum())
    out: dict[str, Any] = {"runs": len(have), "decisions": decisions, "note": "; ".join(notes),
                           "windows": int(have[["dataset", "fold"]].drop_duplicates().shape[0])}
    real = matrix(df, agent, variant, exp.score, tasks)
    for what in ("placebo", "permuted"):
        changed = pd.to_numeric(have[f"{what}_changed"], errors="coerce")
        if changed.isna().all():
            out[what] = None
            continue
        other = matrix(df, agent, variant, f"{what}_metric", tasks)
        out[what] = {"changed": float(changed.sum() / max(decisions, 1)),
                     "difference": paired_difference(real, other, reps)}
    return out


def _diagnostic_flags(d: dict[str, Any] | None, metric: str) -> list[str]:
    if d is None:
        return []
    out = []
    p = d.get("placebo")
    if p is not None:
        if p["changed"] < IGNORES:
            out.append(f"IGNORES ITS INPUT: {p['changed']:.1%} of {d['decisions']} decisions "
                       f"change under the placebo (< {IGNORES:.0%})")
        ci = p["difference"]
        if _contains_zero(ci) is not False:
            out.append(f"no evidence that it uses its input: {metric} real - placebo "
                       f"{_ci_text(ci)} over {d['windows']} windows")
    q = d.get("permuted")
    if q is not None and q["changed"] > 0:
        out.append(f"DEPENDS ON THE ORDER OF THE ASSETS: {q['changed']:.1%} of decisions "
                   f"change with the columns rotated")
    return out


def _ci_text(ci: tuple[float, float, float]) -> str:
    return ("n/a (too few windows)" if not np.isfinite(ci[1])
            else f"{ci[0]:+.2f} [{ci[1]:+.2f}, {ci[2]:+.2f}]")


def _control_flags(row: dict[str, Any], cash: str | None) -> list[str]:
    out = []
    for key, what in (("vs_cash", f"doing nothing ({cash})"), ("vs_untrained", "untrained")):
        ci = row[key]
        if ci is not None and _contains_zero(ci):
            out.append(f"not distinguishable from {what}: mean difference per window "
                       f"{ci[0]:+.2f} [{ci[1]:+.2f}, {ci[2]:+.2f}]")
    return out


SUMMARY_METRICS = ("sharpe", "total_return", "max_drawdown", "turnover", "trades", "fills",
                   "exposure", "win_rate")


def variant_effects(df: pd.DataFrame, exp: ExperimentConfig, tasks: list[tuple[str, int]],
                    reps: int = 2000) -> list[dict[str, Any]]:
    """For each agent and each variant after the first (the base rules): the base's mean total
    return over the variant's, the drawdown reduction ``1 - mean|DD base| / mean|DD variant|``
    and the mean return difference, each with a paired two-stage interval."""
    names = list(exp.variants)
    if len(names) < 2:
        return []
    base = names[0]
    agents = df[df["role"] == "agent"]
    out = []
    for v in names[1:]:
        for agent in dict.fromkeys(agents["agent"]):
            cols = {}
            for c in ("total_return", "max_drawdown"):
                cols[c] = (matrix(df, agent, base, c, tasks), matrix(df, agent, v, c, tasks))
            if not np.isfinite(cols["total_return"][1]).any():
                continue
            r_base, r_var = cols["total_return"]
            d_base, d_var = cols["max_drawdown"]
            out.append({
                "agent": agent, "variant": v, "base": base,
                "return_ratio": paired_ratio_ci(
                    r_base, r_var, lambda x, y: x.mean(1) / y.mean(1), reps=reps),
                "return_difference": paired_ratio_ci(
                    r_base, r_var, lambda x, y: x.mean(1) - y.mean(1), reps=reps),
                "drawdown_reduction": paired_ratio_ci(
                    d_base, d_var,
                    lambda x, y: 1.0 - np.abs(x).mean(1) / np.abs(y).mean(1), reps=reps),
                "mean_return": [float(np.nanmean(r_base)), float(np.nanmean(r_var))],
                "mean_drawdown": [float(np.nanmean(d_base)), float(np.nanmean(d_var))],
            })
    return out


def _mean(sub: pd.DataFrame, col: str) -> float | None:
    """Mean over runs; None when the metric is undefined for every run."""
    v = pd.to_numeric(sub[col], errors="coerce").astype(float)
    return float(v.mean()) if v.notna().any() else None
