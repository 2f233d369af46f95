"""How many numba threads an env step uses when ``threads="auto"``: measured, not assumed.

Two threads double a vector env's step on an idle machine and can halve it beside a busy
process (OpenMP's worker waits at each step's barrier for a core the neighbour holds); a trainer
in the same process is a third case. No fixed setting is best in all three (``python
scripts/benchmark.py --sections threads``), so :class:`ThreadTuner` times the compiled step and
keeps the faster setting: it starts on one thread, now and then tries the other for a few steps
(``probe``), and switches when the other's mean step time is lower than the moving average of
its own. A probe that loses doubles the interval to the next (up to ``longest`` steps), so a
setting that is slow costs little once it is known to be; one that wins starts the intervals
over. The books' trajectories do not depend on the threads (each range of books has its own
scratch), so switching changes speed only.
"""

from __future__ import annotations


class ThreadTuner:
    """Chooses 1 or ``most`` threads per step from measured step times.

    :param most: the threads to compare against one.
    :param probe: steps of a probe of the other setting.
    :param shortest: steps between probes after a switch.
    :param longest: the most steps between probes.
    :param alpha: weight of a new time in the current setting's moving average.
    """

    def __init__(self, most: int, probe: int = 3, shortest: int = 32, longest: int = 4096,
                 alpha: float = 0.1) -> None:
        if most < 2 or probe < 1 or not 0 < shortest <= longest:
            raise ValueError("ThreadTuner needs most >= 2, probe >= 1, 0 < shortest <= longest")
        self.most, self.probe, self.shortest, self.longest = most, probe, shortest, longest
        self.alpha = alpha
        self.current = 1  # the safe start: two threads must show they are faster
        self.interval = shortest
        self.cost: float | None = None  # moving average of the current setting's step time
        self._since = 0  # steps on the current setting since the last probe
        self._probe: list[float] = []  # step times of the running probe
        self._probing = False

    @property
    def other(self) -> int:
        return 1 if self.current == self.most else self.most

    def choose(self) -> int:
        """The threads for the next step."""
        if self._probing:
            if len(self._probe) < self.probe:
                return self.other
            self._decide()
        self._since += 1
        if self._since > self.interval and self.cost is not None:
            self._since, self._probing, self._probe = 0, True, []
            return self.other
        return self.current

    def _decide(self) -> None:
        self._probing = False
        times = sorted(self._probe)
        median = times[len(times) // 2]
        if median < self.cost:
            self.current, self.cost, self.interval = self.other, median, self.shortest
        else:
            self.interval = min(2 * self.interval, self.longest)

    def record(self, threads: int, seconds: float) -> None:
        """The time the step with ``threads`` took."""
        if self.cost is not None:
            seconds = min(seconds, 4.0 * self.cost)
        if self._probing and threads == self.other:
            self._probe.append(seconds)
        elif threads == self.current:
            c = self.cost
            self.cost = seconds if c is None else c + self.alpha * (seconds - c)
