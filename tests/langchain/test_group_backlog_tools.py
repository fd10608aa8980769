"""The fetch tools in a consumer group get past a backlog of higher lanes (#113, item 1).

``fetch_messages``/``ack_messages`` read through a group's reader
(tests/platform/groups/test_backlog.py
plays ``GroupReader`` itself): with critical and urgent backlogs several times what one answer
of the broker holds above an older normal message, an agent fetching and acking in turn gets
every message once, the critical lane first, and the group ends past them all. Before, the
reader stopped at "cannot go on: this broker's answers hold only N".
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from langchain_core.messages import ToolMessage

from langchain_mq9 import Mq9Toolkit
from mq9_broker import BrokerEngine, BrokerLimits, drop_memory_broker, install_memory_broker
from mq9_platform import Mq9Client

BODY = "x" * 1000
LIMITS = BrokerLimits(max_answer=13_000)  # about ten of these messages an answer


@pytest.fixture(
    params=["memory", pytest.param("jetstream", marks=pytest.mark.slow)]  # a nats-server
)
async def memory_url(request) -> AsyncIterator[str]:
    """``memory://`` over the bundled broker keeping its state in memory, or in JetStream."""
    layout = None
    if request.param == "jetstream":
        request.getfixturevalue("shared_jetstream")  # started at first use
        from testbed.support.store_lane import STATE_SERVER

        layout = await STATE_SERVER.layout()
        engine: Any = layout.engine(LIMITS)
    else:
        engine = BrokerEngine(limits=LIMITS)
    name = f"backlog{uuid.uuid4().hex}"
    install_memory_broker(name, engine)
    try:
        yield f"memory://{name}"
    finally:
        drop_memory_broker(name)
        if layout is not None:
            from testbed.support.store_lane import STATE_SERVER

            await STATE_SERVER.drop(layout)
        else:
            await engine.close()


async def _call(tool, **args) -> ToolMessage:
    call = {"name": tool.name, "args": args, "id": "call_1", "type": "tool_call"}
    return await tool.ainvoke(call)


async def test_the_fetch_tools_read_every_message_past_a_backlog_of_higher_lanes(memory_url):
    async with Mq9Toolkit(server=memory_url, num_msgs=4) as kit, Mq9Client(memory_url) as writer:
        tools = {tool.name: tool for tool in kit.get_tools()}
        box = await writer.mailbox_create(name="work.backlog")
        sent: dict[int, str] = {}
        for priority, count in [("normal", 1), ("critical", 40), ("urgent", 30), ("normal", 5)]:
            for _ in range(count):
                sent[await writer.send(box, f"{len(sent)}{BODY}", priority=priority)] = priority
        seen: list[int] = []
        while True:
            fetched = await _call(tools["fetch_messages"], mail_address=box, max_wait_ms=0)
            assert fetched.status == "success", fetched.content
            ids = [m["msg_id"] for m in json.loads(fetched.content)["messages"]]
            if not ids:
                break
            seen += ids
            acked = await _call(tools["ack_messages"], mail_address=box, msg_id=ids[-1])
            assert acked.status == "success", acked.content
        assert sorted(seen) == sorted(sent), f"never handed out: {sorted(set(sent) - set(seen))}"
        assert len(seen) == len(set(seen)), "a message handed out twice"
        order = [sent[i] for i in seen]
        assert order == sorted(order, key=["critical", "urgent", "normal"].index)
        # the group's position passed them all: nothing for anyone reading the group next
        assert await writer.fetch(box, group_name="default", max_wait_ms=0) == []
