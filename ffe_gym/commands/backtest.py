"""Backtest: run the engine over a window with a signal rule and print the seed's three tables.

    python scripts/backtest.py                          # embedded SYNTHETIC default data
    python scripts/backtest.py BTC_USD ETH_USD --data ../shared/data/ffe-h1-2020-2023 \\
        --start 2022-01-01 --end 2022-12-31 --json runs/bt.json

Exit code 2 with a one-line message for bad data, a bad config or bad arguments.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from ffe_gym.config import ConfigError, load_config, to_dict
from ffe_gym.data import DataError, market_from_config
from ffe_gym.portfolio import Portfolio
from ffe_gym.portfolio.journal import Journal


@dataclass
class MomentumRule:
    """The built-in signal rule: time-series momentum over ``lookback`` bars.

    At decision bar t (only bars <= t are read): z = (close[t] / close[t-L] - 1) /
    (std of one-bar returns over L bars * sqrt(L)). BUY when z > band, SELL when z < -band,
    else HOLD; confidence = min(1, |z| / 2).
    """

    lookback: int = 24
    band: float = 0.5

    def __call__(self, close: np.ndarray, t: int) -> tuple[np.ndarray, np.ndarray]:
        lb = self.lookback
        window = close[t - lb: t + 1]
        r = window[1:] / window[:-1] - 1.0
        sd = r.std(axis=0, ddof=1) * np.sqrt(lb)
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(sd > 0, (window[-1] / window[0] - 1.0) / sd, 0.0)
        direction = np.where(z > self.band, 1, np.where(z < -self.band, -1, 0)).astype(np.int8)
        return direction, np.minimum(1.0, np.abs(z) / 2.0)


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
    p.add_argument("--lookback", type=int, default=24, help="momentum lookback in bars")
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
    rule = MomentumRule(lookback=args.lookback)
    warmup = max(args.lookback, cfg.portfolio.correlation_window, cfg.risk.var_window)
    start = md.locate(args.start) if args.start else min(warmup, md.n_bars // 2)
    end = md.locate(args.end, side="right") - 1 if args.end else md.n_bars - 1
    if start < args.lookback or start >= end:
        raise DataError(f"window {md.index[min(start, md.n_bars - 1)]} .. "
                        f"{md.index[max(end, 0)]} leaves no room: the rule needs "
                        f"{args.lookback} bars of history before the start and one bar after; "
                        f"the data covers {md.index[0]} .. {md.index[-1]}", file=md.source)
    pf = Portfolio(md, cfg)
    pf.reset(start=start, end=end)
    journal = Journal(pf)
    journal.start()
    while not pf.done[0]:
        d, c = rule(md.close, int(pf.bar[0]))
        pf.step_signals(d, c)
        journal.record()
    metrics = journal.metrics()
    trades = journal.trades()
    console = Console() if sys.stdout.isatty() else Console(width=110)
    console.print(f"[bold]Data:[/bold] {md.describe()}")
    console.print(f"[bold]Window:[/bold] {md.index[start]} .. {md.index[int(pf.bar[0])]} "
                  f"({metrics['bars']} bars)")
    console.print(_ending(int(pf.status[0]), cfg, end, int(pf.bar[0])))
    title = "Portfolio Performance" + (" [SYNTHETIC DATA]" if md.is_synthetic else "")
    console.print(tables.performance_table(metrics, cfg.portfolio.initial_balance, title))
    console.print(tables.attribution_table(pf.attribution()))
    console.print(tables.trades_table(trades, args.recent))
    console.print(tables.refusals_table(pf.refusals()))
    result = {"metrics": metrics, "attribution": [asdict(a) for a in pf.attribution()],
              "refusals": pf.refusals(), "data": md.describe(), "data_hash": md.digest(),
              "config": to_dict(cfg)}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2, default=str))
    if args.trades:
        args.trades.parent.mkdir(parents=True, exist_ok=True)
        trades.to_csv(args.trades, index=False)
    return result


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
    args = build_parser().parse_args(argv)
    try:
        run(args)
    except (DataError, ConfigError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
