"""What the model reads of the tools: its size, its safety under strict mode, what each provider's
converter makes of it, and MCP's output schemas.

Every tool, LangChain and MCP, goes through the real converters (no network call is made):
langchain-openai (``bind_tools``, with ``strict=True`` too), langchain-anthropic
(``convert_to_anthropic_tool``, strict too), langchain-google-genai
(``convert_to_genai_function_declarations``) and the OpenAI Agents SDK (its strict check, and
``MCPUtil.to_function_tool`` as it loads MCP tools). A control tool with an open object proves
each check would catch what issue #13 found.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from langchain_core.tools import StructuredTool
from pydantic import BaseModel

from langchain_mq9 import Mq9Toolkit
from mq9_platform import Mq9Client
from mq9_platform.operations.catalog import DEFAULT_OPERATIONS, OPERATIONS, ToolPolicy
from mq9_platform.operations.results import ADVICE

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:  # bench/ is a folder of the repository, not of the package
    sys.path.insert(0, str(ROOT))

from bench import tokens  # noqa: E402
from mq9_mcp.server import tool_definitions  # noqa: E402

pytestmark = pytest.mark.slow

SURFACES = ["langchain", "langchain, agent_mailbox", "mcp", "mcp, agent_mailbox"]
# The keywords OpenAI's strict mode supports that our schemas use; anything else might be refused.
STRICT_KEYWORDS = {"type", "properties", "required", "additionalProperties", "description",
                   "enum", "items"}  # fmt: skip


def lc_tools(agent_mailbox: str | None = None) -> list:
    mine = {"agent_mailbox": agent_mailbox} if agent_mailbox else {}
    return Mq9Toolkit(server="memory://schemas", tools=list(OPERATIONS), **mine).get_tools()


def mcp_tools(agent_mailbox: str | None = None) -> list:
    """The MCP server's tools as LangChain's own MCP client (langchain.mcp) hands them to a
    LangChain model."""
    import warnings

    from fastmcp import Client
    from fastmcp.client.transports import StdioTransport

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # langchain.mcp is in beta
        from langchain.mcp import as_langchain_tool

    client = Client(StdioTransport(command=sys.executable, args=["-m", "mq9_mcp"]))
    definitions = tool_definitions(ToolPolicy(agent_mailbox=agent_mailbox))
    return [asyncio.run(as_langchain_tool(tool, client)) for tool in definitions]


def surface_tools(surface: str) -> list:
    mailbox = "agent.me" if "agent_mailbox" in surface else None
    return lc_tools(mailbox) if surface.startswith("langchain") else mcp_tools(mailbox)


class _OpenCard(BaseModel):
    card: dict[str, Any]


def open_object_tool() -> StructuredTool:
    """A control: an argument that is an object without declared properties, as
    ``agent_register.agent_card`` was before issue #13."""
    return StructuredTool.from_function(
        lambda card: card, name="control", description="d", args_schema=_OpenCard
    )


def walk(schema: Any):
    """Every schema node under ``schema``."""
    if isinstance(schema, dict):
        yield schema
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                for spec in value.values():
                    yield from walk(spec)
            elif key in ("items", "anyOf", "oneOf", "allOf", "additionalProperties"):
                yield from walk(value)
    elif isinstance(schema, list):
        for item in schema:
            yield from walk(item)


def open_objects(schema: dict) -> list[dict]:
    return [node for node in walk(schema) if node.get("type") == "object" and not node.get(
        "properties")]  # fmt: skip


# -- the budget --------------------------------------------------------------------------------


def test_the_eight_default_tools_fit_the_token_budget_below_upstream():
    enc = tokens.encoder()
    upstream, source = tokens.upstream_block()
    assert (source["path"], source["commit"]) == (
        "langchain-mq9/langchain_mq9/tools.py",
        "37dbe403228587e383244e1786e3879ff24702d1",
    )
    assert [t["function"]["name"] for t in upstream] == [
        "create_mailbox", "send_message", "fetch_messages", "ack_messages", "query_messages",
        "delete_message", "agent_register", "agent_discover",
    ]  # fmt: skip
    assert tokens.count(upstream, enc) == 1121  # the fixture and the encoding as measured
    for options in ({}, {"agent_mailbox": "agent.me"}):
        block = tokens.openai_block(**options)
        assert [t["function"]["name"] for t in block] == list(DEFAULT_OPERATIONS)
        assert tokens.count(block, enc) <= tokens.BUDGET < tokens.count(upstream, enc)
        # mq9-mcp's tools/list of the same eight, outputSchema and annotations included.
        assert tokens.count(tokens.mcp_list(**options), enc) <= tokens.MCP_BUDGET * tokens.MCP_SLACK


def test_the_bench_reports_tokens_per_tool_beside_upstream():
    section = tokens.run(None)
    assert section.error is None
    assert [c.key for c in section.checks] == ["8a", "8b", "8c", "8d", "8e", "8f"]
    assert all(c.passed for c in section.checks), [(c.key, c.ours) for c in section.checks]
    figures = dict(section.figures)
    for name in DEFAULT_OPERATIONS:
        ours, upstream = figures[f"{name}: ours / upstream"].split(" / ")
        assert int(ours) > 0 and int(upstream) > 0
    assert figures["total, OpenAI tools JSON: ours / upstream"].endswith(" / 1,121")


# -- strict-mode safety, as written ------------------------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
def test_no_open_object_no_null_union_no_title_anywhere(surface):
    for tool in surface_tools(surface):
        schema = tool.args_schema
        assert isinstance(schema, dict) and schema["type"] == "object", tool.name
        assert open_objects(schema) == [], tool.name
        text = json.dumps(schema)
        for noise in ('"anyOf"', '"oneOf"', '"title"', '"default"', '"$ref"', '"null"'):
            assert noise not in text, (tool.name, noise)
        for name, spec in schema["properties"].items():
            assert spec.get("type") in ("string", "integer", "array"), (tool.name, name)


def test_an_optional_argument_has_a_neutral_value_of_its_own_type():
    """No null: what a strict-mode model (made to give every argument) can pass for "not
    given" is a value of the argument's own type, and the model takes it."""
    zero = {"string": "", "integer": 0, "array": []}
    for tool in lc_tools():
        model, schema = tool.get_input_schema(), tool.args_schema
        for name, spec in schema["properties"].items():
            field = model.model_fields[name]
            if name in schema.get("required", ()) and field.is_required():
                continue
            default = field.get_default(call_default_factory=True)
            assert default is not None, (tool.name, name)
            if "enum" in spec:
                # "" means none, taken but not listed: Gemini refuses an empty enum value
                # (test_gemini_schemas.py); a strict-mode model gives a listed one instead
                assert default in spec["enum"] or default == "", (tool.name, name)
            else:
                assert type(default) is type(zero[spec["type"]]), (tool.name, name)
        required = {n: "x" if s["type"] == "string" else 1 for n, s in schema["properties"].items()
                    if model.model_fields[n].is_required()}  # fmt: skip
        if tool.name == "agent_report":
            required["status"] = "busy"
        neutral = {
            n: s["enum"][0] if "enum" in s else zero[s["type"]]
            for n, s in schema["properties"].items()
            if n not in required
        }
        model.model_validate({**neutral, **required})  # a strict-mode call is accepted


def test_every_bound_a_provider_may_drop_is_checked_again():
    """Gemini's converter keeps no bound (and the schemas declare none): the input models
    check each one and answer "Invalid arguments" naming the argument."""
    base = {
        "agent_register": {"name": "agent.x", "capabilities": "works"},
        "agent_discover": {"query": "x"},
        "create_mailbox": {},
        "send_message": {"mail_address": "agent.inbox", "payload": "x"},
        "fetch_messages": {"mail_address": "agent.inbox"},
        "ack_messages": {"mail_address": "agent.inbox", "msg_id": 0},
        "query_messages": {"mail_address": "agent.inbox"},
        "delete_message": {"mail_address": "agent.inbox", "msg_id": 0},
        "agent_unregister": {"name": "agent.x"},
        "agent_report": {"name": "agent.x", "status": "busy"},
        "call_agent": {"agent": "agent.x", "task": "t"},
        "check_call": {"task_id": "t1"},
        "answer_call": {"task_id": "t1", "answer": "a"},
        "cancel_call": {"task_id": "t1"},
        "list_calls": {},
        "wake_rule": {"mail_address": "agent.inbox"},
    }
    checked = []
    with Mq9Toolkit(server=f"memory://bounds{uuid.uuid4().hex}", tools=list(OPERATIONS)) as kit:
        for tool in kit.get_tools():
            for name, field in tool.get_input_schema().model_fields.items():
                for bound in field.metadata:
                    broken = None
                    if hasattr(bound, "ge"):
                        broken = bound.ge - 1
                    elif hasattr(bound, "le"):
                        broken = bound.le + 1
                    elif hasattr(bound, "min_length"):
                        broken = ""
                    if broken is None:
                        continue
                    args = {**base[tool.name], name: broken}
                    result = tool.invoke(
                        {"name": tool.name, "args": args, "id": "1", "type": "tool_call"}
                    )
                    assert result.status == "error", (tool.name, name)
                    assert result.content.startswith(f"Invalid arguments: {name}: "), result.content
                    assert result.content.endswith("Fix them and call the tool again.")
                    checked.append((tool.name, name))
    assert ("fetch_messages", "max_wait_ms") in checked and ("send_message", "delay") in checked
    assert len(checked) >= 10


# -- what each provider's converter makes of them ----------------------------------------------


@pytest.mark.parametrize("surface", SURFACES)
def test_langchain_openai_sends_our_schema_as_is_and_strict_mode_keeps_it_whole(surface):
    from langchain_openai import ChatOpenAI

    tools = surface_tools(surface)
    model = ChatOpenAI(api_key="sk-offline", model="gpt-4.1-mini")
    plain = model.bind_tools(tools).kwargs["tools"]
    strict = model.bind_tools(tools, strict=True).kwargs["tools"]
    for tool, sent, sent_strict in zip(tools, plain, strict, strict=True):
        function = sent["function"]
        assert (function["name"], function["description"]) == (tool.name, tool.description)
        assert function["parameters"] == tool.args_schema  # nothing added, nothing lost
        function = sent_strict["function"]
        assert function["strict"] is True
        parameters = function["parameters"]
        # What OpenAI requires in strict mode: every property required, no extra properties,
        # at every level; and only keywords it supports.
        for node in walk(parameters):
            assert set(node) <= STRICT_KEYWORDS, (tool.name, set(node) - STRICT_KEYWORDS)
            if node.get("type") == "object":
                assert node["properties"], tool.name
                assert set(node["required"]) == set(node["properties"])
                assert node["additionalProperties"] is False
        # The same properties, types and words as the non-strict schema.
        assert parameters["properties"] == tool.args_schema["properties"]


def test_strict_checks_catch_an_open_object():
    from agents.strict_schema import ensure_strict_json_schema
    from langchain_openai import ChatOpenAI

    control = open_object_tool()
    [sent] = ChatOpenAI(api_key="sk-offline").bind_tools([control], strict=True).kwargs["tools"]
    card = sent["function"]["parameters"]["properties"]["card"]
    assert card["additionalProperties"] is False and not card.get("properties")  # only {} fits
    assert open_objects(sent["function"]["parameters"])
    with pytest.raises(Exception, match="permits undeclared properties"):
        ensure_strict_json_schema(_OpenCard.model_json_schema(), _reject_open_objects=True)


@pytest.mark.parametrize("surface", SURFACES)
def test_langchain_anthropic_gets_our_schema_and_its_strict_form_is_whole(surface):
    from langchain_anthropic import convert_to_anthropic_tool

    for tool in surface_tools(surface):
        sent = convert_to_anthropic_tool(tool)
        assert sent["name"] == tool.name and sent["description"] == tool.description
        assert sent["input_schema"] == tool.args_schema
        strict = convert_to_anthropic_tool(tool, strict=True)
        assert strict["strict"] is True
        schema = strict["input_schema"]
        assert open_objects(schema) == []
        assert schema["additionalProperties"] is False
        assert set(schema["required"]) == set(schema["properties"])


@pytest.mark.parametrize("surface", SURFACES)
def test_langchain_google_genai_declares_every_argument_with_its_type(surface):
    from google.genai import types
    from langchain_google_genai._function_utils import convert_to_genai_function_declarations

    tools = surface_tools(surface)
    [converted] = convert_to_genai_function_declarations(tools)
    kinds = {"string": types.Type.STRING, "integer": types.Type.INTEGER,
             "array": types.Type.ARRAY}  # fmt: skip
    for tool, declaration in zip(tools, converted.function_declarations, strict=True):
        assert (declaration.name, declaration.description) == (tool.name, tool.description)
        parameters = declaration.parameters
        assert parameters.type == types.Type.OBJECT
        assert sorted(parameters.required or []) == sorted(tool.args_schema.get("required", []))
        assert set(parameters.properties) == set(tool.args_schema["properties"])
        for name, spec in tool.args_schema["properties"].items():
            declared = parameters.properties[name]
            # Gemini has answered 400 for objects without properties: there are none.
            assert declared.type == kinds[spec["type"]], (tool.name, name)
            assert declared.description == spec.get("description"), (tool.name, name)
            # the enum as written, and never an empty or non-string value: Gemini answers a
            # request holding one with HTTP 400 for every tool (test_gemini_schemas.py)
            assert declared.enum == spec.get("enum"), (tool.name, name)
            assert all(isinstance(v, str) and v for v in declared.enum or ()), (tool.name, name)
            if spec["type"] == "array":
                assert declared.items.type == types.Type.STRING
            # Gemini keeps no bound and no default: the tools re-check bounds (see above).
            assert declared.minimum is None and declared.maximum is None


@pytest.mark.parametrize("surface", ["langchain", "langchain, agent_mailbox"])
def test_openai_agents_sdk_strict_check_accepts_every_langchain_tool(surface):
    from agents.strict_schema import ensure_strict_json_schema

    for tool in surface_tools(surface):
        strict = ensure_strict_json_schema(
            copy.deepcopy(tool.args_schema), _reject_open_objects=True
        )
        assert strict["properties"] == tool.args_schema["properties"]
        assert set(strict["required"]) == set(strict["properties"])


@pytest.mark.parametrize("agent_mailbox", [None, "agent.me"])
def test_openai_agents_sdk_loads_every_mcp_tool_in_strict_mode(agent_mailbox):
    """The Agents SDK applies strict mode to MCP tools, and silently falls back to a
    non-strict tool when a schema cannot be made strict: every one of ours stays strict."""
    from agents.mcp import MCPServerStdio
    from agents.mcp.util import MCPUtil
    from mcp import types

    server = MCPServerStdio(params={"command": sys.executable, "args": ["-m", "mq9_mcp"]})
    for tool in tool_definitions(ToolPolicy(agent_mailbox=agent_mailbox)):
        loaded = MCPUtil.to_function_tool(tool, server, convert_schemas_to_strict=True)
        assert loaded.strict_json_schema is True, tool.name
        assert loaded.params_json_schema["properties"] == tool.input_schema["properties"]
    control = types.Tool(name="control", description="d", inputSchema=_OpenCard.model_json_schema())
    loaded = MCPUtil.to_function_tool(control, server, convert_schemas_to_strict=True)
    assert loaded.strict_json_schema is False  # the check has teeth


# -- MCP: output schemas -----------------------------------------------------------------------


async def test_every_mcp_output_schema_matches_what_the_tool_returns():
    """Each operation, in the cases that give its result every key it can have: the result
    validates against its outputSchema, carries every declared key (but those only some
    results have), and nothing else than the words for the model (ADVICE)."""
    url = f"memory://outputs{uuid.uuid4().hex}"
    policy = ToolPolicy(num_msgs=1, calls=True, reply_mailbox="agent.calls")
    seen: dict[str, set[str]] = {name: set() for name in OPERATIONS}

    async with Mq9Client(url) as client:

        async def run(name: str, /, **args: Any) -> dict[str, Any]:
            outcome = await OPERATIONS[name].execute(client, args, policy)
            content = json.loads(outcome.text())
            assert content == outcome.content
            schema = OPERATIONS[name].output_schema
            jsonschema.validate(content, schema)
            declared = set(schema["properties"])
            assert set(content) <= declared | set(ADVICE), (name, set(content) - declared)
            always = declared - OPERATIONS[name].result.optional_keys()
            assert always <= set(content), (name, always - set(content))
            seen[name] |= set(content)
            return content

        await run("agent_register", name="agent.w", capabilities="works")
        await run("agent_register", name="agent.w", capabilities="works")  # same card
        await run("agent_register", name="agent.w", capabilities="other")  # kept card
        await run("agent_discover", query="works")
        await run("agent_discover", query="")
        box = (await run("create_mailbox", ttl=60))["mail_address"]
        await run("send_message", mail_address=box, payload='{"a": 1}', key="k", tags=["t"])
        await run("send_message", mail_address=box, payload="later", delay=60)
        await run("send_message", mail_address=box, payload="b", priority="urgent")
        first = await run("fetch_messages", mail_address=box, max_wait_ms=0)
        await run("fetch_messages", mail_address=box, max_wait_ms=0)  # unacked_earlier
        await run("fetch_messages", mail_address=box, max_wait_ms=0)  # nothing left
        await run("ack_messages", mail_address=box, msg_id=first["messages"][0]["msg_id"])
        await run("query_messages", mail_address=box, key="k", tags=["t"])
        await run("query_messages", mail_address=box, from_id=1)
        await run("delete_message", mail_address=box, msg_id=0)
        await run("agent_report", name="agent.w", status="busy", details='{"load": 1}')
        await run("agent_unregister", name="agent.w")
        await _run_call_tools(client, run)
        await run("wake_rule", mail_address=box, action="add", target="callback", callback="f")

    for name, keys in seen.items():
        assert set(OPERATIONS[name].output_schema["properties"]) <= keys, name
    assert {"note", "next_step", "filter_used"} <= set().union(*seen.values())


async def _run_call_tools(client: Mq9Client, run: Any) -> None:
    """The agent-call tools in the cases that give each result every key it can have: an
    agent served, stopped (offline: calls wait), and served again."""
    from langchain_mq9.serving import AgentServer

    graph = asking_graph()

    def serving() -> AgentServer:
        return AgentServer(
            graph,
            name="agent.upper",
            client=client,
            worker="w1",
            to_input=lambda g, t: {"text": t},
            to_output=lambda r: r["out"],
        )

    async with serving():
        await run("call_agent", agent="agent.upper", task="hi", wait_seconds=10)
        failed = await run("call_agent", agent="agent.upper", task="fail", wait_seconds=10)
        asked = await run("call_agent", agent="agent.upper", task="ask", wait_seconds=10)
        assert asked["state"] == "input-required", asked
        await run("check_call", task_id=asked["task_id"])
        # two more questions, answered and canceled while the agent is offline
        answered_first, canceled_first = [
            await run("call_agent", agent="agent.upper", task="ask", wait_seconds=10)
            for _ in range(2)
        ]
    # The agent is offline: an answer and a cancel wait for it.
    pending = await run("answer_call", task_id=asked["task_id"], answer="en")
    assert pending["answer_pending"] is True
    await run("check_call", task_id=asked["task_id"])
    await run("answer_call", task_id=answered_first["task_id"], answer="en")
    both = await run("cancel_call", task_id=answered_first["task_id"])
    assert both["answer_pending"] and both["cancel_pending"] and "question" in both, both
    await run("cancel_call", task_id=canceled_first["task_id"])
    both = await run("answer_call", task_id=canceled_first["task_id"], answer="en")
    assert both["answer_pending"] and both["cancel_pending"], both
    queued = await run("call_agent", agent="agent.upper", task="later")
    assert queued["state"] == "submitted", queued
    assert (await run("cancel_call", task_id=queued["task_id"]))["cancel_pending"] is True
    await run("check_call", task_id=queued["task_id"])
    async with serving():
        done = await run("check_call", task_id=asked["task_id"], wait_seconds=10)
        assert done["result"] == "ask en", done
        canceled = await run("check_call", task_id=queued["task_id"], wait_seconds=10)
        assert canceled["state"] == "canceled", canceled
        await run("cancel_call", task_id=queued["task_id"])  # canceled already: the reason
        await run("cancel_call", task_id=done["task_id"])  # done already: the result
        await run("check_call", task_id=failed["task_id"])
        again = await run("call_agent", agent="agent.upper", task="ask", wait_seconds=10)
        await run("answer_call", task_id=again["task_id"], answer="fr", wait_seconds=10)
        refused = await run("call_agent", agent="agent.upper", task="ask", wait_seconds=10)
        refused = await run(
            "answer_call", task_id=refused["task_id"], answer="fail", wait_seconds=10
        )
        assert refused["state"] == "failed" and refused["reason"], refused
        listed = await run("list_calls", state="")
        assert listed["count"] == 8, listed


def asking_graph() -> Any:
    """A graph that asks (``interrupt``) when the text says "ask", fails on "fail" (as a text or
    an answer), and otherwise shouts the text back."""
    from typing import TypedDict

    from langgraph.checkpoint.memory import InMemorySaver
    from langgraph.graph import END, START, StateGraph
    from langgraph.types import interrupt

    class State(TypedDict):
        text: str
        out: str

    def work(state: State) -> dict[str, str]:
        if state["text"] == "fail":
            raise ValueError("cannot do that")
        if state["text"] == "ask":
            answer = interrupt("which language?")
            if answer == "fail":
                raise ValueError("cannot answer that")
            return {"out": f"ask {answer}"}
        return {"out": state["text"].upper()}

    builder = StateGraph(State)
    builder.add_node("work", work)
    builder.add_edge(START, "work")
    builder.add_edge("work", END)
    return builder.compile(checkpointer=InMemorySaver())


def test_mcp_tools_carry_no_title_noise_and_an_output_schema():
    for tool in tool_definitions(ToolPolicy()):
        listed = tool.model_dump(by_alias=True, exclude_none=True, mode="json")
        assert set(listed) == {
            "name", "title", "description", "inputSchema", "outputSchema", "annotations",
        }  # fmt: skip
        for schema in (listed["inputSchema"], listed["outputSchema"]):
            assert "title" not in json.dumps(schema)
        assert listed["outputSchema"]["type"] == "object"
        assert "title" not in listed["annotations"]  # the tool's own title says it once
