"""Import direction guard: the pure core does no I/O and imports no service."""

import ast
from pathlib import Path

import pytest


BRIDGE = Path(__file__).parent.parent / "bridge"
PURE = ["actioncable", "events", "normalise", "eventlog", "retry", "clientproto", "status"]
FORBIDDEN_LIBS = {
    "asyncio",
    "aiohttp",
    "websockets",
    "structlog",
    "prometheus_client",
    "socket",
    "time",
    "os",
}
# The hub is the registry the server plugs clients into (style.md's dependency graph).
SERVICES = {"bridge.server", "bridge.upstream", "bridge.poller", "bridge.rest", "bridge.app"}
PURE_ALLOWED = {f"bridge.{name}" for name in PURE} | {"bridge.errors"}


def imports_of(module: str) -> set[str]:
    tree = ast.parse((BRIDGE / f"{module}.py").read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


@pytest.mark.parametrize("module", PURE)
def test_pure_core_imports_nothing_impure(module):
    """Pure modules import no I/O library and only other pure modules of bridge."""
    found = imports_of(module)
    libs = {name.split(".")[0] for name in found}
    assert not libs & FORBIDDEN_LIBS, f"{module} imports {libs & FORBIDDEN_LIBS}"
    own = {name for name in found if name.startswith("bridge")}
    assert own <= PURE_ALLOWED, f"{module} imports {own - PURE_ALLOWED}"


@pytest.mark.parametrize("module", ["server", "upstream", "hub", "rest"])
def test_services_do_not_import_each_other(module):
    """Services talk through callables wired by app.py."""
    found = imports_of(module)
    assert not (found & SERVICES) - {f"bridge.{module}"}
