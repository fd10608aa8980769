"""#78: the README's Quick start on ``memory://``: a first ``agent_register`` that times out
while the search model loads in this process says "loading the search model", not that the
broker (this process) is unreachable; once loaded the calls pass. The load is held, not
slowed by chance: the lock every load takes is held by the test while the call runs."""

from __future__ import annotations

import uuid

import pytest

from langchain_mq9 import Mq9Toolkit
from mq9_wire import semantic

pytestmark = pytest.mark.slow  # waits out a tool call's time (its request_timeout + 5 s)


def test_a_first_call_during_the_model_load_says_the_model_is_loading():
    server = f"memory://loading{uuid.uuid4().hex}"
    card = {"capabilities": "translates English to Japanese"}
    with Mq9Toolkit(server=server, agent_mailbox="agent.me", request_timeout=0.2) as toolkit:
        tools = {tool.name: tool for tool in toolkit.get_tools()}
        with semantic._LOADING:  # the broker's REGISTER waits on the load, as on first use
            said = str(tools["agent_register"].invoke(card))
    assert "loading the search model" in said and "unreachable" not in said, said
    # hang guard only: the load (cached in this process once done) may take long when busy
    with Mq9Toolkit(server=server, agent_mailbox="agent.me", request_timeout=120) as toolkit:
        tools = {tool.name: tool for tool in toolkit.get_tools()}
        assert "agent.me" in str(tools["agent_register"].invoke(card))
        found = str(tools["agent_discover"].invoke({"query": "translation to Japanese"}))
    assert "agent.me" in found, found
