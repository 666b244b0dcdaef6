"""Request identity end to end: a real Python SDK deployment that accepts only requests signed
with a known key (`identity_keys`) refuses an unsigned kinvoke and works with a kinvoke that
signs (KINVOKE_REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE): registration, a call, and a durable sleep
whose resumption is a second signed request."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from kafka_core.kafka import create_topics
from kafka_core.request_identity import KID_PREFIX
from schemas.settings import Settings
from tests.conftest import free_port
from tests.support.cluster import json_lines
from tests.support.processes import Component
from tests.support.sdk import run_sdk_deployment

pytestmark = pytest.mark.integration

PARTITIONS = 2


def _b58(data: bytes) -> str:
    """Base58 written again here, so the test does not trust the code under test for the kid."""
    alphabet = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
    n, out = int.from_bytes(data, "big"), ""
    while n:
        n, r = divmod(n, 58)
        out = alphabet[r] + out
    return "1" * (len(data) - len(data.lstrip(b"\0"))) + out


@pytest.fixture
def key_pair(tmp_path: Path) -> tuple[Path, str]:
    """A PKCS#8 PEM file of a fresh Ed25519 key and its public key as SDKs take it."""
    key = Ed25519PrivateKey.generate()
    pem = tmp_path / "identity.pem"
    pem.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return pem, KID_PREFIX + _b58(raw)


@pytest.fixture
def guarded_sdk(
    key_pair: tuple[Path, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Path]]:
    """The deployment's URI and the file where it records the requests it served."""
    served = tmp_path / "served.txt"
    monkeypatch.setenv("KINVOKE_TEST_IDENTITY_KEY", key_pair[1])
    monkeypatch.setenv("KINVOKE_TEST_IDENTITY_LOG", str(served))
    with run_sdk_deployment("tests.support.identity_services:app", tmp_path / "sdk.log") as uri:
        yield uri, served


def test_a_deployment_that_requires_signed_requests_works_once_kinvoke_signs(
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    key_pair: tuple[Path, str],
    guarded_sdk: tuple[str, Path],
) -> None:
    uri, served = guarded_sdk
    pem, public_key = key_pair
    create_topics(
        Settings(bootstrap_servers=kafka_bootstrap, topic_prefix=topic_prefix, partitions=PARTITIONS)
    )
    base = {
        "KINVOKE_BOOTSTRAP_SERVERS": kafka_bootstrap,
        "KINVOKE_TOPIC_PREFIX": topic_prefix,
        "KINVOKE_PARTITIONS": str(PARTITIONS),
        "KINVOKE_PROCESSOR_GROUP_ID": f"{topic_prefix}-processor",
        # An idle stream closes soon: the durable sleep below suspends and is resumed by a new request.
        "KINVOKE_DEFAULT_INACTIVITY_TIMEOUT_MS": "300",
    }
    unsigned_port, admin_port, ingress_port = free_port(), free_port(), free_port()
    (tmp_path / "unsigned").mkdir()
    unsigned_admin = Component(
        "admin", {**base, "KINVOKE_ADMIN_PORT": str(unsigned_port)}, tmp_path / "unsigned", unsigned_port
    )
    signed = {
        **base,
        "KINVOKE_ADMIN_PORT": str(admin_port),
        "KINVOKE_INGRESS_PORT": str(ingress_port),
        "KINVOKE_REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE": str(pem),
    }
    parts = [
        unsigned_admin,
        Component("admin", signed, tmp_path, admin_port),
        Component("ingress", signed, tmp_path, ingress_port),
        Component("processor", signed, tmp_path),
    ]
    try:
        for c in parts:
            c.start()
        with httpx.Client(timeout=30) as client:
            refused = client.post(f"http://127.0.0.1:{unsigned_port}/deployments", json={"uri": uri})
            assert refused.status_code == 500, refused.text
            message = refused.json()["message"]
            assert "401" in message and "KINVOKE_REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE" in message, message
            assert served.read_text().splitlines() == ["/discover 401"]

            reg = client.post(f"http://127.0.0.1:{admin_port}/deployments", json={"uri": uri})
            assert reg.status_code == 201, reg.text
            ingress = f"http://127.0.0.1:{ingress_port}"
            assert client.post(f"{ingress}/Greeter/greet", json="Ada", timeout=60).json() == "Hello Ada"
            assert client.post(f"{ingress}/Greeter/nap", json=1500, timeout=60).json() == "rested 1500ms"

        requests = served.read_text().splitlines()
        assert requests[1:3] == ["/discover 200", "/invoke/Greeter/greet 200"], requests
        naps = [r for r in requests if r.startswith("/invoke/Greeter/nap")]
        assert len(naps) >= 2 and set(naps) == {"/invoke/Greeter/nap 200"}, requests  # suspended, resumed

        for component in ("admin", "processor"):
            logged = [
                e
                for c in parts[1:]
                if c.name == component
                for e in json_lines(c.log_text())
                if e.get("event") == "request_identity.enabled"
            ]
            assert [e["public_key"] for e in logged] == [public_key], component
    finally:
        for c in parts:
            c.stop()
