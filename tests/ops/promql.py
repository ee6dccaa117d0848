"""Metric names in PromQL expressions (dashboard and alert rules)."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any


ROOT = Path(__file__).parent.parent.parent
NAME = re.compile(r"\b((?:chatwoot_bridge|process|python)_[a-z_]+|up)\b(?!\s*\()")
SUFFIXES = ("_bucket", "_sum", "_count", "_total", "_created")


def dashboard_exprs() -> Iterator[str]:
    def walk(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            if isinstance(node.get("expr"), str):
                yield node["expr"]
            for value in node.values():
                yield from walk(value)
        elif isinstance(node, list):
            for value in node:
                yield from walk(value)

    yield from walk(json.loads((ROOT / "grafana" / "chatwoot-bridge.json").read_text()))
    query = "label_values(chatwoot_bridge_build_info, instance)"
    yield query


def alert_exprs() -> Iterator[str]:
    """The ``expr`` values of deploy/prometheus/alerts.yml (block scalars included)."""
    lines = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text().splitlines()
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        if stripped.startswith("expr:"):
            value = stripped[5:].strip()
            if value == "|":
                indent = len(lines[i + 1]) - len(lines[i + 1].lstrip())
                block = []
                i += 1
                while i < len(lines) and (
                    not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) >= indent
                ):
                    block.append(lines[i].strip())
                    i += 1
                yield " ".join(block)
                continue
            yield value
        i += 1


def names(expr: str) -> set[str]:
    """Metric names referenced, without label names or functions (labels live in braces)."""
    without_labels = re.sub(r"\{[^}]*\}", "", expr)
    without_by = re.sub(r"\b(by|on|without|ignoring)\s*\([^)]*\)", "", without_labels)
    return {m for m in NAME.findall(without_by) if m not in {"le"}}


def family(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name
