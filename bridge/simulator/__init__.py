"""Bundled Chatwoot simulator: ActionCable ``/cable``, the REST subset, traffic and faults.

For frontend development without a Chatwoot and for the bridge's test-suite. It follows
``/work/shared/chatwoot.md`` (shapes, recipients, silent failures) and ``protocol.md`` §1.

    app, sim = build_app(SimConfig(port=0, rate=0))   # in-process, e.g. with aiohttp_client
    async with running(SimConfig(port=0, rate=0)) as (sim, url): ...  # listening, in-process
    await serve(SimConfig(), stop_event, on_ready=print)  # standalone
"""

from bridge.simulator.app import build_app, running, serve
from bridge.simulator.config import SimConfig
from bridge.simulator.sim import Simulator


__all__ = ["SimConfig", "Simulator", "build_app", "running", "serve"]
