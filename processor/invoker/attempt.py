"""One attempt of an invocation against a deployment.

The runtime sends StartMessage and the stored journal, then reads the deployment's commands (and
ProposeRunCompletion) until exactly one of End, Suspension or Error.

- On a BIDI_STREAM deployment over HTTP/2 the request stream stays open: entries are reported as
  they come (`progress`: journaled through the log) and the notifications the state machine
  produces for them — a RunCompletion, a call's result, a timer, a signal such as a cancel — are
  written back on the stream (`mailbox`), as Restate does. After `inactivity_timeout_s` without
  traffic the runtime closes its side and the SDK suspends when it next needs input.
- Otherwise (HTTP/1.1, REQUEST_RESPONSE) the runtime closes its side after the replay: the SDK
  suspends as soon as it waits for anything ("always suspending" mode).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import structlog

from kafka_core.request_identity import RequestSigner
from processor.invoker.h2 import H2Error, H2Pool, H2Stream
from processor.invoker.mailbox import Mailbox
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
    bidi: bool = False  # the deployment announced BIDI_STREAM
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
    abort_timeout_s: float | None = None  # the invocation's own; None: the invoker's default
    inactivity_timeout_s: float = 60.0  # on a bidirectional stream: close our side after this idle time
    traceparent: str | None = None  # the caller's W3C trace context (the invocation's input headers)
    trace_headers: dict[str, str] = field(default_factory=dict)  # the attempt span's, to the deployment


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


Progress = Callable[[list[bytes]], Awaitable[None]]

# Entries after which the SDK waits for a notification only the runtime can produce: they are
# journaled at once. Others (state writes, the output, ...) ride along with the next report or
# the attempt's end, so a handler that only answers costs no extra round through the log.
_AWAITING = {
    MessageType.PROPOSE_RUN_COMPLETION,
    MessageType.GET_LAZY_STATE_COMMAND,
    MessageType.GET_LAZY_STATE_KEYS_COMMAND,
    MessageType.GET_PROMISE_COMMAND,
    MessageType.PEEK_PROMISE_COMMAND,
    MessageType.COMPLETE_PROMISE_COMMAND,
    MessageType.SLEEP_COMMAND,
    MessageType.CALL_COMMAND,
    MessageType.ONE_WAY_CALL_COMMAND,
    MessageType.ATTACH_INVOCATION_COMMAND,
    MessageType.GET_INVOCATION_OUTPUT_COMMAND,
}


def _awaits_us(entries: list[bytes]) -> bool:
    return any(Frame.parse(e).type in _AWAITING for e in entries)


class _Collector:
    """Turns the response frames into an AttemptResult, enforcing what may come when."""

    def __init__(self) -> None:
        self.entries: list[bytes] = []
        self.reported = 0  # entries already handed over as progress
        self.outcome: Ended | Suspended | Failed | None = None

    def take_unreported(self) -> list[bytes]:
        new, self.reported = self.entries[self.reported :], len(self.entries)
        return new

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

    def __init__(
        self,
        abort_timeout_s: float = 600.0,
        connect_timeout_s: float = 10.0,
        signer: RequestSigner | None = None,
    ) -> None:
        timeout = httpx.Timeout(abort_timeout_s, connect=connect_timeout_s)
        self._signer = signer  # request identity: every attempt's request is signed
        self._h2 = H2Pool(connect_timeout_s)
        self._h1 = httpx.AsyncClient(timeout=timeout)
        self._abort_timeout_s = abort_timeout_s

    async def aclose(self) -> None:
        await self._h2.aclose()
        await self._h1.aclose()

    async def run_attempt(
        self,
        deployment: DeploymentTarget,
        request: AttemptRequest,
        *,
        progress: Progress | None = None,
        mailbox: Mailbox | None = None,
        inactivity_timeout_s: float = 60.0,
        pressure: asyncio.Event | None = None,
    ) -> AttemptResult:
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
        abort_timeout_s = request.abort_timeout_s or self._abort_timeout_s
        try:
            async with asyncio.timeout(abort_timeout_s):
                if deployment.use_http_11:
                    server = await self._exchange_h1(deployment, request, version, collector)
                else:
                    bidi = deployment.bidi and progress is not None and mailbox is not None
                    server = await self._exchange_h2(
                        deployment,
                        request,
                        version,
                        collector,
                        progress if bidi else None,
                        mailbox,
                        inactivity_timeout_s,
                        pressure,
                    )
        except TimeoutError:
            collector.outcome = _failed(500, f"attempt aborted after {abort_timeout_s:.0f}s without an end")
        except ProtocolViolation as e:
            collector.outcome = _failed(571, f"protocol violation: {e}")
        except _BadResponse as e:
            collector.outcome = _failed(e.code, str(e))
        except (httpx.HTTPError, H2Error) as e:
            url = self._url(deployment, request)
            collector.outcome = _failed(
                500, f"error when calling {url}: {type(e).__name__}: {str(e) or 'connection lost'}"
            )
        outcome = collector.outcome or _failed(
            571, "protocol violation: the deployment closed the stream without End, Suspension or Error"
        )
        return AttemptResult(collector.take_unreported(), outcome, version, server)

    @staticmethod
    def _url(deployment: DeploymentTarget, request: AttemptRequest) -> str:
        base = deployment.uri.rstrip("/")
        return f"{base}/invoke/{quote(request.service, safe='')}/{quote(request.handler, safe='')}"

    @staticmethod
    def _headers(deployment: DeploymentTarget, request: AttemptRequest, version: int) -> dict[str, str]:
        ctype = content_type(version)
        headers = {
            **deployment.additional_headers,
            "content-type": ctype,
            "accept": ctype,
            "x-restate-invocation-id": request.invocation_id,
            **request.trace_headers,
        }
        if request.key is not None:
            headers["x-restate-service-key"] = quote(request.key, safe="")
        return headers

    def _identity(self, url: str) -> dict[str, str]:
        """Request identity headers for `url` (signed per request: the token's aud is its path)."""
        return self._signer.headers(urlsplit(url).path) if self._signer is not None else {}

    async def _exchange_h2(
        self,
        deployment: DeploymentTarget,
        request: AttemptRequest,
        version: int,
        collector: _Collector,
        progress: Progress | None,
        mailbox: Mailbox | None,
        inactivity_timeout_s: float,
        pressure: asyncio.Event | None = None,
    ) -> str | None:
        url = self._url(deployment, request)
        headers = [
            (k.lower(), v)
            for k, v in {**self._headers(deployment, request, version), **self._identity(url)}.items()
        ]
        stream = await self._h2.open_stream(url, headers)
        finished = False
        reading: asyncio.Future[bytes | None] | None = None
        mail: asyncio.Future[tuple[int, bytes]] | None = None
        crowded: asyncio.Future[Any] | None = None
        try:
            input_open = progress is not None
            await stream.send(start_message(request) + b"".join(request.journal), end=not input_open)
            status, response_headers = await stream.response()
            server = response_headers.get("x-restate-server")
            if status != 200:
                raise _BadResponse.for_status(
                    status, url, (await _read_some(stream))[:512].decode(errors="replace")
                )
            got = response_headers.get("content-type", "")
            if got != content_type(version):
                raise _BadResponse(
                    500, f"deployment answered content-type '{got}', expected '{content_type(version)}'"
                )
            decoder = FrameDecoder()
            known = len(request.journal)
            reading = asyncio.ensure_future(stream.read())
            if input_open and mailbox is not None:
                mail = asyncio.ensure_future(mailbox.get())
            while True:
                waiting: set[asyncio.Future[Any]] = {reading}
                if input_open and mail is not None:
                    waiting.add(mail)
                if input_open and pressure is not None:
                    crowded = crowded or asyncio.ensure_future(pressure.wait())
                    waiting.add(crowded)
                done, _ = await asyncio.wait(
                    waiting,
                    timeout=inactivity_timeout_s if input_open else None,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if not done or (crowded is not None and crowded in done and reading not in done):
                    # Inactive, or others wait for a slot while this stream is idle: close our
                    # side; the SDK suspends when it next needs input.
                    input_open = False
                    await stream.end()
                    continue
                if mail is not None and mail in done:
                    index, note = mail.result()
                    if index >= known and input_open:  # an attempt replays what it started with
                        await stream.send(note)
                    mail = asyncio.ensure_future(mailbox.get()) if mailbox is not None else None
                if reading in done:
                    chunk = reading.result()
                    if chunk is None:
                        decoder.finish()
                        finished = True
                        return server
                    for frame in decoder.feed(chunk):
                        collector.accept(frame)
                    if collector.outcome is not None:
                        finished = True
                        if input_open:
                            await stream.end()
                        return server
                    if progress is not None and _awaits_us(collector.entries[collector.reported :]):
                        await progress(collector.take_unreported())
                    reading = asyncio.ensure_future(stream.read())
        finally:
            for pending in (reading, mail, crowded):
                if pending is not None and not pending.done():
                    pending.cancel()
            if not finished:
                stream.reset()

    async def _exchange_h1(
        self, deployment: DeploymentTarget, request: AttemptRequest, version: int, collector: _Collector
    ) -> str | None:
        ctype = content_type(version)
        url = self._url(deployment, request)
        headers = {**self._headers(deployment, request, version), **self._identity(url)}
        body = start_message(request) + b"".join(request.journal)
        client = self._h1
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
        if status in (401, 403):
            return cls(
                500,
                f"the deployment answered HTTP {status} for {url}{detail} (it may accept only signed "
                "requests: see KINVOKE_REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE)",
            )
        return cls(500, f"the deployment answered HTTP {status} for {url}{detail}")


async def _read_some(stream: H2Stream, limit: int = 4096) -> bytes:
    """The start of an error response's body (for the failure message)."""
    out = b""
    while len(out) < limit:
        chunk = await stream.read()
        if chunk is None:
            break
        out += chunk
    return out
