"""Credentials: in the URL or as options, against a real nats-server that demands them."""

from __future__ import annotations

import asyncio

import nats
import pytest

from mq9_broker import BrokerEngine, serve_on_nats
from mq9_platform import Mq9Client, Mq9Error
from testbed.nats_server import start_nats_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def guarded_nats():
    with start_nats_server(extra_args=["--user", "agents", "--pass", "s3cret"]) as server:
        yield server


@pytest.fixture
async def served(guarded_nats):
    connection = await nats.connect(guarded_nats.url, user="agents", password="s3cret")
    service = await serve_on_nats(BrokerEngine(), connection)
    yield guarded_nats
    await service.stop()
    await connection.close()


@pytest.mark.parametrize("how", ["url", "options"])
async def test_right_credentials_connect(served, how):
    if how == "url":
        client = Mq9Client(f"nats://agents:s3cret@127.0.0.1:{served.port}")
    else:
        client = Mq9Client(served.url, user="agents", password="s3cret")
    async with client:
        assert await client.mailbox_create(name=f"auth.{how}") == f"auth.{how}"


async def test_wrong_password_says_the_credentials_were_refused_and_hides_them(served):
    client = Mq9Client(f"nats://agents:wrong@127.0.0.1:{served.port}", request_timeout=2)
    with pytest.raises(Mq9Error) as refused:
        await asyncio.wait_for(client.connect(), 10)
    assert "refused the credentials" in refused.value.message
    assert "agents:***@" in refused.value.message and "wrong" not in refused.value.message
    assert refused.value.retryable is False


async def test_missing_credentials_are_refused_too(served):
    with pytest.raises(Mq9Error, match="refused the credentials"):
        await asyncio.wait_for(Mq9Client(served.url, request_timeout=2).connect(), 10)
