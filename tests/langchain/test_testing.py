"""The scripted chat model that drives agents offline in examples, notebooks and tests."""

from __future__ import annotations

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from langchain_mq9.testing import ScriptedChatModel, call, tool_result


def test_steps_follow_the_number_of_assistant_turns_and_read_tool_results():
    model = ScriptedChatModel(
        steps=[call("create_mailbox", ttl=5), lambda m: f"got {tool_result(m)['mail_address']}"]
    )
    first = model.invoke([HumanMessage("go")])
    assert first.tool_calls[0]["name"] == "create_mailbox"
    assert first.tool_calls[0]["args"] == {"ttl": 5}
    history = [
        HumanMessage("go"),
        first,
        ToolMessage('{"mail_address": "mb.1"}', tool_call_id=first.tool_calls[0]["id"]),
    ]
    assert model.invoke(history).content == "got mb.1"
    assert model.invoke([*history, AIMessage("x")]).content == "Done."


def test_tool_results_given_as_content_blocks_are_read_too():
    blocks = ToolMessage(
        content=[{"type": "text", "text": '{"count": '}, {"type": "text", "text": "2}"}],
        tool_call_id="1",
        name="fetch_messages",
    )
    assert tool_result([blocks], "fetch_messages") == {"count": 2}
    with pytest.raises(LookupError):
        tool_result([blocks], "send_message")


def test_a_step_calling_a_tool_that_is_not_bound_is_refused():
    model = ScriptedChatModel(steps=[call("send_mesage", mail_address="a")])
    bound = model.bind_tools([type("T", (), {"name": "send_message"})()])
    with pytest.raises(ValueError, match="'send_mesage', which is not among the bound tools"):
        bound.invoke([HumanMessage("go")])


def test_a_step_calling_a_tool_with_an_argument_it_does_not_have_is_refused():
    from langchain_mq9 import Mq9Toolkit

    tools = Mq9Toolkit(server="memory://testing").get_tools()
    model = ScriptedChatModel(
        steps=[call("fetch_messages", mail_address="a.b", group_name="g")]
    ).bind_tools(tools)
    with pytest.raises(ValueError, match="fetch_messages with 'group_name', which is not among"):
        model.invoke([HumanMessage("go")])
    fine = ScriptedChatModel(steps=[call("fetch_messages", mail_address="a.b")]).bind_tools(tools)
    assert fine.invoke([HumanMessage("go")]).tool_calls[0]["args"] == {"mail_address": "a.b"}


def test_langchain_cores_fake_chat_model_cannot_drive_tools_which_is_why_this_one_exists():
    from langchain_core.language_models import GenericFakeChatModel

    from langchain_mq9 import Mq9Toolkit

    tools = Mq9Toolkit(server="memory://testing").get_tools()
    with pytest.raises(NotImplementedError):
        GenericFakeChatModel(messages=iter([])).bind_tools(tools)
    assert ScriptedChatModel().bind_tools(tools).tool_names == [t.name for t in tools]
