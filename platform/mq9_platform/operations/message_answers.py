"""What the answers of the message handlers (``fetching.py``, ``querying.py``) share: the exact
call the model makes next (``next_call``; ``registry.py``'s answers too) and as many of the
messages as fit in one answer (``fitted_messages``).
"""

from __future__ import annotations

from collections.abc import Callable

from mq9_wire.protocol import Message

from ..a2a.shapes import JsonObject
from .policy import ToolPolicy
from .views import MESSAGE_FLOOR, MESSAGE_KEPT_IN, Answer, MessageView, fitted, message_view


def next_call(tool: str, address: str, policy: ToolPolicy, *more: str) -> str:
    """How the model calls ``tool`` next; the mailbox is left out when it is its own."""
    args = [] if address == policy.agent_mailbox else [f"mail_address='{address}'"]
    return f"{tool}({', '.join([*args, *more])})"


def fitted_messages(
    messages: list[Message], policy: ToolPolicy, answer: Callable[[list[MessageView], int], Answer]
) -> tuple[Answer, tuple[JsonObject, str]]:
    """The result ``answer(views, left_out)`` that shows as many of ``messages`` as fit in the
    answer budget (``views.fitted``): in order, each its share, at least one. Beside it, its
    content and the text measured (``Outcome.written``)."""
    views = [message_view(m) for m in messages]
    result, content, text = fitted(
        answer,
        views,
        policy.max_answer_chars,
        chars=policy.max_payload_chars,
        where=MESSAGE_KEPT_IN,
        floor=MESSAGE_FLOOR,
    )
    return result, (content, text)
