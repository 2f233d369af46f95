"""Golden hashes: a fixed set of configurations and seeds stepped through ``PortfolioEnv``,
every output hashed, so that any change to the engine, the env or the features shows up.

    python tests/golden.py            # print each case's hash and whether it matches
    python tests/golden.py --update   # rewrite tests/golden_hashes.json (a deliberate change)

``tests/test_golden.py`` runs the same cases in CI. A hash covers, at every step: the
observation (every array), the reward, terminated / truncated, and the info's equity, cash,
status, fills (bar, asset, units, price, fee, P&L, reason), refusals and refusal counters.
Floats are hashed at 40 significant bits (float32 observations at 20), so a result that
moves by rounding in the last bits keeps its hash on another CPU or libm, while any change
of a rule, a fill or a refusal changes it. When a change is meant to move results, run
``--update`` and say in the commit which cases moved and why.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

HASHES = Path(__file__).with_name("golden_hashes.json")
STEPS = 250

_RULES = {"portfolio": {"max_positions": 3, "max_portfolio_risk": 0.02, "max_drawdown": 0.05},
          "risk": {"reentry_bars": 2, "intrabar_stops": False}}
_NO_RULES = {"portfolio": {"max_positions": None, "max_portfolio_risk": None,
                           "max_drawdown": None, "correlation_threshold": None},
             "sizing": {"base": "notional"},
             "risk": {"stop_loss": None, "take_profit": None, "max_short_exposure": None,
                      "max_gross_exposure": None, "reentry_bars": 0}}

# name -> (preset, config overrides); each runs at N = 4 and N = 12
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "signals-default": ("crypto", {}),
    "signals-rules-close-stops": ("crypto", _RULES),
    "signals-close-fills": ("crypto", {"execution": {"price": "close"}}),
    "signals-no-rules": ("crypto", _NO_RULES),
    "signals-historical-var": ("crypto", {"risk": {"var_method": "historical",
                                                   "var_window": 50},
                                          "portfolio": {"max_portfolio_risk": 0.01}}),
    "signals-inverse-vol": ("crypto", {"portfolio": {"position_sizing": "inverse_volatility"},
                                       "sizing": {"risk_per_trade": 0.05}}),
    "signals-vol-target": ("crypto", {"portfolio": {"position_sizing": "volatility_target"}}),
    "signals-vol-stops": ("crypto", {"risk": {"stop_mode": "volatility", "stop_loss": 2.0,
                                              "take_profit": 4.0, "reentry_bars": 3}}),
    "signals-every-4": ("crypto", {"portfolio": {"rebalancing_frequency": 4}}),
    "signals-mixed-union": ("mixed", {"data": {"calendar": "union"}}),
    "signals-borrowing": ("crypto", {"risk": {"allow_borrowing": True, "initial_margin": 0.3,
                                              "maintenance_margin": 0.2},
                                     "sizing": {"base": "notional", "risk_per_trade": 0.4},
                                     "execution": {"margin_rate": 0.05, "borrow_rate": 0.1}}),
    "signals-long-only": ("crypto", {"risk": {"allow_short": False}}),
    "weights-default": ("crypto", {"env": {"action_scheme": "weights"}}),
    "weights-no-rules": ("crypto", {"env": {"action_scheme": "weights"}, **_NO_RULES}),
    "weights-long-only-close": ("crypto", {"env": {"action_scheme": "weights"},
                                           "risk": {"allow_short": False},
                                           "execution": {"price": "close"}}),
    "discrete-3-levels": ("crypto", {"env": {"action_scheme": "discrete",
                                             "confidence_levels": 3}}),
    "fixed-fee-slippage": ("crypto", {"execution": {"fixed_fee": 2.0,
                                                    "volatility_slippage": 0.5}}),
    "drawdown-terminate": ("crypto", {"portfolio": {"max_drawdown": 0.02},
                                      "risk": {"on_portfolio_stop": "terminate"}}),
    "signals-hedge-aware-var-horizon": ("crypto", {
        "portfolio": {"correlation_mode": "hedge_aware", "correlation_threshold": 0.3,
                      "rebalancing_frequency": 4, "max_portfolio_risk": 0.01},
        "risk": {"var_horizon_bars": 24}}),
    "weights-fixed-fee-capped": ("crypto", {
        "env": {"action_scheme": "weights"},
        "portfolio": {"initial_balance": 2_000.0, "max_positions": 3},
        "execution": {"fixed_fee": 5.0}}),
    "mixed-drawdown-pending": ("mixed", {"data": {"calendar": "union"},
                                         "portfolio": {"max_drawdown": 0.01}}),
    "discrete-borrowing-shorts": ("crypto", {
        "env": {"action_scheme": "discrete", "confidence_levels": 2},
        "risk": {"allow_borrowing": True, "initial_margin": 0.25,
                 "maintenance_margin": 0.15, "max_short_exposure": 1.0},
        "sizing": {"base": "notional", "risk_per_trade": 0.5},
        "execution": {"borrow_rate": 0.3, "margin_rate": 0.1}}),
}
SIZES = (4, 12)


def _q(x: Any, bits: int) -> bytes:
    """The bytes of ``x`` with each float's mantissa rounded to ``bits`` bits."""
    a = np.asarray(x, dtype=np.float64)
    m, e = np.frexp(a)
    m = np.round(m * float(2 ** bits))
    m[~np.isfinite(a)] = 0
    return m.tobytes() + e.tobytes() + np.isnan(a).tobytes()


def case_hash(name: str, n_assets: int, steps: int = STEPS) -> str:
    """The hash of one case at N = ``n_assets`` (see the module docstring)."""
    from ffe_gym.data import synthetic_market
    from ffe_gym.env import PortfolioEnv

    preset, over = CASES[name]
    md = synthetic_market(n_assets, 900, preset, seed=7)
    # random actions hit the drawdown stop often: a flat stop lets every case run its steps
    cfg = {"env": {"episode_bars": None},
           "risk": {"on_portfolio_stop": "flat", "cooldown_bars": 5}}
    for section, values in over.items():
        cfg[section] = {**cfg.get(section, {}), **values}
    env = PortfolioEnv(cfg, md)
    env.action_space.seed(11)
    h = hashlib.sha256()
    obs, info = env.reset(seed=3, options={"start": 300})
    for k in range(steps):
        for key in sorted(obs):
            h.update(_q(obs[key], 20))
        a = env.action_space.sample()
        if env.config.env.action_scheme == "signals" and k % 7 == 0:
            a[:] = 0.6  # ties in confidence: the order among equals matters
        obs, reward, term, trunc, info = env.step(a)
        h.update(_q([reward, info["equity"], info["cash"]], 40))
        h.update(f"{term}{trunc}{info['status']}".encode())
        for f in info["fills"]:
            h.update(f"{f['bar']}|{f['asset']}|{f['reason']}|{f['closing']}".encode())
            h.update(_q([f["units"], f["price"], f["fee"], f["pnl"]], 40))
        h.update(json.dumps(info["refused"], sort_keys=True).encode())
        h.update(json.dumps(info["refusals_total"], sort_keys=True).encode())
        if term or trunc:
            break
    return h.hexdigest()


def all_hashes() -> dict[str, str]:
    return {f"{name}/N{n}": case_hash(name, n) for name in CASES for n in SIZES}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--update", action="store_true", help="rewrite the stored hashes")
    args = p.parse_args(argv)
    got = all_hashes()
    stored = json.loads(HASHES.read_text()) if HASHES.exists() else {}
    moved = [k for k in got if stored.get(k) != got[k]]
    for k, v in got.items():
        print(f"{k:36s} {v[:16]}  {'moved' if k in moved else 'same'}")
    if args.update:
        HASHES.write_text(json.dumps(got, indent=1, sort_keys=True) + "\n")
        print(f"wrote {HASHES} ({len(moved)} of {len(got)} moved)")
        return 0
    print(f"{len(moved)} of {len(got)} moved")
    return 1 if moved else 0


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    sys.exit(main())
