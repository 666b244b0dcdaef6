"""Ingress path grammar, as Restate 1.7's ingress parses it (ingress-http `path_parsing.rs`):
which request a path asks for, and the errors Restate answers for paths it cannot use.

Only keys (object/workflow keys) are percent-decoded, as UTF-8; service and handler names,
invocation ids and idempotency keys are used as they appear in the path, as Restate does.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import unquote_to_bytes

from schemas.records import ServiceType


class IngressError(Exception):
    """An error the ingress answers itself: `{"code", "message", "source": "ingress"}`."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


BAD_SERVICE_PATH = "bad path, expected either /:service-name/:handler or /:object-name/:object-key/:handler"
BAD_AWAKEABLES_PATH = (
    "bad path, expected either /restate/awakeables/:id/resolve or /restate/awakeables/:id/reject"
)
BAD_INVOCATION_PATH = (
    "bad path, expected either /restate/invocation/:invocation_id/output or "
    "/restate/invocation/:invocation_id/attach or "
    "/restate/invocation/:invocation_target/:idempotency_key/output or "
    "/restate/invocation/:invocation_target/:idempotency_key/attach"
)
BAD_WORKFLOW_PATH = (
    "bad path, expected either /restate/workflow/:workflow_name/:workflow_key/output or "
    "/restate/workflow/:workflow_name/:workflow_key/attach"
)
BAD_RESTATE_API_PATH = (
    "bad path, expected /restate/call/:service/:handler, /restate/send/:service/:handler, "
    "/restate/scope/:scope/call/:service/:handler, /restate/attach/:invocation_id, "
    "/restate/output/:invocation_id, or /restate/lookup"
)
SCOPES_UNSUPPORTED = "scoped invocations require vqueues to be enabled"


def bad_path(path: str) -> IngressError:
    return IngressError(400, f"bad path: {path}")


def not_found() -> IngressError:
    return IngressError(404, "not found")


def service_not_found(service: str) -> IngressError:
    return IngressError(
        404, f"service '{service}' not found, make sure to register the service before calling it."
    )


@dataclass(frozen=True)
class HealthPath:
    """`/restate/health`."""


@dataclass(frozen=True)
class AwakeablePath:
    """`/restate/awakeables/{id}/resolve|reject` (also `/restate/a/...`)."""

    awakeable_id: str
    resolve: bool


@dataclass(frozen=True)
class OutputPath:
    """`/restate/invocation/...`, `/restate/workflow/...`, `/restate/attach|output/{id}`: exactly
    one of `invocation_id` (unparsed), `workflow` (name, key) or `idempotent`
    (service, key, handler, idempotency key) is set."""

    attach: bool
    invocation_id: str | None = None
    workflow: tuple[str, str] | None = None
    idempotent: tuple[str, str | None, str, str] | None = None


@dataclass(frozen=True)
class InvocationPath:
    """A call or a send to a handler: `/{svc}/[{key}/]{handler}[/send]`, `/restate/call|send/...`."""

    service: str
    handler: str
    key: str | None
    send: bool
    scoped: bool = False


@dataclass(frozen=True)
class TargetPath:
    """`POST /restate/attach|output|lookup`: the invocation is named in the JSON body
    (`target_from_body`); `action` is "attach", "output" or "lookup"."""

    action: str


RequestPath = HealthPath | AwakeablePath | OutputPath | InvocationPath | TargetPath
ServiceTypeOf = Callable[[str], ServiceType | None]


def normalize_path(path: str) -> str:
    """tower-http's `NormalizePathLayer::trim_trailing_slash`, which runs before Restate's ingress:
    trailing slashes go (and leading ones collapse to one when the path starts with `//`)."""
    if not path.endswith("/") and not path.startswith("//"):
        return path
    return "/" + path.strip("/")


def decode_key(raw: str) -> str:
    """Percent-decode a key as UTF-8 (Rust `urlencoding::decode`: invalid escapes stay as they are)."""
    data = unquote_to_bytes(raw)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise IngressError(400, f"bad path, cannot decode key: {_from_utf8_error(data, e)}") from None


def _from_utf8_error(data: bytes, e: UnicodeDecodeError) -> str:
    """Rust's `Debug` of the `FromUtf8Error` that Restate puts in its message."""
    error_len = "None" if "unexpected end" in e.reason else f"Some({e.end - e.start})"
    return (
        f"FromUtf8Error {{ bytes: [{', '.join(str(b) for b in data)}], "
        f"error: Utf8Error {{ valid_up_to: {e.start}, error_len: {error_len} }} }}"
    )


def parse_request_path(path: str, service_type: ServiceTypeOf) -> RequestPath:
    """Restate's `Handler::parse_path` on a normalized path (no query): 2 to 7 slashes, then the
    first segment decides: `restate` for the ingress's own API, a service name otherwise."""
    if not 2 <= path.count("/") <= 7:
        raise bad_path(path)
    segments = iter(path.split("/")[1:])
    first = next(segments)
    if first == "restate":
        verb = next(segments)
        if verb == "health":
            return HealthPath()
        if verb in ("awakeables", "a"):
            return _awakeable(segments)
        if verb == "invocation":
            return _invocation(segments, service_type)
        if verb == "workflow":
            return _workflow(segments)
        return _restate_api(verb, segments, service_type)
    if first == "openapi":
        raise not_found()  # Restate routes it, but does not serve it yet
    return _service(first, segments, service_type)


def parse_invocation_path(path: str, service_type: ServiceTypeOf) -> InvocationPath:
    """A path that must address a handler (a call or a send); the query, if any, is ignored."""
    parsed = parse_request_path(normalize_path(path.split("?", 1)[0]), service_type)
    if not isinstance(parsed, InvocationPath):
        raise bad_path(path)
    return parsed


def _next(segments: Iterator[str], error: str) -> str:
    segment = next(segments, None)
    if segment is None:
        raise IngressError(400, error)
    return segment


def _keyed(service: str, service_type: ServiceTypeOf) -> bool:
    ty = service_type(service)
    if ty is None:
        raise service_not_found(service)
    return ty != ServiceType.SERVICE


def _service(service: str, segments: Iterator[str], service_type: ServiceTypeOf) -> InvocationPath:
    key = decode_key(_next(segments, BAD_SERVICE_PATH)) if _keyed(service, service_type) else None
    handler = _next(segments, BAD_SERVICE_PATH)
    last = next(segments, None)
    if last not in (None, "send") or next(segments, None) is not None:
        raise IngressError(400, BAD_SERVICE_PATH)
    return InvocationPath(service, handler, key, last == "send")


def _call_or_send(
    verb: str, segments: Iterator[str], service_type: ServiceTypeOf, *, scoped: bool = False
) -> InvocationPath:
    if verb not in ("call", "send"):
        raise IngressError(400, BAD_RESTATE_API_PATH)
    service = _next(segments, BAD_RESTATE_API_PATH)
    keyed = _keyed(service, service_type)
    key = decode_key(_next(segments, BAD_RESTATE_API_PATH)) if keyed else None
    handler = _next(segments, BAD_RESTATE_API_PATH)
    if next(segments, None) is not None:
        raise IngressError(400, BAD_RESTATE_API_PATH)
    return InvocationPath(service, handler, key, verb == "send", scoped)


def _restate_api(verb: str, segments: Iterator[str], service_type: ServiceTypeOf) -> RequestPath:
    if verb in ("call", "send"):
        return _call_or_send(verb, segments, service_type)
    if verb == "scope":
        decode_key(_next(segments, BAD_RESTATE_API_PATH))
        inner = _next(segments, BAD_RESTATE_API_PATH)
        return _call_or_send(inner, segments, service_type, scoped=True)
    if verb in ("attach", "output"):
        invocation_id = next(segments, None)
        if invocation_id is None:
            return TargetPath(verb)  # the target in the body
        if next(segments, None) is not None:
            raise IngressError(400, BAD_RESTATE_API_PATH)
        return OutputPath(attach=verb == "attach", invocation_id=invocation_id)
    if verb == "lookup" and next(segments, None) is None:
        return TargetPath(verb)
    raise not_found()


_TARGETS = "`workflow`, `idempotentInvocation`, `invocation`"


def target_from_body(body: bytes, action: str) -> OutputPath:
    """Restate 1.7.12's `InvocationTargetRequest` (tagged by `target`): `workflow` (workflowName,
    workflowKey), `idempotentInvocation` (service, key?, handler, idempotencyKey) or
    `invocation` (invocationId). A body that does not match is a 500 "cannot read body", as
    Restate answers it (measured)."""
    what = "lookup" if action == "lookup" else "request"

    def bad(reason: str) -> IngressError:
        return IngressError(500, f"cannot read body: invalid {what} body: {reason}")

    try:
        data = json.loads(body)
    except ValueError as e:
        raise bad(str(e)) from None
    if not isinstance(data, dict):
        raise bad("invalid type, expected an object")

    def field(name: str, optional: bool = False) -> str | None:
        value = data.get(name)
        if value is None and not optional:
            raise bad(f"missing field `{name}`")
        if value is not None and not isinstance(value, str):
            raise bad(f"invalid type for `{name}`, expected a string")
        return value

    def required(name: str) -> str:
        value = field(name)
        assert value is not None
        return value

    attach = action == "attach"
    target = data.get("target")
    if target is None:
        raise bad("missing field `target`")
    if target == "workflow":
        return OutputPath(attach=attach, workflow=(required("workflowName"), required("workflowKey")))
    if target == "idempotentInvocation":
        service, handler = required("service"), required("handler")
        idempotent = (service, field("key", True), handler, required("idempotencyKey"))
        return OutputPath(attach=attach, idempotent=idempotent)
    if target == "invocation":
        return OutputPath(attach=attach, invocation_id=required("invocationId"))
    raise bad(f"unknown variant `{target}`, expected one of {_TARGETS}")


def _awakeable(segments: Iterator[str]) -> AwakeablePath:
    awakeable_id = _next(segments, BAD_AWAKEABLES_PATH)
    action = _next(segments, BAD_AWAKEABLES_PATH)
    if action not in ("resolve", "reject"):
        raise not_found()
    return AwakeablePath(awakeable_id, action == "resolve")


def _workflow(segments: Iterator[str]) -> OutputPath:
    name = _next(segments, BAD_WORKFLOW_PATH)
    key = decode_key(_next(segments, BAD_WORKFLOW_PATH))
    action = _next(segments, BAD_WORKFLOW_PATH)
    if action not in ("attach", "output"):
        raise not_found()
    return OutputPath(attach=action == "attach", workflow=(name, key))


def _invocation(segments: Iterator[str], service_type: ServiceTypeOf) -> OutputPath:
    first = _next(segments, BAD_INVOCATION_PATH)
    second = _next(segments, BAD_INVOCATION_PATH)
    third = next(segments, None)
    if third is None:
        invocation_id: str | None = first
        idempotent = None
        action = second
    else:
        invocation_id = None
        if _keyed(first, service_type):
            key: str | None = decode_key(second)
            handler, idempotency_key = third, _next(segments, BAD_INVOCATION_PATH)
        else:
            key, handler, idempotency_key = None, second, third
        idempotent = (first, key, handler, idempotency_key)
        action = _next(segments, BAD_INVOCATION_PATH)
    if action not in ("attach", "output"):
        raise not_found()
    return OutputPath(attach=action == "attach", invocation_id=invocation_id, idempotent=idempotent)
