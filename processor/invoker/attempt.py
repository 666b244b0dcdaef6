"""One attempt of an invocation against a deployment, in close-after-replay mode.

The runtime sends StartMessage and the stored journal, closes the request body, and reads the
deployment's answer to its end: new commands (and ProposeRunCompletion), then exactly one of
End, Suspension or Error. An SDK whose input is closed suspends as soon as it waits for anything
it has not been sent, so this is Restate's "always suspending" mode, over h2c or HTTP/1.1.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from urllib.parse import quote

import httpx
import structlog

from schemas.records import AttemptFailed as Failed
from schemas.records import Ended, Suspended
from schemas.service_protocol import (
    Frame,
    FrameDecoder,
    MessageType,
    ProtocolViolation,
    decode_message,
    encode_message,
    is_command,
)
from schemas.service_protocol import protocol_pb2 as pb

log = structlog.get_logger(__name__)

SERVER_MIN_PROTOCOL_VERSION = 5
SERVER_MAX_PROTOCOL_VERSION = 6


@dataclass(frozen=True)
class DeploymentTarget:
    uri: str
    use_http_11: bool = False
    additional_headers: dict[str, str] = field(default_factory=dict)
    min_protocol_version: int = 5
    max_protocol_version: int = 6


@dataclass(frozen=True)
class AttemptRequest:
    invocation_id: str
    invocation_id_raw: bytes
    service: str
    handler: str
    key: str | None
    journal: list[bytes]
    state: dict[bytes, bytes] | None
    retry_count_since_last_stored_entry: int = 0
    duration_since_last_stored_entry_ms: int = 0
    random_seed: int = 0


@dataclass(frozen=True)
class AttemptResult:
    new_entries: list[bytes]
    outcome: Ended | Suspended | Failed
    protocol_version: int
    server: str | None


def negotiate_version(deployment: DeploymentTarget) -> int | None:
    version = min(deployment.max_protocol_version, SERVER_MAX_PROTOCOL_VERSION)
    if version < max(deployment.min_protocol_version, SERVER_MIN_PROTOCOL_VERSION):
        return None
    return version


def content_type(version: int) -> str:
    return f"application/vnd.restate.invocation.v{version}"


def start_message(request: AttemptRequest) -> bytes:
    start = pb.StartMessage(
        id=request.invocation_id_raw,
        debug_id=request.invocation_id,
        known_entries=len(request.journal),
        partial_state=request.state is None,
        key=request.key or "",
        retry_count_since_last_stored_entry=request.retry_count_since_last_stored_entry,
        duration_since_last_stored_entry=request.duration_since_last_stored_entry_ms,
        random_seed=request.random_seed,
    )
    for k, v in (request.state or {}).items():
        start.state_map.add(key=k, value=v)
    return encode_message(MessageType.START, start)


def _failed(code: int, message: str) -> Failed:
    return Failed(code=code, message=message)


class _Collector:
    """Turns the response frames into an AttemptResult, enforcing what may come when."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.outcome: Ended | Suspended | Failed | None = None

    def accept(self, frame: Frame) -> None:
        if self.outcome is not None:
            raise ProtocolViolation(f"{frame.name} after the attempt already ended")
        ty = frame.type
        if ty == MessageType.END:
            self.outcome = Ended()
        elif ty == MessageType.SUSPENSION:
            msg = decode_message(frame)
            self.outcome = Suspended(
                waiting_completions=list(msg.waiting_completions),
                waiting_signals=list(msg.waiting_signals),
                waiting_named_signals=list(msg.waiting_named_signals),
            )
        elif ty == MessageType.ERROR:
            msg = decode_message(frame)
            self.outcome = Failed(
                code=msg.code or 500,
                message=msg.message,
                stacktrace=msg.stacktrace,
                related_command_index=msg.related_command_index
                if msg.HasField("related_command_index")
                else None,
                related_command_name=msg.related_command_name
                if msg.HasField("related_command_name")
                else None,
                related_command_type=msg.related_command_type
                if msg.HasField("related_command_type")
                else None,
                next_retry_delay_ms=msg.next_retry_delay if msg.HasField("next_retry_delay") else None,
            )
        elif ty == MessageType.PROPOSE_RUN_COMPLETION or is_command(ty):
            decode_message(frame)  # reject undecodable payloads now, not when replaying them
            self.entries.append(frame.encode())
        else:
            raise ProtocolViolation(f"unexpected {frame.name} from the deployment")


class Invoker:
    """Runs attempts; keeps one pooled HTTP/2 (prior knowledge) and one HTTP/1.1 client."""

    def __init__(self, abort_timeout_s: float = 600.0, connect_timeout_s: float = 10.0) -> None:
        timeout = httpx.Timeout(abort_timeout_s, connect=connect_timeout_s)
        self._h2 = httpx.AsyncClient(http1=False, http2=True, timeout=timeout)
        self._h1 = httpx.AsyncClient(timeout=timeout)
        self._abort_timeout_s = abort_timeout_s

    async def aclose(self) -> None:
        await self._h2.aclose()
        await self._h1.aclose()

    async def run_attempt(self, deployment: DeploymentTarget, request: AttemptRequest) -> AttemptResult:
        version = negotiate_version(deployment)
        if version is None:
            return AttemptResult(
                [],
                Failed(
                    code=500,
                    message=f"deployment supports protocol V{deployment.min_protocol_version}.."
                    f"V{deployment.max_protocol_version}, kinvoke V{SERVER_MIN_PROTOCOL_VERSION}.."
                    f"V{SERVER_MAX_PROTOCOL_VERSION}",
                ),
                0,
                None,
            )
        collector = _Collector()
        server: str | None = None
        try:
            async with asyncio.timeout(self._abort_timeout_s):
                server = await self._exchange(deployment, request, version, collector)
        except TimeoutError:
            collector.outcome = _failed(
                500, f"attempt aborted after {self._abort_timeout_s:.0f}s without an end"
            )
        except ProtocolViolation as e:
            collector.outcome = _failed(571, f"protocol violation: {e}")
        except _BadResponse as e:
            collector.outcome = _failed(e.code, str(e))
        except httpx.HTTPError as e:
            url = self._url(deployment, request)
            collector.outcome = _failed(
                500, f"error when calling {url}: {type(e).__name__}: {str(e) or 'connection lost'}"
            )
        outcome = collector.outcome or _failed(
            571, "protocol violation: the deployment closed the stream without End, Suspension or Error"
        )
        return AttemptResult(collector.entries, outcome, version, server)

    @staticmethod
    def _url(deployment: DeploymentTarget, request: AttemptRequest) -> str:
        base = deployment.uri.rstrip("/")
        return f"{base}/invoke/{quote(request.service, safe='')}/{quote(request.handler, safe='')}"

    async def _exchange(
        self, deployment: DeploymentTarget, request: AttemptRequest, version: int, collector: _Collector
    ) -> str | None:
        ctype = content_type(version)
        headers = {
            **deployment.additional_headers,
            "content-type": ctype,
            "accept": ctype,
            "x-restate-invocation-id": request.invocation_id,
        }
        if request.key is not None:
            headers["x-restate-service-key"] = quote(request.key, safe="")
        body = start_message(request) + b"".join(request.journal)
        client = self._h1 if deployment.use_http_11 else self._h2
        url = self._url(deployment, request)
        async with client.stream("POST", url, headers=headers, content=body) as response:
            server = response.headers.get("x-restate-server")
            if response.status_code != 200:
                text = (await response.aread())[:512].decode(errors="replace")
                raise _BadResponse.for_status(response.status_code, url, text)
            got = response.headers.get("content-type", "")
            if got != ctype:
                raise _BadResponse(500, f"deployment answered content-type '{got}', expected '{ctype}'")
            decoder = FrameDecoder()
            async for chunk in response.aiter_bytes():
                for frame in decoder.feed(chunk):
                    collector.accept(frame)
                if collector.outcome is not None:
                    break
            else:
                decoder.finish()
        return server


class _BadResponse(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code

    @classmethod
    def for_status(cls, status: int, url: str, body: str) -> _BadResponse:
        detail = f": {body}" if body else ""
        if status == 404:
            return cls(
                500, f"the deployment answered 404 for {url}: service/handler not found at the deployment"
            )
        if status == 415:
            return cls(500, f"the deployment rejected the negotiated protocol version (415){detail}")
        return cls(500, f"the deployment answered HTTP {status} for {url}{detail}")
