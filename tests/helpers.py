"""Small builders shared by the tests: hand-made markets, bare configs, a browser probe, a
kill-and-resume loop."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ffe_gym.config import Config, from_dict, merge
from ffe_gym.data.market import MarketData

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ffe-h1-2020-2023"


def market(close: Any, open_: Any = None, high: Any = None, low: Any = None,
           tradable: Any = None, volume: Any = None, ppy: float = 8760.0,
           start: str = "2024-01-01") -> MarketData:
    """A panel from hand-written prices; open defaults to close, high/low envelop open/close."""
    c = np.asarray(close, dtype=float)
    if c.ndim == 1:
        c = c[:, None]

    def col(x: Any, default: np.ndarray) -> np.ndarray:
        if x is None:
            return default
        a = np.asarray(x, dtype=float)
        return a[:, None] if a.ndim == 1 else a

    o = col(open_, c)
    h = np.maximum(col(high, np.maximum(o, c)), np.maximum(o, c))
    lo = np.minimum(col(low, np.minimum(o, c)), np.minimum(o, c))
    T, N = c.shape
    tr = np.ones((T, N), bool) if tradable is None else np.asarray(tradable, bool).reshape(T, N)
    v = np.ones((T, N)) if volume is None else col(volume, None)
    return MarketData(symbols=tuple(f"A{i}" for i in range(N)),
                      index=pd.date_range(start, periods=T, freq="h", tz="UTC"),
                      open=o, high=h, low=lo, close=c, volume=v, tradable=tr,
                      periods_per_year=ppy, source="test")


BARE = {
    "portfolio": {"max_positions": None, "max_portfolio_risk": None, "max_drawdown": None,
                  "correlation_threshold": 0.7},
    "sizing": {"base": "notional", "risk_per_trade": 0.5, "min_confidence_factor": 0.0},
    "risk": {"stop_loss": None, "take_profit": None, "max_short_exposure": None,
             "max_gross_exposure": None, "ruin_floor": 0.0},
    "execution": {"price": "close", "fee_rate": 0.0, "fixed_fee": 0.0, "slippage": 0.0},
}


def bare(**sections: dict[str, Any]) -> Config:
    """Zero costs, close fills, every limit and exit off; ``sections`` switch rules back on."""
    return from_dict(Config, merge(BARE, sections))


def signals(n: int, **intents: tuple[int, float]) -> tuple[np.ndarray, np.ndarray]:
    """``signals(3, a0=(1, 0.8))`` -> direction and confidence arrays for N = n assets."""
    d = np.zeros(n, dtype=np.int8)
    c = np.zeros(n)
    for name, (direction, conf) in intents.items():
        j = int(name[1:])
        d[j], c[j] = direction, conf
    return d, c


def book(md: MarketData, cfg: Config, start: int = 0, end: int | None = None):
    """One book of ``md`` under ``cfg``, reset at ``start``."""
    from ffe_gym.portfolio import Portfolio

    pf = Portfolio(md, cfg)
    pf.reset(start=start, end=end)
    return pf


def ensemble_rollout(cfg: dict[str, Any], md: MarketData, window: tuple[int, int]):
    """(EpisodeResult, ensemble) of one rollout of an LLM ensemble built from ``cfg``; the
    ensemble is closed (its backends' processes stopped) before this returns."""
    from ffe_agents.llm import LLMEnsemble
    from ffe_gym.evaluation import env_for, rollout

    ens = LLMEnsemble(cfg)
    try:
        return rollout(ens, env_for(ens, None, md), window=window, seed=0), ens
    finally:
        ens.close()


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def browser_probe(html: str, path: Path, *, head: str = "", body: str,
                  budget_ms: int = 15000) -> dict:
    """Load ``html`` in headless chromium with ``head`` scripts first in <head> and ``body``
    scripts last in <body>; the JSON the body script writes into ``<pre id="probe">``."""
    import json
    import re
    import subprocess

    page = html.replace("<head>", "<head>" + head, 1) if head else html
    path.write_text(page.replace("</body>", body + "</body>"))
    r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
                        "--window-size=1280,900", f"--virtual-time-budget={budget_ms}",
                        "--dump-dom", path.as_uri()],
                       capture_output=True, text=True, timeout=180)
    m = re.search(r'<pre id="probe">(.*?)</pre>', r.stdout, re.S)
    assert m, r.stderr[-2000:]
    return json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<")
                      .replace("&gt;", ">").replace("&amp;", "&"))


def kill_until_done(cmd: list[str], *, seed: int, env: dict | None = None,
                    min_s: float = 1.0, max_s: float = 2.5, kills: int = 4) -> int:
    """Run ``cmd`` again and again, SIGKILLing it after a random moment, ``kills`` times, then
    let it finish; the number of kills (the command must then exit 0)."""
    import os
    import random
    import signal
    import subprocess

    rng, done = random.Random(seed), 0
    for _ in range(kills + 1):
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True, env=env)
        try:
            proc.wait(timeout=rng.uniform(min_s, max_s) if done < kills else 300)
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            done += 1
            continue
        assert proc.returncode == 0, proc.stderr.read()[-3000:]
        return done
    raise AssertionError("the command did not finish")
