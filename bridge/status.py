"""The upstream state as clients, ``/readyz``, metrics and systemd see it.

One of ``live`` (cable subscribed), ``connecting`` (cable being (re)established,
nothing lost yet), ``polling`` (cable not live, REST filling in) and ``down``
(neither works). Listeners are told of every change; no I/O here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from bridge.clientproto import UpstreamStateName


@dataclass(frozen=True, slots=True)
class Status:
    """A state, since when, and why."""

    state: UpstreamStateName
    since: float
    reason: str


class StatusBoard:
    """Holds the current :class:`Status` and tells listeners when it changes.

    Args:
        now: the start time.
    """

    def __init__(self, now: float) -> None:
        self.current = Status("connecting", now, "starting")
        # Unix time of the last successful REST poll, for /readyz while polling.
        self.last_poll_ok: float | None = None
        self._listeners: list[Callable[[Status], None]] = []

    def subscribe(self, listener: Callable[[Status], None]) -> None:
        """Call ``listener`` with every new status."""
        self._listeners.append(listener)

    def set(self, state: UpstreamStateName, reason: str, now: float) -> bool:
        """Move to ``state``; return whether it changed."""
        if state == self.current.state:
            return False
        self.current = Status(state, now, reason)
        for listener in self._listeners:
            listener(self.current)
        return True

    def ready(self, now: float, poll_window: float) -> bool:
        """Live, or polling with a successful poll within ``poll_window`` seconds."""
        if self.current.state == "live":
            return True
        if self.current.state == "polling" and self.last_poll_ok is not None:
            return now - self.last_poll_ok <= poll_window
        return False
