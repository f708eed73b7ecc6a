"""Splits a round's wall time into named phases for metrics.

Eager ops placed on remote players run synchronously, so the time between two
laps is the time those players spent on that phase, transfers included.
"""

from __future__ import annotations

import time

PHASES = ("local_training", "sharing", "aggregation", "reveal", "model_update")


class PhaseClock:
    def __init__(self) -> None:
        self.started = self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, phase: str) -> None:
        """Charge the time since the previous lap to `phase`."""
        if phase not in PHASES:
            raise ValueError(f"unknown phase {phase!r}; phases are {', '.join(PHASES)}")
        now = time.perf_counter()
        self.seconds[phase] = self.seconds.get(phase, 0.0) + now - self._last
        self._last = now

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started
