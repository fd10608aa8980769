"""mq9-mcp as an MCP Events source (#71, ``mq9_mcp/events.py``, ``webhooks.py``): a client that
knows only the extension's shapes (docs/mcp-events.md) gets mail arrivals by poll, by a
stream and by webhook, over HTTP and stdio, resumes from its cursor after a disconnect with no gap
and no duplicate, and a second client's subscriptions stay its own. Events consume nothing."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import httpx2 as httpx
import pytest

from mq9_mcp import events, webhooks
from mq9_mcp.events import ARRIVED, DEAD_LETTERED, EXTENSION, Reader, Source
from mq9_platform.client.connection import Mq9Connection
from testbed.devbroker import DevBroker
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import ACCEPT, LEGACY, MODERN, ROOT, Peer, http_server, server_env
from testbed.support.waiting import until

WAIT = 20.0  # seconds any one thing a test waits for may take


def arrived(mail_address: str, **more: Any) -> dict[str, Any]:
    return {"name": ARRIVED, "arguments": {"mail_address": mail_address}, **more}


async def poll(peer: Peer, subscription: dict[str, Any], **more: Any) -> dict[str, Any]:
    answer = await peer.rpc("events/poll", **subscription, **more)
    assert "result" in answer, answer
    return answer["result"]


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_the_extension_is_declared_and_lists_its_event_types():
    with http_server("--server", "memory://") as url:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            modern = await Peer(http, url, MODERN, "alice").rpc("server/discover")
            assert EXTENSION in modern["result"]["capabilities"]["extensions"]
            legacy = await Peer(http, url, LEGACY, "alice").rpc(
                "initialize", protocolVersion=LEGACY, capabilities={},
                clientInfo={"name": "alice", "version": "1"},
            )  # fmt: skip
            assert EXTENSION in legacy["result"]["capabilities"]["experimental"]
            listed = (await Peer(http, url, MODERN, "alice").rpc("events/list"))["result"]
            types = {t["name"]: t for t in listed["events"]}
            assert set(types) == {ARRIVED, DEAD_LETTERED}
            for kind in types.values():
                assert kind["inputSchema"]["required"] == ["mail_address"]
                assert "payload" not in kind["payloadSchema"]["properties"]
                # the SEP's descriptor (and a title); replay is said by cursors not null
                assert set(kind) == {"name", "title", "description", "inputSchema",
                                     "payloadSchema", "delivery"}, kind  # fmt: skip
                # no --webhook-hosts (nor a principal): webhook is not advertised
                assert kind["delivery"] == ["poll", "push"]


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_poll_gives_each_arrival_once_in_msg_id_order_without_payload_or_consuming():
    with http_server("--server", "memory://") as url:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            alice = Peer(http, url, MODERN, "alice")
            await alice.data("create_mailbox", name="inbox.alice")
            sub = arrived("inbox.alice")
            now = await poll(alice, sub)
            assert now["events"] == [] and now["cursor"] == "0"
            sent = []
            for i, priority in enumerate(["normal", "critical", "urgent", "normal"]):
                done = await alice.data("send_message", mail_address="inbox.alice",
                                        payload=f"secret {i}", priority=priority, key=f"k{i}",
                                        tags=["t"])  # fmt: skip
                sent.append(done["msg_id"])
            first = await poll(alice, sub, cursor=now["cursor"], maxEvents=3)
            assert [e["data"]["msg_id"] for e in first["events"]] == sent[:3]
            assert first["hasMore"] is True and first["truncated"] is False
            assert first["nextPollMs"] > 0 and first["resultType"] == "complete"
            # maxEvents is a cap: one past the server's own (100) is the server's own
            assert len((await poll(alice, sub, cursor=now["cursor"], maxEvents=500))["events"]) == 4
            event = first["events"][1]
            assert event["name"] == ARRIVED and event["eventId"] and event["timestamp"]
            assert event["data"]["priority"] == "critical" and event["data"]["key"] == "k1"
            assert event["data"]["tags"] == ["t"] and "secret" not in json.dumps(first)
            assert event["cursor"] == str(sent[1] + 1)
            rest = await poll(alice, sub, cursor=first["cursor"])
            assert [e["data"]["msg_id"] for e in rest["events"]] == sent[3:]
            assert (await poll(alice, sub, cursor=rest["cursor"]))["events"] == []
            # resumed from any event's cursor: exactly what came after it
            again = await poll(alice, sub, cursor=first["events"][0]["cursor"])
            assert [e["data"]["msg_id"] for e in again["events"]] == sent[1:]
            # nothing was consumed: the group still hands every message out
            fetched = await alice.data("fetch_messages", mail_address="inbox.alice")
            assert sorted(m["msg_id"] for m in fetched["messages"]) == sent


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_bad_subscriptions_get_the_extensions_errors():
    args = ("--server", "memory://", "--allowed-mailboxes", "team")
    with http_server(*args) as url:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            alice = Peer(http, url, MODERN, "alice")
            await alice.data("create_mailbox", name="team.box")

            async def error(**params: Any) -> dict[str, Any]:
                answer = await alice.rpc("events/poll", **params)
                assert "error" in answer, answer
                return answer["error"]

            # SEP-3415's Error Handling: NotFound -32023 (data.kind "event"), Forbidden -32024,
            # InvalidParams -32602; data.reason names which of ours
            cases = [
                ("unknown_event", {"name": "mailbox.exploded", "arguments": {}}, -32023,
                 {"kind": "event"}),
                ("invalid_arguments", {"name": ARRIVED, "arguments": {"mailbox": "team.box"}},
                 -32602, {}),
                ("forbidden", arrived("other.box"), -32024, {}),
                ("not_found", arrived("team.missing", cursor="0"), -32602, {}),
                ("invalid_cursor", arrived("team.box", cursor="-1"), -32602, {}),
                ("invalid_arguments", arrived("team.box", maxEvents=0), -32602, {}),
            ]  # fmt: skip
            for reason, params, code, more in cases:
                found = await error(**params)
                assert found["code"] == code, found
                assert found["data"] == {"reason": reason, **more}, found
                assert found["message"], found
            long = await error(**arrived("team.box", cursor="x" * 5000))
            assert long["message"].count("x") < 100


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_dead_lettered_messages_are_events_of_the_mailbox_they_left():
    with http_server("--server", "memory://") as url:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            alice = Peer(http, url, MODERN, "alice")
            await alice.data("create_mailbox", name="jobs")
            sub = {"name": DEAD_LETTERED, "arguments": {"mail_address": "jobs"}}
            start = await poll(alice, sub)  # no dead-letter mailbox yet: empty, from now
            assert start == {**start, "events": [], "cursor": "0"}
            sent = await alice.data("send_message", mail_address="jobs", payload="poison")
            await alice.data("fetch_messages", mail_address="jobs")
            await alice.data("ack_messages", mail_address="jobs", msg_id=sent["msg_id"],
                             set_aside="cannot parse it")  # fmt: skip
            found = await poll(alice, sub, cursor=start["cursor"])
            [event] = found["events"]
            assert event["name"] == DEAD_LETTERED
            assert event["data"]["mail_address"] == "jobs.dlq"


@contextlib.asynccontextmanager
async def http_stream(
    http: httpx.AsyncClient, url: str, worker: str, **params: Any
) -> AsyncIterator[asyncio.Queue[dict[str, Any]]]:
    """An events/stream request over streamable HTTP; its notifications (or its final answer)
    as they come, until the block ends and the connection with it."""
    meta = {"io.modelcontextprotocol/protocolVersion": MODERN,
            "io.modelcontextprotocol/clientInfo": {"name": worker, "version": "1"},
            "io.modelcontextprotocol/clientCapabilities": {}}  # fmt: skip
    message = {"jsonrpc": "2.0", "id": 1, "method": "events/stream",
               "params": {**params, "_meta": meta}}  # fmt: skip
    headers = {**ACCEPT, "mcp-protocol-version": MODERN, "mcp-method": "events/stream",
               "mq9-worker": worker}  # fmt: skip
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def read() -> None:
        async with http.stream("POST", url, json=message, headers=headers) as response:
            if response.headers.get("content-type", "").startswith("application/json"):
                await got.put(json.loads(await response.aread()))
                return
            async for line in response.aiter_lines():
                if line.startswith("data:") and line[5:].strip():
                    await got.put(json.loads(line[5:]))

    reading = asyncio.create_task(read())
    try:
        yield got
    finally:
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reading


async def next_of(
    got: asyncio.Queue[dict[str, Any]], method: str, wait: float = WAIT
) -> dict[str, Any]:
    while True:
        message = await asyncio.wait_for(got.get(), wait)
        assert "error" not in message, message
        if message.get("method") == method:
            return message["params"]


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_a_stream_pushes_arrivals_and_resumes_after_a_disconnect_without_gap_or_duplicate():
    with http_server("--server", "memory://") as url:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            alice = Peer(http, url, MODERN, "alice")
            await alice.data("create_mailbox", name="inbox.s")
            sub = arrived("inbox.s")
            async with http_stream(http, url, "alice", **sub) as got:
                active = await next_of(got, "notifications/events/active")  # first, as the SEP says
                assert active["cursor"] == "0" and active["truncated"] is False
                assert active["_meta"] == {"io.modelcontextprotocol/subscriptionId": 1}
                one = await alice.data("send_message", mail_address="inbox.s", payload="1")
                event = await next_of(got, "notifications/events/event")
                assert event["data"]["msg_id"] == one["msg_id"]
                cursor = event["cursor"]
            # disconnected: two more arrive meanwhile
            missed = [
                (await alice.data("send_message", mail_address="inbox.s", payload=p))["msg_id"]
                for p in ("2", "3")
            ]
            async with http_stream(http, url, "alice", **sub, cursor=cursor) as got:
                assert (await next_of(got, "notifications/events/active"))["cursor"] == cursor
                seen = [(await next_of(got, "notifications/events/event"))["data"]["msg_id"]
                        for _ in missed]  # fmt: skip
                assert seen == missed
                four = await alice.data("send_message", mail_address="inbox.s", payload="4")
                event = await next_of(got, "notifications/events/event")
                assert event["data"]["msg_id"] == four["msg_id"]  # not "3" again


@pytest.mark.slow  # starts the dev broker and mq9-mcp (processes)
async def test_a_stream_says_the_broker_is_away_with_an_error_notification_and_goes_on():
    """SEP-3415's ``notifications/events/error``: a read that failed (the broker gone) is told
    on the stream, which stays open; its next heartbeat still comes."""
    with DevBroker("--port", "0") as broker, http_server("--server", broker.url) as url:
        async with httpx.AsyncClient(timeout=httpx.Timeout(WAIT, read=120)) as http:
            alice = Peer(http, url, MODERN, "alice")
            await alice.data("create_mailbox", name="inbox.away")
            async with http_stream(http, url, "alice", **arrived("inbox.away")) as got:
                await next_of(got, "notifications/events/active")
                broker.stop()
                # the stream looks again at its next heartbeat (15 s), then the read fails
                error = await next_of(got, "notifications/events/error", wait=90)
                assert error["error"]["code"] == -32603, error
                assert error["error"]["data"] == {"reason": "unavailable"}, error
                assert error["_meta"] == {"io.modelcontextprotocol/subscriptionId": 1}
                await next_of(got, "notifications/events/heartbeat", wait=90)


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_streams_count_in_their_clients_watch_limits_until_they_close():
    with http_server("--server", "memory://") as url:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            alice = Peer(http, url, MODERN, "alice")
            await alice.data("create_mailbox", name="inbox.l")
            sub = arrived("inbox.l")
            async with contextlib.AsyncExitStack() as stack:
                for _ in range(8):  # watch.MAX_STREAMS_PER_OWNER
                    got = await stack.enter_async_context(http_stream(http, url, "alice", **sub))
                    await next_of(got, "notifications/events/active")
                async with http_stream(http, url, "alice", **sub) as got:
                    refused = (await asyncio.wait_for(got.get(), WAIT))["error"]
                    assert refused["code"] == -32025  # SEP-3415's ResourceExhausted
                    assert refused["data"] == {"reason": "too_many_subscriptions",
                                               "limit": "subscriptions"}  # fmt: skip
            # the streams closed (the client went away): their places are free again
            deadline = asyncio.get_running_loop().time() + WAIT
            while True:
                async with http_stream(http, url, "alice", **sub) as got:
                    first = await asyncio.wait_for(got.get(), WAIT)
                if "error" not in first or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert first["method"] == "notifications/events/active", first


class Receiver:
    """A webhook receiver on loopback, as SEP-3415 has one: echoes a verification envelope's
    challenge (unless ``echo`` is off), records each other POST, and answers the statuses
    queued (then 200)."""

    def __init__(self) -> None:
        self.port = unclaimed_port()
        self.posts: asyncio.Queue[tuple[dict[str, str], bytes]] = asyncio.Queue()
        self.verifications: list[tuple[dict[str, str], bytes]] = []
        self.statuses: list[int] = []
        self.echo = True

    async def __aenter__(self) -> Receiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.server.close()
        await self.server.wait_closed()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")[1:]
        fields = (h.partition(":") for h in lines if h)
        headers = {k.strip().lower(): v.strip() for k, _, v in fields}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        message = json.loads(body)
        answer = b""
        if message.get("type") == "verification":
            self.verifications.append((headers, body))
            status = 200
            if self.echo:
                answer = json.dumps({"challenge": message["challenge"]}).encode()
        else:
            status = self.statuses.pop(0) if self.statuses else 200
            await self.posts.put((headers, body))
        head = f"HTTP/1.1 {status} X\r\ncontent-length: {len(answer)}\r\nconnection: close\r\n\r\n"
        writer.write(head.encode() + answer)
        await writer.drain()
        writer.close()

    async def next(self) -> tuple[dict[str, str], bytes]:
        return await asyncio.wait_for(self.posts.get(), WAIT)


def new_secret() -> str:
    """A client's secret, as the SEP has the client make it: whsec_ and 32 random bytes."""
    return "whsec_" + base64.b64encode(os.urandom(32)).decode()


def verified(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """Standard Webhooks' check, written from its text: v1 signatures of id.timestamp.body."""
    key = base64.b64decode(secret.split("_", 1)[1])
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    signatures = headers["webhook-signature"].split()
    given = [s.split(",", 1)[1] for s in signatures if s.startswith("v1,")]
    return any(hmac.compare_digest(expected, g) for g in given)


def hook_of(url: str, secret: str, **more: Any) -> dict[str, Any]:
    return {"delivery": {"mode": "webhook", "url": url, "secret": secret}, **more}


def webhook_server(token: str, hosts: str = "127.0.0.1") -> contextlib.AbstractContextManager[str]:
    return http_server("--server", "memory://", "--auth-token", token, "--webhook-hosts", hosts)


@contextlib.asynccontextmanager
async def webhook_world(token: str, hosts: str = "127.0.0.1") -> AsyncIterator[tuple]:
    """An mq9-mcp that delivers webhooks to ``hosts``, a client authorized with ``token``,
    a receiver on loopback, and alice: ``(http, url, hook, alice)``."""
    with webhook_server(token, hosts) as url:
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=WAIT, headers=auth) as http, Receiver() as hook:
            yield http, url, hook, Peer(http, url, MODERN, "alice")


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_webhooks_are_signed_retried_kept_to_listed_hosts_and_each_clients_own():
    token = "t" * 40
    with webhook_server(token) as url:
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=WAIT, headers=auth) as http, Receiver() as hook:
            alice, bob = Peer(http, url, MODERN, "alice"), Peer(http, url, MODERN, "bob")
            await alice.data("create_mailbox", name="inbox.w")
            listed = (await alice.rpc("events/list"))["result"]
            assert all(t["delivery"] == ["poll", "push", "webhook"] for t in listed["events"])
            sub = arrived("inbox.w")
            secret = new_secret()
            refused = await alice.rpc("events/subscribe", **sub,
                                      **hook_of("http://10.1.2.3/hook", secret))  # fmt: skip
            assert refused["error"]["code"] == -32024, refused
            assert refused["error"]["data"] == {"reason": "forbidden"}, refused
            made = (await alice.rpc("events/subscribe", **sub, **hook_of(hook.url, secret)))[
                "result"
            ]
            assert made["cursor"] == "0" and made["truncated"] is False and "secret" not in made
            assert made["id"].startswith("sub_") and made["refreshBefore"].endswith("Z")
            # the receiver was asked first, signed with the client's secret and the id
            [(asked, asked_body)] = hook.verifications
            assert verified(secret, asked, asked_body)
            assert asked["x-mcp-subscription-id"] == made["id"]
            assert asked["webhook-id"].startswith("msg_verification_")
            hook.statuses = [503]  # the first try fails, the second is the same event
            sent = await alice.data("send_message", mail_address="inbox.w", payload="x")
            first_headers, first_body = await hook.next()
            headers, body = await hook.next()
            assert body == first_body and headers["webhook-id"] == first_headers["webhook-id"]
            assert verified(secret, headers, body)
            assert headers["x-mcp-subscription-id"] == made["id"]
            assert headers["content-type"] == "application/json"
            tampered = body.replace(b'"msg_id"', b'"msg_ix"')
            assert not verified(secret, headers, tampered)
            event = json.loads(body)
            assert headers["webhook-id"] == event["eventId"]
            assert event["data"]["msg_id"] == sent["msg_id"] and "x" not in event["data"].values()
            # bob can neither see nor end alice's subscription (its key holds her principal);
            # the id is never taken as input
            gone = await bob.rpc("events/unsubscribe", **sub, delivery={"url": hook.url})
            assert gone["error"]["code"] == -32023, gone
            assert gone["error"]["data"] == {"reason": "not_found", "kind": "subscription"}
            by_id = await alice.rpc("events/unsubscribe", id=made["id"])
            assert by_id["error"]["code"] == -32602, by_id
            await bob.data("create_mailbox", name="inbox.bob")
            bobs = (await bob.rpc("events/subscribe", **arrived("inbox.bob"),
                                  **hook_of(hook.url, new_secret())))["result"]  # fmt: skip
            assert bobs["id"] != made["id"]
            two = await alice.data("send_message", mail_address="inbox.w", payload="y")
            headers, body = await hook.next()
            assert json.loads(body)["data"]["msg_id"] == two["msg_id"]
            # a refresh keeps the subscription: the same derived id, its state said
            again = (await alice.rpc("events/subscribe", **sub, **hook_of(hook.url, secret)))[
                "result"
            ]
            assert again["id"] == made["id"]
            # the safe watermark: past the first event, at most past the second (its 2xx may
            # not have reached the server yet)
            assert again["cursor"] in (str(two["msg_id"]), str(two["msg_id"] + 1)), again
            status = again["deliveryStatus"]
            assert status["active"] is True and status["lastError"] is None
            assert status["lastDeliveryAt"].endswith("Z")
            # and unsubscribe by its key ends it
            ended = await alice.rpc("events/unsubscribe", **sub, delivery={"url": hook.url})
            ended_result = {k: v for k, v in ended["result"].items() if k != "_meta"}
            assert ended_result == {"resultType": "complete"}, ended  # an empty Result
            await bob.data("send_message", mail_address="inbox.bob", payload="z")
            headers, body = await hook.next()
            assert json.loads(body)["data"]["mail_address"] == "inbox.bob"
            assert hook.posts.empty()


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_webhooks_need_a_principal_of_their_own_and_hosts_to_go_to():
    with http_server("--server", "memory://", "--webhook-hosts", "127.0.0.1") as url:
        async with httpx.AsyncClient(timeout=WAIT) as http:
            alice = Peer(http, url, MODERN, "alice")
            await alice.data("create_mailbox", name="inbox.p")
            answer = await alice.rpc("events/subscribe", **arrived("inbox.p"),
                                     **hook_of("http://127.0.0.1:9/x", new_secret()))  # fmt: skip
            assert answer["error"]["code"] == -32024  # the SEP's Forbidden
            assert answer["error"]["data"] == {"reason": "forbidden"}
            assert "--auth-token" in answer["error"]["message"]
    token = "n" * 40
    with http_server("--server", "memory://", "--auth-token", token) as url:
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=WAIT, headers=auth) as http:
            alice = Peer(http, url, MODERN, "alice")
            await alice.data("create_mailbox", name="inbox.p")
            answer = await alice.rpc("events/subscribe", **arrived("inbox.p"),
                                     **hook_of("http://127.0.0.1:9/x", new_secret()))  # fmt: skip
            # no --webhook-hosts: the mode is not offered, the SEP's Unsupported
            assert answer["error"]["code"] == -32026, answer
            assert answer["error"]["data"] == {
                "reason": "unsupported",
                "feature": "deliveryMode",
                "value": "webhook",
            }


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_a_webhook_takes_only_the_clients_own_secret_and_refuses_what_is_out_of_shape():
    token = "u" * 40
    hosts = "127.0.0.1,10.1.2.3"  # 10.1.2.3: listed, yet plain http to it is refused
    async with webhook_world(token, hosts) as (_http, _url, hook, alice):
        await alice.data("create_mailbox", name="inbox.own")
        sub = arrived("inbox.own")
        secret = new_secret()
        refusals = {
            (-32024, "forbidden"): [{"url": "file:///etc/passwd", "secret": secret},
                                    {"url": "http://localhost.:1/", "secret": secret},
                                    {"url": "http://[::1]:1/", "secret": secret}],
            (-32602, "invalid_arguments"): [
                {}, {"url": hook.url}, {"url": hook.url, "secret": "whsec_short"},
                {"url": hook.url, "secret": "not-a-secret" * 4},
                {"url": hook.url, "secret": "whsec_" + base64.b64encode(b"k" * 65).decode()},
                {"url": "http://10.1.2.3/hook", "secret": secret}],
        }  # fmt: skip
        for (code, reason), deliveries in refusals.items():
            for delivery in deliveries:
                answer = await alice.rpc("events/subscribe", **sub, delivery=delivery)
                assert answer["error"]["code"] == code, (delivery, answer)
                assert answer["error"]["data"] == {"reason": reason}, (delivery, answer)
        polled = await alice.rpc(
            "events/subscribe",
            **sub,
            delivery={"mode": "poll", "url": hook.url, "secret": secret},
        )
        assert polled["error"]["code"] == -32026, polled  # fmt: skip
        assert not hook.verifications  # nothing refused reached the receiver
        # a TTL is granted, never refused: clamped to a day, and no expiry asked for is
        # a finite grant (subscriptions live in memory only)
        for ttl in (10**12, None):
            before = time.time()
            made = await alice.rpc("events/subscribe", **sub, cursor="0",
                                   **hook_of(hook.url, secret, ttlMs=ttl))  # fmt: skip
            granted = made["result"]["refreshBefore"]
            until = time.mktime(time.strptime(granted, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
            assert before < until <= time.time() + webhooks.MAX_TTL_MS / 1000, made
        sent = await alice.data("send_message", mail_address="inbox.own", payload="p")
        headers, body = await hook.next()
        assert verified(secret, headers, body)
        assert json.loads(body)["data"]["msg_id"] == sent["msg_id"]
        # a new secret on a refresh: both sign for a while, so either verifies
        rotated = new_secret()
        await alice.rpc("events/subscribe", **sub, **hook_of(hook.url, rotated))
        await alice.data("send_message", mail_address="inbox.own", payload="q")
        headers, body = await hook.next()
        assert len(headers["webhook-signature"].split()) == 2
        assert verified(rotated, headers, body) and verified(secret, headers, body)
        assert len(hook.verifications) == 1  # one (principal, URL): asked once


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_a_receiver_that_does_not_confirm_gets_nothing_and_is_asked_within_bounds():
    token = "v" * 40
    async with webhook_world(token) as (_http, _url, hook, alice):
        await alice.data("create_mailbox", name="inbox.v")
        hook.echo = False  # a receiver that never asked for these deliveries
        answers = [
            await alice.rpc("events/subscribe", **arrived("inbox.v"),
                            **hook_of(f"{hook.url}/{n}", new_secret()))
            for n in range(webhooks.VERIFY_CLIENT_SHARE + 1)
        ]  # fmt: skip
        errors = [a["error"] for a in answers]
        assert errors[0]["code"] == -32027, errors[0]  # the SEP's CallbackEndpointError
        assert errors[0]["data"] == {"reason": "challenge_failed"}
        # the receiver's address is asked at most so often by one client (its share of the
        # address's bound: tests/mcp/test_mcp_events_bounds.py)
        assert len(hook.verifications) == webhooks.VERIFY_CLIENT_SHARE
        assert errors[-1]["code"] == -32025, errors[-1]
        assert errors[-1]["data"]["limit"] == "verifications"
        await alice.data("send_message", mail_address="inbox.v", payload="never sent")
        assert hook.posts.empty()


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_a_delivery_the_receiver_refuses_with_410_is_not_tried_again():
    token = "w" * 40
    async with webhook_world(token) as (_http, _url, hook, alice):
        await alice.data("create_mailbox", name="inbox.g")
        secret = new_secret()
        await alice.rpc("events/subscribe", **arrived("inbox.g"), **hook_of(hook.url, secret))
        hook.statuses = [410]
        gone = await alice.data("send_message", mail_address="inbox.g", payload="1")
        kept = await alice.data("send_message", mail_address="inbox.g", payload="2")
        seen = [json.loads((await hook.next())[1])["data"]["msg_id"] for _ in range(2)]
        assert seen == [gone["msg_id"], kept["msg_id"]]  # 410'd once, then the next


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_max_age_bounds_replay_in_every_mode_and_says_truncated():
    token = "m" * 40
    async with webhook_world(token) as (http, url, hook, alice):
        await alice.data("create_mailbox", name="inbox.age")
        sub = arrived("inbox.age")
        old = await alice.data("send_message", mail_address="inbox.age", payload="old")
        [stored] = (await poll(alice, sub, cursor="0"))["events"]
        # a message's time is whole seconds: once the next second began, it is older
        # than any maxAgeMs of 0
        next_second = stored["data"]["time"] + 1
        await until(lambda: time.time() >= next_second, timeout=WAIT, what="the next second")
        new = await alice.data("send_message", mail_address="inbox.age", payload="new")
        whole = await poll(alice, sub, cursor="0", maxAgeMs=3_600_000)
        assert [e["data"]["msg_id"] for e in whole["events"]] == [old["msg_id"], new["msg_id"]]
        assert whole["truncated"] is False
        bounded = await poll(alice, sub, cursor="0", maxAgeMs=0)
        assert bounded["truncated"] is True
        assert old["msg_id"] not in [e["data"]["msg_id"] for e in bounded["events"]]
        async with http_stream(http, url, "alice", **sub, cursor="0", maxAgeMs=0) as got:
            active = await next_of(got, "notifications/events/active")
            assert active["truncated"] is True and int(active["cursor"]) > old["msg_id"]
        made = await alice.rpc("events/subscribe", **sub, cursor="0", maxAgeMs=0,
                               **hook_of(hook.url, new_secret()))  # fmt: skip
        assert made["result"]["truncated"] is True, made
        assert int(made["result"]["cursor"]) > old["msg_id"]


class Stdio:
    """``python -m mq9_mcp`` over stdio, driven line by line as a client knowing only the
    extension's text would."""

    def __init__(self, *args: str) -> None:
        self.args = args

    async def __aenter__(self) -> Stdio:
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mq9_mcp", "--server", "memory://", *self.args, cwd=ROOT,
            env=server_env(), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        self.ids = iter(range(1, 10**6))
        self.notes: list[dict[str, Any]] = []  # notifications not looked at yet
        self.lines: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reading = asyncio.create_task(self._read())
        opened = await self.request("initialize", protocolVersion=LEGACY, capabilities={},
                                    clientInfo={"name": "stdio", "version": "1"})  # fmt: skip
        assert EXTENSION in opened["result"]["capabilities"]["experimental"]
        await self.send({"jsonrpc": "2.0", "method": "notifications/initialized"})
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.reading.cancel()
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            await asyncio.wait_for(self.process.wait(), WAIT)
        except TimeoutError:
            self.process.kill()
            await self.process.wait()

    async def _read(self) -> None:
        assert self.process.stdout is not None
        while line := await self.process.stdout.readline():
            await self.lines.put(json.loads(line))

    async def send(self, message: dict[str, Any]) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(json.dumps(message).encode() + b"\n")
        await self.process.stdin.drain()

    async def start(self, method: str, **params: Any) -> int:
        request_id = next(self.ids)
        await self.send({"jsonrpc": "2.0", "id": request_id, "method": method, "params": params})
        return request_id

    async def request(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.answer(await self.start(method, **params))

    async def answer(self, request_id: int) -> dict[str, Any]:
        """The answer to ``request_id`` (notifications meanwhile are kept for ``note``)."""
        while True:
            message = await asyncio.wait_for(self.lines.get(), WAIT)
            if message.get("id") == request_id:
                return message
            self.notes.append(message)

    async def note(self, method: str) -> dict[str, Any]:
        while True:
            for message in self.notes:
                if message.get("method") == method:
                    self.notes.remove(message)
                    return message["params"]
            self.notes.append(await asyncio.wait_for(self.lines.get(), WAIT))

    async def tool(self, tool: str, /, **arguments: Any) -> dict[str, Any]:
        result = (await self.request("tools/call", name=tool, arguments=arguments))["result"]
        assert not result.get("isError"), result
        return result["structuredContent"]


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_over_stdio_poll_and_a_stream_resumed_after_it_was_cancelled():
    async with Stdio() as mcp:
        await mcp.tool("create_mailbox", name="inbox.io")
        sub = arrived("inbox.io")
        stream = await mcp.start("events/stream", **sub)
        assert (await mcp.note("notifications/events/active"))["cursor"] == "0"
        one = await mcp.tool("send_message", mail_address="inbox.io", payload="1")
        event = await mcp.note("notifications/events/event")
        assert event["data"]["msg_id"] == one["msg_id"]
        await mcp.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": stream}})  # fmt: skip
        two = await mcp.tool("send_message", mail_address="inbox.io", payload="2")
        polled = (await mcp.request("events/poll", **sub, cursor=event["cursor"]))["result"]
        assert [e["data"]["msg_id"] for e in polled["events"]] == [two["msg_id"]]
        await mcp.start("events/stream", **sub, cursor=event["cursor"])
        resumed = await mcp.note("notifications/events/event")
        assert resumed["data"]["msg_id"] == two["msg_id"]
        assert not [n for n in mcp.notes if n.get("method") == "notifications/events/event"]


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_a_read_that_passes_messages_over_says_so_on_a_stream_and_to_a_webhook():
    """More critical mail after the cursor than a FETCH reads whole (``Reader.after``): the read
    moves past what it could not read whole, and says so as SEP-3415 has it, a fresh
    ``notifications/events/active`` with ``truncated`` on a stream, a signed ``gap`` envelope
    to a webhook, each before the events after it."""
    async with Stdio("--webhook-hosts", "127.0.0.1") as mcp, Receiver() as hook:
        await mcp.tool("create_mailbox", name="inbox.many")
        sub = arrived("inbox.many")
        for i in range(10 * events.MAX_EVENTS + 1):
            await mcp.tool("send_message", mail_address="inbox.many", payload=str(i),
                           priority="critical")  # fmt: skip
        stream = await mcp.start("events/stream", **sub, cursor="0")
        first = await mcp.note("notifications/events/active")
        assert first == {**first, "cursor": "0", "truncated": False}
        gap = await mcp.note("notifications/events/active")
        assert gap["truncated"] is True
        event = await mcp.note("notifications/events/event")
        assert int(gap["cursor"]) <= event["data"]["msg_id"]
        await mcp.send({"jsonrpc": "2.0", "method": "notifications/cancelled",
                        "params": {"requestId": stream}})  # fmt: skip
        secret = new_secret()
        made = await mcp.request("events/subscribe", **sub, cursor="0", **hook_of(hook.url, secret))
        headers, body = await hook.next()
        envelope = json.loads(body)
        assert envelope == {"type": "gap", "cursor": envelope["cursor"]}, envelope
        assert headers["webhook-id"].startswith("msg_gap_") and verified(secret, headers, body)
        assert headers["x-mcp-subscription-id"] == made["result"]["id"]
        headers, body = await hook.next()
        assert int(envelope["cursor"]) <= json.loads(body)["data"]["msg_id"]


async def test_a_read_across_priority_lanes_longer_than_one_fetch_skips_and_repeats_nothing():
    """FETCH reads critical, urgent, then normal, each up to num_msgs from the cursor, and
    stops once it holds num_msgs: more critical mail than one read holds must not hide the
    normal mail between (``Reader.after``)."""
    connection = Mq9Connection("memory://")
    try:
        await connection.run(lambda c: c.mailbox_create(name="lanes", ttl=0))
        sent: list[int] = []
        for i in range(events.MAX_EVENTS + 60):
            priority = "normal" if i % 7 == 0 else "critical"
            sent.append(
                await connection.run(lambda c, i=i, p=priority: c.send("lanes", str(i), priority=p))
            )
        reader = Reader(connection, WAIT)
        source = Source(events.EVENT_TYPES[ARRIVED], "lanes", "lanes")
        seen: list[int] = []
        cursor = 0
        for _ in range(20):
            batch = await reader.after(source, cursor)
            seen += [m.msg_id for m in batch.messages]
            cursor = batch.cursor
            assert not batch.truncated
            if not batch.more:
                break
        assert seen == sorted(sent)
    finally:
        await connection.aclose()


def test_the_signature_is_standard_webhooks_v1():
    secret = "whsec_" + base64.b64encode(b"k" * 32).decode()
    body = b'{"a":1}'
    signature = webhooks.sign(secret, "msg_1", 1700000000, body)
    headers = {"webhook-id": "msg_1", "webhook-timestamp": "1700000000",
               "webhook-signature": signature}  # fmt: skip
    assert signature.startswith("v1,") and verified(secret, headers, body)
    assert not verified(secret, {**headers, "webhook-timestamp": "1700000001"}, body)
