"""Replies -> decisions. The parser never raises: an unreadable reply is HOLD, origin fallback.

Order: the reply as JSON against the decision schema (origin ``schema``); then with think tags
and code fences stripped and the first JSON object extracted (``extracted``); then keywords
(BUY / SELL / HOLD and a number, ``keyword``; 0.5 when no usable number; an action word
negated in its clause, "I would not BUY here", does not count); else HOLD (``fallback``).

Confidence scale, decided once per reply (every asset of a joint reply together): values in
[0, 1] are read as they are. When some value exceeds 1 (a model ignoring ``maximum: 1``) the
reply is read as percent (every value / 100) only when it uses a 0-100 scale as a whole: its
largest value is at least 10, none is above 100 and none lies strictly between 0 and 1, or a
``%`` sign says so (in free text, or a JSON string such as ``"80%"``; a JSON string holding a
plain number, ``"0.8"``, is that number). Otherwise values above 1 are clipped to 1. Either
repair is recorded in ``Decision.repair`` (``percent`` or ``clipped``). A value above 100,
negative or not a number is unusable.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from typing import Any

ACTIONS = ("BUY", "SELL", "HOLD")
SIGN = {"BUY": 1.0, "SELL": -1.0, "HOLD": 0.0}

# Every schema here is valid for OpenAI's strict structured outputs (check with
# ``strict_problems``): each object lists all its properties as required and forbids others.
# The confidence is one of 0, 0.1, ..., 1: a grammar-constrained model writes three
# characters, not "0.0000000..." to its token limit (gemma3-270m did), and the engine's dead
# band and sizing need no finer grain. A reply without a grammar may still say 0.73.
CONFIDENCE: dict[str, Any] = {"type": "number", "enum": [round(k / 10, 1) for k in range(11)]}
DECISION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "action": {"type": "string", "enum": list(ACTIONS)},
        "confidence": CONFIDENCE,
        "reasoning": {"type": "string"},
    },
    "required": ["action", "confidence", "reasoning"], "additionalProperties": False,
}


COMPACT_DECISION: dict[str, Any] = {
    "type": "object",
    "properties": {k: DECISION_SCHEMA["properties"][k] for k in ("action", "confidence")},
    "required": ["action", "confidence"], "additionalProperties": False,
}


def decision(order: tuple[str, ...] = ACTIONS, reasoning: bool = False) -> dict[str, Any]:
    """One decision's schema with the allowed actions listed in ``order`` (the prompt builder
    permutes it so that the listed order cannot suggest an answer)."""
    props: dict[str, Any] = {"action": {"type": "string", "enum": list(order)},
                             "confidence": CONFIDENCE}
    if reasoning:
        props["reasoning"] = {"type": "string"}
    return {"type": "object", "properties": props, "required": list(props),
            "additionalProperties": False}


def joint_schema(assets: list[str], orders: list[tuple[str, ...]] | None = None,
                 reasoning_chars: int = 0) -> dict[str, Any]:
    """Schema of one reply answering for every asset: one required property per asset with
    only action and confidence, so a grammar-constrained model covers each asset exactly once,
    briefly, and stops. ``reasoning_chars > 0`` (thinking members) puts a bounded free-text
    ``reasoning`` property first, so the model may think before it answers."""
    orders = orders or [ACTIONS] * len(assets)
    props: dict[str, Any] = {}
    if reasoning_chars > 0:
        props["reasoning"] = {"type": "string", "maxLength": reasoning_chars}
    props |= {a: decision(o) for a, o in zip(assets, orders, strict=True)}
    return {"type": "object", "properties": props, "required": list(props),
            "additionalProperties": False}


def trades_schema(assets: list[str], max_trades: int,
                  order: tuple[str, ...] = ("BUY", "SELL")) -> dict[str, Any]:
    """Schema of a reply that lists only the trades: at most ``max_trades`` items of asset
    label, action (BUY or SELL, listed in ``order``) and confidence; every asset not listed is
    HOLD. Its length grows with the trades the model makes, not with the number of assets."""
    item = {"type": "object",
            "properties": {"asset": {"type": "string", "enum": list(assets)},
                           "action": {"type": "string", "enum": list(order)},
                           "confidence": CONFIDENCE},
            "required": ["asset", "action", "confidence"], "additionalProperties": False}
    return {"type": "object",
            "properties": {"trades": {"type": "array", "items": item, "maxItems": max_trades}},
            "required": ["trades"], "additionalProperties": False}


def is_trades(schema: dict[str, Any]) -> bool:
    return "trades" in schema.get("properties", {})


# keywords OpenAI's strict mode accepts (its structured-outputs guide); maxLength is not one
_STRICT_KEYS = {"type", "properties", "required", "additionalProperties", "enum", "const",
                "anyOf", "items", "description", "title", "$defs", "$ref", "minimum",
                "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf", "pattern",
                "format", "minItems", "maxItems"}


def strict_problems(schema: Any, path: str = "$") -> list[str]:
    """What makes ``schema`` invalid for OpenAI strict structured outputs (empty: valid):
    the root must be an object; every object must list every property in ``required`` and
    set ``additionalProperties: false``; only supported keywords."""
    out: list[str] = []
    if path == "$" and schema.get("type") != "object":
        out.append("$: the root must be an object")
    if not isinstance(schema, dict):
        return out
    for key in schema:
        if key not in _STRICT_KEYS:
            out.append(f"{path}: keyword {key!r} is not supported in strict mode")
    if schema.get("type") == "object" or "properties" in schema:
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            out.append(f"{path}: additionalProperties must be false")
        missing = [k for k in props if k not in schema.get("required", [])]
        if missing:
            out.append(f"{path}: every property must be required (missing {missing})")
        for k, sub in props.items():
            out += strict_problems(sub, f"{path}.{k}")
    if isinstance(schema.get("items"), dict):
        out += strict_problems(schema["items"], f"{path}[]")
    for k, sub in enumerate(schema.get("anyOf", [])):
        out += strict_problems(sub, f"{path}|{k}")
    return out


def strict_variant(schema: dict[str, Any]) -> dict[str, Any]:
    """``schema`` without the keywords strict mode rejects (a thinking schema's maxLength: the
    member's token budget bounds its reasoning instead)."""
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if k in _STRICT_KEYS}
    if "properties" in out:
        out["properties"] = {k: strict_variant(v) for k, v in out["properties"].items()}
    if isinstance(out.get("items"), dict):
        out["items"] = strict_variant(out["items"])
    return out


@dataclass(frozen=True)
class Decision:
    """One member's decision for one asset."""

    action: str
    confidence: float
    reasoning: str = ""
    origin: str = "schema"  # schema, extracted, keyword, fallback, error, truncated
    repair: str = ""  # "", percent or clipped: how the confidence was read (module doc)

    @property
    def signal(self) -> float:
        return SIGN[self.action] * self.confidence


HOLD_FALLBACK = Decision("HOLD", 0.0, "", "fallback")

_THINK = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE = re.compile(r"```(?:json)?\s*(.*?)```", re.DOTALL | re.IGNORECASE)
_WORD = re.compile(r"\b(BUY|SELL|HOLD)\b", re.IGNORECASE)
_NUMBER = re.compile(r"confiden\w*\W{0,5}(\d+(?:\.\d+)?)\s*(%?)", re.IGNORECASE)
_NEGATION = re.compile(r"\b(not|no|never|don'?t|doesn'?t|won'?t|wouldn'?t|shouldn'?t|can'?t|"
                       r"cannot|avoid|against)\b", re.IGNORECASE)
_CLAUSE_END = re.compile(r"[.;:!?,\n]")


PERCENT_SIGN = "%"  # Decision.repair of a value written with a % sign, until settle_scale


def _confidence(value: Any) -> float | None:
    """A raw confidence in [0, 100] (the scale is settled per reply), or None. A string may
    hold a number, with a trailing ``%`` sign (:func:`_percent_sign` tells)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        value = value.strip().removesuffix("%").strip()
    try:
        c = float(value)
    except (TypeError, ValueError):
        return None
    if c != c or c < 0 or c > 100.0:
        return None
    return c


def _percent_sign(value: Any) -> bool:
    return isinstance(value, str) and value.strip().endswith("%")


def settle_scale(decisions: list[Decision], percent: bool = False) -> list[Decision]:
    """Read the raw confidences of one reply on one scale (the module doc's rule)."""
    percent = percent or any(d.repair == PERCENT_SIGN for d in decisions)
    values = [d.confidence for d in decisions if d.origin not in ("fallback", "error")]
    if not percent and not any(v > 1.0 for v in values):
        return decisions
    percent = percent or (max(values) >= 10.0 and not any(0.0 < v < 1.0 for v in values))
    out = []
    for d in decisions:
        if d.origin in ("fallback", "error"):
            out.append(d)
        elif percent:
            out.append(replace(d, confidence=d.confidence / 100.0, repair="percent"))
        elif d.confidence > 1.0:
            out.append(replace(d, confidence=1.0, repair="clipped"))
        else:
            out.append(d)
    return out


def _action_word(text: str) -> str | None:
    """The first BUY / SELL / HOLD not negated in its own clause ("would not BUY")."""
    for m in _WORD.finditer(text):
        before = text[max(0, m.start() - 40):m.start()]
        cut = list(_CLAUSE_END.finditer(before))
        if cut:
            before = before[cut[-1].end():]
        if not _NEGATION.search(before):
            return m.group(1).upper()
    return None


def _from_obj(obj: Any, origin: str) -> Decision | None:
    if not isinstance(obj, dict):
        return None
    action = str(obj.get("action", "")).strip().upper()
    if action not in ACTIONS:
        return None
    raw = obj.get("confidence")
    conf = _confidence(raw)
    if conf is None:
        return None
    return Decision(action, conf, str(obj.get("reasoning", ""))[:500], origin,
                    PERCENT_SIGN if _percent_sign(raw) else "")


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
    return settle_scale([_parse_one(text)])[0]


def _parse_one(text: Any) -> Decision:
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
        word = _action_word(cleaned)
        if word:
            number = _NUMBER.search(cleaned)
            conf = _confidence(number.group(1)) if number else None
            if conf is not None and number.group(2) == "%":
                return Decision(word, conf / 100.0, cleaned[:200], "keyword", "percent")
            return Decision(word, 0.5 if conf is None else conf, cleaned[:200], "keyword")
    except Exception:  # the parser never raises; anything unexpected is a fallback
        return HOLD_FALLBACK
    return HOLD_FALLBACK


UNLISTED = Decision("HOLD", 0.0, "", "schema")  # an asset a trades reply did not list


def parse_trades(text: Any, assets: list[str], max_trades: int | None = None) -> list[Decision]:
    """One decision per asset from a trades reply (:func:`trades_schema`); never raises.

    A readable reply (``{"trades": [...]}``, a bare list of items, or the items salvaged from a
    reply cut off mid-way) makes every asset it does not list a HOLD it chose (confidence 0,
    origin ``schema``); the first item for an asset counts, and at most ``max_trades`` items
    are read. An unreadable reply is a fallback for every asset, as a joint reply's is."""
    out = [HOLD_FALLBACK] * len(assets)
    try:
        if not isinstance(text, str) or not text.strip():
            return out
        index = {a: i for i, a in enumerate(assets)}
        items: list[Any] | None = None
        origin = "schema"
        try:
            obj = json.loads(text)
        except ValueError:
            obj, origin = None, "extracted"
            for cand in _json_objects(_clean(text)):
                if isinstance(cand, (dict, list)):
                    obj = cand
                    break
        if isinstance(obj, dict) and isinstance(obj.get("trades"), list):
            items = obj["trades"]
        elif isinstance(obj, list):
            items = obj
        if items is None and '"trades"' in text:  # cut off mid-way: its complete items
            origin = "extracted"
            items = []
            for span in _OBJECT.findall(_clean(text)):
                try:
                    items.append(json.loads(span))
                except ValueError:
                    continue
        if items is None:
            return out
        listed: dict[int, Decision] = {}
        for item in items[:max_trades] if max_trades else items:
            d = _from_obj(item, origin)
            key = str(item.get("asset", "")).strip() if isinstance(item, dict) else ""
            if d is not None and key in index and index[key] not in listed:
                listed[index[key]] = d
        settled = dict(zip(listed, settle_scale(list(listed.values())), strict=True))
        return [settled.get(i, UNLISTED) for i in range(len(assets))]
    except Exception:  # never raises
        return [HOLD_FALLBACK] * len(assets)


_OBJECT = re.compile(r"\{[^{}]*\}")
_KEYED = re.compile(r'"([^"]+)"\s*:\s*(\{[^{}]*\})')


def parse_joint(text: Any, assets: list[str]) -> list[Decision]:
    """One decision per asset (in ``assets`` order) from a joint reply; never raises.

    Accepts ``{"ASSET_1": {"action", "confidence"}, ...}`` (the schema), a list of
    ``{"asset", "action", "confidence"}`` items (bare or under ``"decisions"``), and salvages
    the complete items of a reply cut off mid-way. Assets not answered are fallbacks. The
    confidence scale is settled over the whole reply (module doc).
    """
    return settle_scale(_parse_joint(text, assets))


def _parse_joint(text: Any, assets: list[str]) -> list[Decision]:
    out = [HOLD_FALLBACK] * len(assets)
    try:
        if not isinstance(text, str) or not text.strip():
            return out
        index = {a: i for i, a in enumerate(assets)}

        def candidates():  # lazily: a schema-valid reply is parsed once
            try:
                yield json.loads(text), "schema"
            except ValueError:
                pass
            for obj in _json_objects(_clean(text)):
                yield obj, "extracted"

        for obj, origin in candidates():
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
        cleaned = _clean(text)
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
        _keywords_by_label(out, cleaned, assets)
    except Exception:  # never raises
        return [HOLD_FALLBACK] * len(assets)
    return out


def _keywords_by_label(out: list[Decision], text: str, assets: list[str]) -> None:
    """Free text naming the assets ("ASSET_1: BUY, confidence 60%"): each label's segment, up
    to the next label, read by the keyword rule; only assets nothing else answered."""
    spots = sorted((m.start(), m.end(), a) for a in assets
                   for m in re.finditer(rf"\b{re.escape(a)}\b", text))
    for k, (_, end, a) in enumerate(spots):
        i = assets.index(a)
        if out[i].origin != "fallback":
            continue
        stop = spots[k + 1][0] if k + 1 < len(spots) else len(text)
        segment = text[end:stop]
        if _JSONISH.search(segment):
            continue  # a JSON fragment the salvage could not read: not free text
        d = _parse_one(segment)
        if d.origin == "keyword":
            out[i] = d


_JSONISH = re.compile(r'"\s*:|\{')


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
