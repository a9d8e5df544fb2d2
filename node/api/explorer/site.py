"""The explorer's pages: one HTML shell for every deep link, its script and stylesheet.

The files live in this package's `static` directory and are read once when the routes are made.
Every answer carries a strict Content-Security-Policy: scripts and styles only from this origin (no
inline script can run even if chain data ever reached the markup), connections only back to this
node (REST and the /v1/events WebSocket), no frames, no forms, no plugins.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from importlib import resources
from types import MappingProxyType

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
SECURITY_HEADERS = MappingProxyType({
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    # The shell is tiny; always fetching it keeps a node upgrade from mixing old and new files.
    "Cache-Control": "no-cache",
})
ASSETS = MappingProxyType({
    "app.js": "text/javascript",
    "style.css": "text/css",
    "favicon.svg": "image/svg+xml",
})
SHELL = "index.html"


def _load(name: str) -> bytes:
    return resources.files(__package__).joinpath("static", name).read_bytes()


def explorer_routes() -> list[tuple[str, Handler, str]]:
    """(path, handler, route name) of the explorer's GET routes; the static files are loaded here,
    so a package missing one fails when the app is built, not on the first visitor."""
    shell = _load(SHELL)
    assets = {name: (_load(name), content_type) for name, content_type in ASSETS.items()}

    async def root(request: web.Request) -> web.StreamResponse:
        raise web.HTTPFound("/explorer/")

    async def page(request: web.Request) -> web.StreamResponse:
        # Every deep link (/explorer/tx/..., /explorer/block/...) gets the same shell; the script
        # reads the path and renders the view, so a shared link opens where it points.
        return web.Response(body=shell, content_type="text/html", charset="utf-8", headers=SECURITY_HEADERS)

    async def asset(request: web.Request) -> web.StreamResponse:
        found = assets.get(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound()
        body, content_type = found
        return web.Response(body=body, content_type=content_type, headers=SECURITY_HEADERS)

    return [
        ("/", root, "explorer_root"),
        ("/explorer", root, "explorer_bare"),
        ("/explorer/", page, "explorer"),
        ("/explorer/static/{name}", asset, "explorer_asset"),
        ("/explorer/{view:(tx|block|account|record|blocks|governance)(/.*)?}", page, "explorer_view"),
    ]
