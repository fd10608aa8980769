"""The two faces of serving an agent (issue #108): the platform's ``AgentServer`` serves any
object with ``async ainvoke(input, config)`` (text in, text or JSON out) and resumes nothing
unless told how (an answer then fails the task in one line); ``langchain_mq9``'s serves a
LangGraph graph with LangGraph's defaults (a messages state in, the last message's text out,
``Command(resume=...)`` for the answer to its ``interrupt()``)."""

from __future__ import annotations

from typing import Any

from langchain_core.messages import AIMessage
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.types import Command, interrupt

import langchain_mq9
from langchain_mq9 import serving
from mq9_platform.a2a import mail as w
from mq9_platform.a2a import server as platform
from mq9_platform.a2a.caller import AgentCaller

AGENT = "agent.plain"
WAIT = 20  # seconds: a guard against a hang, never a measure


class Plain:
    """A runnable of no framework: what it was invoked with, and an answer of its own."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.seen: list[tuple[Any, Any]] = []

    async def ainvoke(self, payload: Any, config: Any = None) -> Any:
        self.seen.append((payload, config))
        return self.answer(payload) if callable(self.answer) else self.answer


async def test_the_platform_serves_a_plain_runnable_text_in_and_json_or_text_out(client):
    shouted = Plain(lambda text: text.upper())
    counted = Plain(lambda text: {"words": len(text.split()), "text": text})
    caller = await AgentCaller(client, "agent.boss.calls").open()
    async with platform.AgentServer(shouted, name=AGENT, client=client, worker="w1"):
        done = await caller.call(AGENT, "hello there", wait=WAIT)
    assert done.state == w.COMPLETED and done.view()["result"] == "HELLO THERE", done.view()
    [(payload, config)] = shouted.seen
    assert payload == "hello there"  # the text itself: no messages, no framework
    assert config["configurable"]["thread_id"]  # one conversation per context and owner

    server = await platform.serve_agent(counted, name="agent.counter", client=client)
    try:
        done = await caller.call("agent.counter", "one two three", wait=WAIT)
    finally:
        await server.stop()
    assert done.state == w.COMPLETED, done.view()
    [artifact] = done.task["artifacts"]
    assert artifact["parts"] == [{"data": {"words": 3, "text": "one two three"}}]


async def test_an_answer_to_a_server_with_no_resume_fails_the_task_in_one_line(client):
    asking = Plain({"__interrupt__": ["Which language?"]})
    caller = await AgentCaller(client, "agent.boss.calls").open()
    async with platform.AgentServer(asking, name=AGENT, client=client, worker="w1") as server:
        asked = await caller.call(AGENT, "greet", wait=WAIT)
        assert asked.state == w.INPUT_REQUIRED, asked.view()
        assert asked.view()["question"] == "Which language?"
        failed = await caller.answer(asked.task_id, "French", wait=WAIT)
        assert server.to_resume is None
    reason = failed.view().get("reason", "")
    assert failed.state == w.FAILED, failed.view()
    assert reason.startswith(f"CannotResume: agent {AGENT} cannot resume task {asked.task_id}")
    assert "to_resume" in reason and "\n" not in reason and "Traceback" not in reason
    assert len(asking.seen) == 1  # the answer never reached the runnable


def asking_graph() -> Any:
    """A messages graph that asks which language, then answers in it."""

    def greet(state: MessagesState) -> dict[str, Any]:
        language = interrupt("Which language?")
        return {"messages": [AIMessage(f"{state['messages'][-1].content} in {language}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("greet", greet)
    builder.add_edge(START, "greet")
    builder.add_edge("greet", END)
    return builder.compile(checkpointer=InMemorySaver())


async def test_langchain_mq9_serves_a_langgraph_graph_and_resumes_its_interrupt(client):
    assert langchain_mq9.serve_agent is serving.serve_agent
    assert langchain_mq9.AgentServer is serving.AgentServer
    graph = asking_graph()
    caller = await AgentCaller(client, "agent.boss.calls").open()
    server = await langchain_mq9.serve_agent(graph, name="agent.greeter", client=client)
    try:
        assert isinstance(server, serving.AgentServer) and server.graph is graph
        asked = await caller.call("agent.greeter", "greet", wait=WAIT)
        assert asked.state == w.INPUT_REQUIRED, asked.view()
        assert asked.view()["question"] == "Which language?"
        done = await caller.answer(asked.task_id, "French", wait=WAIT)
    finally:
        await server.stop()
    assert done.state == w.COMPLETED and done.view()["result"] == "greet in French", done.view()


def test_langgraphs_defaults_read_messages_and_content_blocks():
    graph = asking_graph()
    assert serving.messages_input(graph, "hi") == {"messages": [("user", "hi")]}
    assert serving.messages_input(Plain("x"), "hi") == "hi"
    blocks = AIMessage(content=[{"type": "text", "text": "a"}, {"type": "text", "text": "b"}])
    assert serving.last_message_text({"messages": [blocks]}) == "ab"
    assert serving.last_message_text({"other": 1}) == {"other": 1}
    resumed = serving.resume_command("fr")
    assert isinstance(resumed, Command) and resumed.resume == "fr"
    # the platform's defaults know no messages: a state is JSON data like any other
    assert platform.default_input(graph, "hi") == "hi"
    assert platform.default_output({"messages": ["m"]}) == {"messages": ["m"]}
