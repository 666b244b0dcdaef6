"""The ingress path grammar, as Restate's ingress parses it."""

from __future__ import annotations

import pytest

from ingress_gateway.paths import (
    BAD_AWAKEABLES_PATH,
    BAD_INVOCATION_PATH,
    BAD_RESTATE_API_PATH,
    BAD_WORKFLOW_PATH,
    AwakeablePath,
    HealthPath,
    IngressError,
    InvocationPath,
    OutputPath,
    parse_invocation_path,
    parse_request_path,
)
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
        ("/Counter//add", InvocationPath("Counter", "add", "", False)),
        ("/Counter/%C3%A9/add", InvocationPath("Counter", "add", "é", False)),
        ("/Greeter/greet/", InvocationPath("Greeter", "greet", None, False)),
        ("/Greeter/gr%65et", InvocationPath("Greeter", "gr%65et", None, False)),  # only keys are decoded
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


@pytest.mark.parametrize("path", ["/", "/restate", "/Greeter/a/b/c", "/a/b/c/d/e/f/g/h"])
def test_bad_paths(path: str) -> None:
    with pytest.raises(IngressError) as e:
        parse(path)
    assert e.value.status == 400


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/restate/health", HealthPath()),
        ("/restate/awakeables/sign_1x/resolve", AwakeablePath("sign_1x", True)),
        ("/restate/a/prom_1x/reject", AwakeablePath("prom_1x", False)),
        ("/restate/invocation/inv_1x/attach", OutputPath(attach=True, invocation_id="inv_1x")),
        ("/restate/attach/inv_1x", OutputPath(attach=True, invocation_id="inv_1x")),
        ("/restate/output/inv_1x", OutputPath(attach=False, invocation_id="inv_1x")),
        ("/restate/workflow/Signup/a%2Fb/output", OutputPath(attach=False, workflow=("Signup", "a/b"))),
        (
            "/restate/invocation/Counter/k1/add/idem-1/output",
            OutputPath(attach=False, idempotent=("Counter", "k1", "add", "idem-1")),
        ),
        (
            "/restate/invocation/Greeter/greet/idem-1/attach",
            OutputPath(attach=True, idempotent=("Greeter", None, "greet", "idem-1")),
        ),
    ],
)
def test_restate_paths(path: str, expected: object) -> None:
    assert parse_request_path(path, TYPES.get) == expected


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/restate/nope/Greeter/greet", 404, "not found"),
        ("/restate/awakeables/x/nope", 404, "not found"),
        ("/restate/workflow/Signup/k/nope", 404, "not found"),
        ("/restate/awakeables/x", 400, BAD_AWAKEABLES_PATH),
        ("/restate/workflow/Signup", 400, BAD_WORKFLOW_PATH),
        ("/restate/invocation/inv_1x", 400, BAD_INVOCATION_PATH),
        ("/restate/call/Greeter", 400, BAD_RESTATE_API_PATH),
        ("/restate/call/Greeter/greet/x", 400, BAD_RESTATE_API_PATH),
        ("/restate/scope/s/call/Greeter/greet", None, None),
    ],
)
def test_restate_path_errors(path: str, status: int | None, message: str | None) -> None:
    if status is None:
        assert parse_request_path(path, TYPES.get) == InvocationPath("Greeter", "greet", None, False, True)
        return
    with pytest.raises(IngressError) as e:
        parse_request_path(path, TYPES.get)
    assert (e.value.status, e.value.message) == (status, message)


def test_a_key_that_is_not_utf8() -> None:
    with pytest.raises(IngressError) as e:
        parse("/Counter/a%E2%28/add")
    assert e.value.message == (
        "bad path, cannot decode key: FromUtf8Error { bytes: [97, 226, 40], "
        "error: Utf8Error { valid_up_to: 1, error_len: Some(1) } }"
    )
    with pytest.raises(IngressError) as e:
        parse("/Counter/%E2%82/add")
    assert e.value.message.endswith("error: Utf8Error { valid_up_to: 0, error_len: None } }")
