"""LangChain's standard tool suites (langchain-tests) for every mq9 tool, on a seeded broker."""

from __future__ import annotations

import uuid

import pytest
from langchain_tests.integration_tests import ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from langchain_mq9.broker import drop_memory_broker
from langchain_mq9.operations import OPERATIONS, ToolPolicy
from langchain_mq9.tools import TOOL_CLASSES

# One call each tool can make on the seeded broker below, and make again (idempotent or fresh).
EXAMPLES = {
    "agent_register": {"name": "agent.worker", "capabilities": "summarizes long documents"},
    "agent_discover": {"query": "summarize a document"},
    "create_mailbox": {"ttl": 600},
    "send_message": {
        "mail_address": "agent.inbox",
        "payload": '{"task": "x"}',
        "priority": "urgent",
    },
    "fetch_messages": {"mail_address": "agent.inbox", "max_wait_ms": 0},
    "ack_messages": {"mail_address": "agent.inbox", "msg_id": 1},
    "query_messages": {"mail_address": "agent.inbox", "tags": ["seed"]},
    "delete_message": {"mail_address": "agent.inbox", "msg_id": 0},
    "agent_unregister": {"name": "agent.worker"},
    "agent_report": {"name": "agent.worker", "status": "busy", "details": '{"load": 0.5}'},
}


async def _seed(client) -> None:
    await client.mailbox_create(name="agent.inbox")
    for text in ("first", "second", "third"):
        await client.send("agent.inbox", text, tags=["seed"])
    await client.mailbox_create(name="agent.worker")
    await client.agent_register(
        {"name": "agent.worker", "mailbox": "agent.worker", "description": "summarizes documents"}
    )


class _StandardTests:
    operation: str

    @property
    def tool_constructor(self):
        return TOOL_CLASSES[self.operation]

    @property
    def tool_constructor_params(self) -> dict:
        return {"server": "memory://standard-init"}

    @property
    def tool_invoke_params_example(self) -> dict:
        return EXAMPLES[self.operation]

    @pytest.fixture
    def tool(self):
        name = f"standard{uuid.uuid4().hex}"
        tool = self.tool_constructor(server=f"memory://{name}", policy=ToolPolicy(num_msgs=2))
        tool.connection.run_sync(_seed)
        if self.operation == "ack_messages":  # it acks only what a fetch of its policy handed out
            fetch = OPERATIONS["fetch_messages"]
            args = {"mail_address": "agent.inbox", "max_wait_ms": 0}
            tool.connection.run_sync(lambda client: fetch.execute(client, args, tool.policy))
        yield tool
        tool.connection.close()
        drop_memory_broker(name)


def _class_name(operation: str) -> str:
    return "".join(part.title() for part in operation.split("_"))


for _operation in TOOL_CLASSES:
    for _suite, _kind in ((ToolsUnitTests, "Unit"), (ToolsIntegrationTests, "Integration")):
        _name = f"Test{_class_name(_operation)}{_kind}"
        globals()[_name] = type(_name, (_StandardTests, _suite), {"operation": _operation})


def test_every_tool_has_an_example():
    assert set(EXAMPLES) == set(TOOL_CLASSES)
