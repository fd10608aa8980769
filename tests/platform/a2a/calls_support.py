"""Waiting for a call to reach a state, for tests that act on a task while it is in it."""

from __future__ import annotations

from mq9_platform.a2a.caller import AgentCaller, CallState
from testbed.support.waiting import until


async def until_state(caller: AgentCaller, task_id: str, state: str) -> CallState:
    """The call once the caller sees it in ``state`` (a run reports ``working`` once it is
    under way: a graph that signals it started may be ahead of that report)."""
    seen: list[CallState] = []

    async def in_state() -> CallState | None:
        seen[:] = [await caller.check(task_id)]
        return seen[0] if seen[0].state == state else None

    def last() -> object:
        return seen[0].view() if seen else None

    what = f"call {task_id} in {state}"
    return await until(in_state, timeout=20, what=what, every=0.05, show=last)
