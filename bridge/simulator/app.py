"""Composition of the simulator: the aiohttp application and its server lifetime.

Owns ``build_app`` (routes, middleware, background tasks tied to the app's lifetime),
``running`` (listening for the length of a block) and ``serve`` (listen until told to
stop). Must not contain simulation logic.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import structlog
from aiohttp import web

from bridge.simulator import control
from bridge.simulator.config import SimConfig
from bridge.simulator.sim import Simulator


__all__ = ["SimConfig", "build_app", "running", "serve"]

_log = structlog.get_logger("bridge.simulator")


def build_app(
    cfg: SimConfig, *, clock: Callable[[], float] = time.time
) -> tuple[web.Application, Simulator]:
    """Build the simulator's aiohttp application.

    Args:
        cfg: Configuration.
        clock: Wall clock in unix seconds; tests may pin it.

    Returns:
        The application (``/cable``, ``/api/v1/...``, ``/_sim/...``) and its ``Simulator``.
        Pings and traffic run while the application runs (``cleanup_ctx``).
    """
    sim = Simulator(cfg, clock=clock)
    app = web.Application(middlewares=[sim.faults.middleware])
    app.router.add_get("/cable", sim.cable.handle)
    sim.rest.add_routes(app.router)
    control.add_routes(app.router, sim)

    async def background(_app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(sim.run(), name="bridge.simulator.background")
        yield
        task.cancel()
        # asyncio.wait never raises, so a cancellation of this coroutine is not swallowed.
        await asyncio.wait({task})
        error = None if task.cancelled() else task.exception()
        if error is not None:
            raise error

    async def on_shutdown(_app: web.Application) -> None:
        await sim.shutdown()

    app.cleanup_ctx.append(background)
    app.on_shutdown.append(on_shutdown)
    return app, sim


@contextlib.asynccontextmanager
async def running(
    cfg: SimConfig, *, shutdown_timeout: float = 2.0
) -> AsyncIterator[tuple[Simulator, str]]:
    """Listen on ``cfg.host:cfg.port`` (0: a free port) for the block: (simulator, base URL)."""
    app, sim = build_app(cfg)
    runner = web.AppRunner(
        app, handle_signals=False, access_log=None, shutdown_timeout=shutdown_timeout
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, cfg.host, cfg.port)
        await site.start()
        host, port = runner.addresses[0][:2]
        yield sim, f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
    finally:
        await runner.cleanup()


async def serve(
    cfg: SimConfig, stop: asyncio.Event, *, on_ready: Callable[[str], None] | None = None
) -> None:
    """Listen on ``cfg.host:cfg.port`` until ``stop`` is set, then shut down cleanly.

    Args:
        cfg: Configuration; port 0 binds a free port.
        stop: Set it to stop the server.
        on_ready: Called once with the base URL (real port included) when listening.
    """
    async with running(cfg, shutdown_timeout=5.0) as (_sim, url):
        _log.info("sim.ready", url=url)
        if on_ready is not None:
            on_ready(url)
        await stop.wait()
