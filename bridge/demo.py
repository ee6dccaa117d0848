"""``chatwoot-bridge demo``: the simulator and the bridge in one process, events printed.

What ``make demo`` runs: a new user sees Chatwoot-shaped events flow through the
bridge within seconds, and gets the URLs to point a frontend or ``tail`` at.
"""

from __future__ import annotations

import asyncio
import contextlib
import webbrowser
from dataclasses import dataclass
from typing import TextIO

from bridge import config
from bridge.app import Bridge
from bridge.simulator import SimConfig, serve
from bridge.tail import TailOptions, tail


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """Where the two servers listen and how busy the simulator is."""

    bridge_host: str = "127.0.0.1"
    bridge_port: int = 8765
    sim_host: str = "127.0.0.1"
    sim_port: int = 3000
    rate: float = 2.0
    seed: int | None = None
    # Stop by itself after this many seconds (None: until Ctrl-C).
    duration: float | None = None
    # Open the live page in the desktop's browser.
    open_browser: bool = False


async def demo(opts: DemoOptions, stop: asyncio.Event, out: TextIO) -> int:
    """Run until ``stop`` is set or ``duration`` passes; return an exit status."""
    sim_cfg = SimConfig(
        host=opts.sim_host,
        port=opts.sim_port,
        rate=opts.rate,
        seed=0 if opts.seed is None else opts.seed,
    )
    sim_stop = asyncio.Event()
    bridge_stop = asyncio.Event()
    sim_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    bridge_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    async with asyncio.TaskGroup() as tg:
        tg.create_task(serve(sim_cfg, sim_stop, on_ready=sim_ready.set_result), name="simulator")
        sim_url = await sim_ready
        cfg = config.load(
            {
                "CHATWOOT_URL": sim_url,
                "CHATWOOT_API_TOKEN": sim_cfg.api_token,
                "BRIDGE_LISTEN": f"{opts.bridge_host}:{opts.bridge_port}",
                # The simulated agent is nobody: heartbeats keep presence dots on the page.
                "BRIDGE_PRESENCE": "on",
            }
        )
        bridge = Bridge(cfg)
        tg.create_task(bridge.run(bridge_stop, on_ready=bridge_ready.set_result), name="bridge")
        bridge_url = await bridge_ready
        ws_url = bridge_url.replace("http", "ws", 1)
        out.write(
            "chatwoot-bridge demo: the bridge on the bundled Chatwoot simulator\n"
            f"  simulator (Chatwoot):  {sim_url}   (token {sim_cfg.api_token})\n"
            f"  live page:             {bridge_url}/   <- open this in a browser\n"
            f"  bridge socket:         {ws_url}/ws?events=message.*   (SSE: {bridge_url}/events)\n"
            f"  health / metrics:      {bridge_url}/readyz   {bridge_url}/metrics\n"
            f"  in another terminal:   chatwoot-bridge tail --url {bridge_url}\n"
            "Live events follow (Ctrl-C to stop):\n"
        )
        out.flush()
        if opts.open_browser:
            webbrowser.open(bridge_url + "/")
        printer = tg.create_task(tail(TailOptions(url=bridge_url), out), name="tail")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(opts.duration):
                await stop.wait()
        printer.cancel()
        bridge_stop.set()
        sim_stop.set()
    return 0
