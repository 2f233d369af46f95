"""Policies that misbehave on purpose, for the grid's fault matrix (importable as ``faulty``
when ``tests/`` is on the path)."""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np


class _Signals:
    name = "faulty"
    deterministic = True

    def env_overrides(self) -> dict[str, Any]:
        return {"action_scheme": "signals"}

    def reset(self, seed: int | None = None) -> None:
        pass


class Raises(_Signals):
    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        raise RuntimeError("this policy always fails")


class NaNs(_Signals):
    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        return np.full(len(info["weights"]), np.nan, dtype=np.float32)


class Exits(_Signals):
    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        os._exit(3)


class Slow(_Signals):
    """Holds, slowly: a window that takes a while, so a test can interrupt it."""

    def __init__(self, seconds: float = 0.02) -> None:
        self.seconds = seconds

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        time.sleep(self.seconds)
        gate = os.environ.get("FFE_SLOW_GATE")
        start = int(os.environ.get("FFE_SLOW_GATE_FROM_BAR", "0"))
        while gate and info["bar"] >= start and not os.path.exists(gate):
            time.sleep(0.01)  # held (from that bar on) until the test opens the gate
        return np.zeros(len(info["weights"]), dtype=np.float32)


class FirstColumn:
    """Buys the column at position (bar mod N), whatever asset it holds: order-dependent by
    construction (the permutation check's positive control)."""

    name = "first-column"
    action_scheme = "signals"
    deterministic = True

    def reset(self, seed: int | None = None) -> None:
        pass

    def act(self, observation: Any, info: dict[str, Any]) -> np.ndarray:
        n = len(info["weights"])
        a = np.zeros(n, dtype=np.float32)
        a[int(info["bar"]) % n] = 1.0  # rotates through the columns by position
        return a
