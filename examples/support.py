"""Plumbing shared by the examples: the ``--server`` and ``--credential-file`` options,
run-scoped names, agent transcripts.

Not a scenario itself; the scenario scripts import it (``python examples/<name>.py`` puts this
folder on ``sys.path``), and so do the notebooks.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import time
from collections.abc import Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, ToolMessage

from mq9_platform.client.auth import CREDENTIAL_FILE_ENV

DEFAULT_SERVER = "memory://"


class _CredentialFile(argparse.Action):
    """``--credential-file FILE``: every client the example opens logs in with it (each reads
    ``MQ9_CREDENTIAL_FILE`` when given no credential of its own)."""

    def __call__(self, parser: Any, namespace: Any, value: Any, option: Any = None) -> None:
        os.environ[CREDENTIAL_FILE_ENV] = str(value)
        setattr(namespace, self.dest, value)


def parser(doc: str | None) -> argparse.ArgumentParser:
    """An argument parser with ``--server`` (default ``memory://``, the in-process broker)
    and ``--credential-file`` (for a broker that enforces per-agent credentials)."""
    summary, _, details = (doc or "").strip().partition("\n\n")
    result = argparse.ArgumentParser(
        description=" ".join(summary.split()) or None,
        epilog=details.strip() or None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    result.add_argument(
        "--server",
        default=DEFAULT_SERVER,
        help="mq9 broker URL: memory:// (default, in-process), or nats://host:4222 for "
        "mq9-dev-broker or RobustMQ",
    )
    result.add_argument(
        "--credential-file",
        metavar="FILE",
        action=_CredentialFile,
        help="a file holding an mq9 credential (<id>:<secret>, from `mq9-dev-broker "
        "credentials issue NAME`), for a broker started with --credentials; every agent of "
        "the example uses it (default: $MQ9_CREDENTIAL_FILE, or $MQ9_CREDENTIAL)",
    )
    return result


class Names:
    """Well-known names that stay unique per run on a shared, persistent broker.

    ``memory://`` starts empty for every run, so names are used as written. A NATS broker keeps
    mailboxes and registry entries between runs (and may be shared with other people), so there
    every name gets a short random suffix: ``tasks.queue`` becomes ``tasks.queue.3f9a1c``.
    """

    def __init__(self, server: str) -> None:
        self.suffix = "" if server.startswith("memory://") else "." + secrets.token_hex(3)

    def __call__(self, name: str) -> str:
        return name + self.suffix

    def mine(self, agents: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        """Only this run's agents: a shared broker's registry may list other people's."""
        return [a for a in agents if str(a.get("mailbox", "")).endswith(self.suffix)]


def banner(text: str) -> None:
    print(f"\n── {text} ──")


POLL_MS = 250


async def wait_for_messages(reader: Any, seconds: float, *, num_msgs: int = 10) -> list:
    """Up to ``seconds`` for new messages from a ``GroupReader``; [] if none came.

    A FETCH that finds nothing waits its whole ``max_wait_ms`` and answers empty, even if a
    message arrives meanwhile (RobustMQ's rule), so one long FETCH would sit out the whole
    wait. Short FETCHes in a loop answer within ``POLL_MS`` of an arrival instead.
    """
    deadline = time.monotonic() + seconds
    while True:
        left_ms = int((deadline - time.monotonic()) * 1000)
        batch = await reader.fetch(num_msgs=num_msgs, max_wait_ms=max(0, min(POLL_MS, left_ms)))
        if batch or left_ms <= 0:
            return batch


SEARCH_WAIT = 10.0  # seconds: RobustMQ indexes a card about 0.5 s after its REGISTER


async def until_searchable(
    client: Any, cards: dict[str, str], seconds: float = SEARCH_WAIT
) -> None:
    """Wait until a search finds each agent of ``cards`` (name -> the words to search it by),
    at most ``seconds``. A broker whose agent search trails its registry (RobustMQ's
    vector-search build: docs/discovery.md) finds a card only a moment after its REGISTER; an
    example that searches right after registering its agents looks for them first, as a
    program routing by search should. Anywhere else the first search finds them all."""
    deadline = time.monotonic() + seconds
    waiting = dict(cards)
    while waiting and time.monotonic() < deadline:
        for name, words in list(waiting.items()):
            found = await client.agent_discover(semantic=words, limit=10)
            if name in {agent["name"] for agent in found}:
                del waiting[name]
        if waiting:
            await asyncio.sleep(0.1)


# -- agents --------------------------------------------------------------------------------


def build_agent(model: Any, tools: Sequence[Any], prompt: str, **options: Any) -> Any:
    """An agent of ``langchain.agents.create_agent``: ``model`` calling ``tools``, told
    ``prompt``; ``options`` go to ``create_agent`` (``checkpointer=``, ``middleware=``, ...)."""
    from langchain.agents import create_agent

    return create_agent(model, list(tools), system_prompt=prompt, **options)


def shorten(text: str, width: int = 150) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


_NOT_FOR_PEOPLE = frozenset({"next_step", "note", "create_time", "payload_encoding", "page"})


def _prune(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _prune(v) for k, v in value.items() if k not in _NOT_FOR_PEOPLE}
    if isinstance(value, list):
        return [_prune(v) for v in value]
    return value


def _result_for_people(message: ToolMessage) -> str:
    """A tool result without what is there for the model (hints) or for machines (times)."""
    try:
        content = json.loads(message.content)
    except (TypeError, ValueError):
        return str(message.content)
    return json.dumps(_prune(content), ensure_ascii=False, separators=(",", ":"))


def _arguments(args: dict[str, Any]) -> str:
    return ", ".join(
        f"{k}={json.dumps(v, ensure_ascii=False, separators=(',', ':'))}" for k, v in args.items()
    )


def print_message(who: str, message: BaseMessage) -> None:
    """One line (or a few) of a readable transcript: tool calls, their results, final words."""
    pad = " " * (len(who) + 3)
    if isinstance(message, AIMessage):
        for tool_call in message.tool_calls:
            print(f"[{who}] → {tool_call['name']}({shorten(_arguments(tool_call['args']), 200)})")
        text = str(message.text)
        if text.strip():
            print(f"[{who}] says: {shorten(text, 400)}")
    elif isinstance(message, ToolMessage):
        mark = "✗" if message.status == "error" else "←"
        print(f"{pad}{mark} {shorten(_result_for_people(message), 180)}")


async def run_agent(agent: Any, who: str, request: str, *, thread: str | None = None) -> list:
    """Give ``agent`` a request and print its transcript as it goes. Returns the new messages.

    ``thread`` is the checkpointer thread: the agent remembers earlier turns of that thread.
    """
    print(f"[{who}] ⇐ {shorten(request, 200)}")
    config = {"configurable": {"thread_id": thread}} if thread else None
    new: list[BaseMessage] = []
    async for update in agent.astream(
        {"messages": [("human", request)]}, config, stream_mode="updates"
    ):
        for step in update.values():
            for message in (step or {}).get("messages", []):
                print_message(who, message)
                new.append(message)
    return new
