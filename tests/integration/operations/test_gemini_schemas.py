"""Every tool's schema holds to what Gemini's function declarations take (issue #107): the
Gemini API refuses a whole request, every tool of it, when one declaration breaks its rules
(HTTP 400 ``...enum[4]: cannot be empty`` for ``wake_rule``'s ``""`` target). Held on both
surfaces (the LangChain tools, and mq9-mcp's tools/list read through an MCP client), as written
and as each converter hands them to Gemini: langchain-google-genai's, and google-adk's two
(``_to_gemini_schema``; the raw JSON schema it sends as ``parameters_json_schema``) where
google-adk installs. Controls prove each check would catch the old ``wake_rule``.

The rules are the documented subset of OpenAPI 3.0 the Gemini API takes (its ``Schema`` and
``FunctionDeclaration``): only the fields below, an enum of non-empty strings on a string,
an array with its items, an object with properties, required naming its properties, a
function name starting with a letter or ``_`` (letters, digits, ``_ . : -``, up to 64), a
parameter name of letters, digits and ``_``; ADK drops ``additionalProperties`` because Gemini
refuses it.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest

from langchain_mq9 import Mq9Toolkit
from mq9_mcp.server import create_server
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import OPERATIONS, ToolPolicy

GEMINI_FIELDS = {
    "type", "format", "title", "description", "nullable", "enum", "max_items", "min_items",
    "properties", "required", "min_properties", "max_properties", "min_length", "max_length",
    "pattern", "example", "any_of", "property_ordering", "default", "items", "minimum",
    "maximum",
}  # fmt: skip
GEMINI_TYPES = {"string", "number", "integer", "boolean", "array", "object"}
FUNCTION_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.:-]{0,63}")
PARAMETER_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
SETTINGS = [{}, {"agent_mailbox": "agent.me"}, {"tool_prefix": "mq9mcp_"}]

# wake_rule's target as it was listed before issue #107: Gemini answered 400 for it
OLD_TARGET = {"type": "string", "enum": ["webhook", "agent_server", "command", "callback", ""]}


def _snake(key: str) -> str:
    return re.sub(r"(?<=[a-z])(?=[A-Z])", "_", key).lower()


def refusals(schema: Any, where: str = "parameters") -> list[str]:
    """What Gemini refuses in ``schema`` (JSON Schema as written, or a converter's Schema
    dumped: snake_case keys, upper-case types), one line each."""
    if not isinstance(schema, dict):
        return [f"{where}: not a schema object"]
    node = {_snake(k): v for k, v in schema.items()}
    found = [
        f"{where}: {key} is not in Gemini's Schema" for key in sorted(set(node) - GEMINI_FIELDS)
    ]
    kind = str(node.get("type", "")).lower()
    if kind not in GEMINI_TYPES:
        found.append(f"{where}: type {node.get('type')!r}")
    if "enum" in node:
        values = node["enum"]
        if kind != "string":
            found.append(f"{where}: an enum on a {kind}")
        if not values or any(not isinstance(v, str) or not v for v in values):
            found.append(f"{where}: enum {values!r} holds an empty or non-string value")
    if kind == "array":
        found += refusals(node.get("items"), f"{where}.items")
    if kind == "object":
        properties = node.get("properties") or {}
        if not properties:
            found.append(f"{where}: an object without properties")
        for name, spec in properties.items():
            if not PARAMETER_NAME.fullmatch(name):
                found.append(f"{where}: parameter name {name!r}")
            found += refusals(spec, f"{where}.{name}")
        unknown = set(node.get("required") or ()) - set(properties)
        if unknown:
            found.append(f"{where}: required names {sorted(unknown)}, not properties")
    return found


def declaration_refusals(name: str, description: Any, parameters: Any) -> list[str]:
    found = [] if FUNCTION_NAME.fullmatch(name) else [f"{name}: not a Gemini function name"]
    if not isinstance(description, str) or not description:
        found.append(f"{name}: no description")
    return found + [f"{name}: {line}" for line in refusals(parameters)]


def lc_tools(settings: dict[str, Any]) -> list:
    kit = Mq9Toolkit(
        server=f"memory://gemini{uuid.uuid4().hex}", tools=list(OPERATIONS), **settings
    )
    return kit.get_tools()


async def mcp_tools(settings: dict[str, Any]) -> list:
    """tools/list of mq9-mcp with every tool on (``--calls``), read through an MCP client."""
    from mcp import Client

    server = create_server(Mq9Connection("memory://"), ToolPolicy(calls=True, **settings))
    async with Client(server, read_timeout_seconds=20) as client:
        listed = await client.list_tools()
    assert {t.name for t in listed.tools} == {
        server.policies.policy.tool_name(n) for n in OPERATIONS
    }
    return listed.tools


def dumped(schema: Any) -> dict[str, Any]:
    """A converter's google-genai ``Schema``, as the JSON Gemini is sent."""
    return schema.model_dump(exclude_none=True, mode="json")


# -- the rules have teeth ----------------------------------------------------------------------


def test_the_rules_refuse_what_gemini_refused():
    old = {"type": "object", "properties": {"target": OLD_TARGET}}
    assert refusals(old) == [f"parameters.target: enum {OLD_TARGET['enum']!r} holds an empty "
                             "or non-string value"]  # fmt: skip
    numbers = {"type": "object", "properties": {"n": {"type": "integer", "enum": [1, 2]}}}
    assert len(refusals(numbers)) == 2  # an enum on an integer, of non-strings
    open_object = {"type": "object", "properties": {"card": {"type": "object"}}}
    assert refusals(open_object) == ["parameters.card: an object without properties"]
    assert refusals({"type": "object", "properties": {"a": {"type": "string"}},
                     "additionalProperties": False})  # fmt: skip
    assert declaration_refusals("9x_send", "d", {"type": "object", "properties": old["properties"]})


def test_langchain_google_genai_keeps_an_empty_enum_value_so_the_schema_must_not_hold_one():
    """The control through the converter: it hands ``""`` on to Gemini as written."""
    from langchain_google_genai._function_utils import convert_to_genai_function_declarations

    control = {"name": "control", "description": "d",
               "parameters": {"type": "object", "properties": {"target": OLD_TARGET}}}  # fmt: skip
    [converted] = convert_to_genai_function_declarations([control])
    [declaration] = converted.function_declarations
    assert declaration_refusals(declaration.name, declaration.description,
                                dumped(declaration.parameters))  # fmt: skip


# -- every tool, as written ----------------------------------------------------------------------


@pytest.mark.parametrize("settings", SETTINGS)
def test_every_langchain_tool_is_a_declaration_gemini_takes(settings):
    found = []
    for tool in lc_tools(settings):
        found += declaration_refusals(tool.name, tool.description, tool.args_schema)
    assert found == []


@pytest.mark.parametrize("settings", SETTINGS)
async def test_every_mcp_tool_listed_is_a_declaration_gemini_takes(settings):
    found = []
    for tool in await mcp_tools(settings):
        # google-adk's JSON-schema path sends inputSchema as it is (parameters_json_schema)
        found += declaration_refusals(tool.name, tool.description, tool.input_schema)
    assert found == []


def test_wake_rule_still_takes_an_empty_target_for_none():
    model = OPERATIONS["wake_rule"].input_model
    assert model.model_validate({"mail_address": "a.b", "target": ""}).target == ""
    assert "" not in OPERATIONS["wake_rule"].input_schema()["properties"]["target"]["enum"]


# -- as each converter hands them to Gemini ------------------------------------------------------


@pytest.mark.parametrize("settings", SETTINGS)
async def test_langchain_google_genai_converts_every_tool_to_a_declaration_gemini_takes(settings):
    from langchain_google_genai._function_utils import convert_to_genai_function_declarations

    listed = [{"name": t.name, "description": t.description, "parameters": t.input_schema}
              for t in await mcp_tools(settings)]  # fmt: skip
    for tools in (lc_tools(settings), listed):
        [converted] = convert_to_genai_function_declarations(tools)
        assert len(converted.function_declarations) == len(OPERATIONS)
        found = []
        for declaration in converted.function_declarations:
            parameters = dumped(declaration.parameters)
            found += declaration_refusals(declaration.name, declaration.description, parameters)
        assert found == []


@pytest.mark.parametrize("settings", SETTINGS)
async def test_google_adk_converts_every_mcp_tool_to_a_declaration_gemini_takes(settings):
    """ADK's McpTool builds its declaration with ``_to_gemini_schema`` (or, behind a feature
    flag, sends the inputSchema itself: checked above)."""
    pytest.importorskip("google.adk")
    from google.adk.tools._gemini_schema_util import _to_gemini_schema

    found = []
    for tool in await mcp_tools(settings):
        found += declaration_refusals(
            tool.name, tool.description, dumped(_to_gemini_schema(tool.input_schema))
        )
    assert found == []
    # the control: the old target, through ADK, is refused
    old = _to_gemini_schema({"type": "object", "properties": {"target": OLD_TARGET}})
    assert refusals(dumped(old))


@pytest.mark.parametrize("prefix", ["9x_", "-x_", "mq9:"])
def test_a_tool_prefix_gemini_would_refuse_is_refused_at_start(prefix):
    """Gemini takes a function name that starts with a letter or ``_``: a prefix that makes
    every tool's name one it refuses is refused when the toolkit (or mq9-mcp) starts."""
    from pydantic import ValidationError

    from mq9_platform.operations.config import ToolConfig

    with pytest.raises(ValidationError, match="starting with a letter or '_'"):
        ToolConfig(tool_prefix=prefix)
    assert ToolConfig(tool_prefix="_mq9_").tool_prefix == "_mq9_"
