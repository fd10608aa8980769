"""Who the agent is in the run under way: the per-run identity of the mq9 tools.

A deployed graph serves many users and threads with one toolkit. A run names the agent it
runs as with ``agent_mailbox``, ``group`` and ``worker``, in its context
(``create_agent(..., context_schema=...)`` and ``invoke(..., context=...)``: what a tool reads
as ``ToolRuntime.context``) or in its config's ``configurable``; what it leaves out is the
toolkit's. A run only narrows what its tools touch (``policy_for_run``): a group or worker the
toolkit does not list is refused. Each identity gets its own policy (``ToolPolicy.for_run``):
its own group readers, created mailboxes and calls, so two threads never get each other's
messages.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

from langchain_core.runnables.config import var_child_runnable_config
from langgraph.runtime import get_runtime
from pydantic import ValidationError

from mq9_platform.operations.errors import OperationError
from mq9_platform.operations.policy import ToolPolicy
from mq9_wire.protocol import quoted
from mq9_wire.protocol.errors import Mq9Error

# What a run may name, and the toolkit setting each one stands for.
RUN_SETTINGS = {"agent_mailbox": "agent_mailbox", "group": "default_group", "worker": "worker"}


def _named(context: Any, name: str) -> Any:
    """``context[name]`` or ``context.name`` (a TypedDict's dict, a dataclass, a pydantic model)."""
    if context is None:
        return None
    return context.get(name) if isinstance(context, dict) else getattr(context, name, None)


def run_identity(context: Any, configurable: dict[str, Any] | None) -> dict[str, Any]:
    """The toolkit settings a run names: its context first, then its ``configurable``."""
    if context is None and (not configurable or configurable.keys().isdisjoint(RUN_SETTINGS)):
        return {}  # most runs: a tool call's own cost matters (tools.py)
    identity = {}
    for name, setting in RUN_SETTINGS.items():
        value = _named(context, name)
        if value is None and configurable:
            value = configurable.get(name)
        if value is not None:
            identity[setting] = value
    return identity


def policy_for_run(
    policy: ToolPolicy, context: Any, config: Mapping[str, Any] | None
) -> ToolPolicy:
    """``policy`` for the run with ``context`` and ``config``; a ``ValueError`` that names the
    bad value when the run names one the toolkit would refuse (not the model's to fix). A
    deployed graph may take its context and config from whoever calls it, so a run may narrow
    what its tools touch, never widen it: its mailbox must be one the toolkit's
    ``allowed_mailboxes`` allow, its group and worker the toolkit's or one it lists in
    ``run_groups`` / ``run_workers``."""
    identity = run_identity(context, (config or {}).get("configurable"))
    try:
        if "agent_mailbox" in identity:
            policy.check(identity["agent_mailbox"])
        _only_narrows(policy, identity)
        return policy.for_run(**identity)
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"].removeprefix("Value error, ")
    except (OperationError, Mq9Error) as exc:
        problem = str(exc)
    raise ValueError(f"the run's mq9 identity {identity} is refused: {problem}")


def _only_narrows(policy: ToolPolicy, identity: dict[str, Any]) -> None:
    """A group or worker the run names is the toolkit's or one it lets a run name: another
    would read and ack a consumer group (or take over leases) that is another service's."""
    named = (
        ("default_group", "group", policy.default_group, policy.run_groups),
        ("worker", "worker", policy.worker, policy.run_workers),
    )
    for setting, what, own, listed in named:
        value = identity.get(setting)
        if value is not None and value != own and value not in listed:
            mine = f"its own {own!r}" if own is not None else "none of its own"
            raise OperationError(
                f"{what} {quoted(value)} is not one this toolkit lets a run "
                f"name ({mine}; run_{what}s lists the others a run may name)"
            )


class Run:
    """The tool call under way: the policy of its run, and its graph's stream writer."""

    __slots__ = ("policy", "writer")  # one per tool call: kept cheap

    def __init__(self, policy: ToolPolicy, writer: Callable[[Any], None] | None = None) -> None:
        self.policy = policy
        self.writer = writer

    @contextmanager
    def waiting(self, tool: str, seconds: float) -> Iterator[None]:
        """Says on the stream (``stream_mode="custom"``) that ``tool`` may wait ``seconds``,
        and when it is back, so a user watching the run knows why it is quiet."""
        if not seconds or self.writer is None:
            yield
            return
        self.writer({"mq9": {"tool": tool, "status": "waiting", "up_to_seconds": seconds}})
        started = time.monotonic()
        try:
            yield
        finally:
            took = round(time.monotonic() - started, 3)
            self.writer({"mq9": {"tool": tool, "status": "back", "seconds": took}})


def current_run(policy: ToolPolicy) -> Run:
    """The run of the tool call under way (LangChain keeps its config in a context variable;
    LangGraph puts the run's ``Runtime`` in it). Outside a graph: the config's identity, if
    the call was given a config, and no stream writer."""
    config = var_child_runnable_config.get()
    if not config or not config.get("configurable"):  # no graph's runtime, no identity named
        return Run(policy)  # (what the rest would make of it, sooner: most tool calls)
    runtime = _runtime()
    context = runtime.context if runtime is not None else None
    writer = runtime.stream_writer if runtime is not None else None
    return Run(policy_for_run(policy, context, config), writer)


def _runtime() -> Any:
    try:
        return get_runtime()
    except (RuntimeError, KeyError):  # a config without LangGraph's keys: not in a graph
        return None


def tool_call_key(tool: str, call_id: str, arguments: str = "", agent: str | None = None) -> str:
    """The idempotency key of a send made by the tool call ``call_id`` of ``tool`` with
    ``arguments`` (their text), for the agent ``agent`` (its mailbox: the run's or the
    toolkit's). In a LangGraph graph with a checkpointer (a thread), the call's id and
    arguments within its agent, thread and checkpoint namespace (the node's task, which
    LangGraph derives again when it replays the step after an interrupt or a crash, and a
    ``RetryPolicy`` runs it again so): the same key, so the broker stores the send once, while
    two agents, two threads or two steps whose models number their ids alike (``call_0``) never
    share one. Anywhere else nothing replays a call, and a model's ids may repeat: a key
    of this call's own, which covers the client's resends of it. 35 characters."""
    config = var_child_runnable_config.get()
    configurable = (config or {}).get("configurable") or {}
    thread = configurable.get("thread_id")
    namespace = configurable.get("checkpoint_ns")
    if not thread or not namespace:  # no graph's checkpointed step: nothing replays this call
        return "lc." + uuid.uuid4().hex
    named = f"{tool}\n{agent or ''}\n{thread}\n{namespace}\n{call_id}\n{arguments}"
    return "lc." + hashlib.sha256(named.encode("utf-8", "backslashreplace")).hexdigest()[:32]
