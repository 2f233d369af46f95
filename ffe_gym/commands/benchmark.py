"""Benchmark: throughput figures, printed (never asserted in tests).

    python scripts/benchmark.py                  # all figures, 2 s each
    python scripts/benchmark.py --seconds 0.2    # quicker, noisier

Engine: decision steps per second at N = 10, 100, 500 assets for B = 1 and B = 256 books, all
rules on (correlation-adjusted sizing, VaR limit, stops and targets, drawdown stop in ``flat``
mode so that books keep trading, next-open fills, fees, slippage, borrow), random signals on the
synthetic market. A book that ends is restarted, outside the timed kernel call.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np


def _engine_config():
    from ffe_gym.config import Config, from_dict

    return from_dict(Config, {
        "risk": {"on_portfolio_stop": "flat", "ruin_floor": 0.0},
        "execution": {"borrow_rate": 0.05, "volatility_slippage": 0.1},
    })


def bench_engine(n_assets: int, n_books: int, seconds: float, seed: int = 0) -> dict:
    """Decision steps per second of the engine alone."""
    from ffe_gym.data import synthetic_market
    from ffe_gym.portfolio import Portfolio

    n_bars = 3000
    md = synthetic_market(n_assets, n_bars, "crypto", seed=seed)
    cfg = _engine_config()
    pf = Portfolio(md, cfg, n_books=n_books)
    rng = np.random.default_rng(seed)
    start = 300
    pf.reset(start=start)
    K = 64
    dirs = rng.choice(np.array([-1, 0, 0, 0, 1], dtype=np.int8), size=(K, n_books, n_assets))
    confs = rng.random((K, n_books, n_assets))
    pf.step_signals(dirs[0], confs[0])  # compile / warm caches
    steps = 0
    elapsed = 0.0
    while elapsed < seconds:
        k = steps % K
        t0 = time.perf_counter()
        pf.step_signals(dirs[k], confs[k])
        elapsed += time.perf_counter() - t0
        steps += 1
        done = pf.done
        if done.any():
            pf.reset(start=start, books=done)
    return {"assets": n_assets, "books": n_books, "decisions_per_s": steps / elapsed,
            "book_steps_per_s": steps * n_books / elapsed}


def section_engine(seconds: float, assets: list[int], books: list[int]) -> list[dict]:
    return [bench_engine(n, b, seconds) for n in assets for b in books]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffe-gym benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per figure")
    p.add_argument("--assets", type=int, nargs="+", default=[10, 100, 500])
    p.add_argument("--books", type=int, nargs="+", default=[1, 256])
    args = p.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=110)
    console.print(f"python {platform.python_version()}, numpy {np.__version__}, "
                  f"{os.cpu_count()} cpus, {platform.machine()}")
    t = Table(title="Engine: decision steps per second, all rules on", header_style="bold")
    for col in ("assets N", "books B", "decisions/s", "book-steps/s"):
        t.add_column(col, justify="right")
    for r in section_engine(args.seconds, args.assets, args.books):
        t.add_row(str(r["assets"]), str(r["books"]), f"{r['decisions_per_s']:,.0f}",
                  f"{r['book_steps_per_s']:,.0f}")
    console.print(t)
    return 0
