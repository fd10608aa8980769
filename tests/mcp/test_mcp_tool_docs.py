"""README.md and docs/mcp.md name the tools mq9-mcp lists, and count them right (#71): the
tables and the counts come from the catalog (``mq9_platform.operations.catalog``)."""

from __future__ import annotations

import re

from mq9_mcp.server import tool_definitions
from mq9_platform.operations.catalog import DEFAULT_OPERATIONS, OPERATIONS, ToolPolicy
from testbed.support.mcp_support import ROOT

WORDS = {8: "eight", 3: "three", 11: "eleven", 10: "ten", 12: "twelve", 2: "two", 4: "four"}


def table_tools(text: str, header: str) -> list[str]:
    """The tool names in the first column of the table under ``header`` (a row naming a
    range, ``a ... b``, left out)."""
    lines = text[text.index(header) :].splitlines()[2:]
    names = []
    for line in lines:
        if not line.startswith("|"):
            break
        first = line.split("|")[1]
        if "..." not in first:
            names.append(re.sub(r"[`\s]", "", first))
    return names


def listed() -> list[str]:
    """What mq9-mcp lists without --calls: every catalog operation but the call tools."""
    return [tool.name for tool in tool_definitions(ToolPolicy())]


def test_docs_mcp_tables_every_tool_mq9_mcp_lists():
    text = (ROOT / "docs" / "mcp.md").read_text()
    assert table_tools(text, "| Tool | What it does | Hints |") == listed()
    assert f"tools/list of all {WORDS[len(listed())]} tools" in text


def test_the_readme_tables_and_counts_the_tools():
    text = (ROOT / "README.md").read_text()
    assert table_tools(text, "| tool | arguments | what it does |") == listed()
    extra = len(listed()) - len(DEFAULT_OPERATIONS)
    said = f"the first {WORDS[len(DEFAULT_OPERATIONS)]} (696 o200k tokens as OpenAI tools JSON) "
    said += f"and the other {WORDS[extra]} by name"
    assert said in " ".join(text.split())
    assert f"`mq9-mcp` lists all {WORDS[len(listed())]};" in text
    calls = [name for name, op in OPERATIONS.items() if op.needs_calls]
    assert f"`{calls[0]}` ... `{calls[-1]}`" in text and len(calls) == 5
