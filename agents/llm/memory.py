"""A member's memory of its own decisions: the last k per asset and what followed each.

Causal by construction: outcomes are built only from bars the ensemble has already seen. At
each decision the ensemble adds the per-bar log returns of the bars since the previous one
(the observation's ``log_return`` rows, percent, clipped like every observation value); a
decision's outcome is the sum since its bar. When more bars passed between two decisions
than the observation window holds, the bars in between were never seen: outcomes across
that gap are unknown (``null`` in the prompt) rather than guessed.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np


class Memory:
    """:param k: decisions kept per member; :param n_assets: N."""

    def __init__(self, k: int, n_assets: int) -> None:
        self.k = k
        self.n = n_assets
        self.cum = np.zeros(n_assets)  # sum of log returns (percent) of every bar seen
        self.broken_at = -1  # the last bar after which some bars were never seen
        self.bar: int | None = None
        self.entries: dict[str, deque] = {}

    def observe(self, bar: int, log_returns: np.ndarray | None) -> None:
        """The bars since the previous decision, from this decision's observation (W, N)."""
        if self.bar is not None and bar > self.bar:
            gap = bar - self.bar
            if log_returns is None or gap > len(log_returns):
                self.broken_at = bar
            else:
                self.cum = self.cum + log_returns[-gap:].sum(axis=0)
        self.bar = bar

    def record(self, member: str, bar: int, decisions: list[Any]) -> None:
        """A member's readable decisions at ``bar`` (None where it gave none)."""
        d = self.entries.setdefault(member, deque(maxlen=self.k))
        d.append((bar, self.cum.copy(), [(x.action, x.confidence) if x is not None else None
                                        for x in decisions]))

    def section(self, member: str, labels: list[str]) -> dict[str, list[dict[str, Any]]]:
        """The prompt's ``your_recent_decisions``: per asset, oldest first."""
        out: dict[str, list[dict[str, Any]]] = {a: [] for a in labels}
        for bar, cum, ds in self.entries.get(member, ()):
            for j, d in enumerate(ds):
                if d is None:
                    continue
                since = None if bar < self.broken_at else round(float(self.cum[j] - cum[j]), 2)
                out[labels[j]].append({"bars_ago": int(self.bar - bar), "action": d[0],
                                       "confidence": round(d[1], 2),
                                       "return_since_pct": since})
        return {a: v for a, v in out.items() if v}
