"""Forward testing: a policy trades a paper book on bars as they close.

    ffe-gym live --policy momentum --feed ccxt:binance --symbols BTC/USDT ETH/USDT \\
        --timeframe 1h --out runs/live-momentum            # public bars, no keys
    ffe-gym live --policy runs/ppo --feed file:prices.csv --bar-seconds 3600 --out runs/live-ppo
    ffe-gym live --policy olmar --feed alpaca:stocks --symbols AAPL MSFT SPY --out runs/live-olmar
    ffe-gym live --status runs/live-momentum                # a running or stopped loop

The first start takes the feed's closed history (enough for the features and the rules'
lookbacks) and decides at its newest bar; then a decision every
``portfolio.rebalancing_frequency`` bars, with the backtest's rules and costs. Everything is in
``<out>/journal.sqlite``: the same command resumes after any stop or kill, and ``--status``
prints the book and writes the run page (:mod:`ffe_gym.evaluation.run_page`) of the bars so far
against the reference. A bar is taken only after its close plus ``--grace`` seconds.
``--broker alpaca-paper`` also sends the book's fills to Alpaca's paper-trading API as orders
with ids derived from each fill (a resend cannot fill twice) and compares the broker's
positions with the book's at every start (:mod:`ffe_gym.live.broker`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from ffe_gym.config import ConfigError


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ffe-gym live", description=__doc__.split("\n")[0])
    p.add_argument("--policy", help="baseline name, run folder, module:Class, llm-ensemble")
    p.add_argument("--feed", help="ccxt:EXCHANGE (public OHLCV), alpaca:stocks or "
                   "alpaca:crypto (keys from ALPACA_API_KEY / ALPACA_SECRET_KEY), or file:PATH "
                   "(CSV/Parquet another program appends to)")
    p.add_argument("--symbols", nargs="+", help="symbols to trade (ccxt: BTC/USDT ...; "
                   "file: default every symbol in it)")
    p.add_argument("--timeframe", default="1h", help="ccxt timeframe (default 1h)")
    p.add_argument("--bar-seconds", type=float, help="file feed: the bar length in seconds")
    p.add_argument("--feed-url", help="another base URL for the feed (a proxy): ccxt's public "
                   "API, or Alpaca's data API")
    p.add_argument("--history-start", help="alpaca: the history's first date (default: 90 "
                   "days back)")
    p.add_argument("--grace", type=float, default=None,
                   help="seconds after a bar's close before it is taken (ccxt 10, file 0)")
    p.add_argument("--broker", choices=("none", "alpaca-paper"), default="none",
                   help="also send the book's fills as orders to Alpaca's paper-trading API "
                   "(keys from ALPACA_API_KEY / ALPACA_SECRET_KEY)")
    p.add_argument("--broker-url", help="another base URL for Alpaca's trading API (a proxy)")
    p.add_argument("--config", help="YAML config: rules, costs, capital")
    p.add_argument("--llm-config", type=Path, help="LLM ensemble config (llm-ensemble)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, help="the run's folder (journal.sqlite, run page)")
    p.add_argument("--poll", type=float, default=10.0, help="seconds between polls")
    p.add_argument("--stop-at", help="stop once the bar stamped at this time is taken")
    p.add_argument("--max-polls", type=int, help="stop after this many polls")
    p.add_argument("--page-every", type=float, default=600.0, metavar="SECONDS",
                   help="write the run page (<out>/page) this often and at the end; 0: never")
    p.add_argument("--status", type=Path, metavar="DIR",
                   help="print a loop's status and write its run page; trade nothing")
    return p


def make_feed(args: argparse.Namespace):
    from ffe_gym.live import CcxtFeed, FileFeed

    kind, _, target = (args.feed or "").partition(":")
    if kind == "ccxt" and target:
        if not args.symbols:
            raise ConfigError("--feed ccxt:... needs --symbols (e.g. BTC/USDT ETH/USDT)")
        feed = CcxtFeed(target, args.symbols, args.timeframe,
                        grace_seconds=10.0 if args.grace is None else args.grace)
        if args.feed_url:
            feed.exchange.urls["api"]["public"] = args.feed_url
        return feed
    if kind == "alpaca" and target in ("stocks", "crypto"):
        from ffe_gym.live.feeds import AlpacaFeed

        if not args.symbols:
            raise ConfigError("--feed alpaca:... needs --symbols (e.g. AAPL MSFT)")
        alias = {"1m": "1Min", "5m": "5Min", "15m": "15Min", "1h": "1Hour", "1d": "1Day"}
        return AlpacaFeed(args.symbols, alias.get(args.timeframe, args.timeframe),
                          crypto=target == "crypto", history_start=args.history_start,
                          grace_seconds=10.0 if args.grace is None else args.grace,
                          url=args.feed_url)
    if kind == "file" and target:
        if not args.bar_seconds:
            raise ConfigError("--feed file:... needs --bar-seconds (3600 for hourly bars)")
        return FileFeed(target, args.bar_seconds, grace_seconds=args.grace or 0.0,
                        symbols=args.symbols)
    raise ConfigError(f"--feed {args.feed!r}: give ccxt:EXCHANGE, alpaca:stocks, "
                      "alpaca:crypto or file:PATH")


def status(folder: Path) -> int:
    """Print a loop's status from its journal and write its run page."""
    import json

    from ffe_gym.live.journal import LiveJournal

    path = folder / "journal.sqlite"
    if not path.is_file():
        raise ConfigError(f"{folder}: no journal.sqlite (not a live run's folder)")
    journal = LiveJournal(path)
    meta = journal.meta()
    decisions = journal.decisions()
    bars = journal.bars()
    events = journal.events()
    print(f"policy {meta['policy']}, symbols {', '.join(meta['symbols'])}, status "
          f"{meta.get('status')}; first live bar "
          f"{pd.Timestamp(meta['start_time'], tz='UTC')}, last bar taken "
          f"{pd.Timestamp(int(bars['time'].max()), tz='UTC')}; {len(decisions)} decisions")
    if decisions:
        d = decisions[-1]
        print(f"last decision: bar {pd.Timestamp(d['bar_time'], tz='UTC')}, action "
              f"{np.round(d['action'], 4).tolist()}, equity before it {d['equity']:,.2f}")
    for line in meta.get("samples", []):
        print(line)
    if len(events):
        counts = events["kind"].value_counts().to_dict()
        print("feed events: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
    loop = _loop_of(folder, meta)
    result = loop.episode()
    if result is None:
        print("no bar after the first decision yet: nothing to draw")
        return 0
    written = loop.write_page()
    m = result.metrics
    page = [str(p) for p in written if p.name == "run.html"]
    print(f"over {m['bars']} bars since the first decision: return {m['total_return']:+.2%}, "
          f"max drawdown {m['max_drawdown']:.2%}, {m['fills']} fills; run page "
          f"{page[0] if page else 'not written (no plotly)'}")
    print(json.dumps({"decisions": len(decisions), "bars": int(m["bars"])}))
    return 0


def _loop_of(folder: Path, meta: dict):
    """A loop over a journal for reading it (its feed is never polled)."""
    from ffe_gym.live import LiveLoop

    class _Recorded:
        symbols = tuple(meta["symbols"])
        bar_seconds = meta["bar_seconds"]
        grace_seconds = 0.0
        path = folder / "journal.sqlite"

        def bars(self, since):  # pragma: no cover - never polled
            raise RuntimeError("a status loop does not poll")

    kwargs = {"config": meta["policy_kwargs"]["config"]} if "config" in meta.get(
        "policy_kwargs", {}) else None
    return LiveLoop(meta["policy"], _Recorded(), folder, config=meta["config"],
                    seed=meta["seed"], policy_kwargs=kwargs, log=None)


def run(args: argparse.Namespace) -> int:
    from ffe_gym.live import LiveLoop

    if args.status:
        return status(args.status)
    if not args.policy or not args.out:
        raise ConfigError("give --policy, --feed and --out (or --status DIR)")
    feed = make_feed(args)
    kwargs = {"config": str(args.llm_config)} if args.llm_config else None
    broker = None
    if args.broker == "alpaca-paper":
        from ffe_gym.live.broker import AlpacaPaperBroker

        broker = AlpacaPaperBroker(url=args.broker_url)
    loop = LiveLoop(args.policy, feed, args.out, config=args.config, seed=args.seed,
                    policy_kwargs=kwargs, log=lambda line: print(line, flush=True),
                    broker=broker)
    stop = pd.Timestamp(args.stop_at, tz="UTC") if args.stop_at else None
    try:
        loop.run(poll_seconds=args.poll, stop_at=stop, max_polls=args.max_polls,
                 page_seconds=args.page_every or None)
    except KeyboardInterrupt:
        print("interrupted: the journal is complete to the last bar taken; the same command "
              "resumes", file=sys.stderr)
        return 130
    return 0


def main(argv: list[str] | None = None) -> int:
    from ffe_gym.commands import run_command

    return run_command(run, build_parser().parse_args(argv))
