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
import re
import warnings
from pathlib import Path
from typing import Any

from .config import Config
from .results import Check, Section

TITLE = "What the model reads: tool tokens (o200k) and strict-mode safety (target 8)"
UPSTREAM_FIXTURE = Path(__file__).with_name("fixtures") / "upstream_langchain_mq9_tools.json"
# Tokens for the eight default tools' OpenAI block (send_message's idempotency_key takes 9 of
# them: the name alone, no words)
BUDGET = 710
# mq9-mcp's tools/list of the same eight (outputSchema and annotations too): within 10% of
# its own budget, the first one of the OpenAI block
MCP_BUDGET, MCP_SLACK = 1000, 1.10
# Measured the same way at commit ed9837f: the figures the tools' present shape replaced.
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
    from mq9_mcp.server import tool_definitions
    from mq9_platform.operations.catalog import DEFAULT_OPERATIONS, ToolPolicy

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
            baseline=f"{MCP_BUDGET:,} tokens",
            ratio=mcp_total / MCP_BUDGET,
            op="<=",
            limit=MCP_SLACK,
        )
    )
    try:
        report = strict_report(our_tools(tools=None))
        from mq9_platform.operations.catalog import OPERATIONS

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
    answers, answer_figures = answer_checks(enc)
    section.checks += answers

    section.notes.append(
        'Counted as compact JSON (`separators=(",", ":")`, UTF-8 as is) in o200k tokens '
        '(`bpe_openai.get_encoding("o200k_base")`). The OpenAI block is what '
        "`convert_to_openai_tool` (and so `bind_tools`) makes of `Mq9Toolkit(...).get_tools()`; "
        "upstream's is its eight tools converted the same way, stored with its source in "
        f"`bench/fixtures/{UPSTREAM_FIXTURE.name}` ({source['repository']}, "
        f"`{source['path']}` at {source['commit'][:12]}). At commit ed9837f "
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
        *answer_figures,
    ]
    section.notes.append(
        "Answers (8d-8f) are counted the same way, on `memory://`, with default arguments and "
        f"settings (max_answer_chars {_default('max_answer_chars'):,}); payloads are JSON "
        "objects of plain English words, and a private "
        "mailbox's random address is counted as one drawn address. Before the answers' bounds "
        f"and pages (commit ae3a006): {ANSWERS_BEFORE['200 B']} at 200 B; "
        f"{ANSWERS_BEFORE['1000 B']} at 1 KB."
    )
    return section


# -- 8d-8f: what the tools answer --------------------------------------------------------------

ANSWER_BUDGET = 2000  # tokens: each default tool's answer, with default arguments
BIG_FETCH_BUDGET = 6000  # tokens: a fetch of ten 4,000-character messages
MAILBOX_MESSAGES = 150
PAYLOAD_BYTES = (200, 1000)
# Measured the same way at commit ae3a006: what the answers' bounds and pages replaced.
ANSWERS_BEFORE = {
    "big fetch": 8308,
    "two_agents": 1138,
    "200 B": "query_messages 6,841, fetch_messages 777, agent_discover 888",
    "1000 B": "query_messages 22,112, fetch_messages 2,303, agent_discover 888",
}
_TEXT = (
    "the report says that our service was slow for some users during the peak while the new "
    "proxy held a pool of fifty connections engineers raised it and errors went back to normal "
    "no payment was lost but many customers had to retry the next change gets a load test"
)


def payload(seq: int, size: int) -> str:
    """A JSON object of ``size`` characters, the kind agents send: plain words, a few fields."""
    head = f'{{"from":"agent.sender","seq":{seq},"text":"'
    vocabulary = _TEXT.split()
    words, length = [], len(head) + 2
    while length < size:
        word = vocabulary[(seq * 7 + len(words) * 13) % len(vocabulary)]
        words.append(word)
        length += len(word) + 1
    return (head + " ".join(words))[: size - 2] + '"}'


# A private mailbox's address is drawn at random (protocol.new_address), and so is its token
# count: answers are counted with each such address replaced by this one (a drawn one).
_PRIVATE = re.compile(r"\b[0-9a-v]{20}\b")
_SAMPLE_ADDRESS = "m159g9g9fk11re50v5fs"  # 13 tokens, the median of 2,000 drawn


def answer_tokens(enc: Any, text: str) -> int:
    return len(enc.encode(_PRIVATE.sub(_SAMPLE_ADDRESS, text)))


def _default(setting: str) -> Any:
    from mq9_platform.operations.config import ToolConfig

    return ToolConfig.model_fields[setting].default


def _tool_call(name: str, args: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "args": args, "id": f"bench-{name}", "type": "tool_call"}


async def _answers(enc: Any, size: int) -> dict[str, int]:
    """Each default tool's answer (tokens), with default arguments, to an agent whose mailbox
    holds ``MAILBOX_MESSAGES`` messages of ``size`` characters, among 31 registered agents."""
    import secrets

    from langchain_mq9 import Mq9Client, Mq9Toolkit

    server = f"memory://bench-answers-{secrets.token_hex(4)}"
    async with (
        Mq9Toolkit(server=server, agent_mailbox="agent.me") as kit,
        Mq9Client(server) as client,
    ):
        tools = {tool.name: tool for tool in kit.get_tools()}
        tokens: dict[str, int] = {}

        async def answer(name: str, **args: Any) -> Any:
            message = await tools[name].ainvoke(_tool_call(name, args))
            tokens[name] = answer_tokens(enc, message.content)
            return message

        await answer("agent_register", capabilities="Answers questions about invoices.")
        for n in range(30):
            await client.agent_register(
                {
                    "name": f"agent.peer{n}",
                    "mailbox": f"agent.peer{n}",
                    "description": f"Peer {n}: translates, summarizes and files reports.",
                }
            )
        for seq in range(MAILBOX_MESSAGES):
            await client.send("agent.me", payload(seq, size))
        await answer("agent_discover", query="")
        await answer("query_messages")
        fetched = await answer("fetch_messages")
        await answer("ack_messages", msg_id=fetched.artifact[-1].msg_id)
        await answer("create_mailbox")
        await answer("send_message", mail_address="agent.me", payload=payload(0, size))
        await answer("delete_message", msg_id=0)
    return tokens


async def _big_fetch(enc: Any) -> int:
    """Tokens of the answer to one fetch of a mailbox holding ten 4,000-character messages."""
    import secrets

    from langchain_mq9 import Mq9Client, Mq9Toolkit

    server = f"memory://bench-big-{secrets.token_hex(4)}"
    async with Mq9Toolkit(server=server) as kit, Mq9Client(server) as client:
        await client.mailbox_create(name="agent.big")
        for seq in range(10):
            await client.send("agent.big", payload(seq, 4000))
        fetch = {tool.name: tool for tool in kit.get_tools()}["fetch_messages"]
        message = await fetch.ainvoke(_tool_call("fetch_messages", {"mail_address": "agent.big"}))
        return answer_tokens(enc, message.content)


async def _two_agents(enc: Any) -> int:
    """Tokens of the whole tool traffic of ``examples/two_agents.py`` (scripted, on
    ``memory://``): every tool call's arguments and every tool answer, as the models read them."""
    import contextlib
    import io
    import secrets
    import sys

    from langchain_core.messages import AIMessage, ToolMessage

    examples = str(Path(__file__).resolve().parents[1] / "examples")
    sys.path.insert(0, examples)
    try:
        import two_agents
    finally:
        sys.path.remove(examples)
    traffic: list[str] = []
    run_agent = two_agents.run_agent

    async def recorded(*args: Any, **kwargs: Any) -> list:
        new = await run_agent(*args, **kwargs)
        for message in new:
            if isinstance(message, ToolMessage):
                traffic.append(message.content)
            elif isinstance(message, AIMessage):
                traffic.extend(compact(call["args"]) for call in message.tool_calls)
        return new

    two_agents.run_agent = recorded
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            code = await two_agents.main(f"memory://bench-two-{secrets.token_hex(4)}", None)
    finally:
        two_agents.run_agent = run_agent
    if code != 0:
        raise RuntimeError("examples/two_agents.py did not finish its scenario")
    return sum(answer_tokens(enc, text) for text in traffic)


def answer_checks(enc: Any) -> tuple[list[Check], list[tuple[str, str]]]:
    """Checks 8d-8f and their figures: the tools' answers, in tokens."""
    import asyncio

    by_size = {size: asyncio.run(_answers(enc, size)) for size in PAYLOAD_BYTES}
    big, example = asyncio.run(_big_fetch(enc)), asyncio.run(_two_agents(enc))
    largest = max((n, name, size) for size, got in by_size.items() for name, n in got.items())
    checks = [
        Check(
            key="8d",
            title=f"the largest default answer of the eight tools (a mailbox of "
            f"{MAILBOX_MESSAGES} messages of 200 B or 1 KB, 31 agents) vs the budget",
            ours_label=f"{largest[1]}, {largest[2]} B",
            ours=f"{largest[0]:,} tokens",
            baseline_label="budget",
            baseline=f"{ANSWER_BUDGET:,} tokens",
            ratio=largest[0] / ANSWER_BUDGET,
            op="<=",
            limit=1.0,
        ),
        Check(
            key="8e",
            title="fetch_messages of ten 4,000-character messages vs the budget — before "
            f"the bounds and pages: {ANSWERS_BEFORE['big fetch']:,}",
            ours_label="answer",
            ours=f"{big:,} tokens",
            baseline_label="budget",
            baseline=f"{BIG_FETCH_BUDGET:,} tokens",
            ratio=big / BIG_FETCH_BUDGET,
            op="<=",
            limit=1.0,
        ),
        Check(
            key="8f",
            title="the whole tool traffic of examples/two_agents.py (calls and answers) vs "
            "before the bounds and pages",
            ours_label="now",
            ours=f"{example:,} tokens",
            baseline_label="before",
            baseline=f"{ANSWERS_BEFORE['two_agents']:,} tokens",
            ratio=example / ANSWERS_BEFORE["two_agents"],
            op="<=",
            limit=1.0,
        ),
    ]
    figures = [
        (f"default answers, {size} B payloads", ", ".join(f"{k} {v:,}" for k, v in answers.items()))
        for size, answers in by_size.items()
    ]
    return checks, figures
