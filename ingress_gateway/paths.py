"""Ingress path grammar, as Restate's ingress: which target and which mode a request asks for."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import unquote

from schemas.records import ServiceType


class IngressError(Exception):
    """An error the ingress answers itself: `{"code", "message", "source": "ingress"}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class InvocationPath:
    service: str
    handler: str
    key: str | None
    send: bool


def bad_path(path: str) -> IngressError:
    return IngressError(400, f"bad path: {path}")


def service_not_found(service: str) -> IngressError:
    return IngressError(
        404, f"service '{service}' not found, make sure to register the service before calling it."
    )


def parse_invocation_path(path: str, service_type: Callable[[str], ServiceType | None]) -> InvocationPath:
    """`/{svc}/{handler}`, `/{svc}/{key}/{handler}`, optionally `/send`, optionally under
    `/restate/call` or `/restate/send`. Whether a segment is a key depends on the service type."""
    segments = [unquote(s) for s in path.split("?", 1)[0].split("/") if s != ""]
    if not segments:
        raise bad_path(path)
    forced_send: bool | None = None
    if segments[0] == "restate":
        if len(segments) < 2 or segments[1] not in ("call", "send"):
            raise bad_path(path)
        forced_send = segments[1] == "send"
        segments = segments[2:]
        if not segments:
            raise bad_path(path)
    service = segments[0]
    ty = service_type(service)
    if ty is None:
        raise service_not_found(service)
    rest = segments[1:]
    send = False
    if forced_send is None and rest and rest[-1] == "send":
        keyed_len = 2 if ty != ServiceType.SERVICE else 1
        if len(rest) == keyed_len + 1:
            send, rest = True, rest[:-1]
    if forced_send is not None:
        send = forced_send
    if ty == ServiceType.SERVICE:
        if len(rest) != 1:
            raise bad_path(path)
        return InvocationPath(service, rest[0], None, send)
    if len(rest) != 2:
        raise IngressError(
            400, "bad path, expected either /:service-name/:handler or /:object-name/:object-key/:handler"
        )
    return InvocationPath(service, rest[1], rest[0], send)
