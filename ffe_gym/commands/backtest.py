"""Backtest: run a policy over a window and print the seed's three tables.

    python scripts/backtest.py                          # momentum on the SYNTHETIC default
    python scripts/backtest.py BTC_USD ETH_USD --data ../shared/data/ffe-h1-2020-2023 \\
        --start 2022-01-01 --end 2022-12-31 --policy equal-weight --json runs/bt.json

The policy is any name ``ffe_gym.evaluation.resolve_policy`` knows: a baseline (cash,
buy-and-hold, equal-weight, random, momentum), ``module:Class``, or a trained model's folder.
Exit code 2 with a one-line message for bad data, a bad config or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ffe_gym.config import ConfigError, load_config, to_dict
from ffe_gym.data import DataError, market_from_config
from ffe_gym.evaluation import env_for, resolve_policy, rollout


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffe-gym backtest", description=__doc__.split("\n")[0])
    p.add_argument("symbols", nargs="*", help="two or more symbols (default: all in the data)")
    p.add_argument("--data", help="file or directory of market data (default: the embedded "
                                  "SYNTHETIC market)")
    p.add_argument("--config", help="YAML config (defaults: configs/default.yaml values)")
    p.add_argument("--calendar", choices=["intersection", "union"])
    p.add_argument("--start", help="first decision date (history before it is used for warm-up)")
    p.add_argument("--end", help="last date (inclusive)")
    p.add_argument("--initial-balance", type=float)
    p.add_argument("--correlation-threshold", type=float)
    p.add_argument("--max-positions", type=int)
    p.add_argument("--on-portfolio-stop", choices=["terminate", "flat"],
                   help="after the drawdown stop: end the run, or go flat and continue after "
                        "a cooldown (default from the config: terminate)")
    p.add_argument("--policy", default="momentum",
                   help="baseline name, module:Class, or a trained model folder "
                        "(default: momentum)")
    p.add_argument("--seed", type=int, default=0, help="seeds the policy and the env")
    p.add_argument("--json", type=Path, help="write metrics, attribution and refusals here")
    p.add_argument("--trades", type=Path, help="write the trade log (CSV) here")
    p.add_argument("--recent", type=int, default=10, help="rows of Recent Trades to print")
    return p


def _overrides(args: argparse.Namespace) -> dict:
    o: dict = {"data": {}, "portfolio": {}, "risk": {}}
    if args.on_portfolio_stop:
        o["risk"]["on_portfolio_stop"] = args.on_portfolio_stop
    if args.data:
        o["data"]["source"] = args.data
    if args.calendar:
        o["data"]["calendar"] = args.calendar
    if args.symbols:
        o["data"]["symbols"] = list(args.symbols)
    for flag, key in (("initial_balance", "initial_balance"),
                      ("correlation_threshold", "correlation_threshold"),
                      ("max_positions", "max_positions")):
        if getattr(args, flag) is not None:
            o["portfolio"][key] = getattr(args, flag)
    return o


def run(args: argparse.Namespace) -> dict:
    from rich.console import Console

    from ffe_gym.commands import tables

    cfg = load_config(args.config, _overrides(args))
    md = market_from_config(cfg.data)
    if md.n_assets < 2:
        raise ConfigError(f"a portfolio backtest needs two or more symbols; got {md.symbols}")
    policy = resolve_policy(args.policy)
    env = env_for(policy, cfg, md)
    warmup = max(env.core.warmup, cfg.portfolio.correlation_window, cfg.risk.var_window)
    start = md.locate(args.start) if args.start else min(warmup, md.n_bars // 2)
    end = md.locate(args.end, side="right") - 1 if args.end else md.n_bars - 1
    if start < env.core.first_bar or start >= end:
        raise DataError(f"window {md.index[min(start, md.n_bars - 1)]} .. "
                        f"{md.index[max(end, 0)]} leaves no room: the observation needs "
                        f"{env.core.first_bar} bars of history before the start and one bar "
                        f"after; the data covers {md.index[0]} .. {md.index[-1]}",
                        file=md.source)
    result = rollout(policy, env, window=(start, end), seed=args.seed)
    metrics = result.metrics
    console = Console() if sys.stdout.isatty() else Console(width=110)
    console.print(f"[bold]Data:[/bold] {md.describe()}")
    console.print(f"[bold]Policy:[/bold] {result.policy}   [bold]Window:[/bold] "
                  f"{result.start} .. {result.end} ({metrics['bars']} bars, "
                  f"{result.steps} decisions)")
    pf = env.portfolio
    console.print(_ending(int(pf.status[0]), cfg, end, int(pf.bar[0])))
    title = "Portfolio Performance" + (" [SYNTHETIC DATA]" if md.is_synthetic else "")
    console.print(tables.performance_table(metrics, cfg.portfolio.initial_balance, title))
    console.print(tables.attribution_table(result.attribution))
    console.print(tables.trades_table(result.trades, args.recent))
    console.print(tables.refusals_table(result.refusals))
    out = result.summary() | {"data_hash": md.digest(), "config": to_dict(env.config)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2, default=str))
    if args.trades:
        args.trades.parent.mkdir(parents=True, exist_ok=True)
        result.trades.to_csv(args.trades, index=False)
    return out


def _ending(status: int, cfg, end: int, bar: int) -> str:
    from ffe_gym.portfolio import layout as L

    if status == L.STOPPED:
        ref = cfg.risk.drawdown_reference
        return (f"[bold yellow]Ended by the portfolio stop[/bold yellow]: drawdown from the {ref} "
                f"beyond max_drawdown={cfg.portfolio.max_drawdown:.1%}, {end - bar} bars before "
                "the window's end. Use --on-portfolio-stop flat to go flat, wait "
                f"{cfg.risk.cooldown_bars} bars and continue.")
    if status == L.RUINED:
        return "[bold red]Ended by ruin[/bold red]: equity fell to the ruin floor."
    return "Ran to the end of the window."


def main(argv: list[str] | None = None) -> int:
    from ffe_gym.commands import run_command

    return run_command(run, build_parser().parse_args(argv))
