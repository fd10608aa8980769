"""Subscriptions to a mailbox resource (#37, item 4): new mail in ``mq9://mailbox/{address}``
is told to the subscriber (``notifications/resources/updated``): at 2025-11-25 after
``resources/subscribe`` in a session, at 2026-07-28 on a ``subscriptions/listen`` stream.
A subscription ends with ``resources/unsubscribe``, with its session or its stream; a client
watches at most ``MAX_PER_SUBSCRIBER`` mailboxes, and only mailboxes it may read.

The server runs in process here (the SDK's ``Client`` on ``create_server``), so a test can see
what the server still watches; ``test_as_a_process_*`` runs the real one, over stdio and HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest
from mcp import Client, types
from mcp.shared.exceptions import MCPError

from mq9_mcp import watch
from mq9_mcp.server import create_server
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import ToolPolicy
from testbed.support.mcp_support import Updates, http_server, ok, stdio_parameters
from testbed.support.waiting import until

MODERN = "2026-07-28"


@pytest.fixture
def inbox() -> str:
    """A mailbox of the test's own (memory:// is one broker for the whole process)."""
    return f"team.{uuid.uuid4().hex[:12]}"


def uri_of(mail_address: str) -> str:
    return f"mq9://mailbox/{mail_address}"


async def subscribe(client: Client, uri: str) -> Any:
    with warnings.catch_warnings():  # removed at 2026-07-28, which these clients are not
        warnings.simplefilter("ignore")
        return await client.subscribe_resource(uri)


async def unsubscribe(client: Client, uri: str) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return await client.unsubscribe_resource(uri)


@contextlib.asynccontextmanager
async def served(**settings: Any) -> AsyncIterator[Any]:
    """mq9-mcp's server on its own memory:// broker, looking at watched mailboxes often."""
    connection = Mq9Connection("memory://")
    server = create_server(connection, ToolPolicy(**settings))
    server.watches.poll_seconds = 0.02
    try:
        yield server
    finally:
        await connection.aclose()


async def test_a_session_is_told_of_new_mail_until_it_unsubscribes(inbox):
    uri = uri_of(inbox)
    updates = Updates()
    async with served() as server:
        async with Client(server, mode="legacy", message_handler=updates) as client:
            assert client.server_capabilities.resources.subscribe is True
            await ok(client, "create_mailbox", name=inbox)
            await ok(client, "send_message", mail_address=inbox, payload="before")
            await subscribe(client, uri)
            await ok(client, "send_message", mail_address=inbox, payload="new")
            assert await updates.next() == uri
            assert updates.uris.empty()  # the mail before the subscription is not news

            await unsubscribe(client, uri)
            assert server.watches.count() == 0
            await subscribe(client, uri)
            assert server.watches.count() == 1
        # the session ended: so did its watches
        assert server.watches.count() == 0


async def test_a_listen_stream_is_told_of_new_mail_and_ends_its_watches(inbox):
    uri = uri_of(inbox)
    async with served() as server, Client(server, mode="auto") as client:
        assert client.protocol_version == MODERN  # after server/discover
        assert client.server_capabilities.resources.subscribe is True
        await ok(client, "create_mailbox", name=inbox)
        async with client.listen(resource_subscriptions=[uri]) as stream:
            assert stream.honored.resource_subscriptions == [uri]
            assert server.watches.count() == 1
            await ok(client, "send_message", mail_address=inbox, payload="new")
            event = await asyncio.wait_for(anext(aiter(stream)), 10)
            assert event.uri == uri
        # the stream's end reached the server
        await until(lambda: server.watches.count() == 0, timeout=10, what="no watch left")


async def test_only_mailboxes_the_client_may_read_and_a_bounded_number(inbox):
    uri = uri_of(inbox)
    async with (
        served(allowed_mailboxes=("team",)) as server,
        Client(server, mode="legacy") as client,
    ):
        wrongs = ("mq9://mailbox/other.inbox", "mq9://agent/team.bot", "mq9://mailbox/", uri)
        for wrong in wrongs:  # not allowed, not a mailbox, no address, no such mailbox
            with pytest.raises(MCPError) as refused:
                await subscribe(client, wrong)
            assert refused.value.error.code == types.INVALID_PARAMS, wrong
        await ok(client, "create_mailbox", name=inbox)
        for n in range(watch.MAX_PER_SUBSCRIBER):
            await ok(client, "create_mailbox", name=f"{inbox}.{n}")
            await subscribe(client, uri_of(f"{inbox}.{n}"))
        with pytest.raises(MCPError, match="at most 16 mailboxes"):
            await subscribe(client, uri)
        assert server.watches.count() == watch.MAX_PER_SUBSCRIBER


@contextlib.asynccontextmanager
async def process(transport: str, era: str, updates: Updates) -> AsyncIterator[Client]:
    """A client in ``era`` of mq9-mcp run as its own process, over ``transport``."""
    options: dict[str, Any] = {"mode": era, "message_handler": updates, "read_timeout_seconds": 20}
    if transport == "stdio":
        async with Client(stdio_parameters("--server", "memory://"), **options) as client:
            yield client
    else:
        with http_server("--server", "memory://") as url:
            async with Client(url, **options) as client:
                yield client


@pytest.mark.slow
@pytest.mark.parametrize("transport", ["stdio", "http"])
@pytest.mark.parametrize("era", ["legacy", MODERN])
async def test_as_a_process_new_mail_is_told(transport, era, inbox):
    uri = uri_of(inbox)
    updates = Updates()
    async with process(transport, era, updates) as client:
        await ok(client, "create_mailbox", name=inbox)
        if era == "legacy":
            await subscribe(client, uri)
            await ok(client, "send_message", mail_address=inbox, payload="new")
            assert await updates.next() == uri
        else:
            async with client.listen(resource_subscriptions=[uri]) as stream:
                await ok(client, "send_message", mail_address=inbox, payload="new")
                event = await asyncio.wait_for(anext(aiter(stream)), 10)
                assert event.uri == uri


async def test_listen_streams_are_bounded(monkeypatch):
    monkeypatch.setattr(watch, "MAX_STREAMS", 1)
    async with served() as server, Client(server, mode="auto") as client:
        async with client.listen(tools_list_changed=True):
            with pytest.raises(MCPError, match="1 listen streams are open"):
                async with client.listen(tools_list_changed=True):
                    pass
        # the first one's end made room
        await until(lambda: not server.watches.streams, timeout=10, what="no stream left")
        async with client.listen(tools_list_changed=True):
            pass
