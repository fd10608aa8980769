"""A2A push notifications a bystander cannot forge: each push carries a JWT signed with the
sender's private Ed25519 key, which the push never carries; receivers check it against the
sender's public keys (its JWKS), as A2A's push authentication describes (docs/a2a.md, "Push
notifications a bystander cannot forge").

    signer = PushSigner.load("push-key.pem")        # made (0600) if missing; or generate()
    headers = signer.headers(config, body)           # {"X-Mq9-Push-JWT": "<compact JWS>"}
    signer.jwks()                                    # {"keys": [...]}: published, public

    claims = verify_push(headers["X-Mq9-Push-JWT"], body, jwks, audience=my_url, seen=jtis)

Before, the body was signed (HMAC) with the config's token, the very token the push sends in
clear (``X-A2A-Notification-Token``): one push seen let anyone sign forged task states. The
token is still sent, as a2a-sdk's sender sends it (the receiver matches it to its config), but
it signs nothing. The JWT binds the body (``request_body_sha256``), the receiver's URL
(``aud``: a push captured at one receiver is refused by another), the task (``task_id``), a
short life (``iat``/``exp``) and a unique ``jti`` (a receiver that keeps the ones it saw for
the life of a token refuses a replay). Ed25519 (JWS ``EdDSA``, RFC 8037): PyJWT, jose4j,
Nimbus, go-jose and jose (node) verify it. Needs ``cryptography`` (the a2a-gateway extra).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable, Mapping, MutableMapping
from pathlib import Path
from typing import Any

from .shapes import JsonObject, JsonValue

PUSH_JWT_HEADER = "X-Mq9-Push-JWT"
ALGORITHM = "EdDSA"
LIFETIME = 300.0  # seconds a push's JWT verifies after it was made (its ``exp``)
LEEWAY = 30.0  # seconds of clock difference between sender and receiver that are forgiven
JWKS_PATH = "/.well-known/jwks.json"  # where the gateway publishes its public keys
# The card extension naming where a sender's push keys are (its JWKS, or the JWKS itself)
PUSH_JWT_EXTENSION = "https://github.com/mq9-agents/langchain-mq9/blob/main/docs/a2a.md#push-jwt"
MAX_JWT = 4096  # characters: a longer header is refused before anything is decoded
NEEDS = "signed A2A push notifications need cryptography (mq9-platform[a2a-gateway])"
_PARTS = ("header", "claims", "signature")  # a compact JWS's three, as a refusal names them


class PushRefused(ValueError):
    """A push whose JWT does not verify: forged, altered, replayed, expired, or not for us."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


_BASE64URL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def _unb64(text: str, what: str) -> bytes:
    """``text`` read as base64url without padding, the one spelling of a JWS's parts (RFC 7515
    section 2; standard base64's ``+/``, padding or set unused bits spelled the same push
    otherwise); else ``PushRefused`` naming ``what`` and the reason."""
    if not isinstance(text, str) or not text:
        raise PushRefused(f"{what} is not base64url: it is empty")
    stray = next((c for c in text if c not in _BASE64URL), None)
    if stray is not None:
        raise PushRefused(
            f"{what} is not base64url: {stray!r} is not of its alphabet "
            "(A-Z a-z 0-9 - _, without padding: RFC 7515)"
        )
    if len(text) % 4 == 1:
        raise PushRefused(f"{what} is not base64url: no bytes are {len(text)} characters")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:  # decoders skip the last character's unused bits: one spelling only
        raise PushRefused(f"{what} is not base64url as RFC 7515 spells it: unused bits are set")
    return data


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise RuntimeError(NEEDS) from None
    return ed25519


def body_digest(body: bytes) -> str:
    """``request_body_sha256``: the hex SHA-256 of the POST's body, exactly as sent."""
    return hashlib.sha256(body).hexdigest()


class PushSigner:
    """The sender's key: signs each push (``headers``), publishes its public half (``jwks``)."""

    def __init__(
        self,
        key: Any,
        *,
        issuer: str = "",
        lifetime: float = LIFETIME,
        clock: Callable[[], float] = time.time,
    ) -> None:
        """``key``: an ``Ed25519PrivateKey``. ``issuer``: the ``iss`` claim (the gateway's
        public URL, the agent's name). ``clock``: for tests."""
        if not lifetime > 0:
            raise ValueError(f"a push JWT's lifetime is seconds above 0, not {lifetime!r}")
        self._key = key
        self.issuer = issuer
        self.lifetime = lifetime
        self.clock = clock
        raw = key.public_key().public_bytes_raw()
        self._jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64(raw)}
        # RFC 7638 thumbprint: the key's id is the key itself, so no two keys share one
        canonical = json.dumps(self._jwk, separators=(",", ":"), sort_keys=True).encode()
        self.kid = _b64(hashlib.sha256(canonical).digest())

    def __repr__(self) -> str:
        return f"PushSigner(kid={self.kid!r}, issuer={self.issuer!r})"  # never the key

    @classmethod
    def generate(cls, **options: Any) -> PushSigner:
        """A fresh key, held in memory: receivers fetch the JWKS again after a restart (an
        unknown ``kid``); ``load`` keeps one across restarts."""
        return cls(_ed25519().Ed25519PrivateKey.generate(), **options)

    @classmethod
    def load(cls, path: str | os.PathLike[str], **options: Any) -> PushSigner:
        """The key in the PEM file at ``path`` (PKCS#8, unencrypted), made there (mode 0600) if
        the file does not exist."""
        file = Path(path)
        try:
            return cls._load(file, **options)
        except OSError as exc:
            raise ValueError(f"push key {str(file)!r}: {exc.strerror or exc}") from None

    @classmethod
    def _load(cls, file: Path, **options: Any) -> PushSigner:
        from cryptography.hazmat.primitives import serialization

        if not file.exists():
            key = _ed25519().Ed25519PrivateKey.generate()
            pem = key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
            return cls(key, **options)
        try:
            key = serialization.load_pem_private_key(file.read_bytes(), password=None)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"push key {str(file)!r}: not an unencrypted PEM key ({exc})"
            ) from None
        if not isinstance(key, _ed25519().Ed25519PrivateKey):
            raise ValueError(f"push key {str(file)!r}: an Ed25519 key is needed")
        return cls(key, **options)

    def jwks(self) -> JsonObject:
        """The public keys receivers check pushes with (a JWK Set, RFC 7517)."""
        return {"keys": [{**self._jwk, "kid": self.kid, "use": "sig", "alg": ALGORITHM}]}

    def sign(self, claims: Mapping[str, object]) -> str:
        """A compact JWS of ``claims``."""
        header = {"alg": ALGORITHM, "typ": "JWT", "kid": self.kid}
        signing_input = ".".join(
            _b64(json.dumps(part, separators=(",", ":")).encode()) for part in (header, claims)
        )
        return f"{signing_input}.{_b64(self._key.sign(signing_input.encode()))}"

    def headers(self, config: Mapping[str, object], body: bytes) -> dict[str, str]:
        """The push's JWT header for ``body`` POSTed to ``config["url"]`` (its audience)."""
        now = int(self.clock())
        claims = {
            "iss": self.issuer,
            "aud": str(config.get("url", "")),
            "iat": now,
            "exp": now + int(self.lifetime),
            "jti": uuid.uuid4().hex,
            "task_id": str(config.get("taskId", "")),
            "request_body_sha256": body_digest(body),
        }
        return {PUSH_JWT_HEADER: self.sign(claims)}


def verify_push(
    token: str,
    body: bytes,
    jwks: Mapping[str, JsonValue],
    *,
    audience: str,
    issuer: str | None = None,
    seen: MutableMapping[str, float] | None = None,
    now: float | None = None,
    leeway: float = LEEWAY,
) -> JsonObject:
    """For a push's receiver: the JWT's claims when ``token`` (the ``X-Mq9-Push-JWT`` header)
    was signed by a key of ``jwks`` (the sender's JWKS, fetched from where its operator says,
    never from the push), for exactly ``body``, to ``audience`` (the receiver's own URL, as its
    push config names it), and is within its life; else ``PushRefused`` saying why. ``seen``:
    the ``jti``s accepted so far, each to its ``exp`` (kept by the caller; expired ones are
    dropped here): a replay within the life is refused. ``issuer``: the ``iss`` expected."""
    if not isinstance(token, str) or not token or len(token) > MAX_JWT:
        raise PushRefused("the push carries no JWT (X-Mq9-Push-JWT)")
    parts = token.split(".")
    if len(parts) != 3:
        raise PushRefused("the push's JWT is not a compact JWS")
    raw = [
        _unb64(part, f"the push's JWT {name}") for part, name in zip(parts, _PARTS, strict=True)
    ]
    try:
        header, claims = (json.loads(part) for part in raw[:2])
    except (ValueError, UnicodeDecodeError):
        raise PushRefused("the push's JWT is not JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise PushRefused("the push's JWT is not JSON objects")
    # The algorithm is ours, not the token's to choose (no "none", no HMAC with a public key)
    if header.get("alg") != ALGORITHM:
        raise PushRefused(f"the push's JWT algorithm must be {ALGORITHM}")
    key = _key(jwks, header.get("kid"))
    try:
        key.verify(raw[2], f"{parts[0]}.{parts[1]}".encode())
    except Exception:  # cryptography's InvalidSignature, or a signature of the wrong length
        raise PushRefused("the push's JWT signature does not verify") from None
    _check_claims(claims, body, audience, issuer, time.time() if now is None else now, leeway)
    if seen is not None:
        moment = time.time() if now is None else now
        for jti, until in list(seen.items()):
            if until + leeway < moment:
                del seen[jti]
        if claims["jti"] in seen:
            raise PushRefused("the push was seen before (a replay)")
        seen[claims["jti"]] = float(claims["exp"])
    return claims


def _key(jwks: Mapping[str, JsonValue], kid: object) -> Any:
    for jwk in jwks.get("keys") or []:
        if isinstance(jwk, dict) and jwk.get("kid") == kid:
            if jwk.get("kty") != "OKP" or jwk.get("crv") != "Ed25519":
                raise PushRefused(f"key {str(kid)[:60]!r} is not an Ed25519 key")
            raw = _unb64(str(jwk.get("x", "")), f"key {str(kid)[:60]!r}'s x")
            try:
                return _ed25519().Ed25519PublicKey.from_public_bytes(raw)
            except ValueError:
                raise PushRefused(f"key {str(kid)[:60]!r} is not an Ed25519 key") from None
    raise PushRefused(f"the push's key {str(kid)[:60]!r} is not in the sender's JWKS")


def _check_claims(
    claims: JsonObject,
    body: bytes,
    audience: str,
    issuer: str | None,
    now: float,
    leeway: float,
) -> None:
    if claims.get("request_body_sha256") != body_digest(body):
        raise PushRefused("the push's body is not the one its JWT signs")
    if claims.get("aud") != audience:
        raise PushRefused("the push's JWT is for another receiver (aud)")
    if issuer is not None and claims.get("iss") != issuer:
        raise PushRefused("the push's JWT is from another sender (iss)")
    iat, exp = claims.get("iat"), claims.get("exp")
    if not isinstance(iat, int) or not isinstance(exp, int):
        raise PushRefused("the push's JWT has no iat/exp")
    if iat > now + leeway:
        raise PushRefused("the push's JWT is from the future")
    if exp + leeway < now:
        raise PushRefused("the push's JWT has expired")
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise PushRefused("the push's JWT has no jti")
