"""Token buckets for client frame rates. Pure: time is passed in."""

from __future__ import annotations


class TokenBucket:
    """Allows ``rate`` events per second on average and bursts of ``burst``.

    Args:
        rate: tokens added per second.
        burst: the bucket's size (and its content at start).
        now: the start time.
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def take(self, now: float) -> bool:
        """Spend one token if there is one; False means over the limit."""
        self._tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if self._tokens >= 1:
            self._tokens -= 1
            return True
        return False
