"""Runtime fault switches and the request log of the simulator.

Owns the switches (silent sockets, lost broadcasts, refused upgrades, REST failure modes), the
aiohttp middleware that applies the REST modes and records every request, and nothing else: it
must not know Chatwoot payloads. The failure shapes mimic what a Chatwoot deployment really
returns (``/work/shared/chatwoot.md`` §4.6 for 429).
"""

from __future__ import annotations

import asyncio
import random
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

from aiohttp import web
from aiohttp.typedefs import Handler


RestMode = Literal["ok", "error500", "error429", "hang", "malformed", "wrong_types"]
REST_MODES: tuple[str, ...] = get_args(RestMode)


@dataclass(slots=True)
class RequestRecord:
    """One logged request; ``status`` is 0 while running (a hung request), 101 for sockets."""

    method: str
    path: str
    query: str
    status: int
    time: float
    fault: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object."""
        return asdict(self)


# Lets a long-lived handler (the /cable socket) report its status before it returns.
RECORD_KEY = web.RequestKey("sim_request_record", RequestRecord)


class Faults:
    """The switches; toggled at runtime by tests and the ``/_sim/faults`` endpoint."""

    def __init__(self, *, seed: int, log_size: int, clock: Callable[[], float]) -> None:
        # Sockets stay open but nothing at all is sent: a half-open, silent connection.
        self.stop_pings = False
        # Sockets ping normally but event broadcasts vanish (at-most-once Sidekiq, §2.1).
        self.drop_broadcasts = False
        # New /cable upgrades get 503 while set, or until ``refuse_until`` (unix seconds).
        self.refuse_connections = False
        self.refuse_until = 0.0
        # Share of /api requests the REST mode applies to, sampled with a seeded generator.
        self.rest_fault_ratio = 1.0
        self.requests: deque[RequestRecord] = deque(maxlen=log_size)
        self._rest_mode: RestMode = "ok"
        self._rng = random.Random(seed)
        self._clock = clock
        self._unhang = asyncio.Event()
        self._closing = False

    # Public methods

    @property
    def rest_mode(self) -> RestMode:
        """The current REST failure mode."""
        return self._rest_mode

    def set_rest_mode(self, mode: str) -> None:
        """Switch the REST mode; leaving ``hang`` releases every hung request.

        Raises:
            ValueError: ``mode`` is not one of ``REST_MODES``.
        """
        for known in get_args(RestMode):
            if known == mode:
                if self._rest_mode == "hang" and known != "hang":
                    self._release()
                self._rest_mode = known
                return
        raise ValueError(f"rest_mode must be one of {', '.join(REST_MODES)}")

    def refusing(self, now: float) -> bool:
        """Whether a new /cable upgrade should be refused at ``now``."""
        return self.refuse_connections or now < self.refuse_until

    def close(self) -> None:
        """Release hung requests for shutdown; they answer 503 instead of hanging on."""
        self._closing = True
        self._release()

    def snapshot(self) -> dict[str, Any]:
        """The switches as JSON."""
        return {
            "stop_pings": self.stop_pings,
            "drop_broadcasts": self.drop_broadcasts,
            "refuse_connections": self.refuse_connections,
            "refuse_until": self.refuse_until,
            "rest_mode": self._rest_mode,
            "rest_fault_ratio": self.rest_fault_ratio,
        }

    @web.middleware
    async def middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Log every /api and /cable request and apply the REST mode to /api ones."""
        if request.path.startswith("/_sim/"):
            return await handler(request)
        # Appended on arrival so hung requests and long-lived sockets are visible too.
        record = RequestRecord(request.method, request.path, request.query_string, 0, self._clock())
        self.requests.append(record)
        request[RECORD_KEY] = record
        try:
            fault = self._pick_fault() if request.path.startswith("/api/") else None
            record.fault = fault
            response = await (
                handler(request) if fault is None else self._fail(fault, request, handler)
            )
        except web.HTTPException as exc:
            record.status = exc.status
            raise
        except asyncio.CancelledError:
            record.status = 499  # nginx's "client closed request"
            raise
        except Exception:
            record.status = 500
            raise
        record.status = response.status
        return response

    # Private methods

    def _pick_fault(self) -> RestMode | None:
        if self._rest_mode == "ok":
            return None
        if self.rest_fault_ratio >= 1.0 or self._rng.random() < self.rest_fault_ratio:
            return self._rest_mode
        return None

    async def _fail(
        self, fault: RestMode, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        if fault == "error500":
            return web.json_response({"status": 500, "error": "Internal Server Error"}, status=500)
        if fault == "error429":
            # rack-attack's default throttled responder; Chatwoot sets no Retry-After (§4.6).
            return web.Response(status=429, text="Retry later\n", content_type="text/plain")
        if fault == "malformed":
            return web.Response(
                text='{"data": {"meta": {"mine_count": 1, "payload": [',
                content_type="application/json",
            )
        if fault == "wrong_types":
            wrong = "unexpected"
            return web.json_response(
                {
                    "data": wrong,
                    "meta": wrong,
                    "payload": wrong,
                    "id": wrong,
                    "pubsub_token": 12345,
                    "accounts": wrong,
                }
            )
        # hang: answer only once the mode changes; until then the client's timeout decides.
        unhang = self._unhang
        while self._rest_mode == "hang" and not self._closing:
            await unhang.wait()
            unhang = self._unhang
        if self._closing:
            return web.Response(status=503, text="Service Unavailable")
        return await handler(request)

    def _release(self) -> None:
        self._unhang.set()
        self._unhang = asyncio.Event()
