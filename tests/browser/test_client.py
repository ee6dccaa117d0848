"""/client.js in real Chromium: reconnect with backoff, resume with ``since``, reset on a new
epoch, fatal close codes, requests as promises. A blank page on the bridge's origin imports
the module, as a frontend would."""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
from collections.abc import AsyncIterator
from typing import Any

from tests.e2e.conftest import RunningSim
from tests.helpers import eventually, running_bridge


SETUP = """async (options) => {
  const { connect } = await import("/client.js");
  window.log = { events: [], resets: [], welcomes: [], states: [], errors: [] };
  window.client = connect(options);
  client.on("message.created", (f) => log.events.push(f.data.id));
  client.on("reset", (r) => log.resets.push(r));
  client.on("welcome", (w) => log.welcomes.push(w));
  client.on("state", (s) => log.states.push(s.connection));
  client.on("error", (e) => log.errors.push(e.code));
}"""
FAST = {"backoff": {"initial": 50, "max": 250}}


async def harness(page: Any, url: str, **options: Any) -> None:
    """A blank page on the bridge's origin with a connected client in ``window.client``."""

    async def blank(route: Any) -> None:
        await route.fulfill(body="<!doctype html><title>harness</title>", content_type="text/html")

    await page.route(url + "/harness", blank)
    await page.goto(url + "/harness")
    await page.evaluate(SETUP, {**FAST, **options})


async def log_of(page: Any) -> dict[str, Any]:
    return await page.evaluate("window.log")


async def wait_js(page: Any, condition: str, timeout: float = 10_000) -> None:
    await page.wait_for_function(condition, timeout=timeout)


@contextlib.asynccontextmanager
async def bridge_on(simulator: RunningSim, port: int = 0) -> AsyncIterator[tuple[Any, str]]:
    env = simulator.bridge_env(BRIDGE_LISTEN=f"127.0.0.1:{port}")
    async with running_bridge(env) as running:
        yield running


async def test_resume_after_a_cut_misses_nothing(page: Any, simulator: RunningSim):
    """While the client cannot reach the bridge it retries with backoff; once through it
    resumes with since and gets exactly the events it missed, once each."""
    sim = simulator.sim
    blocked = False
    attempts = {"refused": 0}

    async def gate(ws: Any) -> None:
        if blocked:
            attempts["refused"] += 1
            await ws.close()
        else:
            ws.connect_to_server()

    async with bridge_on(simulator) as (bridge, url):
        await page.route_web_socket(re.compile(r"/ws"), gate)
        await harness(page, url)
        await wait_js(page, "client.connection === 'live'")
        first = sim.create_message(1, 1, content="one", message_type="incoming")["id"]
        await wait_js(page, f"log.events.includes({first})")

        blocked = True
        bridge.server.close_clients()
        await wait_js(page, "log.states.includes('reconnecting')")
        seq = bridge.store.last_seq
        missed = [
            sim.create_message(1, 2, content=f"missed {i}", message_type="incoming")["id"]
            for i in range(3)
        ]
        await eventually(lambda: bridge.store.last_seq >= seq + 3)
        await eventually(lambda: attempts["refused"] >= 2)
        blocked = False
        await wait_js(page, f"log.events.includes({missed[-1]})")
        log = await log_of(page)
        assert log["events"] == [first, *missed]
        assert len(log["welcomes"]) == 2
        assert log["welcomes"][1]["replayed"] >= 3
        assert log["resets"] == []
        assert await page.evaluate("client.position.seq") == bridge.store.last_seq


async def test_a_restarted_bridge_resets_the_client_then_streams(page: Any, simulator: RunningSim):
    """The bridge stops (the client keeps retrying) and starts again with a new epoch: the
    client reports reset, takes the new position and gets the new events."""
    sim = simulator.sim
    async with bridge_on(simulator) as (_, url):
        port = int(url.rsplit(":", 1)[1])
        await harness(page, url)
        await wait_js(page, "client.connection === 'live'")
        before = sim.create_message(1, 1, content="before", message_type="incoming")["id"]
        await wait_js(page, f"log.events.includes({before})")
        old_epoch = await page.evaluate("client.position.epoch")
    await wait_js(page, "client.connection === 'reconnecting'")
    async with bridge_on(simulator, port) as (bridge, _):
        await wait_js(page, "log.resets.length === 1")
        log = await log_of(page)
        reset = log["resets"][0]
        assert reset["reason"] == "unknown_epoch"
        assert reset["epoch"] == bridge.store.epoch != old_epoch
        await wait_js(page, "client.connection === 'live'")
        after = sim.create_message(1, 1, content="after", message_type="incoming")["id"]
        await wait_js(page, f"log.events.includes({after})")
        assert await page.evaluate("client.position.epoch") == bridge.store.epoch
        # Reconnecting to the same bridge now resumes instead of resetting again.
        bridge.server.close_clients()
        await wait_js(page, "log.welcomes.length === 3")
        assert (await log_of(page))["resets"] == [reset]


async def test_requests_are_promises_and_fatal_closes_stop_retrying(
    page: Any, simulator: RunningSim
):
    """Requests resolve with their result or reject with the protocol's error code; a
    filter outside the token's scope (4003) stops the client instead of looping."""
    digest = hashlib.sha256(b"page-token").hexdigest()
    clients = [{"name": "page", "token_sha256": digest, "accounts": [1], "commands": ["history"]}]
    env = simulator.bridge_env(BRIDGE_AUTH="token", BRIDGE_CLIENTS=json.dumps(clients))
    async with running_bridge(env) as (bridge, url):
        await harness(page, url, token="page-token")
        await wait_js(page, "client.connection === 'live'")
        listing = await page.evaluate("client.conversations({ accountId: 1 })")
        assert listing["conversations"]
        refused = await page.evaluate(
            """client.send({ accountId: 1, conversationId: 1, content: "x" })
                 .then(() => null, (e) => [e.name, e.code, e.message])"""
        )
        assert refused[:2] == ["BridgeError", "forbidden"]
        await page.evaluate("client.close()")

        await page.evaluate(SETUP, {**FAST, "token": "page-token", "accounts": [2]})
        await wait_js(page, "client.connection === 'closed'")
        log = await log_of(page)
        assert log["errors"] == ["forbidden"]
        assert log["welcomes"] == []
        refusals = bridge.metrics.client_disconnects.labels(reason="forbidden")._value.get()
        assert refusals == 1  # one attempt, no retry loop


async def test_backoff_is_jittered_and_capped(page: Any, simulator: RunningSim):
    """Delays stay below min(max, initial * 2^attempt) and are spread, not in lock-step."""
    async with bridge_on(simulator) as (_, url):
        await harness(page, url)
        found = await page.evaluate(
            """async () => {
                 const { backoffDelay } = await import("/client.js");
                 const top = [...Array(12).keys()].map(
                   (n) => backoffDelay(n, { initial: 500, max: 30000 }, () => 0.999999));
                 const spread = new Set(
                   [...Array(50)].map(() => backoffDelay(6, { initial: 500, max: 30000 })));
                 return { top, spread: spread.size, zero: backoffDelay(3, {}, () => 0) };
               }"""
        )
    assert found["top"] == [min(30000, 500 * 2**n) - 1 for n in range(12)]
    assert found["spread"] > 40
    assert found["zero"] == 0
