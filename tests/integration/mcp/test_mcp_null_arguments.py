"""``null`` is "not given" for every optional argument, through MCP and the LangChain tools
(issue #107): crewai-tools' ``MCPServerAdapter`` fills every argument a call leaves out with
``null``, and llama-index and crewai show a model each optional argument as "value or null";
mq9-mcp answered "Invalid arguments: key: Input should be a valid string (got None)" to every
ordinary send, fetch, ack or query. Each tool is called here with every optional argument
``null``, in the order an agent would (so the ones that can succeed do); a required argument
given as ``null`` is still refused, in the usual words."""

from __future__ import annotations

import json
import uuid
from typing import Any

from mcp import Client

from langchain_mq9 import Mq9Toolkit
from mq9_mcp.server import create_server
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy
from testbed.support.mcp_support import error_text, result_data, result_text

# The order an agent calls them in, and the value of each required argument (a mailbox's is
# the one create_mailbox made: "{box}"); the tools that must succeed with nulls only.
ORDER = [
    "agent_register", "agent_discover", "create_mailbox", "send_message", "fetch_messages",
    "ack_messages", "query_messages", "delete_message", "agent_report", "agent_unregister",
    "wake_rule", "call_agent", "check_call", "answer_call", "cancel_call", "list_calls",
]  # fmt: skip
REQUIRED = {
    "name": "agent.nulls", "capabilities": "answers questions", "mail_address": "{box}",
    "payload": "hello", "msg_id": 0, "status": "busy", "agent": "agent.nobody", "task": "t",
    "task_id": "t-unknown", "answer": "yes",
}  # fmt: skip
SUCCEED = {
    "agent_register", "agent_discover", "create_mailbox", "send_message", "fetch_messages",
    "ack_messages", "query_messages", "delete_message", "agent_report", "agent_unregister",
    "wake_rule", "list_calls",
}  # fmt: skip


def all_null(schema: dict[str, Any], box: str) -> dict[str, Any]:
    """Every property of ``schema``: a required one given, every other one ``null``."""
    given = {name: box if REQUIRED[name] == "{box}" else REQUIRED[name]
             for name in schema.get("required", ())}  # fmt: skip
    return {name: given.get(name) for name in schema["properties"]}


async def test_every_mcp_tool_takes_null_for_every_optional_argument():
    connection = Mq9Connection(f"memory://nulls{uuid.uuid4().hex}")
    server = create_server(connection, ToolPolicy(calls=True))
    answered = {}
    try:
        async with Client(server, read_timeout_seconds=20) as mcp:
            schemas = {t.name: t.input_schema for t in (await mcp.list_tools()).tools}
            assert set(schemas) == set(ORDER)
            box = "{box}"
            for name in ORDER:
                arguments = all_null(schemas[name], box)
                if name == "create_mailbox":
                    assert set(arguments.values()) == {None}
                result = await mcp.call_tool(name, arguments)
                text = result_text(result)
                assert not text.startswith("Invalid arguments"), (name, text)
                if name in SUCCEED:
                    answered[name] = result_data(result)
                if name == "create_mailbox":
                    box = answered[name]["mail_address"]
            # a required argument given as null is refused, naming it
            refused = await mcp.call_tool("send_message", {"mail_address": None, "payload": "x"})
            assert error_text(refused).startswith("Invalid arguments: mail_address: ")
    finally:
        await connection.aclose()
    assert answered["fetch_messages"]["count"] == 1
    assert answered["ack_messages"]["confirmed"] == [answered["send_message"]["msg_id"]]
    assert answered["wake_rule"]["rules"] == []  # action null: list


def test_every_langchain_tool_takes_null_for_every_optional_argument():
    server = f"memory://nulls{uuid.uuid4().hex}"
    with Mq9Toolkit(server=server, tools=list(OPERATIONS), calls=True) as kit:
        tools = {tool.name: tool for tool in kit.get_tools()}
        box = "{box}"
        for number, name in enumerate(ORDER):
            arguments = all_null(tools[name].args_schema, box)
            call = {"name": name, "args": arguments, "id": f"c{number}", "type": "tool_call"}
            message = tools[name].invoke(call)
            assert not message.content.startswith("Invalid arguments"), (name, message.content)
            if name in SUCCEED:
                assert message.status == "success", (name, message.content)
            if name == "create_mailbox":
                box = json.loads(message.content)["mail_address"]
