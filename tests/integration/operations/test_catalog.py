"""The catalog written out (issue #36): each operation has its tool class in tools.py, its
handler takes the call's context and the input model the catalog names and returns the result
it names, and every setting reads as the policy's own. Handlers run with what each call hands
them (``CallContext``): the client, the policy, where progress goes; nothing ambient."""

from __future__ import annotations

import dataclasses
import inspect
import typing
from pathlib import Path

import pytest

from langchain_mq9 import tools
from langchain_mq9.serving import AgentServer
from mq9_platform.operations.catalog import OPERATIONS, OperationError, ToolPolicy
from mq9_platform.operations.config import ToolConfig
from mq9_platform.operations.context import CallContext
from mq9_platform.operations.results import Outcome
from testbed.support.a2a_support import text_graph, text_io


def test_each_operation_has_a_tool_class_written_out_in_tools_py():
    source = Path(tools.__file__).read_text("utf-8")
    for name, operation in OPERATIONS.items():
        title = "".join(part.title() for part in name.split("_")) + "Tool"
        tool_class = getattr(tools, title)
        assert f"class {title}(Mq9Tool):" in source
        assert tool_class.operation is operation and tools.TOOL_CLASSES[name] is tool_class
    assert set(tools.TOOL_CLASSES) == set(OPERATIONS)


def test_each_handler_takes_the_context_and_the_catalog_input_and_returns_its_result():
    for name, operation in OPERATIONS.items():
        hints = typing.get_type_hints(operation.handler)
        assert operation.handler.__name__ == name
        assert list(hints) == ["ctx", "args", "return"], name
        assert hints["ctx"] is CallContext and hints["args"] is operation.input_model, name
        assert hints["return"] == Outcome[operation.result], name


def test_each_setting_reads_as_the_policy_own():
    config = ToolConfig(  # every setting away from its default, each to a value of its own
        allowed_mailboxes=("team",),
        read_only=True,
        max_payload_chars=123,
        max_answer_chars=4567,
        default_group="grp",
        agent_mailbox="agent.me",
        agent_card={"version": "2"},
        deliver="latest",
        num_msgs=7,
        discover_by="text",
        discover_limit=3,
        discover_rerank=True,
        worker="w1",
        lease_ttl=60,
        calls=True,
        reply_mailbox="agent.me.replies",
        run_groups=("night",),
        run_workers=("w2",),
        wait_cap_ms=1500,
        tool_prefix="mq9_",
    )
    assert config.model_fields_set == set(ToolConfig.model_fields)  # a new one: add it above
    policy = ToolPolicy(config)
    for name in ToolConfig.model_fields:
        assert isinstance(inspect.getattr_static(ToolPolicy, name), property), name
        assert getattr(policy, name) == getattr(config, name), name


async def test_a_kept_group_reader_runs_with_the_client_it_is_handed(client):
    """Outside any tool call: the reader a policy keeps reads with the client given, and one
    used without it says how to give it (it used to need a context variable set)."""
    policy = ToolPolicy(agent_mailbox="agent.ctx")
    await client.mailbox_create(name="agent.ctx", ttl=0)
    sent = await client.send("agent.ctx", "one")
    reading = policy.reading(client, "agent.ctx", policy.default_group)
    with pytest.raises(RuntimeError, match=r"reader_for\(client\)"):
        await reading.reader.fetch(num_msgs=1)
    assert [m.msg_id for m in await reading.fetch(client, 10, "earliest", 0)] == [sent]
    acked = await OPERATIONS["ack_messages"].execute(client, {"msg_id": sent}, policy)
    assert acked.content["confirmed"] == [sent]


async def test_progress_goes_to_the_callback_the_call_is_handed(client):
    """The call tools report a waiting call's states to ``execute(progress=...)``: what
    mq9-mcp passes for a client that sent a progressToken."""
    policy = ToolPolicy(agent_mailbox="agent.boss", calls=True)
    seen: list[dict] = []

    async def progress(view: dict) -> None:
        seen.append(view)

    graph = text_graph(str.upper)
    async with AgentServer(graph, name="agent.upper", client=client, **text_io()):
        args = {"agent": "agent.upper", "task": "hello", "wait_seconds": 10}
        call = await OPERATIONS["call_agent"].execute(client, args, policy, progress=progress)
        quiet = await OPERATIONS["call_agent"].execute(client, args, policy)
    assert call.content["result"] == quiet.content["result"] == "HELLO"
    assert seen and seen[-1]["state"] == call.content["state"] == "completed"
    assert {view["task_id"] for view in seen} == {call.content["task_id"]}


# -- a tool error never ends the run (issue #52) -------------------------------------------


def _failing(operation_name: str, error: Exception):
    """The operation as the catalog has it, its handler raising ``error`` (what a handler
    raised for a value it could not take, e.g. a derived name too long, or a bug)."""

    async def handler(ctx, args):
        await ctx.client.agent_discover()  # it runs with the real client
        raise error

    return dataclasses.replace(OPERATIONS[operation_name], handler=handler)


async def test_a_value_error_a_handler_raises_is_a_tool_error_and_logged(client, caplog):
    error = ValueError("dead_letter: the name is too long")
    operation = _failing("fetch_messages", error)
    with caplog.at_level("ERROR", logger="mq9_platform"), pytest.raises(OperationError) as raised:
        await operation.execute(client, {"mail_address": "agent.me"}, ToolPolicy())
    assert "fetch_messages could not be done: dead_letter: the name is too long" in str(
        raised.value
    )
    [record] = [r for r in caplog.records if r.name == "mq9_platform"]
    assert record.exc_info[1] is error  # the traceback is kept for the developers
    # Any other exception is a bug: it still raises (test_programming_errors_still_raise).
    with pytest.raises(KeyError):
        await _failing("fetch_messages", KeyError("lane")).execute(
            client, {"mail_address": "agent.me"}, ToolPolicy()
        )


async def test_a_graph_run_goes_on_after_a_tool_raised(client, caplog):
    from langchain.agents import create_agent
    from langchain_core.messages import ToolMessage

    from langchain_mq9 import Mq9Toolkit
    from langchain_mq9.testing import ScriptedChatModel, call

    class BrokenFetch(tools.Mq9Tool):
        operation = _failing("fetch_messages", ValueError("its .dlq name is too long"))

    async with Mq9Toolkit(client=client) as kit:
        broken = BrokenFetch(connection=kit.connection, policy=kit.policy)
        model = ScriptedChatModel(
            steps=[call("fetch_messages", mail_address="agent.me"), "I could not read it."]
        )
        agent = create_agent(model, [broken])
        with caplog.at_level("ERROR", logger="mq9_platform"):
            state = await agent.ainvoke({"messages": [("human", "Read agent.me.")]})
    [answer] = [m for m in state["messages"] if isinstance(m, ToolMessage)]
    assert answer.status == "error" and "its .dlq name is too long" in answer.content
    assert state["messages"][-1].content == "I could not read it."  # the run went on


# The longest valid addresses: the names derived from them (a group's dead letters, ...) may
# be longer than the broker takes. Whether the tool reads the mailbox or says why not, the run
# goes on and mq9-mcp answers a tool error, never "internal error".
LONGEST = ("a" * 60 + ".") * 62 + "b" * 17  # 3,799 characters


async def _a_long_mailbox(client) -> None:
    assert len(LONGEST) == 3799
    await client.mailbox_create(name=LONGEST)
    await client.send(LONGEST, "hi")


async def test_a_run_goes_on_whatever_the_longest_address_gives(client):
    from langchain.agents import create_agent

    from langchain_mq9 import Mq9Toolkit
    from langchain_mq9.testing import ScriptedChatModel, call

    await _a_long_mailbox(client)
    async with Mq9Toolkit(client=client) as kit:
        steps = [call("fetch_messages", mail_address=LONGEST, max_wait_ms=0), "Done."]
        agent = create_agent(ScriptedChatModel(steps=steps), kit.get_tools())
        state = await agent.ainvoke({"messages": [("human", "Read it.")]})
    assert state["messages"][-1].content == "Done."
    [answer] = [m for m in state["messages"] if m.type == "tool"]
    assert answer.status == "success" or "fetch_messages could not be done" in answer.content


@pytest.mark.slow
async def test_mq9_mcp_answers_the_longest_address_with_a_tool_error_at_worst(nats_server):
    from mq9_platform import Mq9Client
    from testbed.support.mcp_support import ok, result_text, served_engine, stdio_session

    async with served_engine(nats_server.url), Mq9Client(nats_server.url) as client:
        await _a_long_mailbox(client)
        async with stdio_session("--server", nats_server.url) as mcp:
            result = await mcp.call_tool(
                "fetch_messages", {"mail_address": LONGEST, "max_wait_ms": 0}
            )
            text = result_text(result)
            assert not result.is_error or "fetch_messages could not be done" in text, text
            assert "internal error" not in text.lower()
            assert (await ok(mcp, "agent_discover", query=""))["count"] == 0  # still serving
