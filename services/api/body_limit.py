"""A request body limit for every route: 413 with a message, before the body is read whole.

The GraphQL endpoint parses its JSON body in one piece, so without a limit a 20 MB variables
object is read, parsed and validated before any GraphQL limit can look at it. Circuit files
are the one thing that is legitimately large: ``POST /circuits`` has its own, larger limit
(``max_upload_bytes``); everything else gets ``max_request_bytes``.

A declared ``Content-Length`` over the limit is refused before reading anything; a chunked
body is counted as it arrives and refused the moment it passes the limit. Plain ASGI (as the
request-context middleware), so responses and WebSockets pass through untouched.
"""

from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send

UPLOAD_PATHS = frozenset({"/circuits"})
"""Routes whose body is a circuit document, under ``max_upload_bytes``."""


class BodyTooLarge(Exception):
    """Raised from ``receive`` when a streamed body passes the limit."""


class BodyLimitMiddleware:
    """Answers 413 when a request body is larger than its route's limit."""

    def __init__(self, app: ASGIApp, *, max_request_bytes: int, max_upload_bytes: int) -> None:
        self.app = app
        self.max_request_bytes = max_request_bytes
        self.max_upload_bytes = max_upload_bytes

    def limit_for(self, scope: Scope) -> tuple[int, str]:
        """The byte limit of this request and the setting that sets it."""
        if scope.get("method") == "POST" and scope.get("path", "").rstrip("/") in UPLOAD_PATHS:
            return self.max_upload_bytes, "CIRCUITREG_MAX_UPLOAD_BYTES"
        return self.max_request_bytes, "CIRCUITREG_MAX_REQUEST_BYTES"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, setting = self.limit_for(scope)
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(send, self.message(declared, limit, setting, scope))
            return
        received = 0
        started = False

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted_receive, tracked_send)
        except BodyTooLarge:
            if started:  # a route that answered before reading its body: nothing left to say
                raise
            await _refuse(send, self.message(None, limit, setting, scope))

    def message(self, size: int | None, limit: int, setting: str, scope: Scope) -> str:
        what = f"the request body ({size} bytes)" if size is not None else "the request body"
        text = f"{what} is larger than the limit of {limit} bytes ({setting})"
        if setting == "CIRCUITREG_MAX_REQUEST_BYTES" and scope.get("path") != "/circuits":
            text += f"; circuit documents up to {self.max_upload_bytes} bytes go to POST /circuits"
        return text


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _refuse(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
