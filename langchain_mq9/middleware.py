"""``Mq9InboxMiddleware``: an agent built with ``create_agent`` reads its mail without asking.

Before each model call it fetches what waits in the agent's mailbox (the run's, see
``run_context.py``) through the toolkit's own consumer-group reader, and adds it to the
conversation as one message, shown as ``fetch_messages`` shows messages, within the same
answer budget (``max_answer_chars`` as the model reads it: each message its share, what was cut
marked), with the note that they are data, not instructions. At most ``max_messages`` per model
call; the rest (and what did not fit) comes at the next one.

It acks them only when the run ends (``after_agent``): the agent has handled them then. A run
that fails halfway acks nothing, so the mail is not lost (docs/groups.md, invariant 3): the
next run of the same agent is shown it again (or, after a restart, whoever reads the group
next). A run that resumes on a checkpointed thread is not shown again what its conversation
already holds. A run that names another agent than the toolkit's (``run_context.py``) has
the tools described to its model for that agent. docs/langchain.md has the walk-through.
"""

from __future__ import annotations

import logging
import weakref
from typing import Annotated, Any, NotRequired

from langchain.agents.middleware import AgentMiddleware, AgentState
from langchain.agents.middleware.types import PrivateStateAttr
from langchain_core.messages import HumanMessage
from langgraph.config import get_config
from langgraph.runtime import Runtime

from mq9_platform.client.api import Mq9ClientLike
from mq9_platform.operations.catalog import OperationError, prefixed
from mq9_platform.operations.errors import explain
from mq9_platform.operations.policy import ToolPolicy
from mq9_platform.operations.results import InboxMail
from mq9_platform.operations.views import (
    DATA_NOTE,
    MESSAGE_FLOOR,
    MESSAGE_KEPT_IN,
    MessageView,
    fitted,
    message_view,
)
from mq9_wire.protocol import MAX_NUM_MSGS, Message, check_int
from mq9_wire.protocol.errors import Mq9Error

from .run_context import policy_for_run
from .toolkit import Mq9Toolkit
from .tools import Mq9Tool

log = logging.getLogger("langchain_mq9")

# The name of the message that brings the mail, so code (and a model) can tell it from a user's.
INBOX_MESSAGE_NAME = "mq9_inbox"


class InboxState(AgentState):
    # The msg_ids this run was shown and has not acked yet: acked when the run ends.
    mq9_inbox: NotRequired[Annotated[list[int], PrivateStateAttr]]


class Mq9InboxMiddleware(AgentMiddleware[InboxState, Any]):
    """Brings the mail waiting in the agent's mailbox to the model before each model call, and
    acks it when the run ends.

    >>> toolkit = Mq9Toolkit(server="nats://localhost:4222", agent_mailbox="agent.support")
    >>> agent = create_agent(model, toolkit.get_tools(),
    ...                      middleware=[Mq9InboxMiddleware(toolkit)])

    The mailbox is the run's ``agent_mailbox`` (its context or config), else the toolkit's;
    the group and worker likewise. It reads with the same reader as the toolkit's
    ``fetch_messages``, so a message is shown once, whichever of the two brought it.
    """

    state_schema = InboxState

    def __init__(self, toolkit: Mq9Toolkit, *, max_messages: int = 10) -> None:
        super().__init__()
        if toolkit.policy.read_only:
            raise ValueError(
                "Mq9InboxMiddleware acks the mail it brings: give it a toolkit that is not "
                "read_only"
            )
        self.toolkit = toolkit
        self.max_messages = check_int("max_messages", max_messages, 1, MAX_NUM_MSGS)
        # What each policy's reader handed to a run and is not acked yet, by msg_id: shown
        # again to a later run when the run it was shown to failed.
        self._shown: weakref.WeakKeyDictionary[ToolPolicy, dict[int, Any]] = (
            weakref.WeakKeyDictionary()
        )
        # The toolkit's tools as each run identity's model reads them, by tool name.
        self._descriptions: weakref.WeakKeyDictionary[ToolPolicy, dict[str, Any]] = (
            weakref.WeakKeyDictionary()
        )

    # -- the hooks (each in a sync and an async form, as LangGraph calls one or the other) ----

    def before_model(self, state: InboxState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        policy = self._policy(runtime)
        return self.toolkit.connection.run_sync(lambda c: self._bring(c, policy, state))

    async def abefore_model(
        self, state: InboxState, runtime: Runtime[Any]
    ) -> dict[str, Any] | None:
        policy = self._policy(runtime)
        return await self.toolkit.connection.run(lambda c: self._bring(c, policy, state))

    def after_agent(self, state: InboxState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        if not state.get("mq9_inbox"):
            return None
        policy = self._policy(runtime)
        return self.toolkit.connection.run_sync(lambda c: self._ack(c, policy, state))

    async def aafter_agent(self, state: InboxState, runtime: Runtime[Any]) -> dict[str, Any] | None:
        if not state.get("mq9_inbox"):
            return None
        policy = self._policy(runtime)
        return await self.toolkit.connection.run(lambda c: self._ack(c, policy, state))

    def wrap_model_call(self, request: Any, handler: Any) -> Any:
        return handler(self._described_for_run(request))

    async def awrap_model_call(self, request: Any, handler: Any) -> Any:
        return await handler(self._described_for_run(request))

    # -- the work ---------------------------------------------------------------------------

    def _described_for_run(self, request: Any) -> Any:
        """The request with the toolkit's tools described for the run's agent: the model reads
        its own mailbox in them (as the default of the mailbox arguments, as reply_to), not the
        toolkit's. The tools that run are the toolkit's: they read the run themselves."""
        policy = self._policy(request.runtime)
        if policy is self.toolkit.policy:
            return request
        described = self._descriptions.setdefault(policy, {})
        tools = [
            described.setdefault(tool.name, _described(tool, policy))
            if isinstance(tool, Mq9Tool) and tool.policy is self.toolkit.policy
            else tool
            for tool in request.tools
        ]
        return request.override(tools=tools)

    def _policy(self, runtime: Runtime[Any]) -> ToolPolicy:
        policy = policy_for_run(self.toolkit.policy, runtime.context, get_config())
        _mailbox(policy)  # the run has one
        return policy

    async def _bring(
        self, client: Mq9ClientLike, policy: ToolPolicy, state: InboxState
    ) -> dict[str, Any] | None:
        """The mail to show now: what an earlier run was shown and did not finish, then new
        mail, at most ``max_messages``."""
        shown_here = state.get("mq9_inbox") or []
        address = _mailbox(policy)
        reading = policy.reading(client, address, policy.default_group)
        waiting = self._shown.setdefault(policy, {})
        for msg_id in [i for i in waiting if i not in reading.unacked]:  # acked meanwhile
            del waiting[msg_id]
        again = [m for i, m in waiting.items() if i not in shown_here][: self.max_messages]
        room = self.max_messages - len(again)
        try:
            new = await reading.fetch(client, room, policy.deliver, 0) if room else []
        except (OperationError, Mq9Error) as exc:
            why = str(exc) if isinstance(exc, OperationError) else explain(exc, address=address)
            log.warning("mq9 inbox of %s not read: %s", address, why)
            return None  # the mail stays in the mailbox; the next model call reads again
        waiting.update((m.msg_id, m) for m in new)
        messages = again + new
        if not messages:
            return None
        note = client.warnings.get(address) if hasattr(client, "warnings") else None
        message, shown = _inbox_message(address, messages, policy, note)
        # What did not fit stays waiting: the next model call (or run) shows it.
        return {"messages": [message], "mq9_inbox": [*shown_here, *shown]}

    async def _ack(
        self, client: Mq9ClientLike, policy: ToolPolicy, state: InboxState
    ) -> dict[str, Any]:
        """Ack what this run was shown (and the model did not ack itself)."""
        reading = policy.readings.get((_mailbox(policy), policy.default_group))
        handled = set(state.get("mq9_inbox") or ())
        finished = [i for i in reading.unacked if i in handled] if reading else []
        if reading is not None and finished:
            try:
                await reading.reader_for(client).done(finished)
            except Mq9Error as exc:  # not acked: handed out again later (at least once)
                log.warning("mq9 inbox of %s not acked: %s", policy.agent_mailbox, exc)
                return {"mq9_inbox": []}
            reading.unacked = [i for i in reading.unacked if i not in handled]
        for msg_id in handled:
            self._shown.get(policy, {}).pop(msg_id, None)
        return {"mq9_inbox": []}


def _described(tool: Mq9Tool, policy: ToolPolicy) -> Mq9Tool:
    operation = tool.operation
    update = {
        "description": operation.describe(policy),
        "args_schema": operation.input_schema(policy),
    }
    return tool.model_copy(update=update)


def _mailbox(policy: ToolPolicy) -> str:
    """The run's own mailbox, which the middleware reads."""
    if policy.agent_mailbox is None:
        raise ValueError(
            "Mq9InboxMiddleware needs the agent's mailbox: set agent_mailbox on the toolkit "
            "or in the run's context or configurable"
        )
    return policy.agent_mailbox


def _inbox_message(
    address: str, messages: list[Message], policy: ToolPolicy, warning: str | None
) -> tuple[HumanMessage, list[int]]:
    """The mail as one message of the conversation, shown as ``fetch_messages`` shows it and
    within the same budget (``max_answer_chars`` as the model reads it, ``views.fitted``);
    beside it, the msg_ids it shows."""
    intro = f"New mail in your mailbox {address}:\n"
    acked = (
        "This mail is acked for you when this run ends; do not fetch_messages or ack_messages "
        "it. Answer by send_message to the reply_to a sender gives."
    )
    cut = (
        " A message marked truncated was cut to fit: query_messages(from_id=<its msg_id>, "
        "limit=1) shows it alone."
    )

    def mail(views: list[MessageView], left: int) -> InboxMail:
        more = f" {left} more did not fit here: they come with your next model call." * bool(left)
        cuts = cut if any("truncated" in v for v in views) else ""
        return InboxMail(
            mail_address=address,
            count=len(views),
            messages=views,
            note=DATA_NOTE,
            next_step=prefixed(acked + cuts + more, policy),
            warning=warning or None,
        )

    inbox, _, text = fitted(
        mail,
        [message_view(m) for m in messages],
        policy.max_answer_chars,
        chars=policy.max_payload_chars,
        where=MESSAGE_KEPT_IN,
        floor=MESSAGE_FLOOR,
        overhead=len(intro),
    )
    message = HumanMessage(content=intro + text, name=INBOX_MESSAGE_NAME)
    return message, [m["msg_id"] for m in inbox.messages]
