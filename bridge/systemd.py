"""systemd's notification protocol (``sd_notify``): READY, STATUS, WATCHDOG, STOPPING.

Written here rather than taken from a library: the protocol is one datagram on the unix
socket named by ``NOTIFY_SOCKET`` (sd_notify(3)), while the Python packages for it are
either unmaintained (``sdnotify``) or need libsystemd headers to build
(``systemd-python``). Sending never blocks and never raises: a missing or broken socket
only costs a log line.
"""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Mapping

import structlog


log = structlog.get_logger("bridge.systemd")


class Notifier:
    """Talks to the service manager, or does nothing when not run by systemd.

    Args:
        address: the ``NOTIFY_SOCKET`` value (``@name`` for the abstract namespace).
        watchdog_usec: ``WATCHDOG_USEC``, the watchdog period systemd expects.
    """

    def __init__(self, address: str | None = None, watchdog_usec: int | None = None) -> None:
        self.address = address
        self.watchdog_usec = watchdog_usec
        self._socket: socket.socket | None = None
        self._failed = False

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Notifier:
        """From the variables systemd sets (``WATCHDOG_PID`` must be ours, if set)."""
        usec = None
        raw = env.get("WATCHDOG_USEC", "")
        pid = env.get("WATCHDOG_PID", "")
        if raw.isdigit() and int(raw) > 0 and (not pid or pid == str(os.getpid())):
            usec = int(raw)
        return cls(env.get("NOTIFY_SOCKET") or None, usec)

    @property
    def enabled(self) -> bool:
        """Whether a service manager is listening."""
        return bool(self.address)

    @property
    def watchdog_interval(self) -> float | None:
        """How often to send WATCHDOG=1: half the period systemd expects."""
        return None if not self.watchdog_usec else self.watchdog_usec / 2_000_000

    def send(self, *lines: str) -> None:
        """Send ``KEY=value`` lines in one datagram."""
        if not self.address:
            return
        target = self.address
        if target.startswith("@"):
            target = "\0" + target[1:]
        try:
            if self._socket is None:
                self._socket = socket.socket(
                    socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC
                )
                self._socket.setblocking(False)
            self._socket.sendto("\n".join(lines).encode(), target)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("systemd.notify_failed", error=str(exc))

    def ready(self, status: str) -> None:
        """The service is up (Type=notify waits for this)."""
        self.send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        """A free-form status line shown by ``systemctl status``."""
        self.send(f"STATUS={text}")

    def stopping(self) -> None:
        """Shutdown has begun."""
        self.send("STOPPING=1", "STATUS=stopping")

    async def watchdog(self) -> None:
        """Ping the watchdog from the event loop until cancelled: a stuck loop stops pinging,
        and systemd restarts the service (``WatchdogSec=``)."""
        interval = self.watchdog_interval
        if interval is None or not self.enabled:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(interval)

    def close(self) -> None:
        """Release the socket."""
        if self._socket is not None:
            self._socket.close()
            self._socket = None
