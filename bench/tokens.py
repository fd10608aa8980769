"""Target 8: what a model reads of the tools, in o200k tokens, and whether it is strict-mode safe.

The tools are in every request an agent makes, so their size is paid on every step. Counted
here with the real o200k encoding (the ``bpe-openai`` package, offline), as compact JSON
(``separators=(",", ":")``, UTF-8 as is):

* the eight default tools as OpenAI ``tools`` JSON (``convert_to_openai_tool``, what
  ``bind_tools`` sends), per tool and in total, beside upstream's eight (robustmq/mq9's own
  langchain-mq9 package, converted the same way and stored in ``fixtures/``);
* ``mq9-mcp``'s tools/list entries for the same eight (name, title, description, inputSchema,
  outputSchema, annotations), and the whole list of ten;
* strict mode: every tool converted with ``strict=True`` and through the OpenAI Agents SDK's
  strict check, which must leave no object without declared properties and no ``anyOf``.

    python -m bench --only tokens
"""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path
from typing import Any

from .config import Config
from .results import Check, Section

TITLE = "What the model reads: tool tokens (o200k) and strict-mode safety (target 8)"
UPSTREAM_FIXTURE = Path(__file__).with_name("fixtures") / "upstream_langchain_mq9_tools.json"
BUDGET = 1000  # tokens for the eight default tools' OpenAI block
MCP_SLACK = 1.10  # mq9-mcp's tools/list of the same eight: within 10% of the budget
# Measured the same way at commit ed9837f, before issue #13: the figures this replaced.
BEFORE = {"openai": 2092, "mcp": 2613}


def encoder() -> Any:
    """The o200k encoding, offline (tiktoken would download its data)."""
    with warnings.catch_warnings():  # bpe-openai loads its data with a deprecated call
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        return bpe_openai.get_encoding("o200k_base")


def compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def count(value: Any, enc: Any = None) -> int:
    """o200k tokens of ``value`` as compact JSON."""
    return len((enc or encoder()).encode(compact(value)))


def our_tools(**options: Any) -> list:
    from langchain_mq9 import Mq9Toolkit

    return Mq9Toolkit(server="memory://bench-tokens", **options).get_tools()


def openai_block(**options: Any) -> list[dict[str, Any]]:
    """The eight default tools as OpenAI tools JSON (what ``bind_tools`` sends)."""
    from langchain_core.utils.function_calling import convert_to_openai_tool

    return [convert_to_openai_tool(tool) for tool in our_tools(**options)]


def mcp_list(*, everything: bool = False, **options: Any) -> list[dict[str, Any]]:
    """``mq9-mcp``'s tools/list entries, as JSON: the eight default tools, or all ten."""
    from langchain_mq9.operations import DEFAULT_OPERATIONS, ToolPolicy
    from mcp_server.server import tool_definitions

    tools = tool_definitions(ToolPolicy(**options))
    return [
        tool.model_dump(by_alias=True, exclude_none=True, mode="json")
        for tool in tools
        if everything or tool.name in DEFAULT_OPERATIONS
    ]


def upstream_block() -> tuple[list[dict[str, Any]], dict[str, str]]:
    fixture = json.loads(UPSTREAM_FIXTURE.read_text())
    return fixture["tools"], fixture["source"]


def strict_problems(schema: Any, where: str = "") -> list[str]:
    """What a strict-mode provider cannot take: objects without declared properties (only
    ``{}`` fits them), ``anyOf`` unions, properties missing from ``required``."""
    problems: list[str] = []
    if isinstance(schema, dict):
        if schema.get("type") == "object":
            properties = schema.get("properties")
            if not properties:
                problems.append(f"{where or 'root'}: object without declared properties")
            elif set(schema.get("required", ())) != set(properties):
                problems.append(f"{where or 'root'}: not every property is required")
            if schema.get("additionalProperties") is not False:
                problems.append(f"{where or 'root'}: additionalProperties is not false")
        if "anyOf" in schema or "oneOf" in schema:
            problems.append(f"{where or 'root'}: a union (anyOf/oneOf)")
        for key, value in schema.items():
            if key == "properties" and isinstance(value, dict):
                for name, spec in value.items():
                    problems += strict_problems(spec, f"{where}.{name}".lstrip("."))
            elif isinstance(value, (dict, list)):
                problems += strict_problems(value, where)
    elif isinstance(schema, list):
        for item in schema:
            problems += strict_problems(item, where)
    return problems


def strict_report(tools: list) -> dict[str, list[str]]:
    """Each tool's problems under langchain-openai's ``strict=True`` conversion and under the
    Agents SDK's strict check (which rejects open objects outright)."""
    from agents.strict_schema import ensure_strict_json_schema
    from langchain_core.utils.function_calling import convert_to_openai_tool

    report: dict[str, list[str]] = {}
    for tool in tools:
        strict = convert_to_openai_tool(tool, strict=True)["function"]["parameters"]
        problems = [f"strict=True: {p}" for p in strict_problems(strict)]
        try:
            sdk = ensure_strict_json_schema(
                copy.deepcopy(tool.args_schema), _reject_open_objects=True
            )
            problems += [f"Agents SDK: {p}" for p in strict_problems(sdk)]
        except Exception as exc:  # the SDK refuses the schema: that is the finding
            problems.append(f"Agents SDK refused it: {exc}")
        report[tool.name] = problems
    return report


def run(cfg: Config) -> Section:
    section = Section("tokens", TITLE)
    try:
        enc = encoder()
    except ImportError:
        section.error = "bpe-openai is not installed (pip install -e '.[dev]')"
        return section
    ours = openai_block()
    mine = openai_block(agent_mailbox="agent.me")
    upstream, source = upstream_block()
    mcp = mcp_list()
    mcp_all = mcp_list(everything=True)
    total, upstream_total = count(ours, enc), count(upstream, enc)
    mcp_total = count(mcp, enc)

    section.checks.append(
        Check(
            key="8a",
            title="the eight default tools as OpenAI tools JSON vs the budget — upstream "
            f"robustmq/mq9 langchain-mq9's eight: {upstream_total:,}",
            ours_label="ours",
            ours=f"{total:,} tokens",
            baseline_label="budget",
            baseline=f"{BUDGET:,} tokens",
            ratio=total / BUDGET,
            op="<=",
            limit=1.0,
        )
    )
    section.checks.append(
        Check(
            key="8b",
            title="mq9-mcp tools/list of the same eight (with outputSchema and annotations) vs "
            "the budget",
            ours_label="tools/list",
            ours=f"{mcp_total:,} tokens",
            baseline_label="budget",
            baseline=f"{BUDGET:,} tokens",
            ratio=mcp_total / BUDGET,
            op="<=",
            limit=MCP_SLACK,
        )
    )
    try:
        report = strict_report(our_tools(tools=None))
        from langchain_mq9.operations import OPERATIONS

        report.update(strict_report(our_tools(tools=list(OPERATIONS))))
        safe = sum(not problems for problems in report.values())
        strict = Check(
            key="8c",
            title="tools whose schema stays whole under strict mode (langchain-openai "
            "strict=True and the OpenAI Agents SDK's strict check): no open object, no anyOf",
            ours_label="strict-safe tools",
            ours=f"{safe} of {len(report)}",
            baseline_label="tools",
            baseline=str(len(report)),
            ratio=safe / len(report),
            op=">=",
            limit=1.0,
            ratio_label="safe / all",
        )
        for name, problems in report.items():
            if problems:
                section.notes.append(f"Strict mode breaks `{name}`: {'; '.join(problems)}")
    except ImportError as exc:
        strict = Check(
            key="8c",
            title="tools whose schema stays whole under strict mode",
            ours_label="strict-safe tools",
            ours="n/a",
            baseline_label="tools",
            baseline="n/a",
            ratio=None,
            op=">=",
            limit=1.0,
            note=f"{exc.name} is not installed (pip install -e '.[dev]')",
        )
    section.checks.append(strict)

    section.notes.append(
        "Counted as compact JSON (`separators=(\",\", \":\")`, UTF-8 as is) in o200k tokens "
        "(`bpe_openai.get_encoding(\"o200k_base\")`). The OpenAI block is what "
        "`convert_to_openai_tool` (and so `bind_tools`) makes of `Mq9Toolkit(...).get_tools()`; "
        "upstream's is its eight tools converted the same way, stored with its source in "
        f"`bench/fixtures/{UPSTREAM_FIXTURE.name}` ({source['repository']}, "
        f"`{source['path']}` at {source['commit'][:12]}). Before issue #13 (commit ed9837f) "
        f"the same counts were {BEFORE['openai']:,} (OpenAI) and {BEFORE['mcp']:,} "
        "(tools/list of the eight)."
    )
    up = {tool["function"]["name"]: count(tool, enc) for tool in upstream}
    for tool in ours:
        name = tool["function"]["name"]
        section.figures.append((f"{name}: ours / upstream", f"{count(tool, enc)} / {up[name]}"))
    section.figures += [
        ("total, OpenAI tools JSON: ours / upstream", f"{total:,} / {upstream_total:,}"),
        ("total with agent_mailbox='agent.me' (descriptions name it)", f"{count(mine, enc):,}"),
        ("mq9-mcp tools/list, the eight", f"{mcp_total:,} ({mcp_total / total:.2f}× ours)"),
        (
            "of which outputSchema / annotations / title",
            " / ".join(
                str(sum(count(t[k], enc) for t in mcp if k in t))
                for k in ("outputSchema", "annotations", "title")
            ),
        ),
        ("mq9-mcp tools/list, all ten tools", f"{count(mcp_all, enc):,}"),
    ]
    return section
