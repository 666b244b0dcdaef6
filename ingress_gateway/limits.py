"""The HTTP limits of Restate's ingress, applied before a request reaches the ingress's handlers.

Restate's ingress is hyper 1.x behind tower-http layers; a request it cannot take is answered
there, not in the ingress's JSON error shape:
- request head (request line and headers) over hyper's read buffer (8 KiB + 400 KiB), or more
  than 100 headers: 431 with an empty body;
- a request target longer than the `http` crate's URI limit (65534 bytes): 400, empty body;
- a `content-length` over the body limit (32 MiB): 413 `length limit exceeded` (text/plain,
  tower-http's `RequestBodyLimit`). A body without `content-length` that grows over the limit
  is refused while it is read, in the JSON shape (`cannot read body: LengthLimitError`).

aiohttp's own limits are raised above these (`SERVER_ARGS`) so that these checks decide.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

REQUEST_SIZE_LIMIT = 32 * 1024 * 1024  # Restate's default `networking.message-size-limit`
MAX_HEAD_BYTES = 8192 + 4096 * 100  # hyper's DEFAULT_MAX_BUFFER_SIZE
MAX_HEADERS = 100  # hyper's MAX_HEADERS
MAX_URI_BYTES = 65534  # http::Uri's MAX_LEN

# aiohttp's parser limits (defaults: 8190-byte lines and fields), raised so a long key or header
# reaches the checks below instead of aiohttp's plain-text 400; bodies are passed on as they
# came (Restate does not decompress request bodies).
SERVER_ARGS: dict[str, Any] = {
    "max_line_size": 1024 * 1024,
    "max_field_size": 1024 * 1024,
    "auto_decompress": False,
}


def _bare(status: int, body: bytes = b"", content_type: str | None = None) -> web.Response:
    """Answered before Restate's CORS layer, so without CORS headers (this middleware runs
    outside the ingress's CORS middleware)."""
    headers = {} if content_type is None else {"content-type": content_type}
    return web.Response(status=status, body=body, headers=headers)


def head_size(request: web.BaseRequest) -> int:
    """Bytes of the request head as sent: request line, header lines, the empty line."""
    line = len(request.method) + 1 + len(request.raw_path.encode("utf-8", "surrogateescape")) + 11
    return line + 2 + sum(len(k) + 2 + len(v) + 2 for k, v in request.raw_headers) + 2


@web.middleware
async def restate_http_limits(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    if len(request.raw_headers) > MAX_HEADERS or head_size(request) > MAX_HEAD_BYTES:
        return _bare(431)
    if len(request.raw_path.encode("utf-8", "surrogateescape")) > MAX_URI_BYTES:
        return _bare(400)
    length = request.content_length
    if length is not None and length > REQUEST_SIZE_LIMIT:
        return _bare(413, b"length limit exceeded", "text/plain; charset=utf-8")
    return await handler(request)
