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
        # The REST fallback is paused because no client is connected, and was healthy:
        # still ready (a load balancer must not hold back the first client).
        self.idle = False
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
        if self.current.state != "polling":
            return False
        if self.idle:
            return True
        return self.last_poll_ok is not None and now - self.last_poll_ok <= poll_window


class UpstreamHealth:
    """Combines the cable's state and the poller's into the one state clients see.

    * cable live → ``live`` (a gap fill may still run in the background);
    * cable not live, REST failing ``max_retries`` times in a row → ``down``;
    * cable not live, REST polling → ``polling``;
    * otherwise the cable's own ``connecting`` or ``down``.

    Args:
        board: where the combined state is published.
        max_retries: consecutive poll failures before ``down`` (BRIDGE_POLL_MAX_RETRIES).
    """

    def __init__(self, board: StatusBoard, max_retries: int) -> None:
        self.board = board
        self.max_retries = max_retries
        self.cable: UpstreamStateName = "connecting"
        self.cable_reason = "starting"
        self.polling = False
        self.poll_failures = 0
        self.poll_error = ""

    def set_cable(self, state: UpstreamStateName, reason: str, now: float) -> None:
        """The cable is ``connecting``, ``live`` or ``down``."""
        self.cable, self.cable_reason = state, reason
        self._publish(now)

    def set_polling(self, polling: bool, now: float, *, publish: bool = True) -> None:
        """The REST fallback is engaged (or not); ``publish=False`` waits for the next change."""
        self.polling = polling
        if publish:
            self._publish(now)

    def poll_result(self, failures: int, error: str, now: float) -> None:
        """After each pass: consecutive failures so far (0 after a success)."""
        self.poll_failures, self.poll_error = failures, error
        if failures == 0:
            self.board.last_poll_ok = now
        self._publish(now)

    def combined(self) -> tuple[UpstreamStateName, str]:
        """The state and reason to show."""
        if self.cable == "live":
            return "live", self.cable_reason
        if self.polling and self.poll_failures >= self.max_retries:
            return "down", f"cable: {self.cable_reason}; REST failing: {self.poll_error}"
        if self.polling:
            return "polling", f"cable: {self.cable_reason}; polling REST"
        return self.cable, self.cable_reason

    def _publish(self, now: float) -> None:
        state, reason = self.combined()
        self.board.set(state, reason, now)
