"""A push a bystander cannot forge (#77 item 11). Before, the gateway signed each push with the
token the push carries in clear (``X-A2A-Notification-Token``): whoever saw one push could sign
forged task states that the receiver's check accepted. Now each push carries a JWT signed with
the gateway's own key (a2a/push_auth.py), which no push carries; the receiver checks it against
the gateway's published JWKS.

The bystander here has everything one push shows (its body and every header) and tries what it
can: a forged body under the captured headers, the old token signature, a JWT of its own key
(under the gateway's key id), algorithm games, the captured push replayed to the same receiver
and to another one, and the captured push after its life. Each is POSTed to a real receiver
that checks as docs/a2a.md tells receivers to, and refused; the gateway's own pushes, beside
them, verify (with ``verify_push`` and with PyJWT, an independent JOSE library)."""

from __future__ import annotations

import base64
import json
import secrets

import httpx
import jwt as pyjwt
import pytest
from a2a.types.a2a_pb2 import TaskPushNotificationConfig

from mq9_platform.a2a import mail as w
from mq9_platform.a2a.push_auth import (
    PUSH_JWT_EXTENSION,
    PUSH_JWT_HEADER,
    PushRefused,
    PushSigner,
    verify_push,
)
from mq9_platform.wake.deliver import SIGNATURE_HEADER, TOKEN_HEADER, sign, verify
from tests.integration.a2a.test_gateway_push import pushing_gateway
from tests.langchain.a2a.test_gateway import ALICE, a2a_client, gateway, request, served
from tests.platform.a2a.push_support import Receiver, fetch_jwks

pytestmark = pytest.mark.slow

TOKEN = "alice-push-" + "7" * 16


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _parts(token: str) -> tuple[dict, dict]:
    head, claims, _ = token.split(".")
    pad = lambda text: text + "=" * (-len(text) % 4)  # noqa: E731
    return (
        json.loads(base64.urlsafe_b64decode(pad(head))),
        json.loads(base64.urlsafe_b64decode(pad(claims))),
    )


def _forged_body(body: bytes) -> bytes:
    """The captured task, its result replaced: what a bystander would have the receiver act on."""
    task = json.loads(body)["task"]
    task["status"] = {"state": w.FAILED}
    task["artifacts"] = [{"artifactId": "x", "parts": [{"text": "wire the money to mallory"}]}]
    return json.dumps({"task": task}).encode()


async def test_a_bystander_with_one_captured_push_cannot_forge_another(client):
    with Receiver() as receiver, Receiver() as elsewhere:
        async with pushing_gateway(client) as url, a2a_client(url, ALICE) as (alice, _card):
            receiver.keys = elsewhere.keys = await fetch_jwks(url)
            task = [e async for e in alice.send_message(request("hello"))][-1].task
            await alice.create_task_push_notification_config(
                TaskPushNotificationConfig(task_id=task.id, url=receiver.url, token=TOKEN)
            )
            async with served(client, _upper()):
                pushed = await receiver.until(TOKEN, w.COMPLETED)
        assert pushed[-1]["artifacts"][0]["parts"][0]["text"] == "HELLO"
        assert receiver.refused == []  # every push of the gateway's verified on arrival
        body, headers = receiver.requests[-1]  # the bystander saw this one, whole
        captured = headers[PUSH_JWT_HEADER]
        jwks = receiver.jwks()

        # The legitimate push verifies, also for a JOSE library that is not ours
        claims = verify_push(captured, body, jwks, audience=receiver.url)
        assert claims["task_id"] == task.id and claims["aud"] == receiver.url
        key = pyjwt.PyJWKSet.from_dict(jwks).keys[0]
        decoded = pyjwt.decode(captured, key.key, algorithms=["EdDSA"], audience=receiver.url)
        assert decoded["request_body_sha256"] == claims["request_body_sha256"]
        assert TOKEN not in captured and "d" not in jwks["keys"][0]  # no secret in either

        forged = _forged_body(body)
        # what the old check (the token as the HMAC key) accepted from anyone who saw a push
        assert verify(TOKEN, forged, sign(TOKEN, forged))
        head, claims = _parts(captured)
        mine = PushSigner.generate()
        as_gateway = dict(head)  # the gateway's key id on a JWT of the bystander's key
        own_signed = mine.sign({**claims, "request_body_sha256": _sha(forged)})
        under_kid = ".".join([_b64(json.dumps(as_gateway).encode()), *own_signed.split(".")[1:]])
        unsigned = ".".join(
            [_b64(json.dumps({"alg": "none", "kid": head["kid"]}).encode()),
             _b64(json.dumps({**claims, "request_body_sha256": _sha(forged)}).encode()), ""]
        )  # fmt: skip
        # HS256 keyed with the gateway's public key (the old confusion attack)
        public_x = base64.urlsafe_b64decode(jwks["keys"][0]["x"] + "==")
        hmac_public = pyjwt.encode(
            {**claims, "request_body_sha256": _sha(forged)},
            public_x,
            algorithm="HS256",
            headers={"kid": head["kid"]},
        )
        attempts = {
            "forged body, captured headers": (forged, dict(headers)),
            "forged body signed with the token, as before": (
                forged,
                {TOKEN_HEADER: TOKEN, SIGNATURE_HEADER: sign(TOKEN, forged)},
            ),
            "the token's signature beside the captured JWT": (
                forged,
                {**headers, SIGNATURE_HEADER: sign(TOKEN, forged)},
            ),
            "a JWT of the bystander's own key": (forged, {**headers, PUSH_JWT_HEADER: own_signed}),
            "its own key under the gateway's kid": (
                forged,
                {**headers, PUSH_JWT_HEADER: under_kid},
            ),
            "alg none": (forged, {**headers, PUSH_JWT_HEADER: unsigned}),
            "HS256 with the public key": (forged, {**headers, PUSH_JWT_HEADER: hmac_public}),
            "the captured push replayed": (body, dict(headers)),
        }
        before = len(receiver.requests)
        async with httpx.AsyncClient(timeout=10) as http:
            for what, (sent, sent_headers) in attempts.items():
                answer = await http.post(receiver.url, content=sent, headers=_plain(sent_headers))
                assert answer.status_code == 401, what
            # the captured push POSTed to another receiver: not its audience
            answer = await http.post(elsewhere.url, content=body, headers=_plain(headers))
            assert answer.status_code == 401
        assert len(receiver.requests) == before  # none of them was taken
        assert len(receiver.refused) == len(attempts)
        assert any("replay" in why for why in receiver.refused)
        assert "another receiver" in elsewhere.refused[0]
        # and the captured one once its life is over (a receiver with no replay memory)
        with pytest.raises(PushRefused, match="expired"):
            verify_push(captured, body, jwks, audience=receiver.url, now=claims["exp"] + 60)
        assert receiver.tasks(TOKEN) == pushed  # what was taken: the gateway's pushes alone


async def test_the_gateway_publishes_its_push_keys_and_names_them_in_the_card(client):
    """Only the public half is published (no ``d``); the card says where (its extension)."""
    async with pushing_gateway(client) as url, a2a_client(url, ALICE) as (_alice, card):
        jwks = await fetch_jwks(url)
        async with httpx.AsyncClient(timeout=10) as http:
            root = (await http.get(url.split("/a2a/")[0] + "/.well-known/jwks.json")).json()
        assert root == jwks and [set(k) for k in jwks["keys"]] == [
            {"kty", "crv", "x", "kid", "use", "alg"}
        ]
        # beside the resume extension every gateway card has (#101)
        [extension] = [e for e in card.capabilities.extensions if e.uri == PUSH_JWT_EXTENSION]
        assert extension.params["jwksUrl"].endswith("/.well-known/jwks.json")
        assert not extension.required
    async with gateway(client) as url, a2a_client(url, ALICE) as (_alice, card):
        assert not card.capabilities.push_notifications
        assert [e.uri for e in card.capabilities.extensions] == [w.RESUME_EXTENSION]


def test_a_push_key_file_is_made_private_and_kept(tmp_path):
    path = tmp_path / "push-key.pem"
    first = PushSigner.load(path)
    assert path.stat().st_mode & 0o777 == 0o600
    assert PushSigner.load(path).kid == first.kid  # the same key after a restart
    assert "PRIVATE" not in repr(first)
    (tmp_path / "junk.pem").write_text("not a key")
    with pytest.raises(ValueError, match="not an unencrypted PEM key"):
        PushSigner.load(tmp_path / "junk.pem")
    with pytest.raises(ValueError, match="push key"):
        PushSigner.load(tmp_path / "no-such-dir" / "key.pem")


def test_bad_tokens_get_a_reason_not_a_crash():
    signer = PushSigner.generate()
    jwks = signer.jwks()
    for junk in ("", "a.b", "a.b.c", "!!.!!.!!", "x" * 5000, secrets.token_urlsafe(40)):
        with pytest.raises(PushRefused):
            verify_push(junk, b"{}", jwks, audience="http://r/")
    good = signer.headers({"url": "http://r/", "taskId": "t1"}, b"{}")[PUSH_JWT_HEADER]
    assert verify_push(good, b"{}", jwks, audience="http://r/", issuer="")["task_id"] == "t1"
    with pytest.raises(PushRefused, match="another sender"):
        verify_push(good, b"{}", jwks, audience="http://r/", issuer="someone")
    with pytest.raises(PushRefused, match="not in the sender's JWKS"):
        verify_push(good, b"{}", PushSigner.generate().jwks(), audience="http://r/")


def _sha(body: bytes) -> str:
    import hashlib

    return hashlib.sha256(body).hexdigest()


def _plain(headers: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in headers.items() if k.lower() != "content-length"}


def _upper():
    from testbed.support.a2a_support import text_graph

    return text_graph(str.upper)
