"""Discovery: `GET {uri}/discover` for the endpoint manifest (v1..v4 offered, SDKs answer v4).

Plain `http://` URIs are discovered over HTTP/2 with prior knowledge (h2c), as Restate does;
`use_http_11` switches to HTTP/1.1. The HTTP version used here is the one used for invocations.
With request identity configured, each request is signed (a deployment may accept only kinvoke).
"""

from __future__ import annotations

import asyncio
import json
from urllib.parse import urlsplit

import httpx
import structlog

from admin_api.registration import (
    MAX_DISCOVERABLE_VERSION,
    MIN_DISCOVERABLE_VERSION,
    Discovered,
    RegistrationError,
    normalize_uri,
)
from kafka_core.request_identity import RequestSigner

log = structlog.get_logger(__name__)

ACCEPT = ", ".join(f"application/vnd.restate.endpointmanifest.v{v}+json" for v in (1, 2, 3, 4))
_RETRY_STATUSES = {408, 429, 500, 502, 503, 504}


def _meta(code: str, uri: str, detail: str, status: int = 500) -> RegistrationError:
    """Restate's discovery errors carry their code twice (`[META0003] [META0003] error when
    calling 'http://127.0.0.1:9099/': ...`), as the transcript shows."""
    return RegistrationError(status, f"[{code}] [{code}] error when calling '{uri}': {detail}", code)


def _meta0003(uri: str, detail: str, status: int = 500) -> RegistrationError:
    return _meta("META0003", uri, detail, status)


def _transport_error(base: str, e: httpx.HTTPError, *, http2: bool) -> tuple[RegistrationError, bool]:
    """The error for a request that got no HTTP answer, and whether trying again may help."""
    if isinstance(e, httpx.UnsupportedProtocol):
        return _meta0003(base, f"unsupported URI scheme: {e}"), False
    if http2 and isinstance(e, httpx.RemoteProtocolError):
        # An HTTP/1.1 server answering the HTTP/2 preface: Restate's META0014.
        return (
            _meta(
                "META0014",
                base,
                "server possibly supports only HTTP1.1, consider discovery with --use-http1.1.",
            ),
            False,
        )
    if http2 and isinstance(e, httpx.ConnectError) and "refused" in str(e).lower():
        return _meta0003(base, "h2 pool connection error: Connection refused (os error 111)"), True
    return _meta0003(base, f"{type(e).__name__}: {e or 'connection failed'}"), True


async def discover(
    uri: str,
    *,
    use_http_11: bool = False,
    additional_headers: dict[str, str] | None = None,
    timeout_s: float = 10.0,
    attempts: int = 3,
    signer: RequestSigner | None = None,
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
            signed = {**headers, **signer.headers(urlsplit(url).path)} if signer else headers
            try:
                resp = await client.get(url, headers=signed)
            except httpx.HTTPError as e:
                last, retry = _transport_error(base, e, http2=not use_http_11)
                if not retry:
                    raise last from None
                continue
            if resp.status_code in _RETRY_STATUSES:
                last = _bad_status(resp)
                continue
            if resp.status_code != 200:
                raise _bad_status(resp)
            return _parse(resp)
    assert last is not None
    raise last


def _coded(code: str, message: str) -> RegistrationError:
    """A discovery error that is not about the connection (Restate's `DiscoveryError`)."""
    return RegistrationError(500, f"[{code}] [{code}] {message}", code)


def _bad_status(resp: httpx.Response) -> RegistrationError:
    status = f"{resp.status_code} {resp.reason_phrase}".strip()
    headers = "{" + ", ".join(f'"{k}": "{v}"' for k, v in resp.headers.items()) + "}"
    if resp.status_code == 404:
        return _coded(
            "META0003",
            "got status code '404'. Make sure the provided URI has the correct path where the Restate SDK "
            f"endpoint is mounted. Response headers: {headers}. Body: {resp.text[:300]}",
        )
    hint = ""
    if resp.status_code in (401, 403):
        hint = (
            " (the deployment may accept only signed requests: set "
            "KINVOKE_REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE to the private key of a public key it trusts)"
        )
    return _coded(
        "META0003",
        f"got status code '{status}'{hint}. Response headers: {headers}. Body: {resp.text[:300]}",
    )


def _parse(resp: httpx.Response) -> Discovered:
    """Restate's checks of a discovery answer: the manifest content-type (META0013), JSON, the
    protocol mode (META0013) and the service protocol versions (META0012); all 500."""
    ctype = resp.headers.get("content-type")
    expected = f"Expected one of '\"{ACCEPT}\"'"
    if ctype is None:
        raise _coded(
            "META0013",
            "received a bad response from the SDK: No content type header was specified. "
            f"{expected} content type.",
        )
    if ctype not in ACCEPT.split(", "):
        raise _coded(
            "META0013",
            f'received a bad response from the SDK: Bad content type header: "{ctype}". {expected}',
        )
    try:
        manifest = json.loads(resp.content)
        if not isinstance(manifest, dict):
            raise ValueError("invalid type: expected struct Endpoint")
        lo, hi = int(manifest["minProtocolVersion"]), int(manifest["maxProtocolVersion"])
    except (KeyError, TypeError, ValueError) as e:
        raise RegistrationError(
            500,
            f"received a bad response from the SDK that cannot be decoded: {e}. "
            f"Discovery response: {resp.text[:1000]}",
        ) from None
    if manifest.get("protocolMode") not in ("BIDI_STREAM", "REQUEST_RESPONSE"):
        raise _coded("META0013", "received a bad response from the SDK: missing protocol mode")
    if not (lo <= MAX_DISCOVERABLE_VERSION and hi >= MIN_DISCOVERABLE_VERSION):
        raise _coded(
            "META0012",
            f"unsupported service protocol versions: [{lo}, {hi}]. Supported versions by this runtime are "
            f"[{MIN_DISCOVERABLE_VERSION}, {MAX_DISCOVERABLE_VERSION}]. Please upgrade the SDK and try "
            "registering again.",
        )
    return Discovered(
        manifest=manifest,
        http_version="HTTP/2.0" if resp.http_version == "HTTP/2" else "HTTP/1.1",
        protocol_mode=str(manifest["protocolMode"]),
        min_protocol_version=lo,
        max_protocol_version=hi,
        sdk_version=resp.headers.get("x-restate-server"),
    )
