"""MCP Events' webhook verifications, played as an attacker would (#106 item 6,
``mq9_mcp/webhooks.py``, its limits in ``webhook_consent.py``): the verification bound is
the address the SSRF guard resolved, not
the URL's spelling (150 spellings of 127.0.0.1 were 160 POSTs to one service in a minute); a
failed verification is one refusal whatever failed (its category mapped loopback ports); the
caches of verifications and consents stay within their caps under a flood; and a client that
floods leaves another's verification its own share.

Each receiver here is a real HTTP server on loopback, counting the POSTs it was sent."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import itertools
import json
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any

import httpx2 as httpx
import pytest
from mcp.shared.exceptions import MCPError

from mq9_mcp import webhook_consent, webhooks
from mq9_mcp.events import ARRIVED, EVENT_TYPES, Reader, Source, SubscribeParams
from mq9_mcp.watch import Watches
from mq9_mcp.webhooks import Answer, Webhooks
from mq9_platform._http.ssrf import Address, HostPolicy, Resolve, canonical_host
from mq9_platform.client.connection import Mq9Connection
from testbed.ports import unclaimed_port
from testbed.support.mcp_support import MODERN, Peer
from tests.mcp.test_mcp_events import (
    WAIT,
    arrived,
    hook_of,
    new_secret,
    webhook_world,
)

pytestmark = pytest.mark.slow  # serves HTTP receivers (and mq9-mcp, a process) on loopback

INBOX = "inbox.hooks"


class Service:
    """A loopback HTTP service that counts the POSTs it is sent and their Host headers,
    answering as ``mode`` says: ``echo`` (a webhook receiver: the challenge echoed), ``silent``
    (200 and no echo), ``404``, ``500``, ``close`` (closes unanswered) or ``hang`` (never
    answers)."""

    def __init__(self, mode: str, host: str = "127.0.0.1", port: int | None = None) -> None:
        self.mode, self.host = mode, host
        self.port = port or unclaimed_port()
        self.hosts: list[str] = []  # each POST's Host header
        self.done = asyncio.Event()  # set on leaving: the one that hangs lets go

    async def __aenter__(self) -> Service:
        self.server = await asyncio.start_server(self._serve, self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.done.set()
        self.server.close()
        await self.server.wait_closed()

    def url(self, host: str = "127.0.0.1", scheme: str = "http") -> str:
        return f"{scheme}://{host}:{self.port}/hook"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            head = (await reader.readuntil(b"\r\n\r\n")).decode()
            fields = dict(line.lower().partition(":")[::2] for line in head.split("\r\n")[1:])
            body = await reader.readexactly(int(fields.get("content-length", "0")))
            self.hosts.append(fields.get("host", "").strip())
            if self.mode == "hang":
                await self.done.wait()
            if self.mode != "close":
                echoed = {"challenge": json.loads(body).get("challenge", "")}
                answer = json.dumps(echoed).encode() if self.mode == "echo" else b""
                status = int(self.mode) if self.mode.isdigit() else 200
                head = f"HTTP/1.1 {status} X\r\ncontent-length: {len(answer)}\r\n"
                writer.write(f"{head}connection: close\r\n\r\n".encode() + answer)
                await writer.drain()
        writer.close()


def spellings(count: int) -> list[str]:
    """``count`` spellings of 127.0.0.1 that the SSRF guard and httpx both read as it (none
    of them written 127.0.0.1): the short forms, one number, a trailing dot, IPv4 inside IPv6,
    and octets in hex and octal (httpx refuses the all-decimal ones with leading zeros)."""
    octets = [
        ["127", "0177", "00177", "0x7f", "0x07f", "0x007f"],
        ["0", "00", "0x0", "0x00"],
        ["0", "00", "0x0", "0x00"],
        ["1", "01", "0x1", "0x01"],
    ]
    mixed = (".".join(parts) for parts in itertools.product(*octets))
    found = ["127.1", "0x7f.1", "2130706433", "0x7f000001", "017700000001", "127.0.1",
             "127.0.0.1.", "[::ffff:127.0.0.1]", "[::ffff:7f00:1]", "0x7f.0x1"]  # fmt: skip
    found += [s for s in mixed if "x" in s and s not in found]
    assert all(canonical_host(s) == "127.0.0.1" and s != "127.0.0.1" for s in found)
    assert len(found) >= count
    return found[:count]


@pytest.mark.slow  # starts mq9-mcp (a process)
async def test_150_spellings_of_one_loopback_service_get_at_most_the_bound_and_bob_is_verified():
    """The attack as measured (#106: 160 POSTs, 151 Host headers in a minute): mallory has mq9-mcp
    verify 150 spellings of one loopback service's address, worker names varied; the service is
    POSTed at most the bound's verifications, and bob, another client (another peer address),
    still has his receiver on the same address verified."""
    token = "b" * 40
    async with webhook_world(token) as (_http, url, receiver, mallory), Service("silent") as target:
        await mallory.data("create_mailbox", name=INBOX)
        answers = []
        for n, host in enumerate(spellings(150)):
            answer = await mallory.rpc("events/subscribe", worker=f"w{n}", **arrived(INBOX),
                                       **hook_of(target.url(host), new_secret()))  # fmt: skip
            answers.append(answer["error"])
        assert len(target.hosts) <= webhooks.VERIFY_PER_ADDRESS, len(target.hosts)
        assert len(target.hosts) == webhooks.VERIFY_CLIENT_SHARE  # mallory's share, no more
        reasons = {(e["code"], e["data"]["reason"]) for e in answers}
        assert reasons == {(-32027, "challenge_failed"), (-32025, "too_many_subscriptions")}
        assert "this client" in answers[-1]["message"] and "127.0.0.1" in answers[-1]["message"]
        # bob: the same token from another peer address, so another client
        local = httpx.AsyncHTTPTransport(local_address="127.0.0.2")
        auth = {"Authorization": f"Bearer {token}"}
        async with httpx.AsyncClient(timeout=WAIT, headers=auth, transport=local) as http:
            bob = Peer(http, url, MODERN, "bob")
            await bob.data("create_mailbox", name="inbox.bob")
            made = await bob.rpc("events/subscribe", **arrived("inbox.bob"),
                                 **hook_of(receiver.url, new_secret()))  # fmt: skip
            assert "result" in made, made
            assert len(receiver.verifications) == 1


# -- in process: one Webhooks on an in-process broker, its clients told apart by owner --------


async def no_pause(seconds: float) -> None:
    """A failed verification's floor (``VERIFY_FLOOR``), not waited out where nothing times."""


def ctx(owner: str) -> Any:
    """A request of ``owner``'s (``owner_of`` below reads it; no HTTP scope: a principal)."""
    return SimpleNamespace(owner=owner)


class Hooks:
    """A ``Webhooks`` on an in-process broker with mailbox ``INBOX``, as mq9-mcp makes one."""

    def __init__(self, webhooks_: Webhooks) -> None:
        self.webhooks = webhooks_
        self.source = Source(EVENT_TYPES[ARRIVED], INBOX, INBOX)
        self.made: list[tuple[str, str]] = []

    async def subscribe(self, owner: str, url: str) -> dict[str, Any]:
        """``events/subscribe``'s answer, or its error's ``{code, message, data}``."""
        delivery = {"mode": "webhook", "url": url, "secret": new_secret()}
        params = SubscribeParams(name=ARRIVED, arguments={"mail_address": INBOX}, delivery=delivery)
        try:
            made = await self.webhooks.subscribe(ctx(owner), self.source, params, None)
        except MCPError as exc:
            return {"code": exc.error.code, "message": exc.error.message, "data": exc.error.data}
        self.made.append((owner, url))
        return made

    async def unsubscribe_all(self) -> None:
        for owner, url in self.made:
            await self.webhooks.unsubscribe(ctx(owner), self.source, url)
        self.made.clear()


@contextlib.asynccontextmanager
async def in_process(
    allow: list[str],
    *,
    resolve: Resolve | None = None,
    clock: Callable[[], float] | None = None,
    post: webhooks.Post | None = None,
    sleep: Callable[[float], Awaitable[None]] | None = None,
) -> AsyncIterator[Hooks]:
    connection = Mq9Connection(f"memory://hooks-{uuid.uuid4().hex[:8]}")
    try:
        await connection.run(lambda client: client.mailbox_create(name=INBOX))
        policy = HostPolicy(allow, knob="--webhook-hosts", resolve=resolve)
        made = Webhooks(
            Reader(connection, WAIT),
            Watches(connection, WAIT),
            policy,
            lambda c: c.owner,
            clock=clock or asyncio.get_running_loop().time,
            post=post,
            sleep=sleep or asyncio.sleep,
        )
        hooks = Hooks(made)
        try:
            yield hooks
        finally:
            await hooks.unsubscribe_all()
    finally:
        await connection.aclose()


async def test_a_closed_port_and_open_ports_that_are_no_webhook_get_one_refusal(monkeypatch):
    """A port scan through the refusals (#106: 40 loopback ports mapped in 3.3 s, "connection
    refused" for a closed one, "http_4xx" or "challenge_failed" for an open one): every failed
    verification, whatever failed, is one refusal, word for word, and each is held until
    ``VERIFY_FLOOR`` after its POST began (here the clock stands still: the whole floor)."""
    monkeypatch.setattr(webhooks, "TIMEOUT", 0.5)  # the service that never answers
    paused: list[float] = []

    async def sleep(seconds: float) -> None:
        paused.append(seconds)

    modes = ["silent", "404", "500", "close", "hang"]
    async with contextlib.AsyncExitStack() as stack:
        services = [await stack.enter_async_context(Service(mode)) for mode in modes]
        urls = [s.url() for s in services]
        urls += [f"http://127.0.0.1:{unclaimed_port()}/hook", services[0].url(scheme="https")]
        hooks = await stack.enter_async_context(
            in_process(["127.0.0.1"], clock=lambda: 0.0, sleep=sleep)
        )
        refusals = [await hooks.subscribe(f"prober{n}", url) for n, url in enumerate(urls)]
        assert all(s.hosts for s in services)  # each was reached: the refusals are theirs
    assert refusals[0]["code"] == -32027 and refusals[0]["data"] == {"reason": "challenge_failed"}
    assert all(r == refusals[0] for r in refusals), refusals
    assert paused == [webhooks.VERIFY_FLOOR] * len(urls)


async def test_one_address_however_reached_is_one_bound_and_connected_to_where_counted():
    """Names are bounds only by their addresses: 40 DNS names of one loopback address, asked by
    three clients, reach it at most the bound's times; and a name whose DNS answer changes
    after the check (rebinding) is POSTed to the address checked and counted, not the new one."""
    asked: dict[str, int] = {}

    async def resolve(host: str, port: int) -> list[Address]:
        asked[host] = asked.get(host, 0) + 1  # the check's answer, then another address
        return [ipaddress.IPv4Address("127.0.0.1" if asked[host] == 1 else "127.0.0.2")]

    allow = ["*.hooks.test", "127.0.0.0/8"]
    async with (
        Service("silent") as target,
        Service("echo", "127.0.0.2", target.port) as other,
        in_process(allow, resolve=resolve, sleep=no_pause) as hooks,
    ):
        names = [f"n{n}.hooks.test" for n in range(40)]
        for n, name in enumerate(names):
            await hooks.subscribe(f"client{n % 3}", target.url(name))
        assert len(target.hosts) == webhooks.VERIFY_PER_ADDRESS  # 3 clients, one address
        assert not other.hosts  # never connected to the second answer
        assert set(asked.values()) == {1}  # each name resolved once: at its check


async def test_the_caches_stay_within_their_caps_under_a_flood_and_another_client_keeps_its_own(
    monkeypatch,
):
    """Mallory floods distinct URLs (a new address and a new path each: 127.x.y.z is loopback)
    from many worker names of one client, past a minute: the window of verification POSTs and
    the consents stay within their caps, her refusals say they are hers, and bob's consent
    (asked before) and his new verification (asked during the flood) both hold."""
    for name, cap in (("VERIFIED_PER_CLIENT", 8), ("VERIFIED_MAX", 9), ("VERIFY_RECORDS", 40)):
        monkeypatch.setattr(webhook_consent, name, cap)  # where the caps are read
    now = [0.0]
    posted: list[str] = []

    async def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
        posted.append(url)  # a receiver echoing every challenge: each URL consents
        return Answer(200, json.dumps({"challenge": json.loads(body)["challenge"]}).encode())

    async with in_process(
        ["127.0.0.0/8"], clock=lambda: now[0], post=post, sleep=no_pause
    ) as hooks:
        made = hooks.webhooks
        assert "result" not in await hooks.subscribe("bob w", "http://127.0.0.1:1/bob")
        bobs = len(posted)
        refusals = []
        for n in range(400):
            now[0] += 0.5  # 200 s of flood: past three windows
            url = f"http://127.{n // 250}.{n % 250}.9:1/m{n}"
            answer = await hooks.subscribe(f"mallory w{n}", url)
            refusals += [answer] if "code" in answer else []
            await hooks.unsubscribe_all()  # her subscriptions end; the consents stay
            assert len(made.verifying) <= webhook_consent.VERIFY_RECORDS
            assert len(made.verified) <= webhook_consent.VERIFIED_MAX
            assert made.verified.held["mallory"] <= webhook_consent.VERIFIED_PER_CLIENT
            if n == 200:  # bob, mid-flood, on mallory's addresses' neighbour
                assert "code" not in await hooks.subscribe("bob w", "http://127.0.0.9:1/b2")
        assert refusals and all("this client" in r["message"] for r in refusals)
        assert len(posted) - bobs - 1 <= webhooks.VERIFY_PER_CLIENT * 4  # a window's worth each
        again = len(posted)
        await hooks.subscribe("bob w", "http://127.0.0.1:1/bob")  # his consent is remembered
        assert len(posted) == again


async def test_the_servers_window_is_full_only_when_that_many_clients_fill_their_own(monkeypatch):
    """The window's records in all are the server's: one client never fills them (its own 30 a
    minute come first); only as many clients as fill it together see ``unavailable``, and a
    minute later it is empty again."""
    monkeypatch.setattr(webhook_consent, "VERIFY_RECORDS", 3 * webhooks.VERIFY_PER_CLIENT)
    now = [0.0]

    async def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
        return Answer(404)  # no receiver: nothing is subscribed, every POST counted

    async with in_process(
        ["127.0.0.0/8"], clock=lambda: now[0], post=post, sleep=no_pause
    ) as hooks:
        urls = (f"http://127.0.{n // 200}.{n % 200 + 1}:1/h" for n in itertools.count())
        for client in ("a", "b", "c"):
            answers = [await hooks.subscribe(client, next(urls)) for _ in range(31)]
            said = f"this client had {webhooks.VERIFY_PER_CLIENT} "
            assert answers[-1]["message"].startswith(said), answers[-1]
            assert {a["data"]["reason"] for a in answers[:-1]} == {"challenge_failed"}
        assert len(hooks.webhooks.verifying) == webhook_consent.VERIFY_RECORDS
        full = await hooks.subscribe("d", next(urls))
        assert full["data"] == {"reason": "unavailable", "limit": "server_verifications",
                                "max": webhook_consent.VERIFY_RECORDS}  # fmt: skip
        now[0] += webhooks.VERIFY_WINDOW
        assert (await hooks.subscribe("d", next(urls)))["data"]["reason"] == "challenge_failed"
        assert len(hooks.webhooks.verifying) == 1
