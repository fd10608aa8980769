"""#113: the mailbox handlers are split by what they do: the writes (``mailbox.py``), taking
messages in turn (``fetching.py``), looking at them (``querying.py``) and what those answers
share (``message_answers.py``). The old import path still gives every handler the catalog
names and what registry.py, the command line and the tests import of it, the very objects
the new modules hold."""

from __future__ import annotations

import mq9_platform.operations.mailbox as mailbox
from mq9_platform.operations import fetching, message_answers, querying
from mq9_platform.operations.catalog import OPERATIONS
from mq9_platform.operations.mailbox import NO_KEYS_KEPT, hidden_in, next_call
from mq9_platform.operations.policy import ToolPolicy


def test_the_mailbox_path_still_gives_what_it_gave():
    assert all(hasattr(mailbox, name) for name in mailbox.__all__)
    assert mailbox.fetch_messages is fetching.fetch_messages
    assert mailbox.ack_messages is fetching.ack_messages
    assert mailbox.query_messages is querying.query_messages and hidden_in is querying.hidden_in
    assert next_call is message_answers.next_call and "idempotency" in NO_KEYS_KEPT


def test_the_catalog_runs_the_handlers_the_mailbox_path_gives():
    for name in ("create_mailbox", "send_message", "fetch_messages", "ack_messages",
                 "query_messages", "delete_message"):  # fmt: skip
        assert OPERATIONS[name].handler is getattr(mailbox, name)
    policy = ToolPolicy(agent_mailbox="me")
    assert next_call("fetch_messages", "me", policy) == "fetch_messages()"
