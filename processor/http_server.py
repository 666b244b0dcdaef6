"""The processor's small HTTP server: `/metrics` (Prometheus), `/tasks` (owned partitions and
their task states) and `/health`.

The processor loop is a thread, not an event loop, so this is the standard library's threading
server, run by a supervised thread. It only reads: `tasks()` and `problem()` are snapshots the
processor gives it. Port 0 (the default) lets the OS choose, so several processors can run on
one machine; the chosen port is logged (`processor.http_listening`).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import structlog
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from kafka_core.supervision import SupervisedThread

log = structlog.get_logger(__name__)

TasksFn = Callable[[], dict[str, Any]]
ProblemFn = Callable[[], str | None]


class HttpPortTaken(Exception):
    """The configured host/port cannot be bound."""


class ProcessorHttp:
    def __init__(self, host: str, port: int, tasks: TasksFn, problem: ProblemFn) -> None:
        self._tasks = tasks
        self._problem = problem
        try:
            self._server = ThreadingHTTPServer((host, port), self._handler_class())
        except OSError as e:
            raise HttpPortTaken(
                f"the processor's HTTP server cannot listen on {host}:{port} ({e.strerror}); "
                "set KINVOKE_PROCESSOR_HTTP_PORT to a free port, or 0 for any"
            ) from None
        self._server.daemon_threads = True
        self._server.timeout = 0.5
        self._thread = SupervisedThread("processor-http", self._serve)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    @property
    def host(self) -> str:
        return str(self._server.server_address[0])

    def start(self) -> ProcessorHttp:
        self._thread.start()
        log.info("processor.http_listening", host=self.host, port=self.port)
        return self

    def stop(self) -> None:
        self._thread.stop(2.0)
        self._server.server_close()

    def _serve(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._server.handle_request()  # at most `timeout` seconds when nothing comes

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the standard library's name
                path = self.path.split("?", 1)[0].rstrip("/")
                if path == "/metrics":
                    self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
                elif path == "/tasks":
                    self._json(200, owner._tasks())
                elif path == "/health":
                    problem = owner._problem()
                    body = {"healthy": problem is None, "problem": problem, **owner._tasks()}
                    self._json(200 if problem is None else 503, body)
                else:
                    self._json(404, {"message": f"no route for GET {path}; try /metrics, /tasks, /health"})

            def _json(self, status: int, body: dict[str, Any]) -> None:
                self._send(status, json.dumps(body).encode(), "application/json")

            def _send(self, status: int, body: bytes, content_type: str) -> None:
                self.send_response(status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
                pass  # scrapes every few seconds would drown the processor's log

        return Handler
