"""Start, stop and drive a real Rails ActionCable server that behaves like Chatwoot's RoomChannel.

The server is ``actioncable_app/config.ru`` run by Debian's ``puma`` (actioncable 6.1.7 gem); see
``actioncable_app/peer_app.rb`` for what it mirrors from Chatwoot. ``RailsPeer`` owns one puma
subprocess on a fixed loopback port, so a test can ``stop()``/``kill()`` it and ``start()`` it
again on the same port to simulate a Chatwoot restart.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypedDict

import aiohttp


APP_DIR = Path(__file__).resolve().parent / "actioncable_app"
CONFIG_RU = APP_DIR / "config.ru"
HOST = "127.0.0.1"
SUBPROTOCOL = "actioncable-v1-json"
INSTALL_HINT = "apt-get install ruby-actioncable puma"

DEFAULT_USER_ID = 1
DEFAULT_PUBSUB_TOKEN = "peer-pubsub-token-1"
DEFAULT_API_TOKEN = "peer-api-token"
DEFAULT_ACCOUNT_IDS: tuple[int, ...] = (1, 2)


class PeerError(RuntimeError):
    """The Rails peer could not be started or did not answer as expected."""


class ConnectionDetail(TypedDict):
    """One live cable connection as seen by the server."""

    alive: bool
    subscriptions: list[str]
    confirmed: list[str]


class PeerStats(TypedDict):
    """Answer of ``GET /_peer/connections``.

    ``connections``/``subscriptions``/``confirmed`` count only live (open) sockets. The
    ``*_total`` counters are cumulative since puma booted. ``connections_registered`` is
    ``ActionCable.server.connections.size`` verbatim, which in actioncable 6.1.7 keeps the
    sockets closed by ``restart`` forever (their close handler is posted to the halted worker
    pool and never runs).
    """

    connections: int
    connections_registered: int
    subscriptions: int
    confirmed: int
    confirmations_total: int
    failed_subscribes_total: int
    presence_updates_total: int
    restarts_total: int
    details: list[ConnectionDetail]


@functools.cache
def availability_problem() -> str | None:
    """Say why the peer cannot run here, or ``None`` if puma and actioncable are installed."""
    puma = shutil.which("puma")
    ruby = shutil.which("ruby")
    if puma is None or ruby is None:
        return f"puma or ruby not on PATH ({INSTALL_HINT})"
    try:
        result = subprocess.run(
            [ruby, "-e", 'require "action_cable"; require "puma"; require "websocket/driver"'],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"ruby failed to start: {exc}"
    if result.returncode != 0:
        return f"ruby cannot require action_cable/puma: {result.stderr.strip()[:500]}"
    return None


def available() -> bool:
    """True when ``puma`` is on PATH and ruby can ``require "action_cable"``."""
    return availability_problem() is None


def free_port() -> int:
    """Ask the kernel for an unused loopback port (closed again before puma binds it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def room_identifier(
    pubsub_token: str, account_id: int | None = None, user_id: int | None = None
) -> str:
    """Identifier string exactly as Chatwoot's dashboard builds it (key order, numbers as JSON).

    ``account_id``/``user_id`` of ``None`` are left out, as the widget (contact) does.
    """
    ident: dict[str, object] = {"channel": "RoomChannel", "pubsub_token": pubsub_token}
    if account_id is not None:
        ident["account_id"] = account_id
    if user_id is not None:
        ident["user_id"] = user_id
    return json.dumps(ident, separators=(",", ":"))


class RailsPeer:
    """One puma process serving the Chatwoot-like ActionCable app on ``127.0.0.1:<port>``.

    Usage::

        peer = RailsPeer(log_dir=tmp_path)
        await peer.start()
        ...  # connect to peer.cable_url, subscribe with peer.identifier()
        await peer.broadcast(peer.pubsub_token, {"event": "message.created", "data": {...}})
        await peer.stop()

    or ``async with RailsPeer() as peer: ...``.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        log_dir: Path | None = None,
        user_id: int = DEFAULT_USER_ID,
        pubsub_token: str = DEFAULT_PUBSUB_TOKEN,
        api_token: str = DEFAULT_API_TOKEN,
        account_ids: Sequence[int] = DEFAULT_ACCOUNT_IDS,
        presence_duration: int = 20,
        boot_timeout: float = 20.0,
        extra_env: Mapping[str, str] | None = None,
    ) -> None:
        self.port: int = port if port is not None else free_port()
        self.user_id = user_id
        self.pubsub_token = pubsub_token
        self.api_token = api_token
        self.account_ids: tuple[int, ...] = tuple(account_ids)
        self.presence_duration = presence_duration
        self.boot_timeout = boot_timeout
        self._extra_env = dict(extra_env or {})
        self._owned_log_dir: tempfile.TemporaryDirectory[str] | None = None
        if log_dir is None:
            self._owned_log_dir = tempfile.TemporaryDirectory(prefix="rails-peer-")
            log_dir = Path(self._owned_log_dir.name)
        self.log_path: Path = log_dir / f"rails-peer-{self.port}.log"
        self._process: asyncio.subprocess.Process | None = None
        self.starts = 0

    # -- addresses and identities -----------------------------------------------------------

    @property
    def url(self) -> str:
        """Base HTTP URL, e.g. ``http://127.0.0.1:41234`` (Chatwoot's base URL)."""
        return f"http://{HOST}:{self.port}"

    @property
    def cable_url(self) -> str:
        """WebSocket URL of the cable mount, e.g. ``ws://127.0.0.1:41234/cable``."""
        return f"ws://{HOST}:{self.port}/cable"

    @property
    def account_id(self) -> int:
        """The user's first (active) account id."""
        return self.account_ids[0]

    def identifier(
        self,
        account_id: int | None = None,
        *,
        pubsub_token: str | None = None,
        user_id: int | None = None,
    ) -> str:
        """Dashboard-shaped RoomChannel identifier for this peer's user (default: first account)."""
        return room_identifier(
            self.pubsub_token if pubsub_token is None else pubsub_token,
            self.account_id if account_id is None else account_id,
            self.user_id if user_id is None else user_id,
        )

    # -- process lifecycle ------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True while the puma process is alive."""
        return self._process is not None and self._process.returncode is None

    @property
    def pid(self) -> int | None:
        """Process id of the running puma, if any."""
        return self._process.pid if self.running and self._process is not None else None

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            {
                "RACK_ENV": "development",
                "PEER_USER_ID": str(self.user_id),
                "PEER_PUBSUB_TOKEN": self.pubsub_token,
                "PEER_API_TOKEN": self.api_token,
                "PEER_ACCOUNT_IDS": ",".join(str(a) for a in self.account_ids),
                "PEER_PRESENCE_DURATION": str(self.presence_duration),
                "PEER_PARENT_PID": str(os.getpid()),
            }
        )
        env.update(self._extra_env)
        return env

    async def start(self) -> None:
        """Start puma on ``self.port`` (the same port every time) and wait until it answers HTTP."""
        if self.running:
            raise PeerError(f"Rails peer already running (pid {self.pid})")
        puma = shutil.which("puma")
        if puma is None:
            raise PeerError(f"puma not found on PATH ({INSTALL_HINT})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.starts += 1
        with self.log_path.open("ab") as log:
            log.write(f"=== rails peer start #{self.starts} on port {self.port} ===\n".encode())
            log.flush()
            self._process = await asyncio.create_subprocess_exec(
                puma,
                "-b",
                f"tcp://{HOST}:{self.port}",
                "--threads",
                "1:8",
                str(CONFIG_RU),
                cwd=APP_DIR,
                env=self._env(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        try:
            await self._wait_ready()
        except BaseException:
            await self.kill()
            raise

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.boot_timeout
        timeout = aiohttp.ClientTimeout(total=2.0)
        async with aiohttp.ClientSession(timeout=timeout) as session:
            while True:
                process = self._process
                if process is None or process.returncode is not None:
                    code = None if process is None else process.returncode
                    raise PeerError(
                        f"puma exited with {code} before answering; log tail:\n{self.log_tail()}"
                    )
                try:
                    async with session.get(f"{self.url}/api/v1/profile") as response:
                        await response.read()
                        return
                except (aiohttp.ClientError, TimeoutError):
                    pass
                if time.monotonic() >= deadline:
                    raise PeerError(
                        f"puma did not answer on {self.url} within {self.boot_timeout}s; "
                        f"log tail:\n{self.log_tail()}"
                    )
                await asyncio.sleep(0.05)

    async def stop(self, grace: float = 5.0) -> None:
        """Stop puma gracefully (SIGTERM), then SIGKILL after ``grace`` seconds. Idempotent.

        Open WebSockets are hijacked sockets that puma does not track, so clients see the TCP
        connection drop without a close frame (code 1006), as on a real Chatwoot restart.
        """
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(grace):
                await process.wait()
        except TimeoutError:
            await self.kill()

    async def kill(self) -> None:
        """SIGKILL puma (a crash: no graceful shutdown at all) and reap it. Idempotent."""
        process = self._process
        if process is None or process.returncode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        await process.wait()

    async def close(self) -> None:
        """Stop puma and remove the temporary log directory if this object created it."""
        await self.stop()
        if self._owned_log_dir is not None:
            self._owned_log_dir.cleanup()
            self._owned_log_dir = None

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- control plane ----------------------------------------------------------------------

    async def _request(self, method: str, path: str, body: object | None = None) -> Any:
        timeout = aiohttp.ClientTimeout(total=5.0)
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.request(method, f"{self.url}{path}", json=body) as response,
        ):
            text = await response.text()
            if response.status != 200:
                raise PeerError(f"{method} {path} -> {response.status}: {text[:500]}")
            return json.loads(text)

    async def broadcast(self, stream: str, message: Mapping[str, Any]) -> None:
        """``ActionCable.server.broadcast(stream, message)`` inside the peer."""
        await self._request("POST", "/_peer/broadcast", {"stream": stream, "message": message})

    async def broadcast_event(
        self, event: str, data: Mapping[str, Any], *, stream: str | None = None
    ) -> None:
        """Broadcast Chatwoot-shaped ``{"event": ..., "data": ...}`` (default stream: the token)."""
        target = self.pubsub_token if stream is None else stream
        await self.broadcast(target, {"event": event, "data": dict(data)})

    async def restart_cable(self) -> None:
        """``ActionCable.server.restart``: disconnect/server_restart to every socket, then close."""
        await self._request("POST", "/_peer/restart", {})

    async def connections(self) -> PeerStats:
        """Current connection and subscription counters (see ``PeerStats``)."""
        stats: PeerStats = await self._request("GET", "/_peer/connections")
        return stats

    async def wait_for(
        self, predicate: Callable[[PeerStats], bool], within: float = 5.0
    ) -> PeerStats:
        """Poll ``connections()`` until ``predicate`` holds; ``TimeoutError`` after ``within`` s."""
        last: PeerStats | None = None
        try:
            async with asyncio.timeout(within):
                while True:
                    last = await self.connections()
                    if predicate(last):
                        return last
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise TimeoutError(f"peer stats did not match within {within}s; last: {last}") from None

    async def wait_confirmed(self, count: int = 1, within: float = 5.0) -> PeerStats:
        """Wait until at least ``count`` live subscriptions are confirmed."""
        return await self.wait_for(lambda stats: stats["confirmed"] >= count, within)

    async def wait_connections(self, count: int, within: float = 5.0) -> PeerStats:
        """Wait until exactly ``count`` live (welcomed) connections exist."""
        return await self.wait_for(lambda stats: stats["connections"] == count, within)

    async def profile(self, token: str | None = None) -> tuple[int, Any]:
        """``GET /api/v1/profile`` with header ``api_access_token`` -> (status, decoded JSON)."""
        headers = {"api_access_token": self.api_token if token is None else token}
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5.0)) as session,
            session.get(f"{self.url}/api/v1/profile", headers=headers) as response,
        ):
            return response.status, await response.json()

    # -- log --------------------------------------------------------------------------------

    def log_text(self) -> str:
        """Everything puma and ActionCable wrote so far (all starts, appended)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of the log."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    async def wait_for_log(self, text: str, count: int = 1, within: float = 5.0) -> None:
        """Wait until ``text`` occurs at least ``count`` times in the log."""
        try:
            async with asyncio.timeout(within):
                while self.log_text().count(text) < count:
                    await asyncio.sleep(0.02)
        except TimeoutError:
            raise TimeoutError(
                f"{text!r} not logged {count}x within {within}s; tail:\n{self.log_tail()}"
            ) from None
