"""Every Prometheus metric of the bridge, in one object built on a registry the app owns.

Names follow protocol.md §5 (``chatwoot_bridge_*``, ``_total`` counters, ``_seconds``
durations). Labels are low-cardinality only: never a client, conversation or message
id, and unknown event names are folded into ``other``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import (
    GC_COLLECTOR,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
)

from bridge.events import KNOWN_EVENTS, SOURCES


UPSTREAM_STATES = ("live", "connecting", "polling", "down")
# Label values created up front, so dashboards and alerts see zeros rather than nothing.
DISCONNECT_REASONS = (
    "client_closed",
    "slow_consumer",
    "rate_limited",
    "shutdown",
    "frame_too_big",
    "idle",
    "protocol_error",
    "unauthorized",
    "forbidden",
    "bad_request",
)
AUTH_FAILURES = ("missing", "invalid", "expired", "too_long", "bad_claims", "malformed")
REFUSALS = ("origin", "max_clients", "max_per_address", "timeout")
REST_ENDPOINTS = (
    "profile",
    "conversations",
    "conversation",
    "messages",
    "create_message",
    "typing",
    "read",
)
REQUEST_KINDS = ("conversations", "messages", "send", "typing", "read")
REQUEST_OUTCOMES = ("ok", "forbidden", "rate_limited", "upstream_error", "bad_request")
REST_OUTCOMES = (
    "ok",
    "unauthorized",
    "rate_limited",
    "server_error",
    "client_error",
    "timeout",
    "tls_error",
    "unreachable",
    "malformed",
)

# Fan-out and lag happen in milliseconds when healthy, seconds when REST fills a gap.
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def event_label(name: str) -> str:
    """The ``event`` label value: the name when Chatwoot documents it, else ``other``."""
    return name if name in KNOWN_EVENTS else "other"


@dataclass(slots=True)
class Metrics:
    """The metric objects; create with :meth:`create`."""

    registry: CollectorRegistry
    build_info: Gauge
    upstream_state: Gauge
    upstream_reconnects: Counter
    upstream_frames: Counter
    upstream_violations: Counter
    subscribe_failures: Counter
    upstream_last_frame: Gauge
    events_received: Counter
    events_published: Counter
    events_deduplicated: Counter
    events_first: Counter
    source_lead: Histogram
    events_stale_dropped: Counter
    events_dropped: Counter
    gap_events: Counter
    last_event: Gauge
    eventlog_entries: Gauge
    eventlog_seq: Gauge
    clients_connected: Gauge
    client_disconnects: Counter
    client_buffered_bytes: Gauge
    auth_failures: Counter
    handshakes_refused: Counter
    webhooks: Counter
    client_frames: Counter
    client_errors: Counter
    client_requests: Counter
    deliveries: Counter
    fanout_latency: Histogram
    event_lag: Histogram
    poll_requests: Counter
    poll_request_duration: Histogram
    poll_passes: Counter
    cache_hits: Counter
    cache_misses: Counter
    cache_messages: Gauge
    cache_bytes: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry, version: str) -> Metrics:
        """Register every metric on ``registry`` and pre-create the known label sets."""
        p = "chatwoot_bridge_"
        r = registry
        metrics = cls(
            registry=r,
            build_info=Gauge(
                p + "build_info", "Version of the running bridge.", ["version"], registry=r
            ),
            upstream_state=Gauge(
                p + "upstream_state",
                "1 for the current upstream state, 0 for the others.",
                ["state"],
                registry=r,
            ),
            upstream_reconnects=Counter(
                p + "upstream_reconnects", "Cable sockets opened after the first one.", registry=r
            ),
            upstream_frames=Counter(
                p + "upstream_frames", "ActionCable frames received, by type.", ["type"], registry=r
            ),
            upstream_violations=Counter(
                p + "upstream_violations",
                "Upstream frames that were not usable ActionCable.",
                registry=r,
            ),
            subscribe_failures=Counter(
                p + "upstream_subscribe_failures",
                "RoomChannel subscriptions that failed, by reason (timeout, rejected).",
                ["reason"],
                registry=r,
            ),
            upstream_last_frame=Gauge(
                p + "upstream_last_frame_timestamp_seconds",
                "Unix time of the last frame from the cable.",
                registry=r,
            ),
            events_received=Counter(
                p + "events_received",
                "Events received, by source and event.",
                ["source", "event"],
                registry=r,
            ),
            events_published=Counter(
                p + "events_published",
                "Events published to clients, by event.",
                ["event"],
                registry=r,
            ),
            events_deduplicated=Counter(
                p + "events_deduplicated",
                "Events dropped as duplicates of a published one, by source.",
                ["source"],
                registry=r,
            ),
            events_first=Counter(
                p + "events_first_source",
                "Published events by the source that delivered them first.",
                ["source"],
                registry=r,
            ),
            source_lead=Histogram(
                p + "source_lead_seconds",
                "How long before a later source the first one delivered the same fact.",
                ["first", "later"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            events_stale_dropped=Counter(
                p + "events_stale_dropped",
                "Conversation events dropped as older than one already published.",
                registry=r,
            ),
            events_dropped=Counter(
                p + "events_dropped",
                "Upstream payloads not published, by reason "
                "(malformed, no_account, not_bridged, other_subscription).",
                ["reason"],
                registry=r,
            ),
            gap_events=Counter(
                p + "gap_events",
                "Events REST found that the cable did not deliver, by reason.",
                ["reason"],
                registry=r,
            ),
            last_event=Gauge(
                p + "last_event_timestamp_seconds",
                "Unix time of the last published event.",
                registry=r,
            ),
            eventlog_entries=Gauge(p + "eventlog_entries", "Events held for resume.", registry=r),
            eventlog_seq=Gauge(
                p + "eventlog_seq", "Sequence number of the newest event.", registry=r
            ),
            clients_connected=Gauge(
                p + "clients_connected",
                "Local clients connected, by transport.",
                ["transport"],
                registry=r,
            ),
            client_disconnects=Counter(
                p + "client_disconnects",
                "Local clients disconnected, by reason.",
                ["reason"],
                registry=r,
            ),
            client_buffered_bytes=Gauge(
                p + "client_buffered_bytes",
                "Bytes written to clients and not yet taken by their sockets (all clients).",
                registry=r,
            ),
            auth_failures=Counter(
                p + "auth_failures",
                "Client credentials refused (close 4001), by reason.",
                ["reason"],
                registry=r,
            ),
            handshakes_refused=Counter(
                p + "handshakes_refused",
                "Connections refused before the upgrade (origin, limits) or cut (timeout).",
                ["reason"],
                registry=r,
            ),
            webhooks=Counter(
                p + "webhooks",
                "Webhook deliveries, by outcome (accepted, bad_signature, stale, replayed…).",
                ["outcome"],
                registry=r,
            ),
            client_frames=Counter(
                p + "client_frames",
                "Frames received from local clients, by type.",
                ["type"],
                registry=r,
            ),
            client_requests=Counter(
                p + "client_requests",
                "History requests and commands from local clients, by kind and outcome.",
                ["kind", "outcome"],
                registry=r,
            ),
            client_errors=Counter(
                p + "client_errors",
                "Error frames sent to local clients, by code.",
                ["code"],
                registry=r,
            ),
            deliveries=Counter(
                p + "deliveries", "Event frames written to local clients.", registry=r
            ),
            fanout_latency=Histogram(
                p + "fanout_latency_seconds",
                "Upstream frame in to the last client write.",
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            event_lag=Histogram(
                p + "event_lag_seconds",
                "Chatwoot's timestamp of an event to its publication.",
                ["source"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            poll_requests=Counter(
                p + "poll_requests",
                "REST requests to Chatwoot, by endpoint and outcome.",
                ["endpoint", "outcome"],
                registry=r,
            ),
            poll_request_duration=Histogram(
                p + "poll_request_duration_seconds",
                "Duration of REST requests to Chatwoot.",
                ["endpoint"],
                buckets=REQUEST_BUCKETS,
                registry=r,
            ),
            poll_passes=Counter(
                p + "poll_passes",
                "REST passes, by mode (outage, reconnect, reconcile) and outcome.",
                ["mode", "outcome"],
                registry=r,
            ),
            cache_hits=Counter(p + "cache_hits", "Message cache hits.", registry=r),
            cache_misses=Counter(p + "cache_misses", "Message cache misses.", registry=r),
            cache_messages=Gauge(p + "cache_messages", "Messages held in the cache.", registry=r),
            cache_bytes=Gauge(
                p + "cache_bytes",
                "Approximate memory held by the message cache, bytes.",
                registry=r,
            ),
        )
        # process_* (memory, CPU, start time, file descriptors) and python_* on the same
        # registry: the seed's "cache memory" KPI reads next to process memory.
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        r.register(GC_COLLECTOR)
        metrics.build_info.labels(version=version).set(1)
        for state in UPSTREAM_STATES:
            metrics.upstream_state.labels(state=state).set(0)
        for transport in ("ws", "sse"):
            metrics.clients_connected.labels(transport=transport).set(0)
        for source in SOURCES:
            metrics.events_deduplicated.labels(source=source)
            metrics.events_first.labels(source=source)
            metrics.event_lag.labels(source=source)
        for reason in ("malformed", "no_account", "not_bridged", "other_subscription", "ephemeral"):
            metrics.events_dropped.labels(reason=reason)
        for reason in ("timeout", "rejected"):
            metrics.subscribe_failures.labels(reason=reason)
        for reason in DISCONNECT_REASONS:
            metrics.client_disconnects.labels(reason=reason)
        for kind in REQUEST_KINDS:
            for outcome in REQUEST_OUTCOMES:
                metrics.client_requests.labels(kind=kind, outcome=outcome)
        for reason in AUTH_FAILURES:
            metrics.auth_failures.labels(reason=reason)
        for reason in REFUSALS:
            metrics.handshakes_refused.labels(reason=reason)
        for endpoint in REST_ENDPOINTS:
            metrics.poll_request_duration.labels(endpoint=endpoint)
            for outcome in REST_OUTCOMES:
                metrics.poll_requests.labels(endpoint=endpoint, outcome=outcome)
        for mode in ("outage", "reconnect", "reconcile"):
            metrics.gap_events.labels(reason=mode)
            for outcome in ("ok", "error"):
                metrics.poll_passes.labels(mode=mode, outcome=outcome)
        return metrics

    def set_upstream_state(self, state: str) -> None:
        """Make ``state`` the one state at 1."""
        for name in UPSTREAM_STATES:
            self.upstream_state.labels(state=name).set(1 if name == state else 0)
