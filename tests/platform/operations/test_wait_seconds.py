"""How long a tool call may block beyond its request (``Operation.wait_seconds``, which the
tools announce on the stream and bound a sync call by): a fetch's ``max_wait_ms``, an agent
call's ``wait_seconds``, nothing else for tools that take neither."""

from __future__ import annotations

import pytest

from mq9_platform.operations.catalog import OPERATIONS


@pytest.mark.parametrize(
    ("name", "args", "waits"),
    [
        ("fetch_messages", {"max_wait_ms": 1500}, 1.5),
        ("fetch_messages", {}, 0.5),  # its default max_wait_ms
        ("check_call", {"task_id": "t1", "wait_seconds": 60}, 60),
        ("call_agent", {"agent": "a.b", "task": "x", "wait_seconds": 7}, 7),
        ("query_messages", {"mail_address": "a.b"}, 0),
        ("send_message", {"mail_address": "a.b", "payload": "x"}, 0),
    ],
)
def test_a_call_may_wait_what_its_arguments_say(name, args, waits):
    operation = OPERATIONS[name]
    given = operation.input_model.model_validate(args)
    assert operation.wait_seconds(given) == waits + operation.extra_wait
