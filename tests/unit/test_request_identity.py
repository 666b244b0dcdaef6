"""Request identity: the signer's key, tokens and start-up errors, checked independently of the
signer with `cryptography` (and Restate's own test vector)."""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from admin_api.discovery import ACCEPT, discover
from admin_api.registration import RegistrationError
from kafka_core.request_identity import (
    JWT_HEADER,
    SCHEME_HEADER,
    RequestIdentityError,
    RequestSigner,
    b58encode,
    load_request_signer,
)
from kinvoke.settings_help import COMMAND_SETTINGS
from processor.invoker.attempt import AttemptRequest, DeploymentTarget, Invoker
from schemas.settings import Settings

# Restate's test vector (crates/service-client request_identity).
RESTATE_PEM = b"""-----BEGIN PRIVATE KEY-----
MC4CAQAwBQYDK2VwBCIEIPe++4ZTPQDF81otpoU/mOGHC2vOAVp9WbiCblvn3nXO
-----END PRIVATE KEY-----
"""
RESTATE_KID = "publickeyv1_AfQwmwfgEZhrWpvv8N52SHpRtZqGGaFr4AZN6qtYWSiY"
_B58 = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"


def _pem(key: Ed25519PrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _b64decode(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def _b58decode(text: str) -> bytes:
    n = 0
    for c in text:
        n = n * 58 + _B58.index(c)
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * (len(text) - len(text.lstrip("1"))) + body


def _verified_claims(token: str, public: Ed25519PublicKey) -> tuple[dict[str, str], dict[str, int | str]]:
    """The header and claims of a compact JWS, after checking its EdDSA signature."""
    head, claims, sig = token.split(".")
    assert "=" not in token, "base64url without padding"
    public.verify(_b64decode(sig), f"{head}.{claims}".encode())
    return json.loads(_b64decode(head)), json.loads(_b64decode(claims))


def test_restate_test_vector_kid() -> None:
    assert RequestSigner.from_pem(RESTATE_PEM).kid == RESTATE_KID


def test_kid_is_base58_of_the_raw_public_key() -> None:
    key = Ed25519PrivateKey.generate()
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = RequestSigner.from_pem(_pem(key)).kid
    assert kid.startswith("publickeyv1_")
    assert _b58decode(kid.removeprefix("publickeyv1_")) == raw
    assert b58encode(b"\0\0\x01") == "112"


def test_a_signed_token_verifies_and_has_restates_claims() -> None:
    key = Ed25519PrivateKey.generate()
    signer = RequestSigner.from_pem(_pem(key))
    headers = signer.headers("/invoke/Greeter/greet", now=1_700_000_000)
    assert headers[SCHEME_HEADER] == "v1"
    header, claims = _verified_claims(headers[JWT_HEADER], key.public_key())
    assert header == {"typ": "JWT", "alg": "EdDSA", "kid": signer.kid}
    assert claims == {
        "aud": "/invoke/Greeter/greet",
        "iat": 1_700_000_000,
        "exp": 1_700_000_060,
        "nbf": 1_699_999_940,
    }
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(InvalidSignature):
        _verified_claims(headers[JWT_HEADER], other)


def test_the_python_sdk_verifier_accepts_the_token_for_its_path_only() -> None:
    from restate.server import IdentityVerificationException, PyIdentityVerifier

    signer = RequestSigner(Ed25519PrivateKey.generate())
    verifier = PyIdentityVerifier([signer.kid])
    headers = list(signer.headers("/invoke/Greeter/greet").items())
    verifier.verify(headers, "/invoke/Greeter/greet")
    with pytest.raises(IdentityVerificationException):
        verifier.verify(headers, "/discover")


@pytest.mark.parametrize(
    ("pem", "message"),
    [
        (b"", "exactly one PKCS#8 Ed25519 private key"),
        (b"not a key at all\n", "found 0 PKCS#8 private keys"),
        (
            _pem(Ed25519PrivateKey.generate()) + _pem(Ed25519PrivateKey.generate()),
            "found 2 PKCS#8 private keys",
        ),
        (_pem(ec.generate_private_key(ec.SECP256R1())), "not Ed25519"),
        (b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "cannot read the private key"),
    ],
    ids=["empty", "no-key", "two-keys", "ec-key", "garbage-key"],
)
def test_a_bad_key_file_is_a_clear_error(tmp_path: Path, pem: bytes, message: str) -> None:
    path = tmp_path / "key.pem"
    path.write_bytes(pem)
    settings = Settings(request_identity_private_key_pem_file=str(path))
    with pytest.raises(RequestIdentityError, match=message) as info:
        load_request_signer(settings, "admin")
    assert "KINVOKE_REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE" in str(info.value)


def test_a_missing_key_file_is_a_clear_error(tmp_path: Path) -> None:
    settings = Settings(request_identity_private_key_pem_file=str(tmp_path / "absent.pem"))
    with pytest.raises(RequestIdentityError, match="cannot read KINVOKE_REQUEST_IDENTITY_PRIVATE_KEY"):
        load_request_signer(settings, "processor")


def test_unset_means_unsigned_and_both_components_document_the_setting() -> None:
    assert load_request_signer(Settings(), "admin") is None
    for command in ("admin", "processor", "dev"):
        assert "request_identity_private_key_pem_file" in COMMAND_SETTINGS[command]


async def test_discovery_signs_its_request_with_the_uri_path() -> None:
    """A deployment mounted under a path sees a token for that path; unsigned, its 401 says why."""
    key = Ed25519PrivateKey.generate()
    seen: list[Mapping[str, str]] = []

    async def manifest(request: web.Request) -> web.Response:
        seen.append(request.headers)
        if JWT_HEADER not in request.headers:
            return web.Response(status=401)
        body = {"protocolMode": "BIDI_STREAM", "minProtocolVersion": 5, "maxProtocolVersion": 6}
        ctype = ACCEPT.split(", ")[-1]
        return web.Response(body=json.dumps(body).encode(), headers={"content-type": ctype})

    app = web.Application()
    app.router.add_get("/prefix/discover", manifest)
    async with TestServer(app) as server:
        uri = f"http://127.0.0.1:{server.port}/prefix/"
        await discover(uri, use_http_11=True, signer=RequestSigner(key))
        _, claims = _verified_claims(seen[0][JWT_HEADER], key.public_key())
        assert claims["aud"] == "/prefix/discover"
        assert seen[0][SCHEME_HEADER] == "v1"
        with pytest.raises(RegistrationError) as e:
            await discover(uri, use_http_11=True, attempts=1)
        assert "401 Unauthorized" in e.value.message
        assert "KINVOKE_REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE" in e.value.message


async def test_attempts_are_signed_with_the_invoke_path() -> None:
    key = Ed25519PrivateKey.generate()
    invoker = Invoker(signer=RequestSigner(key))
    try:
        request = AttemptRequest("inv_1", b"\0" * 16, "Greeter", "greet", None, [], None)
        url = invoker._url(DeploymentTarget(uri="http://dep:9080/prefix"), request)
        _, claims = _verified_claims(invoker._identity(url)[JWT_HEADER], key.public_key())
        assert claims["aud"] == "/prefix/invoke/Greeter/greet"
    finally:
        await invoker.aclose()
    unsigned = Invoker()
    try:
        assert unsigned._identity(url) == {}
    finally:
        await unsigned.aclose()


@pytest.mark.parametrize("command", ["admin", "processor"])
def test_a_component_with_a_bad_key_file_stops_at_start_up_with_one_line(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from kinvoke import cli

    path = tmp_path / "key.pem"
    path.write_bytes(_pem(ec.generate_private_key(ec.SECP256R1())))
    monkeypatch.setenv("KINVOKE_REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE", str(path))
    monkeypatch.setenv("KINVOKE_BOOTSTRAP_SERVERS", "127.0.0.1:1")  # never reached
    monkeypatch.setenv("KINVOKE_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(cli, "configure_logging", lambda *_: None)  # keep the tests' logging as it is
    assert cli.main([command]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (
        f"kinvoke {command}: KINVOKE_REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE {path}: "
        "the private key is ECPrivateKey, not Ed25519"
    )
    assert not (tmp_path / "state").exists()


def test_an_attempt_refused_with_401_names_the_setting() -> None:
    from processor.invoker.attempt import _BadResponse

    error = _BadResponse.for_status(401, "http://dep/invoke/Greeter/greet", "")
    assert "HTTP 401" in str(error) and "KINVOKE_REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE" in str(error)
