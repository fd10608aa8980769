"""A task's question answered with ``tasks/update`` (the Tasks extension, 2026-07-28; #71): a
response without the input (SEP-2322: an accepted form without the answer, a response of another
kind) asks again under a new key, a stale key changes nothing, a declined one ends the wait, and
a client that never gives the input stops being asked after ``questions.MAX_QUESTIONS`` tries.
In process, on the store's own methods: the whole path over stdio is in
``test_mcp_tasks_extension.py``."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from mcp import types

from mq9_mcp import questions, tasks
from testbed.support.waiting import until

FORM = types.ElicitRequestFormParams(message="Which language?", requested_schema=questions.FORM)


def accept(**content: Any) -> dict[str, Any]:
    return {"action": "accept", "content": content}


async def asking() -> tasks.TaskStore:
    """A store whose one task asks ``FORM`` and completes with the answer it got (repr)."""
    store = tasks.TaskStore()

    async def run(ask: questions.Ask | None) -> types.CallToolResult:
        assert ask is not None
        return types.CallToolResult(content=[types.TextContent(text=repr(await ask(FORM)))])

    assert await store.start("", run, None, asks=True) is not None
    return store


async def asked_key(store: tasks.TaskStore) -> str:
    """The key of the task's outstanding question, once it asks one."""
    [task] = store.tasks.values()

    def asking() -> dict | None:
        view = task.detailed()
        return view if view["status"] == "input_required" else None

    view = await until(asking, timeout=10, what="the task asking", every=0)
    [(key, request)] = view["inputRequests"].items()
    assert request == {"method": "elicitation/create", "params": FORM.model_dump(
        by_alias=True, mode="json", exclude_none=True)}  # fmt: skip
    return key


async def outcome(store: tasks.TaskStore) -> str:
    [task] = store.tasks.values()
    assert task.runner is not None
    async with asyncio.timeout(10):
        await asyncio.wait({task.runner})
    assert task.result is not None
    [content] = task.result.content
    assert isinstance(content, types.TextContent)
    return content.text


@pytest.mark.parametrize(
    "response",
    [accept(), accept(answer="  "), accept(language="French"), {"roots": []},
     {"role": "assistant", "content": {"type": "text", "text": "French"}, "model": "m"}, "French"],
    ids=["no-field", "blank", "other-field", "roots-result", "sampling-result", "not-an-object"],
)  # fmt: skip
async def test_a_response_without_the_input_asks_again_under_a_new_key(response):
    store = await asking()
    [task] = store.tasks.values()
    first = await asked_key(store)
    task.answer({first: response})
    again = await asked_key(store)
    assert again != first
    task.answer({first: accept(answer="German")})  # the first key is no longer asked
    assert await asked_key(store) == again
    task.answer({again: accept(answer="French")})
    assert await outcome(store) == "'French'"


@pytest.mark.parametrize("action", ["decline", "cancel"])
async def test_a_declined_question_is_not_asked_again(action):
    store = await asking()
    [task] = store.tasks.values()
    task.answer({await asked_key(store): {"action": action}})
    assert await outcome(store) == "None"  # the model gets the question


async def test_a_client_that_never_gives_the_input_is_asked_a_bounded_number_of_times():
    store = await asking()
    [task] = store.tasks.values()
    keys = []
    for _ in range(questions.MAX_QUESTIONS):
        keys.append(await asked_key(store))
        task.answer({keys[-1]: accept()})
    assert await outcome(store) == "None"  # the model gets the question
    assert task.detailed()["status"] == "completed"
    assert len(set(keys)) == len(keys) == questions.MAX_QUESTIONS
