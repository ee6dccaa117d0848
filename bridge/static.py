"""The live page and the browser client: ``/``, ``/client.js``, ``/client.d.ts`` and the
page's own assets, read once from the package (``bridge/web``) and served with ETags.

The page gets a strict Content-Security-Policy: scripts and styles from the bridge only,
sockets to the bridge only, and no framing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources

from aiohttp import web


CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self' ws: wss:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
FILES = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/client.js": ("client.js", "text/javascript; charset=utf-8"),
    "/client.d.ts": ("client.d.ts", "application/typescript; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}


@dataclass(frozen=True, slots=True)
class Asset:
    body: bytes
    content_type: str
    etag: str


class StaticFiles:
    """The page's files, loaded at start-up (a missing file fails fast, not per request)."""

    def __init__(self) -> None:
        root = resources.files("bridge") / "web"
        self.assets: dict[str, Asset] = {}
        for path, (name, content_type) in FILES.items():
            body = (root / name).read_bytes()
            digest = hashlib.sha256(body).hexdigest()[:20]
            self.assets[path] = Asset(body, content_type, f'"{digest}"')

    def routes(self) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.Response]]]]:
        """``(method, path, handler)`` for :attr:`bridge.server.LocalServer.routes`."""
        return [("GET", path, self.handle) for path in self.assets]

    async def handle(self, request: web.Request) -> web.Response:
        asset = self.assets[request.path]
        headers = {
            "ETag": asset.etag,
            "Cache-Control": "no-cache",
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
        }
        if request.path == "/":
            headers["Content-Security-Policy"] = CSP
        if request.headers.get("If-None-Match") == asset.etag:
            return web.Response(status=304, headers=headers)
        headers["Content-Type"] = asset.content_type
        return web.Response(body=asset.body, headers=headers)
