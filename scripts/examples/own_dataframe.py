"""Your own prices as the env, in one call: a long DataFrame (FinRL's layout) to ffe/Portfolio-v0.

    python scripts/examples/own_dataframe.py                    # a made-up panel (flagged)
    python scripts/examples/own_dataframe.py --csv prices.csv   # date, tic, OHLC, volume

Any frame ``load_market`` reads works the same way: long (``date``/``timestamp``/``time`` and
``tic``/``ticker``/``symbol``), wide close-only, yfinance's MultiIndex, ccxt's OHLCV lists. The
env then behaves as any Gymnasium env: here Gymnasium's checker, then one episode of random
actions with the per-step info a researcher reads.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
import pandas as pd

import ffe_gym  # noqa: F401  (registers ffe/Portfolio-v0)
from ffe_gym import load_market


@dataclass
class Args:
    csv: str | None = None
    """a long CSV: date, tic, open, high, low, close, volume (default: a made-up panel)"""
    bars: int = 2000
    """hourly bars of the made-up panel"""
    seed: int = 0


def made_up_panel(bars: int, seed: int) -> pd.DataFrame:
    """Three random walks in FinRL's long layout. Not a market: results on it mean nothing."""
    rng = np.random.default_rng(seed)
    rows = []
    dates = pd.date_range("2024-01-01", periods=bars, freq="h", tz="UTC")
    for tic in ("AAA", "BBB", "CCC"):
        close = 100 * np.exp(np.cumsum(rng.normal(0, 0.01, bars)))
        open_ = np.r_[close[0], close[:-1]]
        spread = np.abs(rng.normal(0, 0.004, bars)) * close
        rows.append(pd.DataFrame({"date": dates, "tic": tic, "open": open_,
                                  "high": np.maximum(open_, close) + spread,
                                  "low": np.minimum(open_, close) - spread, "close": close,
                                  "volume": rng.integers(1_000, 5_000, bars)}))
    return pd.concat(rows, ignore_index=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    for name, value in asdict(Args()).items():
        p.add_argument(f"--{name}", type=int if isinstance(value, int) else str, default=value)
    args = Args(**vars(p.parse_args(argv)))

    df = pd.read_csv(args.csv) if args.csv else made_up_panel(args.bars, args.seed)
    md = load_market(df)  # checks every row; a bad one is named
    print(md.describe(), "" if args.csv else "(MADE UP: random walks, not a market)")

    env = gym.make("ffe/Portfolio-v0", data=df, config={"env": {"episode_bars": 500}})
    from gymnasium.utils.env_checker import check_env

    check_env(env.unwrapped, skip_render_check=True)
    obs, info = env.reset(seed=args.seed)
    env.action_space.seed(args.seed)
    done, steps, total = False, 0, 0.0
    while not done:
        obs, reward, terminated, truncated, info = env.step(env.action_space.sample())
        done, steps, total = terminated or truncated, steps + 1, total + reward
    print(f"random actions: {steps} steps, sum of log returns {total:+.4f}, equity "
          f"{info['equity']:,.2f}, status {info['status']}, drawdown {info['drawdown']:.2%}")
    pnl = info["attribution"]["pnl"]
    print("per-asset P&L:", ", ".join(f"{s} {v:+,.2f}" for s, v in zip(md.symbols, pnl,
                                                                      strict=True)))
    env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
