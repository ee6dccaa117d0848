"""The publish path: normalise, append to the event log, fan out, and count it all.

upstream text → ``normalise`` → ``EventStore.append`` (dedupe, staleness, seq) →
``Hub.publish`` (encode once) → clients. Every source (cable, REST, webhooks) joins
here, so the same fact is published once whichever source delivers it first.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Container, Sequence
from dataclasses import dataclass
from typing import Any

import structlog

from bridge.eventlog import Duplicate, Stale
from bridge.events import Entry, Event
from bridge.hub import Hub
from bridge.metrics import Metrics, event_label
from bridge.normalise import Dropped, from_cable
from bridge.ports import EventStore
from bridge.upstream import CableState


log = structlog.get_logger("bridge.pipeline")
_EMPTY: dict[str, object] = {}
_ROOT = logging.getLogger()


@dataclass(slots=True)
class _Counted:
    """The labelled metric children that each event of one source and event label updates."""

    received: Any
    published: Any
    first: Any
    lag: Any


class Pipeline:
    """Turns upstream payloads into published entries.

    Args:
        store: the event log.
        hub: the fan-out.
        metrics: the metric objects.
        clock: wall clock.
    """

    def __init__(
        self,
        store: EventStore,
        hub: Hub,
        metrics: Metrics,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.hub = hub
        self.metrics = metrics
        self.clock = clock
        # The bridged account ids; nothing is published until the identity is known.
        self.accounts: Container[int] = frozenset()
        # Told of every cable state change (the poller and the upstream health).
        self.cable_listeners: list[Callable[[CableState, str], None]] = []
        # Told of every published entry (message cache, conversation tracker).
        self.observers: list[Callable[[Entry], None]] = []
        # Read at scrape time rather than set per event (each set takes a lock).
        self.last_event_at = 0.0
        metrics.last_event.set_function(lambda: self.last_event_at)
        metrics.eventlog_seq.set_function(lambda: store.last_seq)
        # Labelled metric children, looked up once (``labels()`` costs microseconds per
        # call); label values are bounded (sources, known event names), so is this.
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self._counted: dict[tuple[str, str], _Counted] = {}
        hub.on_fanout = self._fanned_out

    def _fanned_out(self, entries: Sequence[Entry], delivered: int) -> None:
        """The hub wrote ``entries`` (one fan-out, maybe coalesced): ``delivered`` frames."""
        metrics = self.metrics
        if delivered:
            metrics.deliveries.inc(delivered)
        now = self.clock()
        for entry in entries:
            metrics.fanout_latency.observe(max(0.0, now - entry.event.received_at))

    def _child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), values)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*values)
        return child

    def _counters(self, source: str, label: str) -> _Counted:
        counted = self._counted.get((source, label))
        if counted is None:
            metrics = self.metrics
            counted = self._counted[source, label] = _Counted(
                received=metrics.events_received.labels(source, label),
                published=metrics.events_published.labels(label),
                first=metrics.events_first.labels(source),
                lag=metrics.event_lag.labels(source),
            )
        return counted

    # UpstreamListener

    def cable_state(self, state: CableState, reason: str) -> None:
        """Tell the listeners of a cable state change."""
        log.info("upstream.state", state=state.value, reason=reason)
        for listener in self.cable_listeners:
            listener(state, reason)

    async def cable_message(
        self, payload: object, received_at: float, account_id: int | None
    ) -> None:
        """A broadcast from the cable, on the subscription of ``account_id``."""
        result = from_cable(
            payload, received_at=received_at, accounts=self.accounts, via_account=account_id
        )
        if isinstance(result, Dropped):
            self.metrics.events_dropped.labels(reason=result.reason).inc()
            if result.reason == "malformed":
                log.warning("event.malformed", detail=result.detail, event_name=result.name)
            return
        await self.publish(result)

    # Public methods

    async def publish(self, event: Event) -> Entry | None:
        """Publish ``event`` unless it duplicates or is older than what clients have."""
        metrics = self.metrics
        counted = self._counters(event.source, event_label(event.name))
        counted.received.inc()
        # Per-event lines only at debug level; the check keeps the hot path cheap.
        debug = _ROOT.isEnabledFor(logging.DEBUG)
        if debug:
            log.debug(
                "event.received",
                event_name=event.name[:100],
                source=event.source,
                account_id=event.account_id,
                conversation_id=event.conversation_id,
            )
        if not event.known:
            log.info("event.unknown", event_name=event.name[:100], account_id=event.account_id)
        result = await self.store.append(event)
        if isinstance(result, Duplicate):
            self._child(metrics.events_deduplicated, event.source).inc()
            if result.first_source:
                metrics.source_lead.labels(first=result.first_source, later=event.source).observe(
                    max(0.0, event.received_at - result.first_received_at)
                )
            return None
        if isinstance(result, Stale):
            metrics.events_stale_dropped.inc()
            log.debug("event.stale", event_name=event.name, conversation_id=event.conversation_id)
            return None
        self.hub.publish(result)
        now = self.clock()
        counted.published.inc()
        counted.first.inc()
        if event.occurred_at is not None:
            counted.lag.observe(max(0.0, now - event.occurred_at))
        self.last_event_at = now
        if debug:
            log.debug("event.published", event_name=event.name[:100], seq=result.seq)
        for observer in self.observers:
            observer(result)
        # Fan-out is done: the replay buffer needs only the text and the event's routing
        # fields, not the payload a second time nor the prepared frame (memory bound).
        result.cache.clear()
        result.event = event.without_data(_EMPTY)
        return result
