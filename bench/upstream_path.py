"""The upstream path on one core: ActionCable decode, normalise, dedupe, event log (and the
frame encoded once), as the daemon runs it (``Pipeline.cable_message`` with its metrics and
observers), without sockets. Target (issue 7): at least 20,000 events/s.

Frames are Chatwoot-shaped ``message.created`` broadcasts of about 600 bytes, each a new
message (nothing is deduplicated away), plus one duplicate in ten, as when the cable and a
REST pass deliver the same message.
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CollectorRegistry

from bench.common import Row
from bridge import actioncable as ac
from bridge.cache import MessageCache
from bridge.eventlog import MemoryEventLog
from bridge.hub import Hub
from bridge.metrics import Metrics
from bridge.pipeline import Pipeline
from bridge.ports import LocalEventStore
from bridge.sync import remember
from bridge.tracking import ConversationTracker


IDENTIFIER = json.dumps(
    {"channel": "RoomChannel", "pubsub_token": "t", "account_id": 1, "user_id": 1}
)


def message_frame(message_id: int, now: float) -> str:
    """One ActionCable ``message`` frame carrying a ~600-byte ``message.created``."""
    conversation = 1 + message_id % 50
    data = {
        "id": message_id,
        "content": f"Where is my order {message_id}?",
        "account_id": 1,
        "inbox_id": 1,
        "conversation_id": conversation,
        "message_type": 0,
        "created_at": int(now),
        "updated_at": "2026-11-25T06:00:00.000Z",
        "private": False,
        "status": "sent",
        "source_id": None,
        "content_type": "text",
        "content_attributes": {},
        "sender_type": "Contact",
        "sender_id": conversation,
        "external_source_ids": {},
        "additional_attributes": {},
        "conversation": {
            "assignee_id": None,
            "unread_count": 1,
            "last_activity_at": int(now),
            "contact_inbox": {"source_id": "a6d1-4c1e"},
        },
        "sender": {
            "id": conversation,
            "name": f"Contact {conversation}",
            "type": "contact",
            "avatar": "",
            "pubsub_token": "leaked-token",
        },
    }
    return json.dumps(
        {"identifier": IDENTIFIER, "message": {"event": "message.created", "data": data}}
    )


async def measure(events: int = 60_000) -> dict[str, Any]:
    now = time.time()
    frames = [message_frame(i, now) for i in range(1, events + 1)]
    for i in range(0, events, 10):
        frames.insert(i + 5, frames[i])  # a duplicate now and then
    metrics = Metrics.create(CollectorRegistry(), "bench")
    store = LocalEventStore(MemoryEventLog("bench", 10_000))
    pipeline = Pipeline(store, Hub(), metrics)
    pipeline.accounts = frozenset({1})
    cache, tracker = MessageCache(100, 300), ConversationTracker()
    pipeline.observers.append(lambda entry: remember(entry, cache, tracker, now))
    client = ac.CableClient(0.0)
    client.receive_text('{"type":"welcome"}', 0.0)
    client.subscribe(IDENTIFIER, 0.0)
    client.data_to_send()
    client.receive_text(json.dumps({"identifier": IDENTIFIER, "type": "confirm_subscription"}), 0.0)
    client.events_received()
    size = sum(len(f) for f in frames[:100]) / 100
    started_cpu, started = time.process_time(), time.perf_counter()
    for text in frames:
        client.receive_text(text, 1.0)
        for event in client.events_received():
            if isinstance(event, ac.Message):
                await pipeline.cable_message(event.payload, now, 1)
    cpu, wall = time.process_time() - started_cpu, time.perf_counter() - started
    published = store.last_seq
    return {
        "frames": len(frames),
        "published": published,
        "frame_bytes": round(size),
        "events_per_s": round(len(frames) / cpu),
        "us_per_event": round(cpu / len(frames) * 1e6, 1),
        "wall_s": round(wall, 2),
    }


async def run(events: int = 60_000) -> dict[str, Any]:
    figures = await measure(events)
    ok = figures["events_per_s"] >= 20_000
    rows = [
        Row(
            "decode+normalise+dedupe+log, one core",
            figures,
            "target ≥ 20,000/s: " + ("met" if ok else "NOT met"),
        )
    ]
    return {"rows": rows, "figures": figures, "target_met": ok}
