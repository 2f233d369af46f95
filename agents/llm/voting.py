"""Votes: member decisions for one asset -> one decision, and adaptive member weights.

``confidence_weighted`` (the seed's): each action scores the sum of weight x confidence of the
members choosing it; the winner's confidence is its score over the total weight of readable
answers; agreement is the winner's share of that weight. ``majority``: most votes, ties HOLD;
confidence is the winners' mean confidence. A member's weight is its configured weight times
``local_weight`` or ``remote_weight`` (local first) times its adaptive factor. Members that gave
no readable answer lower the confidence: ``x (1 - missing_penalty x share missing)``.

An answer with confidence 0 is an abstention: it is a readable answer (it counts for the quorum
and is not missing) but it carries no weight and no vote in any method, so it can never lower
a vote more than silence would: BUY 0.9 beside BUY 0.0 votes BUY 0.9, beside no answer
0.9 x (1 - 0.5 x 1/2) = 0.675. When every readable answer abstains the vote is HOLD 0.

Quorum: the share of asked members with a readable answer must reach ``quorum``, or the
fallback tiers decide in order: ``strategy`` (the configured method, if quorum is met),
``majority`` (a strict majority of readable answers), ``most_confident`` (the single most
confident readable answer), ``hold``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ffe_agents.llm.config import AdaptiveConfig, VotingConfig
from ffe_agents.llm.parser import ACTIONS, SIGN, Decision


@dataclass(frozen=True)
class Vote:
    """The outcome for one asset."""

    action: str
    confidence: float
    agreement: float
    tier: str  # which fallback tier decided
    answered: int  # readable answers
    asked: int

    @property
    def signal(self) -> float:
        return SIGN[self.action] * self.confidence


def _readable(d: Decision | None) -> bool:
    return d is not None and d.origin not in ("fallback", "error")


def vote(decisions: dict[str, Decision | None], weights: dict[str, float],
         cfg: VotingConfig) -> Vote:
    """One asset's decision from each asked member's decision (None: no answer)."""
    asked = len(decisions)
    ok = {m: d for m, d in decisions.items() if _readable(d)}
    n = len(ok)
    quorum_met = asked > 0 and n / asked >= cfg.quorum
    missing = 1.0 - (n / asked if asked else 0.0)
    damp = max(0.0, 1.0 - cfg.missing_penalty * missing)
    ok = {m: d for m, d in ok.items() if d.confidence > 0.0}  # abstentions do not vote
    if quorum_met and n and not ok:
        return Vote("HOLD", 0.0, 0.0, "strategy", n, asked)
    for tier in cfg.fallback:
        if tier == "strategy" and quorum_met:
            v = (_weighted(ok, weights) if cfg.method == "confidence_weighted"
                 else _majority(ok))
            if v is not None:
                action, conf, agree = v
                return Vote(action, conf * damp, agree, "strategy", n, asked)
        elif tier == "majority" and ok:
            counts = {a: sum(d.action == a for d in ok.values()) for a in ACTIONS}
            best = max(counts, key=counts.get)
            if counts[best] * 2 > len(ok):
                conf = float(np.mean([d.confidence for d in ok.values() if d.action == best]))
                return Vote(best, conf * damp, counts[best] / len(ok), "majority", n, asked)
        elif tier == "most_confident" and ok:
            m = max(ok, key=lambda k: (ok[k].confidence, k))
            return Vote(ok[m].action, ok[m].confidence * damp, 1.0 / len(ok), "most_confident",
                        n, asked)
        elif tier == "hold":
            return Vote("HOLD", 0.0, 0.0, "hold", n, asked)
    return Vote("HOLD", 0.0, 0.0, "hold", n, asked)


def _weighted(ok: dict[str, Decision], weights: dict[str, float]):
    score = dict.fromkeys(ACTIONS, 0.0)
    weight = dict.fromkeys(ACTIONS, 0.0)
    for m, d in ok.items():  # one pass (a replay votes thousands of times a second)
        w = weights[m]
        score[d.action] += w * d.confidence
        weight[d.action] += w
    total = sum(weight.values())
    if total <= 0:
        return None
    share = {a: weight[a] / total for a in ACTIONS}
    best = max(ACTIONS, key=lambda a: (score[a], a == "HOLD"))
    if sum(s == score[best] for s in score.values()) > 1:
        return None  # a tie in score: let the next tier decide
    return best, score[best] / total, share[best]


def _majority(ok: dict[str, Decision]):
    counts = {a: sum(d.action == a for d in ok.values()) for a in ACTIONS}
    top = max(counts.values())
    winners = [a for a in ACTIONS if counts[a] == top]
    best = winners[0] if len(winners) == 1 else "HOLD"
    chosen = [d.confidence for d in ok.values() if d.action == best]
    return best, float(np.mean(chosen)) if chosen else 0.0, counts[best] / len(ok)


class AdaptiveWeights:
    """Per-member factors from realised results: the seed's accuracy and return score.

    After each step, for each member and asset it answered: accuracy is an EMA of "the sign of
    its signal matched the realised return" (HOLD counts as right when the move was under the
    median absolute move), the return score an EMA of signal x realised return (percent).
    factor = (0.5 + accuracy) x exp(return_score), clipped to [0.1, 3]. Starts at 1.
    """

    def __init__(self, members: list[str], cfg: AdaptiveConfig) -> None:
        self.cfg = cfg
        self.accuracy = dict.fromkeys(members, 0.5)
        self.score = dict.fromkeys(members, 0.0)
        if cfg.load:
            self.load(cfg.load)

    def factor(self, member: str) -> float:
        if not self.cfg.enabled:
            return 1.0
        f = (0.5 + self.accuracy[member]) * float(np.exp(self.score[member]))
        return float(np.clip(f, 0.1, 3.0))

    def update(self, signals: dict[str, np.ndarray], realized: np.ndarray) -> None:
        if not self.cfg.enabled:
            return
        rate = self.cfg.rate
        small = float(np.median(np.abs(realized))) if len(realized) else 0.0
        for m, s in signals.items():
            answered = ~np.isnan(s)
            if not answered.any():
                continue
            sig, r = s[answered], realized[answered]
            right = np.where(sig == 0, np.abs(r) <= small, np.sign(sig) == np.sign(r))
            self.accuracy[m] += rate * (float(right.mean()) - self.accuracy[m])
            self.score[m] += rate * (float(np.mean(sig * r)) - self.score[m])

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {m: {"accuracy": self.accuracy[m], "return_score": self.score[m],
                    "factor": self.factor(m)} for m in self.accuracy}

    def save(self, path: str | Path) -> None:
        from ffe_gym.manifest import write_json

        write_json(path, self.to_dict())

    def load(self, path: str | Path) -> None:
        data = json.loads(Path(path).read_text())
        for m, v in data.items():
            if m in self.accuracy:
                self.accuracy[m] = float(v["accuracy"])
                self.score[m] = float(v["return_score"])
