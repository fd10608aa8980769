"""LangChain's standard tool suites (langchain-tests) for every mq9 tool, on a seeded broker."""

from __future__ import annotations

import uuid

import pytest
from langchain_tests.integration_tests import ToolsIntegrationTests
from langchain_tests.unit_tests import ToolsUnitTests

from langchain_mq9.tools import TOOL_CLASSES
from mq9_broker import drop_memory_broker
from mq9_platform.a2a import mail as w
from mq9_platform.a2a.store import deliver
from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy

pytestmark = pytest.mark.slow

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
    # The call tools: agent.worker is registered but offline; task t1 waits for an answer.
    "call_agent": {"agent": "agent.worker", "task": "summarize x"},
    "check_call": {"task_id": "t1"},
    "answer_call": {"task_id": "t1", "answer": "in English"},
    "cancel_call": {"task_id": "t1"},
    "list_calls": {"state": ""},
    "wake_rule": {"mail_address": "agent.inbox", "action": "list"},
}


async def _seed(client) -> None:
    await client.mailbox_create(name="agent.inbox")
    for text in ("first", "second", "third"):
        await client.send("agent.inbox", text, tags=["seed"])
    await client.mailbox_create(name="agent.worker")
    await client.agent_register(
        {"name": "agent.worker", "mailbox": "agent.worker", "description": "summarizes documents",
         "capabilities": {"extensions": [w.tasks_capability()]}}  # a served agent's card
    )  # fmt: skip
    # A call to agent.worker that asked a question (as the agent leaves it in the reply mailbox).
    reply = w.caller_address("agent.calls")
    await client.mailbox_create(name=reply)
    record = {"taskId": "t1", "agent": "agent.worker", "mailbox": "agent.worker", "contextId": "c1"}
    await client.send(reply, w.json_text(record), key="call.t1", tags=[w.CALL_TAG])
    question = w.task("t1", "c1", w.INPUT_REQUIRED, status_text="which language?",
                      history=[w.message("summarize", task_id="t1")])  # fmt: skip
    await deliver(client, reply, question)


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
        policy = ToolPolicy(num_msgs=2, calls=True, reply_mailbox="agent.calls")
        tool = self.tool_constructor(server=f"memory://{name}", policy=policy)
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
