"""Refusals by reason (#73): a ``--credentials`` broker's refusal of what is not the
requester's reads as ``NotOwner`` (``reason="not_owner"``), whatever words the name it quotes
holds; other refusals keep their own class."""

from __future__ import annotations

import json

from mq9_broker.serving.meter import reason_of
from mq9_wire import protocol as p
from mq9_wire.protocol.error_texts import NOT_YOURS_REFUSALS
from mq9_wire.protocol.errors import from_reply


def _reply(text: str) -> bytes:
    return json.dumps({"error": text}).encode()


def test_every_ownership_refusal_is_counted_as_not_owner():
    assert {reason_of(_reply(text)) for text in NOT_YOURS_REFUSALS} == {"not_owner"}


def test_a_name_holding_another_refusal_s_words_does_not_change_the_reason():
    # an agent name is the requester's choice: it may quote a cluster's or a mailbox's words
    for name in ("Connection refused", "mailbox x does not exist", "invalid x", "has no owner"):
        text = f"REGISTER refused: agent {p.quoted(name)} is registered by another agent"
        assert reason_of(_reply(text)) == "not_owner", name
        assert from_reply(text).retryable is False


def test_other_refusals_keep_their_class():
    assert reason_of(_reply(p.err_mailbox_missing("a.box"))) == "mailbox_not_found"
    assert reason_of(_reply("SEND refused: header 'x' holds a line break (CRLF)")) == "other"
    # the words alone, not at a refusal's start, are not an ownership refusal
    assert reason_of(_reply("something else belongs to another agent")) == "other"
