"""Replies -> decisions. The parser never raises: an unreadable reply is HOLD, origin fallback.

Order: the reply as JSON against the decision schema (origin ``schema``); then with think tags
and code fences stripped and the first JSON object extracted (``extracted``); then keywords
(BUY / SELL / HOLD and a number, ``keyword``; 0.5 when no usable number); else HOLD
(``fallback``). A confidence given on a
0-100 scale is rescaled to [0, 1].
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

ACTIONS = ("BUY", "SELL", "HOLD")
SIGN = {"BUY": 1.0, "SELL": -1.0, "HOLD": 0.0}

DECISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": list(ACTIONS)},
        "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        "reasoning": {"type": "string"},
    },
    "required": ["action", "confidence"],
}


COMPACT_DECISION: dict[str, Any] = {
    "type": "object",
    "properties": {k: DECISION_SCHEMA["properties"][k] for k in ("action", "confidence")},
    "required": ["action", "confidence"], "additionalProperties": False,
}


def joint_schema(assets: list[str]) -> dict[str, Any]:
    """Schema of one reply answering for every asset: one required property per asset with
    only action and confidence, so a grammar-constrained model covers each asset exactly once,
    briefly, and stops."""
    return {"type": "object",
            "properties": {a: COMPACT_DECISION for a in assets},
            "required": list(assets), "additionalProperties": False}


@dataclass(frozen=True)
class Decision:
    """One member's decision for one asset."""

    action: str
    confidence: float
    reasoning: str = ""
    origin: str = "schema"  # schema, extracted, keyword, fallback, error

    @property
    def signal(self) -> float:
        return SIGN[self.action] * self.confidence


HOLD_FALLBACK = Decision("HOLD", 0.0, "", "fallback")

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_WORD = re.compile(r"\b(BUY|SELL|HOLD)\b", re.IGNORECASE)
_NUMBER = re.compile(r"confiden\w*\W{0,5}(\d+(?:\.\d+)?)\s*(%?)", re.IGNORECASE)


def _confidence(value: Any) -> float | None:
    try:
        c = float(value)
    except (TypeError, ValueError):
        return None
    if c != c or c < 0:
        return None
    if c > 1.0:
        c = c / 100.0 if c <= 100.0 else None
    return c


def _from_obj(obj: Any, origin: str) -> Decision | None:
    if not isinstance(obj, dict):
        return None
    action = str(obj.get("action", "")).strip().upper()
    if action not in ACTIONS:
        return None
    conf = _confidence(obj.get("confidence"))
    if conf is None:
        return None
    return Decision(action, conf, str(obj.get("reasoning", ""))[:500], origin)


def _json_objects(text: str) -> list[Any]:
    """JSON values in ``text``: the whole, fenced blocks, then the first {...} span."""
    found = []
    for candidate in [text, *_FENCE.findall(text)]:
        try:
            found.append(json.loads(candidate))
        except (ValueError, TypeError):
            pass
    start, end = text.find("{"), text.rfind("}")
    if 0 <= start < end:
        try:
            found.append(json.loads(text[start:end + 1]))
        except ValueError:
            pass
    return found


def _clean(text: str) -> str:
    return _THINK.sub("", text).strip()


def parse_decision(text: Any) -> Decision:
    """One asset's decision from a reply; never raises."""
    try:
        if not isinstance(text, str) or not text.strip():
            return HOLD_FALLBACK
        try:
            d = _from_obj(json.loads(text), "schema")
            if d is not None:
                return d
        except ValueError:
            pass
        cleaned = _clean(text)
        for obj in _json_objects(cleaned):
            d = _from_obj(obj, "extracted")
            if d is not None:
                return d
        words = _WORD.findall(cleaned)
        if words:
            number = _NUMBER.search(cleaned)
            conf = _confidence(number.group(1)) if number else None
            if number and number.group(2) == "%":
                conf = _confidence(float(number.group(1)) / 100.0)
            return Decision(words[0].upper(), 0.5 if conf is None else conf, cleaned[:200],
                            "keyword")
    except Exception:  # the parser never raises; anything unexpected is a fallback
        return HOLD_FALLBACK
    return HOLD_FALLBACK


_OBJECT = re.compile(r"\{[^{}]*\}")
_KEYED = re.compile(r'"([^"]+)"\s*:\s*(\{[^{}]*\})')


def parse_joint(text: Any, assets: list[str]) -> list[Decision]:
    """One decision per asset (in ``assets`` order) from a joint reply; never raises.

    Accepts ``{"ASSET_1": {"action", "confidence"}, ...}`` (the schema), a list of
    ``{"asset", "action", "confidence"}`` items (bare or under ``"decisions"``), and salvages
    the complete items of a reply cut off mid-way. Assets not answered are fallbacks.
    """
    out = [HOLD_FALLBACK] * len(assets)
    try:
        if not isinstance(text, str) or not text.strip():
            return out
        index = {a: i for i, a in enumerate(assets)}
        candidates = []
        try:
            candidates.append((json.loads(text), "schema"))
        except ValueError:
            pass
        cleaned = _clean(text)
        candidates += [(obj, "extracted") for obj in _json_objects(cleaned)]
        for obj, origin in candidates:
            if isinstance(obj, dict) and any(a in obj for a in assets):
                got = False
                for a, item in obj.items():
                    d = _from_obj(item, origin)
                    if d is not None and a in index:
                        out[index[a]] = d
                        got = True
                if got:
                    return out
            items = obj.get("decisions") if isinstance(obj, dict) else obj
            if isinstance(items, list) and _fill(out, items, index, origin):
                return out
        # a reply cut off mid-way: keep its complete "ASSET": {...} pairs and {"asset", ...}
        for key, span in _KEYED.findall(cleaned):
            if key in index and out[index[key]].origin == "fallback":
                try:
                    d = _from_obj(json.loads(span), "extracted")
                except ValueError:
                    d = None
                if d is not None:
                    out[index[key]] = d
        salvaged = []
        for span in _OBJECT.findall(cleaned):
            try:
                salvaged.append(json.loads(span))
            except ValueError:
                continue
        _fill(out, salvaged, index, "extracted")
    except Exception:  # never raises
        return [HOLD_FALLBACK] * len(assets)
    return out


def _fill(out: list[Decision], items: list[Any], index: dict[str, int], origin: str) -> bool:
    """Write list items' decisions into ``out``; the first answer for an asset counts."""
    got = False
    seen: set[str] = set()
    for item in items:
        d = _from_obj(item, origin)
        key = str(item.get("asset", "")).strip() if isinstance(item, dict) else ""
        if d is not None and key in index and key not in seen:
            out[index[key]] = d
            seen.add(key)
            got = True
    return got
