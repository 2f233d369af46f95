"""Prompts built from the same observation the RL agents get, read by field name.

A prompt states its setting (bar length, how often a decision is taken, the costs of a trade,
whether shorts are allowed), a legend of every field with its familiar scale (RSI 0-100 with
30/70, percent returns), per asset the last ``history_bars`` returns, a price index rebased to
100 at the start of the window, the latest range, volatility, RSI, MACD and volume z-score
(those the env has), and its position (side, weight, unrealised return, how far the stop-loss
and take-profit levels are), then the portfolio (cash share, gross exposure, drawdown). HOLD
keeps a position as it is.

The allowed actions are listed in an order drawn per asset from a digest of the prompt's
content, so the listed order cannot suggest an answer (tiny models copied it: ASSET_1=BUY,
ASSET_2=SELL, ASSET_3=HOLD in all 68 replies of one run) while the same observation always
gives the same prompt and cache key.

Leakage guard (on by default): assets are ASSET_1..N instead of their symbols, time is in bar
offsets (t-7 .. t), prices are an index starting at 100. No date and no wall-clock time appears
in any prompt in either mode: the observation holds none.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ffe_agents.llm.parser import ACTIONS, decision, joint_schema, trades_schema
from ffe_gym.env.observations import ObservationLayout

SYSTEM = (
    "You are a careful portfolio analyst. You see recent market features of assets and the "
    "current portfolio. For each asset decide BUY, SELL or HOLD with a confidence between 0 "
    "and 1 (0: no opinion). HOLD keeps the position as it is, long, short or flat. BUY while "
    "flat opens a long, BUY while long keeps it, BUY while short covers and goes long; SELL "
    "while long closes it, SELL while flat goes short when shorting is allowed. Answer with "
    "JSON only, matching the schema you are given."
)

LEGEND = {
    "returns_pct": "log return of each bar, percent",
    "price_index": "close price, 100 at the start of the observation window",
    "range_pct": "high-low range of the last bar, percent",
    "volatility_pct": "standard deviation of bar returns, percent",
    "rsi": "RSI 0-100: above 70 overbought, below 30 oversold",
    "macd_pct": "MACD minus its signal line, percent of price: above 0 upward momentum",
    "volume_z": "volume z-score against recent bars (0 also when volume is missing)",
    "your_recent_decisions": "your own last decisions for this asset: bars ago, what you "
                             "decided, and the log return since, percent (null: not seen)",
    "position": "flat, or side, weight (value / equity), unrealized_return_pct, and "
                "stop_loss_pct / take_profit_pct: the price move, percent, at which the "
                "stop-loss or the take-profit closes the position",
}

# the fields shown as the env's features are, clipped at +-env.features.clip (price_index is
# built from the clipped returns)
CLIPPED = ("returns_pct", "range_pct", "volatility_pct", "macd_pct", "volume_z")

TOKENS_PER_ASSET = 32  # '"ASSET_12": {"action": "HOLD", "confidence": 0.85},' with spacing
REASONING_TOKENS = 160


def token_budget(schema: dict[str, Any]) -> int:
    """Tokens a complete reply to ``schema`` needs: 32 per asset of a joint reply (plus 16),
    or one decision and its free-text reasoning; a member's ``max_tokens`` overrides it. A
    reply cut at this limit is counted as truncated, apart from parse failures."""
    props = schema.get("properties", {})
    if "action" in props:
        return TOKENS_PER_ASSET + (REASONING_TOKENS if "reasoning" in props else 0)
    if "trades" in props:  # '{"asset": "ASSET_12", "action": "SELL", "confidence": 0.8},'
        return 16 + 24 * int(props["trades"].get("maxItems", 4))
    thinking = props.get("reasoning", {}).get("maxLength", 0) // 3 + 8 \
        if "reasoning" in props else 0  # about 3 characters a token, plus its key
    return TOKENS_PER_ASSET * (len(props) - ("reasoning" in props)) + 16 + thinking


@dataclass(frozen=True)
class Prompt:
    """One request: messages, the schema its reply must follow, and the assets it covers."""

    messages: tuple[dict[str, str], ...]
    schema: dict[str, Any]
    assets: tuple[int, ...]  # asset indices covered, in the order the reply is parsed
    digest: str = field(default="", compare=False)
    max_tokens: int = field(default=0, compare=False)  # token_budget(schema)
    schema_json: str | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        from ffe_agents.llm.cache import prompt_digest

        object.__setattr__(self, "digest", prompt_digest(self.schema, self.messages,
                                                         self.schema_json))
        object.__setattr__(self, "max_tokens", token_budget(self.schema))


@functools.lru_cache(maxsize=4096)
def _joint(labels: tuple[str, ...], orders: tuple[tuple[str, ...], ...],
           reasoning_chars: int) -> tuple[dict[str, Any], str]:
    """A joint schema and its canonical JSON, built once per combination of orders (there are
    6^N, and a run meets few): a replay builds thousands of prompts a second."""
    from ffe_agents.llm.cache import schema_text

    schema = joint_schema(list(labels), list(orders), reasoning_chars)
    return schema, schema_text(schema)


@functools.lru_cache(maxsize=256)
def _head(layout: ObservationLayout, keys: tuple[str, ...]) -> str:
    """The constant start of a user message, as JSON: its setting and legend."""
    legend = {k: LEGEND[k] for k in keys}
    clipped = [k for k in CLIPPED if k in legend]
    for k in clipped:
        legend[k] += f", clipped at +-{layout.clip:g}"
    text = json.dumps({"setting": setting(layout), "legend": legend}, separators=(",", ":"))
    return text[:-1]  # open: the per-decision fields follow


def asset_labels(layout: ObservationLayout, guard: bool) -> list[str]:
    return ([f"ASSET_{i + 1}" for i in range(layout.n_assets)] if guard
            else list(layout.symbols))


_ORDERS = tuple(itertools.permutations(ACTIONS))


def listed_first(prompt: Prompt) -> list[str | None]:
    """The action the prompt's schema lists first for each asset it covers, in order (None
    where the schema lists none)."""
    props = prompt.schema.get("properties", {})
    if "action" in props:  # one asset
        return [(props["action"].get("enum") or [None])[0]]
    if "trades" in props:  # a trades reply: no per-asset listed order
        return []
    out = []
    for value in props.values():
        inner = value.get("properties", {}) if isinstance(value, dict) else {}
        if "action" in inner:
            out.append((inner["action"].get("enum") or [None])[0])
    return out


def listed_order(content: str, labels: list[str]) -> list[str]:
    """The order a trades schema lists the asset labels in, drawn from a digest of the
    prompt's content (the tiny models traded the first three listed, whatever the market)."""
    return sorted(labels, key=lambda a: hashlib.sha256(f"{content}|{a}".encode()).digest())


def first_listed_assets(prompt: Prompt) -> set[str]:
    """A trades prompt's first ``maxItems`` listed asset labels (where a model that copies the
    schema's word order trades); empty for other prompts."""
    trades = prompt.schema.get("properties", {}).get("trades")
    if trades is None:
        return set()
    enum = trades["items"]["properties"]["asset"]["enum"]
    return set(enum[:int(trades.get("maxItems", len(enum)))])


def action_orders(content: str, n: int) -> list[tuple[str, ...]]:
    """Per asset, the order the allowed actions are listed in: one of the six permutations,
    picked by a byte of a digest of the prompt's content (stable for the same observation)."""
    digest = hashlib.sha256(content.encode()).digest()
    return [_ORDERS[digest[j % len(digest)] % len(_ORDERS)] for j in range(n)]


def _duration(seconds: float, approx: bool = False) -> str:
    for unit, size in (("week", 604800), ("day", 86400), ("hour", 3600), ("minute", 60)):
        if seconds >= size and (approx or abs(seconds / size - round(seconds / size)) < 0.05):
            k = round(seconds / size)
            return f"{k} {unit}" + ("s" if k != 1 else "")
    return f"{seconds:.0f} seconds"


@functools.lru_cache(maxsize=64)
def setting(layout: ObservationLayout) -> str:
    """One sentence of context: bar length, decision horizon, costs, shorting."""
    parts = []
    if layout.bar_seconds > 0:
        parts.append(f"Bars are {_duration(layout.bar_seconds)} long.")
    k = max(layout.decision_bars, 1)
    seconds = layout.decision_seconds or k * layout.bar_seconds  # calendar time: closed days
    horizon = f" (about {_duration(seconds, approx=True)})" if seconds > 0 and k > 1 else ""
    parts.append("You decide on every bar." if k == 1 else
                 f"You decide once every {k} bars{horizon}; a decision holds until the next.")
    parts.append(f"Each trade costs {100 * layout.fee_rate:.2f}% in fees and "
                 f"{100 * layout.slippage:.2f}% in slippage.")
    parts.append("Shorting is allowed." if layout.allow_short else
                 "Shorting is not allowed: SELL only closes a long.")
    return " ".join(parts)


def _position(pos: dict[str, np.ndarray], j: int) -> Any:
    w = float(pos["weight"][j])
    if w == 0.0:
        return "flat"
    out: dict[str, Any] = {"side": "long" if w > 0 else "short", "weight": round(w, 4),
                           "unrealized_return_pct": round(100 * float(
                               pos["unrealized_return"][j]), 2)}
    side = 1.0 if w > 0 else -1.0  # the fields are distances in the position's favour
    for field_name, key, sign in (("stop_distance", "stop_loss_pct", -side),
                                  ("target_distance", "take_profit_pct", side)):
        if field_name in pos and float(pos[field_name][j]) != 0.0:
            out[key] = round(100 * sign * float(pos[field_name][j]), 2)
    return out


def _asset_blocks(layout: ObservationLayout, feats: np.ndarray, pos: dict[str, np.ndarray],
                  labels: list[str], history: int) -> list[dict[str, Any]]:
    """Every asset's block, each array rounded once for all assets (a replay builds
    thousands of prompts a second: ndarray methods, not numpy's module wrappers)."""
    names = layout.features
    h = min(history, layout.window)
    cols: dict[str, list[Any]] = {}
    if "log_return" in names:
        rall = feats[:, :, names.index("log_return")]  # (W, N)
        cols["returns_pct"] = rall[-h:].round(3).T.tolist()
        index = 100.0 * np.exp((rall / 100.0).cumsum(axis=0)[-h:])
        cols["price_index"] = index.round(2).T.tolist()
    last = feats[-1]  # (N, F)
    for name, key, digits in (("range", "range_pct", 3), ("volatility", "volatility_pct", 3),
                              ("macd", "macd_pct", 3), ("volume_z", "volume_z", 2)):
        if name in names:
            cols[key] = last[:, names.index(name)].round(digits).tolist()
    if "rsi" in names:  # the feature is RSI / 100 - 0.5; the prompt shows the familiar 0-100
        cols["rsi"] = (100.0 * (last[:, names.index("rsi")] + 0.5)).round(1).tolist()
    items = list(cols.items())
    return [{"asset": label, **{k: v[j] for k, v in items}, "position": _position(pos, j)}
            for j, label in enumerate(labels)]


def _portfolio_block(layout: ObservationLayout, obs: Any) -> dict[str, Any]:
    acc = layout.account(obs)
    return {"cash_share": round(acc["cash_share"], 4),
            "gross_exposure": round(acc["gross_exposure"], 4),
            "drawdown": round(acc["drawdown"], 4),
            "equity_return": round(acc["equity_return"], 4)}


def _table_keys(blocks: list[dict[str, Any]]) -> list[str]:
    """The fields a table shows: not the price index (rebuilt from the returns), nor a feature
    that is 0 for every asset (range and volume of close-only data)."""
    return [k for k in blocks[0] if k != "price_index" and
            (k in ("asset", "position") or any(b[k] != 0 and b[k] != [0.0] * len(b[k])
                                               if isinstance(b[k], list) else b[k] != 0
                                               for b in blocks))]


def _table(blocks: list[dict[str, Any]], times: list[str]) -> dict[str, Any]:
    """The asset blocks as one table: a column per field of :func:`_table_keys` (a field with
    history, one per bar), a row per asset, numbers to 2 decimals (RSI whole)."""
    keys = _table_keys(blocks)
    columns: list[str] = []
    for key in keys:
        value = blocks[0][key]
        columns += ([f"{key} {t}" for t in times[-len(value):]] if isinstance(value, list)
                    else [key])

    def short(key: str, v: Any) -> Any:
        if isinstance(v, float):
            return round(v) if key == "rsi" else round(v, 2)
        return v

    rows = []
    for b in blocks:
        row: list[Any] = []
        for key in keys:
            value = b[key]
            if key == "position" and isinstance(value, dict):
                value = " ".join(f"{k}={v}" for k, v in value.items())
            row += [short(key, v) for v in value] if isinstance(value, list) \
                else [short(key, value)]
        rows.append(row)
    return {"columns": columns, "rows": rows}


def build_prompts(layout: ObservationLayout, obs: Any, *, mode: str, guard: bool,
                  history: int, reasoning_chars: int = 0,
                  memory: dict[str, list[dict[str, Any]]] | None = None,
                  reply: str = "every_asset", max_trades: int = 4,
                  table: bool = False) -> list[Prompt]:
    """The prompts of one decision: one joint prompt, or one per asset.

    :param reasoning_chars: > 0 for a thinking member on a server without a separate
        thinking channel: the joint schema starts with a bounded reasoning field.
    :param memory: the member's own recent decisions per asset label (``Memory.section``).
    :param reply: joint mode: ``every_asset`` (an action and confidence per asset) or
        ``trades`` (at most ``max_trades`` BUY / SELL items; every asset not listed is HOLD).
    :param table: joint mode: the assets as one table (columns, one row per asset) instead of
        one JSON object each: about a third of the tokens.
    """
    labels = asset_labels(layout, guard)
    h = min(history, layout.window)
    times = [f"t-{k}" if k else "t" for k in range(h - 1, -1, -1)]
    portfolio = _portfolio_block(layout, obs)
    feats = layout.market(obs).astype(np.float64)  # (W, N, F), read once per decision
    pos = layout.positions(obs)
    blocks = _asset_blocks(layout, feats, pos, labels, history)
    present = blocks[0].keys() if blocks else ()  # every block has the same fields
    if table and mode == "joint" and blocks:
        present = _table_keys(blocks)
    keys = tuple(k for k in LEGEND
                 if k == "position" or k in present
                 or (k == "your_recent_decisions" and memory))
    head = _head(layout, keys)  # '{"setting":...,"legend":{...}': the same every decision
    if mode == "joint":
        body = {"bars": times,
                "assets": _table(blocks, times) if table and blocks else blocks,
                "portfolio": portfolio}
        if memory:
            body["your_recent_decisions"] = memory
        if reply == "trades":
            body["answer"] = (f"the trades to make now, at most {max_trades}: each an asset, an "
                              "action (BUY or SELL) and a confidence 0..1; every asset you do "
                              "not list is HOLD (an empty list holds everything)")
        else:
            body["answer"] = ("for every asset an action (one of the values the schema lists) "
                              "and a confidence 0..1")
        content = head + "," + json.dumps(body, separators=(",", ":"))[1:]
        if reply == "trades":
            order = action_orders(content, 1)[0]
            schema = trades_schema(listed_order(content, labels), max_trades,
                                   tuple(a for a in order if a != "HOLD"))
            return [Prompt(({"role": "system", "content": SYSTEM},
                            {"role": "user", "content": content}),
                           schema, tuple(range(layout.n_assets)))]
        schema, text = _joint(tuple(labels), tuple(action_orders(content, len(labels))),
                              reasoning_chars)
        return [Prompt(({"role": "system", "content": SYSTEM},
                        {"role": "user", "content": content}),
                       schema, tuple(range(layout.n_assets)), schema_json=text)]
    out = []
    for j, block in enumerate(blocks):
        body = {"bars": times, "asset": block, "portfolio": portfolio}
        if memory and labels[j] in memory:
            body["your_recent_decisions"] = memory[labels[j]]
        body["answer"] = ("an action (one of the values the schema lists), a confidence "
                          "0..1 and a short reasoning")
        content = head + "," + json.dumps(body, separators=(",", ":"))[1:]
        out.append(Prompt(({"role": "system", "content": SYSTEM},
                           {"role": "user", "content": content}),
                          decision(action_orders(content, 1)[0], reasoning=True), (j,)))
    return out
