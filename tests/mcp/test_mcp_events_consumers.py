"""MCP Events' webhooks as their consumers take them (issue #117): a receiver that verifies with
the third-party ``standardwebhooks`` package (PyPI, Standard Webhooks' own Python library, not
our code) gets mq9-mcp's verification envelope and events, checks every signature, acks what it
verified and refuses what it did not; an event's ``webhook-id`` is its ``eventId`` on every try
(what ChatGPT and the Vercel AI SDK match and deduplicate by); a control envelope's id is one
per message and the same on every try of it, across rounds too (the SEP's ``msg_<type>_<random>``
"so that receivers can deduplicate retries": on c38a8fd8 a gap envelope got a new random id on
each round, so a receiver that had taken it took it again)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from typing import Any

import httpx2 as httpx
import pytest
from standardwebhooks import Webhook as StandardWebhook
from standardwebhooks.webhooks import WebhookVerificationError

from mq9_mcp import webhooks
from mq9_mcp.events import ARRIVED, EVENT_TYPES, EXTENSION, Batch, Source
from mq9_mcp.webhook_delivery import ATTEMPTS, Answer
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import LEGACY, MODERN, Peer, http_server
from testbed.support.waiting import until

WAIT = 20.0


class Consumer:
    """A webhook endpoint: every POST verified by ``standardwebhooks`` with the secret it
    registered (unverified: 401, and nothing taken), a verification envelope's challenge
    echoed, an event acked 204 unless ``fail`` asks a 503 first; each verified body kept with
    its headers."""

    def __init__(self, secret: str) -> None:
        self.port = unclaimed_port()
        self.check = StandardWebhook(secret)
        self.taken: asyncio.Queue[tuple[dict[str, str], Any]] = asyncio.Queue()
        self.refused = 0
        self.fail = 0
        self.largest = 0  # bytes, of the bodies POSTed

    async def __aenter__(self) -> Consumer:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/mq9"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        fields = (h.partition(":") for h in head.decode().split("\r\n")[1:] if h)
        headers = {k.strip().lower(): v.strip() for k, _, v in fields}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.largest = max(self.largest, len(body))
        answer, status = b"", 204
        try:
            message = self.check.verify(body, headers)
        except WebhookVerificationError:
            self.refused += 1
            status = 401
        else:
            if message.get("type") == "verification":
                answer, status = json.dumps({"challenge": message["challenge"]}).encode(), 200
            elif self.fail:
                self.fail -= 1
                status = 503
            await self.taken.put((headers, message))
        writer.write(
            f"HTTP/1.1 {status} X\r\ncontent-length: {len(answer)}\r\nconnection: close\r\n\r\n"
            .encode() + answer
        )  # fmt: skip
        await writer.drain()
        writer.close()

    async def next(self) -> tuple[dict[str, str], Any]:
        return await asyncio.wait_for(self.taken.get(), WAIT)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_a_standard_webhooks_consumer_verifies_and_acks_and_keys_events_by_event_id():
    token = "c" * 40
    secret = new_secret()
    args = ("--server", "memory://", "--auth-token", token, "--webhook-hosts", "127.0.0.1")
    with http_server(*args) as url:
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=WAIT, headers=auth) as http, Consumer(secret) as hook:
            alice = Peer(http, url, MODERN, "alice")
            await alice.data("create_mailbox", name="inbox.c")
            sub = {"name": ARRIVED, "arguments": {"mail_address": "inbox.c"}}
            delivery = {"mode": "webhook", "url": hook.url, "secret": secret}
            made = (await alice.rpc("events/subscribe", **sub, delivery=delivery))["result"]
            asked, challenge = await hook.next()
            assert challenge["type"] == "verification"
            assert asked["webhook-id"].startswith("msg_verification_")
            assert asked["x-mcp-subscription-id"] == made["id"]
            hook.fail = 1  # the first try is refused: the retry is the same message
            sent = await alice.data("send_message", mail_address="inbox.c", payload="p")
            first, event = await hook.next()
            again, same = await hook.next()
            assert same == event and event["data"]["msg_id"] == sent["msg_id"]
            assert first["webhook-id"] == again["webhook-id"] == event["eventId"]
            assert again["x-mcp-subscription-id"] == made["id"]
            assert hook.refused == 0  # every POST verified with the consumer's secret
            assert hook.largest < 1024  # an event never carries the payload (the SEP: 256 KiB)

            async def acked() -> bool:  # a refresh says where delivery stands
                status = await alice.rpc("events/subscribe", **sub, delivery=delivery)
                state = status["result"]
                return state["deliveryStatus"]["lastError"] is None and state["cursor"] == str(
                    sent["msg_id"] + 1
                )

            await until(acked, timeout=WAIT, what="the consumer's ack taken")
    # and a body that is not what was signed is refused by the same library
    with pytest.raises(WebhookVerificationError):
        StandardWebhook(secret).verify(json.dumps({**event, "name": "x"}), first)


class _Reader:
    """A mailbox read that always had to pass messages over (``truncated``) up to msg_id 7."""

    async def after(self, _source: Source, cursor: int, _limit: int = 100) -> Batch:
        return Batch([], max(cursor, 7), truncated=True)


class _Watches:
    def stop(self, _hook: object) -> None:
        pass


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_events_capability_declares_a_top_level_events_capability_only_when_asked():
    """Shipped webhook consumers' clients (the Vercel AI SDK's, ChatGPT by a secondary account)
    subscribe only to a server declaring a top-level ``capabilities.events``: the operator's
    ``--events-capability`` adds it to ``initialize`` and ``server/discover``, beside the
    extension SEP-3415 declares; without it the capabilities are the spec's alone."""
    token = "c" * 40
    for option, declared in ((), False), (("--events-capability",), True):
        with http_server("--server", "memory://", "--auth-token", token, *option) as url:
            auth = {"Authorization": f"Bearer {token}"}
            async with httpx.AsyncClient(timeout=WAIT, headers=auth) as http:
                discovered = await Peer(http, url, MODERN, "alice").rpc("server/discover")
                legacy = Peer(http, url, LEGACY, "bob")
                opened = await legacy.rpc(
                    "initialize", protocolVersion=LEGACY, capabilities={},
                    clientInfo={"name": "bob", "version": "1"},
                )  # fmt: skip
            modern = discovered["result"]["capabilities"]
            old = opened["result"]["capabilities"]
            assert modern["extensions"][EXTENSION] == {}  # the extension, always
            assert old["experimental"][EXTENSION] == {}
            assert ("events" in modern, "events" in old) == (declared, declared), option
            if declared:
                assert modern["events"] == old["events"] == {}


async def test_a_gap_envelope_keeps_its_webhook_id_across_failed_rounds():
    """Each try of one gap envelope carries one ``webhook-id``, in a round and after it."""
    now = [0.0]
    ids: list[str] = []

    async def post(_url: str, body: bytes, headers: dict[str, str]) -> Answer:
        assert json.loads(body) == {"type": "gap", "cursor": "7"}
        ids.append(headers["webhook-id"])
        return Answer(503)  # the receiver is down: every try fails

    async def sleep(seconds: float) -> None:
        now[0] += seconds

    hooks = webhooks.Webhooks(
        _Reader(), _Watches(), None, lambda _ctx: "alice",  # type: ignore[arg-type]
        clock=lambda: now[0], post=post, sleep=sleep,
    )  # fmt: skip
    source = Source(EVENT_TYPES[ARRIVED], "inbox.g", "inbox.g")
    hook = webhooks.Webhook(
        id="sub_x", owner="alice", source=source, url="https://r.example/h",
        secret=new_secret(), cursor=0, expires=100.0, ttl_ms=100_000,
    )  # fmt: skip
    hook.arrived.set()
    await hooks._deliver(hook)  # rounds until the subscription's TTL ends
    assert len(ids) > ATTEMPTS  # more than one round was tried
    assert len(set(ids)) == 1 and ids[0].startswith("msg_gap_"), ids
