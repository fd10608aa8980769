"""``memory://`` without the client importing the broker (#64 item 4): the client finds the
engine of ``memory://NAME`` through ``register_memory_engines``, which ``import mq9_platform``
fills with the bundled broker's; an engine of one's own goes in ``MemoryTransport(engine)``."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from mq9_broker import BrokerEngine, BrokerLimits, memory_broker
from mq9_platform import Mq9Client
from mq9_platform.client import transport
from mq9_platform.client.transport import MemoryTransport, memory_engine, register_memory_engines
from mq9_wire.protocol.errors import ConnectFailed


@pytest.fixture
def registration():
    """What the package registered, put back after the test."""
    [registered] = transport._memory_engines
    yield
    register_memory_engines(registered)


def test_the_package_registers_the_bundled_broker():
    assert memory_engine("registered") is memory_broker("registered")


async def test_memory_urls_reach_the_registered_engine(registration):
    engine = BrokerEngine()
    register_memory_engines(lambda name: engine)
    async with Mq9Client("memory://anything") as client:
        await client.mailbox_create(name="box")
    assert "box" in engine.mailboxes


async def test_nothing_registered_is_one_line_that_says_what_to_do(registration):
    register_memory_engines(None)
    with pytest.raises(ConnectFailed) as refused:
        await Mq9Client("memory://lost").connect()
    said = str(refused.value)
    assert "\n" not in said and "import mq9_platform" in said and "MemoryTransport" in said


async def test_an_engine_of_ones_own_in_a_memory_transport():
    engine = BrokerEngine(limits=BrokerLimits(max_payload=4096))
    client = Mq9Client(transport=MemoryTransport(engine))
    assert client._transport.max_payload == 4096  # before it connects too
    async with client:
        address = await client.mailbox_create()
        await client.send(address, "hi")
        [message] = await client.fetch(address, group_name="g", deliver="earliest")
        assert message.text() == "hi"


def test_the_client_imports_nothing_of_the_broker():
    source = Path(transport.__file__).parent
    for path in source.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert "broker" not in (node.module or ""), (path.name, node.module)
