"""Query-string checks every route shares: unknown or repeated parameters are a 400 invalid_query."""

from __future__ import annotations

from collections.abc import Iterable

from aiohttp import web

from node.api.errors import ApiError


def checked_query(request: web.Request, allowed: Iterable[str]) -> dict[str, str]:
    """The request's query parameters, refused (ApiError invalid_query) when one is not in
    `allowed` or is given more than once."""
    allowed = set(allowed)
    unknown = sorted(set(request.query) - allowed)
    if unknown:
        known = ", ".join(sorted(allowed)) or "none"
        raise ApiError("invalid_query",
                       f"unknown query parameter(s) {', '.join(unknown)}; this route takes: {known}")
    for name in request.query:
        if len(request.query.getall(name)) > 1:
            raise ApiError("invalid_query", f"query parameter {name} is given more than once")
    return dict(request.query)
