"""Request identity: requests to deployments signed as Restate signs them, so a deployment that
only accepts a known server (an SDK configured with `identity_keys`) accepts kinvoke.

A PEM file holds one PKCS#8 Ed25519 private key. Every request to a deployment (discovery and
attempts) carries `x-restate-signature-scheme: v1` and `x-restate-jwt-v1`, a compact EdDSA JWT
whose `aud` is the request's path, valid from a minute ago to a minute from now. The key's public
half, in the `publickeyv1_<base58>` form SDKs are configured with, is the JWT's `kid`.

Here (not in a component) because both the admin (discovery) and the processor (attempts) sign.
"""

from __future__ import annotations

import base64
import json
import re
import time
from pathlib import Path

import structlog
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from schemas.settings import Settings

log = structlog.get_logger(__name__)

SCHEME_HEADER = "x-restate-signature-scheme"
JWT_HEADER = "x-restate-jwt-v1"
SCHEME_V1 = "v1"
KID_PREFIX = "publickeyv1_"
SETTING = "KINVOKE_REQUEST_IDENTITY_PRIVATE_KEY_PEM_FILE"
VALIDITY_S = 60  # Restate's: nbf a minute back (clock skew), exp a minute ahead

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_PEM_BLOCK = re.compile(rb"-----BEGIN ([A-Z0-9 ]+)-----.*?-----END \1-----", re.DOTALL)


class RequestIdentityError(ValueError):
    """The configured key cannot be used; raised at start-up, never per request."""


def b58encode(data: bytes) -> str:
    """Bitcoin-alphabet base58 (what `publickeyv1_` keys use); leading zero bytes become '1'."""
    n = int.from_bytes(data, "big")
    out = ""
    while n:
        n, r = divmod(n, 58)
        out = _B58_ALPHABET[r] + out
    zeros = len(data) - len(data.lstrip(b"\0"))
    return "1" * zeros + out


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class RequestSigner:
    """Signs requests to deployments with one Ed25519 key."""

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key
        raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self.kid = KID_PREFIX + b58encode(raw)
        header = {"typ": "JWT", "alg": "EdDSA", "kid": self.kid}
        self._header = _b64url(json.dumps(header, separators=(",", ":")).encode())

    @classmethod
    def from_pem(cls, pem: bytes, source: str = "the PEM data") -> RequestSigner:
        """Exactly one PKCS#8 Ed25519 private key, as Restate requires (more or none is an error)."""
        blocks = [m.group(0) for m in _PEM_BLOCK.finditer(pem)]
        keys = [b for b in blocks if b.startswith(b"-----BEGIN PRIVATE KEY-----")]
        if len(keys) != 1:
            found = f"{len(keys)} PKCS#8 private keys" + (
                f" (and {len(blocks) - len(keys)} other PEM blocks)" if len(blocks) > len(keys) else ""
            )
            raise RequestIdentityError(
                f"{source} must hold exactly one PKCS#8 Ed25519 private key "
                f"('-----BEGIN PRIVATE KEY-----'); found {found}"
            )
        try:
            key = serialization.load_pem_private_key(keys[0], password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as e:
            raise RequestIdentityError(f"{source}: cannot read the private key: {e}") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise RequestIdentityError(
                f"{source}: the private key is {type(key).__name__.lstrip('_')}, not Ed25519"
            )
        return cls(key)

    @classmethod
    def from_file(cls, path: str | Path) -> RequestSigner:
        try:
            pem = Path(path).read_bytes()
        except OSError as e:
            raise RequestIdentityError(f"cannot read {SETTING} {path}: {e.strerror}") from None
        return cls.from_pem(pem, f"{SETTING} {path}")

    def token(self, path: str, now: float | None = None) -> str:
        """A compact JWS for a request to `path` (the URI's path, e.g. `/invoke/Greeter/greet`)."""
        iat = int(now if now is not None else time.time())
        claims = {"aud": path, "exp": iat + VALIDITY_S, "iat": iat, "nbf": iat - VALIDITY_S}
        signing_input = f"{self._header}.{_b64url(json.dumps(claims, separators=(',', ':')).encode())}"
        return f"{signing_input}.{_b64url(self._key.sign(signing_input.encode()))}"

    def headers(self, path: str, now: float | None = None) -> dict[str, str]:
        """The two headers a request to `path` carries."""
        return {SCHEME_HEADER: SCHEME_V1, JWT_HEADER: self.token(path, now)}


def load_request_signer(settings: Settings, component: str) -> RequestSigner | None:
    """The configured signer (None: requests go unsigned); logs the public key deployments must
    trust. Called once at start-up so a bad key file stops the component right away."""
    path = settings.request_identity_private_key_pem_file
    if not path:
        return None
    signer = RequestSigner.from_file(path)
    log.info("request_identity.enabled", component=component, public_key=signer.kid, key_file=path)
    return signer
