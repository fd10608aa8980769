"""A push's JWT has one spelling (issue 88, item 7). A JWS is base64url without padding (RFC 7515
section 2), and before, ``verify_push`` read standard base64 too: the gateway's signature
re-spelled with ``+`` and ``/`` (or padded with ``=``, or its last character's unused bits set)
verified as the same push. Now only the spelling the signer made is read: every other spelling
of the header, the claims or the signature is refused, saying which part and why; the proper
token, beside them, is accepted."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives.asymmetric import ed25519

from mq9_platform.a2a.push_auth import PushRefused, PushSigner, verify_push

URL = "https://receiver.example/push"
BODY = b'{"task": {"id": "t1"}}'
NOW = 1_700_000_000.0


def _signer() -> tuple[PushSigner, ed25519.Ed25519PrivateKey]:
    key = ed25519.Ed25519PrivateKey.generate()
    return PushSigner(key, clock=lambda: NOW), key


def _token(signer: PushSigner, *, needing: str = "") -> str:
    """A push's JWT from ``signer``, made again until its signature holds a character of
    ``needing`` (a fresh ``jti`` each time: Ed25519 signs each differently)."""
    for _ in range(1000):
        token = signer.headers({"url": URL, "taskId": "t1"}, BODY)["X-Mq9-Push-JWT"]
        if not needing or set(token.split(".")[2]) & set(needing):
            return token
    raise AssertionError(f"no signature with any of {needing!r}")  # 1000 tries: never seen


def _verify(token: str, jwks: dict) -> dict:
    return verify_push(token, BODY, jwks, audience=URL, now=NOW)


def _standard(part: str) -> str:
    """The same bytes in standard base64 (``+/``), unpadded."""
    return part.replace("-", "+").replace("_", "/")


def test_the_signers_own_spelling_is_accepted():
    signer, _key = _signer()
    claims = _verify(_token(signer), signer.jwks())
    assert claims["aud"] == URL


def test_the_signature_re_spelled_in_standard_base64_is_refused():
    signer, _key = _signer()
    head, claims, signature = _token(signer, needing="-_").split(".")
    jwks = signer.jwks()
    with pytest.raises(PushRefused, match=r"signature is not base64url.*'[+/]'"):
        _verify(f"{head}.{claims}.{_standard(signature)}", jwks)
    # padded, as base64 pads it: another spelling of the same bytes
    with pytest.raises(PushRefused, match=r"signature is not base64url.*'='"):
        _verify(f"{head}.{claims}.{signature}==", jwks)


def test_a_signature_with_its_unused_bits_set_is_refused():
    """64 bytes are 86 characters: the last one carries 2 bits and 4 unused ones, which
    base64 decoders skip; setting them spells the same signature otherwise."""
    signer, _key = _signer()
    head, claims, signature = _token(signer).split(".")
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    last = alphabet.index(signature[-1])
    other = signature[:-1] + alphabet[last | 1]  # an unused bit set: the same bytes
    assert base64.urlsafe_b64decode(other + "==") == base64.urlsafe_b64decode(signature + "==")
    with pytest.raises(PushRefused, match=r"signature is not base64url.*unused bits"):
        _verify(f"{head}.{claims}.{other}", signer.jwks())


def test_a_header_or_claims_re_spelled_and_signed_so_are_refused():
    """Even signed by the sender's own key, a header or claims in another spelling than
    base64url without padding is no JWS: refused for its spelling, before any signature."""
    signer, key = _signer()
    head, claims, _signature = _token(signer).split(".")

    def signed(head_part: str, claims_part: str) -> str:
        signing_input = f"{head_part}.{claims_part}"
        raw = key.sign(signing_input.encode())
        return f"{signing_input}.{base64.urlsafe_b64encode(raw).rstrip(b'=').decode()}"

    jwks = signer.jwks()
    padded_claims = claims + "=" * (-len(claims) % 4 or 4)
    standard_head = base64.b64encode(base64.urlsafe_b64decode(head + "==")).decode()
    assert standard_head != head  # the header's bytes are no multiple of 3: it is padded
    for token, part in (
        (signed(head, padded_claims), "claims"),
        (signed(standard_head, claims), "header"),
        (signed(head, claims[:10] + "\n" + claims[10:]), "claims"),
    ):
        with pytest.raises(PushRefused, match=f"JWT {part} is not base64url"):
            _verify(token, jwks)
