"""Discovery: `GET {uri}/discover` for the endpoint manifest (v1..v4 offered, SDKs answer v4).

Plain `http://` URIs are discovered over HTTP/2 with prior knowledge (h2c), as Restate does;
`use_http_11` switches to HTTP/1.1. The HTTP version used here is the one used for invocations.
"""

from __future__ import annotations

import asyncio
import json

import httpx
import structlog

from admin_api.registration import Discovered, RegistrationError, normalize_uri

log = structlog.get_logger(__name__)

ACCEPT = ", ".join(f"application/vnd.restate.endpointmanifest.v{v}+json" for v in (1, 2, 3, 4))
_RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


def _meta0003(uri: str, detail: str, status: int = 500) -> RegistrationError:
    return RegistrationError(status, f"[META0003] error when calling '{uri}': {detail}", "META0003")


async def discover(
    uri: str,
    *,
    use_http_11: bool = False,
    additional_headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    attempts: int = 3,
) -> Discovered:
    base = normalize_uri(uri)
    url = base + "discover"
    headers = {**(additional_headers or {}), "accept": ACCEPT}
    client_args = (
        {"timeout": timeout_s} if use_http_11 else {"timeout": timeout_s, "http1": False, "http2": True}
    )
    last: RegistrationError | None = None
    async with httpx.AsyncClient(**client_args) as client:  # type: ignore[arg-type]
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(0.2 * 2**attempt)
            try:
                resp = await client.get(url, headers=headers)
            except httpx.HTTPError as e:
                last = _meta0003(base, f"{type(e).__name__}: {e or 'connection failed'}")
                continue
            if resp.status_code in _RETRY_STATUSES:
                last = _meta0003(base, f"the deployment answered HTTP {resp.status_code}: {resp.text[:300]}")
                continue
            if resp.status_code != 200:
                hint = " (wrong path?)" if resp.status_code == 404 else ""
                raise _meta0003(
                    base, f"the deployment answered HTTP {resp.status_code}{hint}: {resp.text[:300]}"
                )
            return _parse(base, resp)
    assert last is not None
    raise last


def _parse(base: str, resp: httpx.Response) -> Discovered:
    ctype = resp.headers.get("content-type", "")
    if not ctype.startswith("application/vnd.restate.endpointmanifest.v"):
        raise _meta0003(base, f"unexpected content-type '{ctype}' for the endpoint manifest", 400)
    try:
        manifest = json.loads(resp.content)
    except ValueError as e:
        raise _meta0003(base, f"the endpoint manifest is not JSON: {e}", 400) from e
    if not isinstance(manifest, dict):
        raise _meta0003(base, "the endpoint manifest is not a JSON object", 400)
    try:
        lo, hi = int(manifest["minProtocolVersion"]), int(manifest["maxProtocolVersion"])
    except (KeyError, TypeError, ValueError):
        raise _meta0003(
            base, "the endpoint manifest lacks minProtocolVersion/maxProtocolVersion", 400
        ) from None
    return Discovered(
        manifest=manifest,
        http_version="HTTP/2.0" if resp.http_version == "HTTP/2" else "HTTP/1.1",
        protocol_mode=str(manifest.get("protocolMode", "")),
        min_protocol_version=lo,
        max_protocol_version=hi,
        sdk_version=resp.headers.get("x-restate-server"),
    )
