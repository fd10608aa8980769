"""Waiting for a call to reach a state, for tests that act on a task while it is in it."""

from __future__ import annotations

import asyncio

from langchain_mq9.a2a.caller import AgentCaller, CallState


async def until_state(caller: AgentCaller, task_id: str, state: str) -> CallState:
    """The call once the caller sees it in ``state`` (a run reports ``working`` once it is
    under way: a graph that signals it started may be ahead of that report)."""
    for _ in range(400):
        seen = await caller.check(task_id)
        if seen.state == state:
            return seen
        await asyncio.sleep(0.05)
    raise AssertionError(f"call {task_id} never reached {state}: {seen.view()}")
