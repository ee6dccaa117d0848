"""The live page and the browser client as served: types, ETags, the page's CSP."""

from __future__ import annotations

import pytest
from aiohttp import web

from bridge.static import FILES, StaticFiles


@pytest.fixture
async def client(aiohttp_client):
    app = web.Application()
    for method, path, handler in StaticFiles().routes():
        app.router.add_route(method, path, handler)
    return await aiohttp_client(app)


@pytest.mark.parametrize("path", sorted(FILES))
async def test_every_file_is_served_with_its_type_and_revalidated(client, path):
    response = await client.get(path)
    assert response.status == 200
    assert response.headers["Content-Type"] == FILES[path][1]
    assert response.headers["Cache-Control"] == "no-cache"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    body = await response.read()
    assert body
    etag = response.headers["ETag"]
    again = await client.get(path, headers={"If-None-Match": etag})
    assert again.status == 304
    assert await again.read() == b""


async def test_the_page_has_a_strict_csp_and_loads_the_module(client):
    response = await client.get("/")
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp
    assert "frame-ancestors 'none'" in csp
    html = await response.text()
    assert '<script type="module" src="/app.js">' in html


async def test_client_module_exports_match_its_declarations(client):
    """Every export of client.js is declared in client.d.ts."""
    js = await (await client.get("/client.js")).text()
    dts = await (await client.get("/client.d.ts")).text()
    for name in ("connect", "BridgeClient", "BridgeError", "backoffDelay", "PROTOCOL"):
        assert (
            f"export function {name}" in js
            or f"export class {name}" in js
            or (f"export const {name}" in js)
        )
        assert name in dts
