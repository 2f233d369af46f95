"""Prompts built from the same observation the RL agents get, read by field name.

Per asset: the last ``history_bars`` returns (percent), a price index rebased to 100 at the
start of the window, the latest range, volatility, RSI, MACD and volume z-score (those the env
has), and the position (weight, unrealised return). Portfolio: cash share, gross exposure,
drawdown. Allowed actions: BUY, SELL, HOLD with a confidence in [0, 1].

Leakage guard (on by default): assets are ASSET_1..N instead of their symbols, time is in bar
offsets (t-7 .. t), prices are an index starting at 100. No date and no wall-clock time appears
in any prompt in either mode: the observation holds none.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ffe_agents.llm.parser import DECISION_SCHEMA, joint_schema
from ffe_gym.env.observations import ObservationLayout

SYSTEM = (
    "You are a careful portfolio analyst. You see recent market features of assets and the "
    "current portfolio. For each asset decide BUY, SELL or HOLD with a confidence between 0 "
    "and 1. BUY while short covers and goes long; SELL while long closes; SELL while flat "
    "goes short. Answer with JSON only, matching the schema you are given."
)


TOKENS_PER_ASSET = 32  # '"ASSET_12": {"action": "HOLD", "confidence": 0.85},' with spacing
REASONING_TOKENS = 160


def token_budget(schema: dict[str, Any]) -> int:
    """Tokens a complete reply to ``schema`` needs: 32 per asset of a joint reply (plus 16),
    or one decision and its free-text reasoning; a member's ``max_tokens`` overrides it. A
    reply cut at this limit is counted as truncated, apart from parse failures."""
    props = schema.get("properties", {})
    if "action" in props:
        return TOKENS_PER_ASSET + (REASONING_TOKENS if "reasoning" in props else 0)
    return TOKENS_PER_ASSET * len(props) + 16


@dataclass(frozen=True)
class Prompt:
    """One request: messages, the schema its reply must follow, and the assets it covers."""

    messages: tuple[dict[str, str], ...]
    schema: dict[str, Any]
    assets: tuple[int, ...]  # asset indices covered, in the order the reply is parsed
    digest: str = field(default="", compare=False)
    max_tokens: int = field(default=0, compare=False)  # token_budget(schema)

    def __post_init__(self) -> None:
        from ffe_agents.llm.cache import prompt_digest

        object.__setattr__(self, "digest", prompt_digest(self.schema, self.messages))
        object.__setattr__(self, "max_tokens", token_budget(self.schema))


def asset_labels(layout: ObservationLayout, guard: bool) -> list[str]:
    return ([f"ASSET_{i + 1}" for i in range(layout.n_assets)] if guard
            else list(layout.symbols))


def _asset_block(layout: ObservationLayout, feats: np.ndarray, pos: dict[str, np.ndarray],
                 j: int, label: str, history: int) -> dict[str, Any]:
    names = layout.features
    h = min(history, layout.window)
    block: dict[str, Any] = {"asset": label}
    if "log_return" in names:
        r = feats[-h:, j, names.index("log_return")]
        block["returns_pct"] = [round(float(x), 3) for x in r]
        rall = feats[:, j, names.index("log_return")] / 100.0
        index = 100.0 * np.exp(np.cumsum(rall))
        block["price_index"] = [round(float(x), 2) for x in index[-h:]]
    for name, key, digits in (("range", "range_pct", 3), ("volatility", "volatility_pct", 3),
                              ("rsi", "rsi_minus_half", 3), ("macd", "macd_pct", 3),
                              ("volume_z", "volume_z", 2)):
        if name in names:
            block[key] = round(float(feats[-1, j, names.index(name)]), digits)
    block["position_weight"] = round(float(pos["weight"][j]), 4)
    block["unrealized_return"] = round(float(pos["unrealized_return"][j]), 4)
    return block


def _portfolio_block(layout: ObservationLayout, obs: Any) -> dict[str, Any]:
    acc = layout.account(obs)
    return {"cash_share": round(acc["cash_share"], 4),
            "gross_exposure": round(acc["gross_exposure"], 4),
            "drawdown": round(acc["drawdown"], 4),
            "equity_return": round(acc["equity_return"], 4)}


def build_prompts(layout: ObservationLayout, obs: Any, *, mode: str, guard: bool,
                  history: int) -> list[Prompt]:
    """The prompts of one decision: one joint prompt, or one per asset."""
    labels = asset_labels(layout, guard)
    h = min(history, layout.window)
    times = [f"t-{k}" if k else "t" for k in range(h - 1, -1, -1)]
    portfolio = _portfolio_block(layout, obs)
    feats = layout.market(obs).astype(np.float64)  # (W, N, F), read once per decision
    pos = layout.positions(obs)
    blocks = [_asset_block(layout, feats, pos, j, labels[j], history)
              for j in range(layout.n_assets)]
    if mode == "joint":
        schema = joint_schema(labels)
        body = {"bars": times, "assets": blocks, "portfolio": portfolio,
                "answer": 'one decision per asset: {"ASSET": {"action": "BUY"|"SELL"|"HOLD", '
                          '"confidence": 0..1}, ...}'}
        return [Prompt(({"role": "system", "content": SYSTEM},
                        {"role": "user", "content": json.dumps(body, separators=(",", ":"))}),
                       schema, tuple(range(layout.n_assets)))]
    out = []
    for j, block in enumerate(blocks):
        body = {"bars": times, "asset": block, "portfolio": portfolio,
                "answer": '{"action": "BUY"|"SELL"|"HOLD", "confidence": 0..1, "reasoning"}'}
        out.append(Prompt(({"role": "system", "content": SYSTEM},
                           {"role": "user", "content": json.dumps(body, separators=(",", ":"))}),
                          DECISION_SCHEMA, (j,)))
    return out
