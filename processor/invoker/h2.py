"""A small HTTP/2 (h2c, prior knowledge) client on asyncio and the `h2` library, for attempts.

httpx sends a whole request body before it reads the response, so it cannot keep a stream open
in both directions (`restate-protocol.md` 2.2): an attempt on a bidirectional stream needs to
read the deployment's commands while it still writes notifications. This client does just what
the invoker needs: one connection per deployment authority, multiplexed streams, flow control
both ways, and a clear error when the connection or a stream breaks.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from h2.errors import ErrorCodes

READ_SIZE = 65536
WINDOW = 16 * 1024 * 1024  # our receive window: deployments may send a lot before we read it


class H2Error(Exception):
    """The connection or the stream broke (reset, closed, protocol error)."""


@dataclass
class H2Stream:
    conn: H2Connection
    stream_id: int
    _headers: asyncio.Future[list[tuple[bytes, bytes]]] = field(init=False)
    _data: asyncio.Queue[bytes | None | BaseException] = field(default_factory=asyncio.Queue)
    _ended_locally: bool = False

    def __post_init__(self) -> None:
        self._headers = asyncio.get_running_loop().create_future()

    async def response(self) -> tuple[int, dict[str, str]]:
        """The response's status and headers (names lowercase)."""
        raw = await self._headers
        headers = {k.decode().lower(): v.decode(errors="replace") for k, v in raw}
        return int(headers.pop(":status", "0")), headers

    async def read(self) -> bytes | None:
        """The next chunk of the response body; None at its end."""
        item = await self._data.get()
        if isinstance(item, BaseException):
            raise item
        return item

    async def send(self, data: bytes, *, end: bool = False) -> None:
        await self.conn.send_data(self.stream_id, data, end=end)
        self._ended_locally |= end

    async def end(self) -> None:
        if not self._ended_locally:
            self._ended_locally = True
            await self.conn.send_data(self.stream_id, b"", end=True)

    def reset(self) -> None:
        self.conn.reset(self.stream_id)

    # called by the connection's reader
    def _on_headers(self, headers: list[tuple[bytes, bytes]]) -> None:
        if not self._headers.done():
            self._headers.set_result(headers)

    def _on_data(self, data: bytes) -> None:
        self._data.put_nowait(data)

    def _on_end(self) -> None:
        self._data.put_nowait(None)

    def _on_error(self, error: BaseException) -> None:
        if not self._headers.done():
            self._headers.set_exception(error)
        self._data.put_nowait(error)


class H2Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.authority = f"{host}:{port}"
        self._h2 = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self._streams: dict[int, H2Stream] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()  # flow-control windows or stream slots changed
        self.closed: BaseException | None = None
        self._send_scheduled = False

    async def connect(self, timeout_s: float) -> None:
        reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), timeout_s
        )
        self._h2.initiate_connection()
        self._h2.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: WINDOW})
        self._h2.increment_flow_control_window(WINDOW - 65535)
        self._flush()
        self._reader_task = asyncio.create_task(self._read_loop(reader), name=f"h2-{self.authority}")

    def _flush(self) -> None:
        """Send what h2 has queued at the end of this loop iteration: the frames every stream
        queued meanwhile leave in one write (a send per frame cost a fifth of the invoker's CPU)."""
        if not self._send_scheduled:
            self._send_scheduled = True
            asyncio.get_running_loop().call_soon(self._send_now)

    def _send_now(self) -> None:
        self._send_scheduled = False
        data = self._h2.data_to_send()
        if data and self._writer is not None:
            self._writer.write(data)

    async def _drain(self) -> None:
        self._flush()
        if self._writer is not None:
            await self._writer.drain()

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                data = await reader.read(READ_SIZE)
                if not data:
                    raise H2Error(f"the deployment at {self.authority} closed the connection")
                for event in self._h2.receive_data(data):
                    self._handle(event)
                self._flush()
        except (OSError, H2Error, h2.exceptions.ProtocolError) as e:
            self._fail(
                e if isinstance(e, H2Error) else H2Error(f"HTTP/2 connection to {self.authority}: {e}")
            )
        except asyncio.CancelledError:
            self._fail(H2Error("connection closed"))
            raise

    def _handle(self, event: h2.events.Event) -> None:
        stream = self._streams.get(getattr(event, "stream_id", 0) or 0)
        if isinstance(event, h2.events.ResponseReceived) and stream is not None:
            stream._on_headers(list(event.headers))
        elif isinstance(event, h2.events.DataReceived):
            self._h2.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            if stream is not None:
                stream._on_data(bytes(event.data))
        elif isinstance(event, h2.events.StreamEnded) and stream is not None:
            self._streams.pop(event.stream_id, None)
            stream._on_end()
            self._pulse()
        elif isinstance(event, h2.events.StreamReset) and stream is not None:
            self._streams.pop(event.stream_id, None)
            stream._on_error(
                H2Error(f"the deployment reset the stream ({ErrorCodes(event.error_code).name})")
            )
            self._pulse()
        elif isinstance(event, h2.events.WindowUpdated | h2.events.RemoteSettingsChanged):
            self._pulse()
        elif isinstance(event, h2.events.ConnectionTerminated):
            raise H2Error(f"the deployment at {self.authority} ended the connection (GOAWAY)")

    def _pulse(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def _fail(self, error: BaseException) -> None:
        if self.closed is None:
            self.closed = error
        for stream in list(self._streams.values()):
            stream._on_error(error)
        self._streams.clear()
        self._pulse()
        if self._writer is not None:
            self._writer.close()

    async def open_stream(self, path: str, headers: list[tuple[str, str]]) -> H2Stream:
        while True:
            if self.closed is not None:
                raise H2Error(str(self.closed))
            if self._h2.open_outbound_streams < self._h2.remote_settings.max_concurrent_streams:
                break
            await self._changed.wait()
        stream_id = self._h2.get_next_available_stream_id()
        stream = H2Stream(self, stream_id)
        self._streams[stream_id] = stream
        request = [
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", self.authority),
            (":path", path),
            *headers,
        ]
        self._h2.send_headers(stream_id, [(k.encode(), v.encode()) for k, v in request])
        await self._drain()
        return stream

    async def send_data(self, stream_id: int, data: bytes, *, end: bool) -> None:
        view = memoryview(data)
        while view:
            if self.closed is not None:
                raise H2Error(str(self.closed))
            try:
                window = min(self._h2.local_flow_control_window(stream_id), self._h2.max_outbound_frame_size)
            except h2.exceptions.StreamClosedError:
                raise H2Error("the stream is closed") from None
            if window <= 0:
                await self._changed.wait()
                continue
            chunk, view = view[:window], view[window:]
            self._h2.send_data(stream_id, bytes(chunk), end_stream=end and not view)
            await self._drain()
        if end and not data:
            with contextlib.suppress(h2.exceptions.StreamClosedError):
                self._h2.end_stream(stream_id)
            await self._drain()

    def reset(self, stream_id: int) -> None:
        self._streams.pop(stream_id, None)
        with contextlib.suppress(h2.exceptions.StreamClosedError, h2.exceptions.ProtocolError):
            self._h2.reset_stream(stream_id, error_code=ErrorCodes.CANCEL)
            self._flush()
        self._pulse()

    async def close(self) -> None:
        if self._reader_task is not None:
            self._reader_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader_task
        if self._writer is not None:
            with contextlib.suppress(Exception):
                self._h2.close_connection()
                self._send_now()
                self._writer.close()


class H2Pool:
    """One connection per deployment authority, replaced when it breaks."""

    def __init__(self, connect_timeout_s: float = 10.0) -> None:
        self._connections: dict[str, H2Connection] = {}
        self._connecting: dict[str, asyncio.Lock] = {}
        self._connect_timeout_s = connect_timeout_s

    async def open_stream(self, url: str, headers: list[tuple[str, str]]) -> H2Stream:
        parts = urlsplit(url)
        if parts.scheme != "http" or parts.hostname is None:
            raise H2Error(f"only http:// (h2c) deployments are reached over HTTP/2 here, not {url}")
        host, port = parts.hostname, parts.port or 80
        key = f"{host}:{port}"
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        lock = self._connecting.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._connections.get(key)
            if conn is None or conn.closed is not None:
                conn = H2Connection(host, port)
                try:
                    await conn.connect(self._connect_timeout_s)
                except (OSError, TimeoutError) as e:
                    raise H2Error(f"cannot connect to {key}: {type(e).__name__}: {e}") from e
                self._connections[key] = conn
        return await conn.open_stream(path, headers)

    async def aclose(self) -> None:
        for conn in self._connections.values():
            await conn.close()
        self._connections.clear()
