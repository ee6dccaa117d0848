"""The live page at / in real headless Chromium, against a bridge on the simulator."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from playwright.async_api import expect

from tests.e2e.conftest import RunningSim
from tests.helpers import eventually, running_bridge

from .conftest import ARTIFACTS


FAST_FALLBACK = {
    "BRIDGE_STALE_AFTER_MS": "500",
    "BRIDGE_RECONNECT_BACKOFF_MS": "100,200",
    "BRIDGE_POLL_ACTIVE_MS": "200",
    "BRIDGE_POLL_INACTIVE_MS": "1000",
    "BRIDGE_REQUEST_TIMEOUT_MS": "1000",
}


async def open_page(page: Any, url: str) -> None:
    await page.goto(url + "/")
    await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
    await expect(page.locator("[data-testid=conversation]").first).to_be_visible()


def conversation(page: Any, account: int, cid: int) -> Any:
    return page.locator(f"[data-key='{account}:{cid}']")


async def test_a_new_message_appears_within_a_second_with_an_unread_badge(
    page: Any, simulator: RunningSim
):
    """A message the simulator creates shows in the list within a second, with its unread
    badge and a title badge; opening the conversation reads it (badge gone, Chatwoot told)."""
    sim = simulator.sim
    async with running_bridge(simulator.bridge_env()) as (_, url):
        await open_page(page, url)
        await conversation(page, 1, 1).click()
        await expect(page.locator("#thread-title")).not_to_be_empty()
        loop = asyncio.get_running_loop()
        started = loop.time()
        sim.create_message(1, 2, content="Where is my parcel?", message_type="incoming")
        preview = conversation(page, 1, 2).locator(".preview")
        await expect(preview).to_have_text("Where is my parcel?", timeout=1000)
        latency = loop.time() - started
        badge = conversation(page, 1, 2).get_by_test_id("unread")
        await expect(badge).to_have_text(re.compile(r"^[1-9]\d*$"))
        await expect(page).to_have_title(re.compile(r"^\(1\) Chatwoot bridge$"))
        await page.screenshot(path=str(ARTIFACTS / "unread-badge.png"))

        await conversation(page, 1, 2).click()
        await expect(page.locator(".message.incoming").last).to_have_text(
            re.compile("Where is my parcel?")
        )
        await expect(badge).to_have_count(0)
        await expect(page).to_have_title("Chatwoot bridge")
        await eventually(lambda: unread(simulator, 1, 2) == 0)
        (ARTIFACTS / "latency.json").write_text(json.dumps({"message_to_page_s": latency}))


def unread(simulator: RunningSim, account: int, cid: int) -> int:
    from bridge.simulator import render  # noqa: PLC0415

    world = simulator.sim.world
    return render.unread_count(world, world.conversation(account, cid))


async def test_typing_indicator_shows_and_expires_after_30_seconds(
    page: Any, simulator: RunningSim
):
    """typing_on shows "… is typing" in the thread and the list; it goes with typing_off, or
    by itself after 30 s without one (the page's clock is driven, not waited for)."""
    sim = simulator.sim
    await page.clock.install()
    async with running_bridge(simulator.bridge_env()) as (_, url):
        await open_page(page, url)
        await conversation(page, 1, 1).click()
        typing = page.locator("#typing")
        sim.typing(1, 1, on=True)
        await expect(typing).to_have_text(re.compile(r"is typing…$"))
        await expect(conversation(page, 1, 1).locator(".typing-preview")).to_be_visible()
        await page.screenshot(path=str(ARTIFACTS / "typing.png"))
        await page.clock.run_for(29_000)
        await expect(typing).to_be_visible()
        await page.clock.run_for(2_000)
        await expect(typing).to_be_hidden()

        sim.typing(1, 1, on=True)
        await expect(typing).to_be_visible()
        sim.typing(1, 1, on=False)
        await expect(typing).to_be_hidden()


async def test_presence_dots_follow_presence_updates(page: Any, simulator: RunningSim):
    """Contacts Chatwoot reports online get a green dot in the list and the thread; the
    others do not."""
    sim = simulator.sim
    world = sim.world
    async with running_bridge(simulator.bridge_env(**FAST_FALLBACK)) as (_, url):
        await open_page(page, url)
        await conversation(page, 1, 1).click()
        online = page.locator("[data-testid=conversation] .presence.online")
        await expect(online).to_have_count(0)  # no presence.update since the page opened
        # The contact writes (its widget is open), then Chatwoot sends presence.update: here
        # on the bridge's next subscribe, as after any reconnect.
        sim.create_message(1, 1, content="I am here", message_type="incoming")
        sim.drop_connections()
        dot = conversation(page, 1, 1).locator(".presence")
        await expect(dot).to_have_class(re.compile("online"), timeout=10_000)
        await expect(page.locator("#thread-sub")).to_have_text(re.compile("^online"))
        now = sim.clock()
        for conv in world.conversations_in(1):
            if await conversation(page, 1, conv.display_id).count() == 0:
                continue  # not in the open list
            expected = world.is_online(1, "Contact", conv.contact_id, now)
            classes = (
                await conversation(page, 1, conv.display_id)
                .locator(".presence")
                .get_attribute("class")
            )
            assert ("online" in (classes or "")) == expected, conv.display_id


async def test_cutting_the_upstream_shows_polling_and_messages_keep_arriving(
    page: Any, simulator: RunningSim
):
    """With Chatwoot's socket gone the indicator says polling and REST keeps the page live;
    when the socket comes back it says live again."""
    sim = simulator.sim
    async with running_bridge(simulator.bridge_env(**FAST_FALLBACK)) as (_, url):
        await open_page(page, url)
        await conversation(page, 1, 1).click()
        indicator = page.locator("#connection")
        sim.set_faults(refuse_connections=True)
        sim.drop_connections()
        await expect(indicator).to_have_attribute("data-state", "polling", timeout=10_000)
        await expect(indicator).to_have_text("Polling Chatwoot")
        sim.create_message(1, 1, content="sent while the cable is down", message_type="incoming")
        await expect(page.locator(".message.incoming").last).to_have_text(
            re.compile("sent while the cable is down"), timeout=10_000
        )
        await page.screenshot(path=str(ARTIFACTS / "polling.png"))
        sim.set_faults(refuse_connections=False)
        await expect(indicator).to_have_attribute("data-state", "live", timeout=15_000)


async def test_a_message_sent_from_the_page_appears_once_with_delivery_ticks(
    page: Any, simulator: RunningSim
):
    """The pending bubble becomes the sent message (matched by echo_id), never a second
    copy when the cable brings it back; its tick follows delivered, read and failed."""
    sim = simulator.sim
    async with running_bridge(simulator.bridge_env()) as (bridge, url):
        await open_page(page, url)
        await conversation(page, 1, 3).click()
        await expect(page.locator("#thread-title")).not_to_be_empty()
        draft = page.locator("#draft")
        await draft.fill("Your parcel ships today")
        seq = bridge.store.last_seq
        await draft.press("Enter")
        bubbles = page.locator(".message.outgoing", has_text="Your parcel ships today")
        await expect(bubbles.locator("[data-testid=tick]")).to_have_attribute("data-status", "sent")
        message_id = sim.world.conversation(1, 3).message_ids[-1]
        assert sim.world.messages[message_id].content == "Your parcel ships today"
        # the cable's message.created for it has reached the page by now
        await eventually(lambda: bridge.store.last_seq > seq)
        await page.wait_for_function(
            f"window.bridge.position && window.bridge.position.seq >= {bridge.store.last_seq}"
        )
        await expect(bubbles).to_have_count(1)
        await expect(bubbles).to_have_attribute("data-id", str(message_id))
        for status in ("delivered", "read", "failed"):
            sim.update_message_status(message_id, status)
            await expect(bubbles.locator("[data-testid=tick]")).to_have_attribute(
                "data-status", status
            )
            if status == "read":
                await page.screenshot(path=str(ARTIFACTS / "ticks-read.png"))
        world = sim.world
        assert [m.content for m in world.messages_of(world.conversation(1, 3))].count(
            "Your parcel ships today"
        ) == 1


async def test_a_reload_resumes_without_losing_events(page: Any, simulator: RunningSim):
    """Events published while the page reloads come with the resume (since), not lost."""
    sim = simulator.sim
    async with running_bridge(simulator.bridge_env()) as (bridge, url):
        await open_page(page, url)
        epoch = await page.locator("body").get_attribute("data-epoch")
        created: list[int] = []

        async def hold_the_page_script(route: Any) -> None:
            # The old page is gone, the new one not connected yet: the gap a reload makes.
            seq = bridge.store.last_seq
            created.append(
                sim.create_message(1, 4, content="while reloading", message_type="incoming")["id"]
            )
            await eventually(lambda: bridge.store.last_seq > seq)
            await route.continue_()

        await page.route("**/app.js", hold_the_page_script)
        await page.reload()
        await expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        await expect(page.locator("body")).to_have_attribute("data-epoch", epoch or "")
        replayed = int(await page.locator("body").get_attribute("data-replayed") or "0")
        assert replayed >= 1, "the reload did not resume"
        await expect(conversation(page, 1, 4).locator(".preview")).to_have_text("while reloading")
        position = await page.evaluate("window.bridge.position.seq")
        assert position == bridge.store.last_seq  # caught up with everything published
        assert len(created) == 1
