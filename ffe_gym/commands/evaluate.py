"""Evaluate any policy on a window and print its metrics.

    python scripts/evaluate.py --policy equal-weight
    python scripts/evaluate.py --policy runs/ppo-s0 --json runs/ppo-s0/test.json
    python scripts/evaluate.py --policy momentum --data ../shared/data/ffe-h1-2020-2023 \\
        --start 2023-01-01 --end 2023-06-30 --out runs/momentum-2023h1

``--out`` writes the run's files (:mod:`ffe_gym.evaluation.run_page`): equity, weights, trades,
refusals, attribution and a tearsheet as CSV (``--json-tables`` adds them as one JSON), and
``run.html``, an interactive page of the episode against the reference (``--reference``: the
market, equal weights bought once and held with every risk rule off, on the same window, data,
fills and costs; ``ucrp`` rebalances them at every decision; ``none`` runs no reference).

``--policy`` is a baseline name (cash, buy-and-hold, equal-weight, random, momentum), a trained
run folder, ``module:Class``, or ``llm-ensemble`` (with ``--llm-config``). A trained model is
evaluated on its own test window when the data is the data it was trained on, unless
``--start`` / ``--end`` say otherwise. Costs and limits come from ``--config``, the same for
every policy; a trained model brings only its observation layout and action scheme.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from ffe_gym.config import load_config
from ffe_gym.data import DataError, market_from_config
from ffe_gym.evaluation import PolicyError, env_for, resolve_policy, rollout
from ffe_gym.evaluation.policy import sample_lines
from ffe_gym.manifest import write_json


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffe-gym evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--policy", required=True, help="baseline name, run folder, module:Class")
    p.add_argument("--config", help="YAML config: data, costs, limits")
    p.add_argument("--data", help="market data file or folder (default: SYNTHETIC market)")
    p.add_argument("--llm-config", type=Path, help="LLM ensemble config (llm-ensemble)")
    p.add_argument("--start", help="first decision date (or bar index)")
    p.add_argument("--end", help="last date (or bar index)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="write the result summary here")
    p.add_argument("--trades", type=Path, help="write the trade log (CSV) here")
    p.add_argument("--out", type=Path, help="write the run's CSV files and run.html here")
    p.add_argument("--json-tables", action="store_true",
                   help="with --out: also write every table as run.json")
    p.add_argument("--reference", choices=("market", "ucrp", "none"), default="market",
                   help="with --out: the reference run drawn beside the policy")
    p.add_argument("--no-progress", action="store_true", help="no per-decision progress")
    return p


def _bound(value: str | None):
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def default_window(policy_spec: str, md, env) -> tuple:
    """A trained run's test window on its own data; otherwise the data after the warm-up."""
    man = Path(policy_spec) / "manifest.json"
    if man.exists():
        m = json.loads(man.read_text())
        if m.get("data_hash") == md.digest() and "windows" in m:
            start, stop = m["windows"]["test"]
            return max(start, env.core.first_bar), stop - 1
    return env.core.warmup, md.n_bars - 1


def decisions_in(next_decision, start: int, end: int) -> int:
    """How many decisions a window from bar ``start`` to ``end`` holds."""
    n, t = 0, start
    while t < end:
        t = min(int(next_decision[t]), end)
        n += 1
    return n


class DecisionProgress:
    """Per-decision progress: a bar on a terminal, a line every tenth of the way when piped."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.enabled = total, enabled
        self.start = time.monotonic()
        self.every = max(1, total // 10)
        self._bar = None
        if enabled and sys.stderr.isatty():
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

            self._bar = Progress("decisions", BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=Console(stderr=True))
            self._bar.start()
            self._task = self._bar.add_task("decisions", total=total)

    def step(self, done: int, bar: int) -> None:
        self.done = done
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done)
        elif done % self.every == 0 or done == self.total:
            self._line(done)

    def _line(self, done: int) -> None:
        self.printed = done
        print(f"evaluate: {done}/{self.total} decisions ({time.monotonic() - self.start:.0f} s)",
              file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        elif self.enabled and getattr(self, "done", 0) != getattr(self, "printed", 0):
            self._line(self.done)  # the episode ended before the window did


def run(args: argparse.Namespace) -> dict:
    from rich.console import Console

    from ffe_gym.commands import tables

    cfg = load_config(args.config, {"data": {"source": args.data}} if args.data else None)
    md = market_from_config(cfg.data)
    kwargs = {"config": args.llm_config} if args.llm_config else {}
    policy = resolve_policy(args.policy, **kwargs)
    env = env_for(policy, cfg, md)
    start, end = default_window(args.policy, md, env)
    if args.start is not None:
        start = env.core.bar_of(_bound(args.start))
    if args.end is not None:
        end = env.core.bar_of(_bound(args.end), end=True)
    total = decisions_in(env.unwrapped.portfolio.next_decision, start, end)
    progress = DecisionProgress(total, enabled=not args.no_progress)
    try:
        result = rollout(policy, env, window=(start, end), seed=args.seed,
                         on_step=progress.step)
    except PolicyError:
        raise  # the policy's fault, named with it (not the data file's)
    except ValueError as exc:
        raise DataError(str(exc), file=md.source) from None
    finally:
        progress.close()
    console = Console() if sys.stdout.isatty() else Console(width=110)
    console.print(f"[bold]Data:[/bold] {md.describe()}")
    console.print(f"[bold]Policy:[/bold] {result.policy}  [bold]Window:[/bold] {result.start}"
                  f" .. {result.end} ({result.metrics['bars']} bars, {result.steps} decisions, "
                  f"ended: {result.status})")
    title = "Metrics" + (" [SYNTHETIC DATA]" if md.is_synthetic else "")
    console.print(tables.performance_table(result.metrics, cfg.portfolio.initial_balance,
                                           title))
    console.print(tables.attribution_table(result.attribution))
    console.print(tables.refusals_table(result.refusals))
    if len(result.trades) == 0 and not any(result.refusals.values()):
        console.print(
            "No order was placed in this window: every action was HOLD (nothing refused). In "
            f"the signals scheme |a| below env.dead_band ({cfg.env.dead_band}) is HOLD, and an "
            "untrained PPO's deterministic (mean) action sits near 0, inside that band: its "
            "evaluation is exactly flat, return 0 and no Sharpe.")
    for line in sample_lines(policy, result.start):
        console.print(line, highlight=False, markup=False)
    folder = Path(args.policy)
    if folder.is_dir() and not (folder / "manifest.json").exists():
        console.print("Trained outside ffe-gym's train (rl_zoo3, RLlib): the bars it trained on "
                      "are not recorded, so this window may be in-sample; evaluate it on data "
                      "after its training (--start).", highlight=False)
    if result.policy_stats:
        console.print(tables.stats_table(result.policy_stats))
    why = result.policy_stats.get("unreproducible") or []
    if why:
        console.print("NOT REPRODUCIBLE: this run depends on the machine's load ("
                      + "; ".join(why) + "); rerun it, or replay it from the cache "
                      "(cache_mode: replay)", highlight=False, markup=False)
    out = result.summary() | {"data_hash": md.digest(),
                              "reproducible": result.policy_stats.get("reproducible", True)}
    if args.json:
        write_json(args.json, out)
    if args.trades:
        args.trades.parent.mkdir(parents=True, exist_ok=True)
        result.trades.to_csv(args.trades, index=False)
    if args.out:
        written = write_run_folder(args, cfg, md, result, (start, end), out)
        console.print(f"Run files: {args.out} ({', '.join(p.name for p in written)})",
                      highlight=False)
    return out


def write_run_folder(args: argparse.Namespace, cfg, md, result, window: tuple[int, int],
                     summary: dict) -> list[Path]:
    """``--out``: the reference's episode on the same window, then the run's files."""
    from ffe_gym.evaluation.run_page import write_with_reference

    return write_with_reference(args.out, result, md, cfg, window, reference=args.reference,
                                seed=args.seed, summary=summary, json_tables=args.json_tables)


def main(argv: list[str] | None = None) -> int:
    from ffe_gym.commands import run_command

    return run_command(run, build_parser().parse_args(argv))
