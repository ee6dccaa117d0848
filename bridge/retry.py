"""Retry policy: jittered step backoff shared by the cable reconnect loop and the poller.

Pure: it computes delays and never sleeps (websockets' ``backoff`` generator shape).
The steps default to the seed plan's 1, 2, 5, 10 s; after the last step the delay
stays at the last value (capped), so a long outage never turns into a hot loop.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


class Backoff:
    """Delays for consecutive failures, reset by a success.

    Args:
        steps: delays in seconds for the 1st, 2nd, … failure; the last one repeats.
        jitter: relative spread; a delay ``d`` becomes uniform in ``[d*(1-j), d*(1+j)]``.
        rng: the random source (tests pass a seeded one).
    """

    def __init__(
        self,
        steps: Sequence[float],
        *,
        jitter: float = 0.2,
        rng: random.Random | None = None,
    ) -> None:
        if not steps or any(step <= 0 for step in steps):
            raise ValueError("backoff steps must be positive")
        if not 0 <= jitter < 1:
            raise ValueError("jitter must be in [0, 1)")
        self._steps = tuple(steps)
        self._jitter = jitter
        self._rng = rng or random.Random()
        self.failures = 0

    # Public methods

    @property
    def cap(self) -> float:
        """The longest step (before jitter)."""
        return self._steps[-1]

    @property
    def exhausted(self) -> bool:
        """True once every step has been used and the delay sits at the cap."""
        return self.failures >= len(self._steps)

    def next_delay(self) -> float:
        """Count one more failure and return how long to wait before the next try."""
        base = self._steps[min(self.failures, len(self._steps) - 1)]
        self.failures += 1
        if self._jitter == 0:
            return base
        return base * self._rng.uniform(1 - self._jitter, 1 + self._jitter)

    def reset(self) -> None:
        """Forget the failures after a success."""
        self.failures = 0
