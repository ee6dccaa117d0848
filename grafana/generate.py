"""Generates grafana/chatwoot-bridge.json: ``python grafana/generate.py > grafana/chatwoot-bridge.json``.

The dashboard is code so that panels stay consistent; a test checks the committed JSON is
what this script produces, and that every metric it queries is exported by a running bridge.
Import: Grafana > Dashboards > New > Import, pick your Prometheus data source.
"""

from __future__ import annotations

import json
import sys
from typing import Any


DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = 'instance=~"$instance"'


class Layout:
    """Places panels on Grafana's 24-column grid, row by row."""

    def __init__(self) -> None:
        self.y = 0
        self.x = 0
        self.next_id = 1
        self.panels: list[dict[str, Any]] = []
        self.row_height = 0

    def row(self, title: str) -> None:
        self._newline()
        self.panels.append(
            {
                "type": "row",
                "title": title,
                "id": self._id(),
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y},
                "panels": [],
            }
        )
        self.y += 1

    def add(self, panel: dict[str, Any], w: int = 8, h: int = 8) -> None:
        if self.x + w > 24:
            self._newline()
        panel["id"] = self._id()
        panel["gridPos"] = {"h": h, "w": w, "x": self.x, "y": self.y}
        panel["datasource"] = DS
        self.panels.append(panel)
        self.x += w
        self.row_height = max(self.row_height, h)

    def _newline(self) -> None:
        if self.x:
            self.y += self.row_height
        self.x = 0
        self.row_height = 0

    def _id(self) -> int:
        self.next_id += 1
        return self.next_id - 1


def target(expr: str, legend: str = "", ref: str = "A") -> dict[str, Any]:
    return {"datasource": DS, "expr": expr, "legendFormat": legend, "refId": ref, "range": True}


def timeseries(
    title: str,
    targets: list[dict[str, Any]],
    unit: str = "short",
    desc: str = "",
    stack: bool = False,
) -> dict[str, Any]:
    for i, t in enumerate(targets):
        t["refId"] = chr(ord("A") + i)
    return {
        "type": "timeseries",
        "title": title,
        "description": desc,
        "targets": targets,
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "custom": {
                    "drawStyle": "line",
                    "lineWidth": 1,
                    "fillOpacity": 10,
                    "stacking": {"mode": "normal" if stack else "none"},
                },
            },
            "overrides": [],
        },
        "options": {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        },
    }


def stat(
    title: str,
    expr: str,
    unit: str = "short",
    desc: str = "",
    mappings: list[dict[str, Any]] | None = None,
    thresholds: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "type": "stat",
        "title": title,
        "description": desc,
        "targets": [target(expr, "")],
        "fieldConfig": {
            "defaults": {
                "unit": unit,
                "mappings": mappings or [],
                "thresholds": {
                    "mode": "absolute",
                    "steps": thresholds or [{"color": "green", "value": None}],
                },
            },
            "overrides": [],
        },
        "options": {
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "colorMode": "background",
            "graphMode": "none",
            "textMode": "auto",
        },
    }


def quantiles(metric: str, by: str = "") -> list[dict[str, Any]]:
    group = f"le{', ' + by if by else ''}"
    legend = f"{{{{{by}}}}} " if by else ""
    return [
        target(
            f"histogram_quantile(0.5, sum by ({group}) (rate({metric}_bucket{{{SEL}}}[$__rate_interval])))",
            f"{legend}p50",
        ),
        target(
            f"histogram_quantile(0.99, sum by ({group}) (rate({metric}_bucket{{{SEL}}}[$__rate_interval])))",
            f"{legend}p99",
        ),
    ]


STATE_VALUES = {"live": 0, "connecting": 1, "polling": 2, "down": 3}


def dashboard() -> dict[str, Any]:
    p = "chatwoot_bridge_"
    lay = Layout()

    lay.row("Upstream")
    state_expr = " or ".join(
        f'(max(chatwoot_bridge_upstream_state{{{SEL}, state="{s}"}}) == 1) * 0 + {v}'
        for s, v in STATE_VALUES.items()
    )
    lay.add(
        stat(
            "Upstream state",
            state_expr,
            desc="live: ActionCable subscribed. polling: the cable is down, REST fills in. down: neither works.",
            mappings=[
                {"type": "value", "options": {str(v): {"text": s, "index": v}}}
                for s, v in STATE_VALUES.items()
            ],
            thresholds=[
                {"color": "green", "value": None},
                {"color": "blue", "value": 1},
                {"color": "orange", "value": 2},
                {"color": "red", "value": 3},
            ],
        ),
        w=4,
    )
    lay.add(
        timeseries(
            "Upstream state over time",
            [target(f"max by (state) ({p}upstream_state{{{SEL}}})", "{{state}}")],
            desc="1 for the current state.",
        ),
        w=10,
    )
    lay.add(
        timeseries(
            "Reconnects and failed subscriptions",
            [
                target(
                    f"sum(increase({p}upstream_reconnects_total{{{SEL}}}[$__rate_interval]))",
                    "reconnects",
                ),
                target(
                    f"sum by (reason) (increase({p}upstream_subscribe_failures_total{{{SEL}}}[$__rate_interval]))",
                    "subscribe failed: {{reason}}",
                ),
            ],
        ),
        w=10,
    )

    lay.row("Events")
    lay.add(
        timeseries(
            "Events received per second by source",
            [
                target(
                    f"sum by (source) (rate({p}events_received_total{{{SEL}}}[$__rate_interval]))",
                    "{{source}}",
                ),
            ],
            unit="ops",
            stack=True,
        )
    )
    lay.add(
        timeseries(
            "Events published per second by type",
            [
                target(
                    f"sum by (event) (rate({p}events_published_total{{{SEL}}}[$__rate_interval]))",
                    "{{event}}",
                ),
            ],
            unit="ops",
            stack=True,
            desc="The seed plan's update frequency.",
        )
    )
    lay.add(
        timeseries(
            "Gap events (found by REST, missed by the cable)",
            [
                target(
                    f"sum by (reason) (increase({p}gap_events_total{{{SEL}}}[$__rate_interval]))",
                    "{{reason}}",
                ),
            ],
            desc="reconcile > 0 means the live cable lost events (Chatwoot's Sidekiq).",
        )
    )
    lay.add(
        timeseries(
            "Deduplicated, stale and dropped",
            [
                target(
                    f"sum by (source) (rate({p}events_deduplicated_total{{{SEL}}}[$__rate_interval]))",
                    "duplicate from {{source}}",
                ),
                target(
                    f"sum(rate({p}events_stale_dropped_total{{{SEL}}}[$__rate_interval]))", "stale"
                ),
                target(
                    f"sum by (reason) (rate({p}events_dropped_total{{{SEL}}}[$__rate_interval]))",
                    "dropped: {{reason}}",
                ),
            ],
            unit="ops",
        ),
        w=12,
    )
    lay.add(
        timeseries(
            "Seconds since the last event",
            [
                target(
                    f"time() - max({p}last_event_timestamp_seconds{{{SEL}}})", "since last event"
                ),
            ],
            unit="s",
        ),
        w=12,
    )

    lay.row("Latency")
    lay.add(
        timeseries(
            "Fan-out latency (frame in → last client write)",
            quantiles(f"{p}fanout_latency_seconds"),
            unit="s",
        ),
        w=12,
    )
    lay.add(
        timeseries(
            "Event lag (Chatwoot's timestamp → publish)",
            quantiles(f"{p}event_lag_seconds", "source"),
            unit="s",
            desc="The seed plan's message latency; poll lags are the REST interval.",
        ),
        w=12,
    )

    lay.row("Clients")
    lay.add(
        timeseries(
            "Clients connected",
            [target(f"sum by (transport) ({p}clients_connected{{{SEL}}})", "{{transport}}")],
        )
    )
    lay.add(
        timeseries(
            "Client disconnects by reason",
            [
                target(
                    f"sum by (reason) (increase({p}client_disconnects_total{{{SEL}}}[$__rate_interval]))",
                    "{{reason}}",
                ),
            ],
        )
    )
    lay.add(
        timeseries(
            "Deliveries per second",
            [
                target(
                    f"sum(rate({p}deliveries_total{{{SEL}}}[$__rate_interval]))", "frames written"
                )
            ],
            unit="ops",
        )
    )

    lay.row("REST (Chatwoot API)")
    lay.add(
        timeseries(
            "Requests per second by endpoint and outcome",
            [
                target(
                    f"sum by (endpoint, outcome) (rate({p}poll_requests_total{{{SEL}}}[$__rate_interval]))",
                    "{{endpoint}} {{outcome}}",
                ),
            ],
            unit="reqps",
            stack=True,
            desc="The seed plan's request success and failure rate.",
        )
    )
    lay.add(
        timeseries(
            "Request error ratio",
            [
                target(
                    f'sum(rate({p}poll_requests_total{{{SEL}, outcome!="ok"}}[$__rate_interval])) / sum(rate({p}poll_requests_total{{{SEL}}}[$__rate_interval]))',
                    "errors",
                ),
            ],
            unit="percentunit",
        )
    )
    lay.add(
        timeseries(
            "Request duration",
            quantiles(f"{p}poll_request_duration_seconds", "endpoint"),
            unit="s",
            desc="The seed plan's API response time.",
        )
    )
    lay.add(
        timeseries(
            "Passes by mode and outcome",
            [
                target(
                    f"sum by (mode, outcome) (increase({p}poll_passes_total{{{SEL}}}[$__rate_interval]))",
                    "{{mode}} {{outcome}}",
                ),
            ],
        ),
        w=24,
        h=7,
    )

    lay.row("Cache and process")
    lay.add(
        timeseries(
            "Message cache hit ratio",
            [
                target(
                    f"sum(rate({p}cache_hits_total{{{SEL}}}[$__rate_interval])) / (sum(rate({p}cache_hits_total{{{SEL}}}[$__rate_interval])) + sum(rate({p}cache_misses_total{{{SEL}}}[$__rate_interval])))",
                    "hit ratio",
                ),
            ],
            unit="percentunit",
        )
    )
    lay.add(
        timeseries(
            "Message cache size",
            [
                target(f"sum({p}cache_messages{{{SEL}}})", "messages"),
                target(f"sum({p}eventlog_entries{{{SEL}}})", "replay buffer events"),
            ],
        )
    )
    lay.add(
        timeseries(
            "Memory",
            [
                target(f"sum({p}cache_bytes{{{SEL}}})", "message cache"),
                target(f"sum(process_resident_memory_bytes{{{SEL}}})", "process RSS"),
            ],
            unit="bytes",
            desc="The seed plan's cache memory use.",
        )
    )

    return {
        "__inputs": [
            {
                "name": "DS_PROMETHEUS",
                "label": "Prometheus",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [
            {"type": "grafana", "id": "grafana", "name": "Grafana", "version": "9.0.0"},
            {"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"},
        ],
        "title": "chatwoot-bridge",
        "uid": "chatwoot-bridge",
        "description": "Upstream state, events, gap fill, latency, clients, REST load and cache of chatwoot-bridge.",
        "tags": ["chatwoot", "chatwoot-bridge"],
        "timezone": "",
        "schemaVersion": 38,
        "version": 1,
        "editable": True,
        "graphTooltip": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "label": "Data source",
                    "type": "datasource",
                    "query": "prometheus",
                    "current": {},
                    "hide": 0,
                    "refresh": 1,
                    "options": [],
                },
                {
                    "name": "instance",
                    "label": "Instance",
                    "type": "query",
                    "datasource": DS,
                    "query": {
                        "query": "label_values(chatwoot_bridge_build_info, instance)",
                        "refId": "instance",
                    },
                    "definition": "label_values(chatwoot_bridge_build_info, instance)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "current": {},
                    "hide": 0,
                    "refresh": 2,
                    "options": [],
                    "sort": 1,
                },
            ]
        },
        "annotations": {"list": []},
        "links": [],
        "panels": lay.panels,
    }


if __name__ == "__main__":
    json.dump(dashboard(), sys.stdout, indent=2)
    sys.stdout.write("\n")
