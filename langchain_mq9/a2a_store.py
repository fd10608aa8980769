"""Where A2A task state lives on the broker: an agent's ``{name}.tasks`` mailbox.

Each state of a task is kept as the whole A2A Task under key ``task.{id}``: key compaction
keeps the newest, so a QUERY by key answers it from any replica, after a restart, or while the
agent is offline. A cancel is kept apart, as ``cancel.{id}``, so that a replica still writing
``working`` cannot hide it.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

from . import a2a_wire as w
from .errors import MailboxExists, MailboxNotFound


async def ensure_mailbox(client: Any, address: str) -> None:
    """Create ``address`` (never expiring) unless it is there."""
    with contextlib.suppress(MailboxExists):
        await client.mailbox_create(name=address, ttl=0)


def _object(payload: bytes) -> dict[str, Any] | None:
    """A payload's JSON object, or None (no JSON, or not an object)."""
    try:
        value = json.loads(payload)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return None
    return value if isinstance(value, dict) else None


async def latest(client: Any, mailbox: str, key: str) -> dict[str, Any] | None:
    """The JSON object kept under ``key`` in ``mailbox``, or None (no such mailbox either)."""
    try:
        found = await client.query(mailbox, key=key)
    except MailboxNotFound:
        return None
    for msg in reversed(found):
        value = _object(msg.payload)
        if value is not None:
            return value
    return None


async def keep(
    client: Any,
    mailbox: str,
    key: str,
    value: dict[str, Any],
    *,
    tags: list[str] | None = None,
    headers: dict[str, str] | None = None,
) -> None:
    """Leave ``value`` (JSON) in ``mailbox`` under ``key``: it replaces the older one."""
    await client.send(mailbox, w.json_text(value), key=key, tags=tags, headers=headers)


async def deliver(client: Any, mailbox: str, snapshot: dict[str, Any]) -> None:
    """Leave a Task snapshot in a mailbox (a caller's reply mailbox, or ``{name}.tasks``),
    keyed by its task."""
    headers = w.event_headers(snapshot["id"], w.task_state(snapshot))
    await keep(
        client, mailbox, w.TASK_KEY + snapshot["id"], snapshot, tags=[w.TASK_TAG], headers=headers
    )


class TaskStore:
    """The task states of one agent (``{agent_mailbox}.tasks``)."""

    def __init__(self, client: Any, agent_mailbox: str) -> None:
        self.client = client
        self.mailbox = agent_mailbox + w.TASKS_SUFFIX

    async def get(self, task_id: str) -> dict[str, Any] | None:
        return await latest(self.client, self.mailbox, w.TASK_KEY + task_id)

    async def put(self, snapshot: dict[str, Any]) -> None:
        await deliver(self.client, self.mailbox, snapshot)

    async def cancel_requested(self, task_id: str) -> bool:
        return await latest(self.client, self.mailbox, w.CANCEL_KEY + task_id) is not None

    async def request_cancel(self, task_id: str) -> None:
        await keep(self.client, self.mailbox, w.CANCEL_KEY + task_id, {"id": task_id})

    async def list(self, context_id: str = "") -> list[dict[str, Any]]:
        """The newest state of each task kept (RobustMQ answers at most 100, oldest first)."""
        tasks = []
        for msg in await self.client.query(self.mailbox, tags=[w.TASK_TAG]):
            snapshot = _object(msg.payload) or {}
            if not w.is_valid_id(snapshot.get("id")):
                continue  # not a Task
            if not context_id or snapshot.get("contextId") == context_id:
                tasks.append(snapshot)
        return tasks
