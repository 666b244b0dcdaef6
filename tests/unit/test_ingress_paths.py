"""The ingress path grammar, as Restate's ingress parses it."""

from __future__ import annotations

import pytest

from ingress_gateway.paths import IngressError, InvocationPath, parse_invocation_path
from schemas.records import ServiceType

TYPES = {
    "Greeter": ServiceType.SERVICE,
    "Counter": ServiceType.VIRTUAL_OBJECT,
    "Signup": ServiceType.WORKFLOW,
}


def parse(path: str) -> InvocationPath:
    return parse_invocation_path(path, TYPES.get)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/Greeter/greet", InvocationPath("Greeter", "greet", None, False)),
        ("/Greeter/greet/send", InvocationPath("Greeter", "greet", None, True)),
        ("/Greeter/greet/send?delay=2s", InvocationPath("Greeter", "greet", None, True)),
        ("/restate/call/Greeter/greet", InvocationPath("Greeter", "greet", None, False)),
        ("/restate/send/Greeter/greet", InvocationPath("Greeter", "greet", None, True)),
        ("/Counter/k1/add", InvocationPath("Counter", "add", "k1", False)),
        ("/Counter/k1/add/send", InvocationPath("Counter", "add", "k1", True)),
        ("/Counter/send/add", InvocationPath("Counter", "add", "send", False)),
        ("/Counter/a%2Fb/add", InvocationPath("Counter", "add", "a/b", False)),
        ("/restate/call/Counter/k1/get", InvocationPath("Counter", "get", "k1", False)),
    ],
)
def test_paths(path: str, expected: InvocationPath) -> None:
    assert parse(path) == expected


def test_unknown_service_is_404_with_restates_message() -> None:
    with pytest.raises(IngressError) as e:
        parse("/NoSuchService/greet")
    assert e.value.status == 404
    assert e.value.message == (
        "service 'NoSuchService' not found, make sure to register the service before calling it."
    )


def test_object_without_key_is_400() -> None:
    with pytest.raises(IngressError) as e:
        parse("/Counter/add")
    assert e.value.status == 400
    assert (
        e.value.message
        == "bad path, expected either /:service-name/:handler or /:object-name/:object-key/:handler"
    )


@pytest.mark.parametrize("path", ["/", "/restate", "/restate/nope/Greeter/greet", "/Greeter/a/b/c"])
def test_bad_paths(path: str) -> None:
    with pytest.raises(IngressError) as e:
        parse(path)
    assert e.value.status == 400
