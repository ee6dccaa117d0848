"""Every metric the dashboard and the alert rules use is exported by a running bridge."""

from __future__ import annotations

import json
import subprocess
import sys

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from .promql import ROOT, alert_exprs, dashboard_exprs, family, names


def test_committed_dashboard_is_what_the_generator_makes():
    """grafana/chatwoot-bridge.json is up to date with grafana/generate.py."""
    generated = subprocess.run(
        [sys.executable, str(ROOT / "grafana" / "generate.py")],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert json.loads(generated) == json.loads(
        (ROOT / "grafana" / "chatwoot-bridge.json").read_text()
    )


def test_dashboard_uses_a_datasource_variable():
    """Importable anywhere: every query names the ${datasource} variable, none a fixed uid."""
    dash = json.loads((ROOT / "grafana" / "chatwoot-bridge.json").read_text())
    assert dash["templating"]["list"][0]["type"] == "datasource"
    text = json.dumps(dash["panels"])
    assert '"uid": "${datasource}"' in text
    assert text.count('"expr"') >= 25


def test_promql_name_extraction():
    """The extractor finds metric names and ignores labels and functions."""
    expr = (
        "sum by (le, endpoint) (rate(chatwoot_bridge_poll_request_duration_seconds_bucket"
        '{instance=~"$i", outcome!="ok"}[5m])) and on (instance) up == 0'
    )
    assert names(expr) == {"chatwoot_bridge_poll_request_duration_seconds_bucket", "up"}


async def test_every_metric_used_is_exported(bridge_on_sim):
    """Scrape a live bridge: each family the dashboard and alerts query has samples."""
    _, url = bridge_on_sim
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        text = await response.text()
    exported = {f.name: {s.name for s in f.samples} for f in text_string_to_metric_families(text)}
    sample_names = {n for samples in exported.values() for n in samples}
    used = set()
    for expr in [*dashboard_exprs(), *alert_exprs()]:
        used |= names(expr)
    used.discard("up")  # made by Prometheus itself; checked against a real one in test_prometheus
    assert len(used) >= 20
    missing = sorted(n for n in used if n not in sample_names and family(n) not in exported)
    assert missing == []
    empty = sorted(n for n in used if n not in sample_names)
    assert empty == [], f"exported without any sample: {empty}"


PROTOCOL_METRICS = {
    "chatwoot_bridge_upstream_state": {"state"},
    "chatwoot_bridge_upstream_reconnects_total": set(),
    "chatwoot_bridge_events_received_total": {"source", "event"},
    "chatwoot_bridge_events_published_total": {"event"},
    "chatwoot_bridge_events_deduplicated_total": {"source"},
    "chatwoot_bridge_events_stale_dropped_total": set(),
    "chatwoot_bridge_gap_events_total": {"reason"},
    "chatwoot_bridge_clients_connected": set(),
    "chatwoot_bridge_client_disconnects_total": {"reason"},
    "chatwoot_bridge_fanout_latency_seconds_bucket": set(),
    "chatwoot_bridge_event_lag_seconds_bucket": set(),
    "chatwoot_bridge_poll_requests_total": {"endpoint", "outcome"},
    "chatwoot_bridge_poll_request_duration_seconds_bucket": set(),
    "chatwoot_bridge_cache_hits_total": set(),
    "chatwoot_bridge_cache_misses_total": set(),
    "chatwoot_bridge_cache_messages": set(),
}


async def test_every_metric_of_the_contract_is_exported(bridge_on_sim):
    """protocol.md §5: each name is exported with (at least) its labels."""
    _, url = bridge_on_sim
    async with aiohttp.ClientSession() as session, session.get(url + "/metrics") as response:
        text = await response.text()
    labels: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    for name, wanted in PROTOCOL_METRICS.items():
        assert name in labels, name
        assert wanted <= labels[name], (name, labels[name])
