"""What the capture server's HTTP resources share: an error with its status, and reading a JSON body.

Each resource answers an :class:`HTTPError` in its own format (the fixture's
API as ``{"error": text}``, the Mailpit-compatible API as plain text, as
Mailpit does).
"""

from __future__ import annotations

import json
from typing import Any

from twisted.web import server


class HTTPError(Exception):
    """A request refused with this status and text."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def json_body(request: server.Request) -> dict[str, Any]:
    """The request's JSON object body (``{}`` when empty); HTTPError 400 when it is not one."""
    try:
        body = json.loads(request.content.read() or b"{}")
    except ValueError:
        raise HTTPError(400, "the body is not JSON") from None
    if not isinstance(body, dict):
        raise HTTPError(400, "the body must be a JSON object")
    return body
