"""Discovery against a real Python SDK deployment, over h2c and HTTP/1.1."""

from __future__ import annotations

import pytest

from admin_api.discovery import discover
from admin_api.registration import RegistrationError
from tests.conftest import free_port
from tests.support.sdk import run_sdk_deployment

pytestmark = pytest.mark.integration


async def test_discovery_over_h2c_and_http11() -> None:
    with run_sdk_deployment() as uri:
        h2 = await discover(uri)
        h1 = await discover(uri, use_http_11=True)
    assert h2.http_version == "HTTP/2.0" and h2.protocol_mode == "BIDI_STREAM"
    assert h1.http_version == "HTTP/1.1" and h1.protocol_mode == "REQUEST_RESPONSE"
    assert (h2.min_protocol_version, h2.max_protocol_version) == (5, 7)
    assert h2.sdk_version and h2.sdk_version.startswith("restate-sdk-python/")
    names = {s["name"]: s for s in h2.manifest["services"]}
    assert set(names) == {"Greeter", "Failing", "Counter", "Signup", "Caller"}
    assert names["Counter"]["ty"] == "VIRTUAL_OBJECT"
    assert {h["name"] for h in names["Greeter"]["handlers"]} == {"greet", "steps", "slow", "nap", "approval"}


async def test_nothing_listening_is_meta0003() -> None:
    with pytest.raises(RegistrationError) as e:
        await discover(f"http://127.0.0.1:{free_port()}", attempts=1)
    assert e.value.restate_code == "META0003" and e.value.status == 500
    assert "[META0003] error when calling" in e.value.message
