"""Typed errors (issue #23): each failure code acts on has its class, read from the broker's
words once (``errors.from_reply``); the words on the wire stay RobustMQ's."""

from __future__ import annotations

import sqlite3

import pytest

from mq9_broker import BrokerEngine
from mq9_broker.engine.engine import BrokerLimits
from mq9_broker.storage.in_process import sqlite
from mq9_platform import Mq9Client, Mq9Error
from mq9_wire import protocol as p
from mq9_wire.protocol import errors
from mq9_wire.protocol.errors import from_reply

# Every text a broker answers that code acts on, and what it reads as.
READ = [
    (p.err_mailbox_missing("a.box"), errors.MailboxNotFound, {"address": "a.box"}),
    (p.err_topic_missing("a.box"), errors.MailboxNotFound, {"address": "a.box"}),
    (p.err_ack_mailbox_missing("a.box"), errors.MailboxNotFound, {"address": "a.box"}),
    (p.err_mailbox_exists("a.box"), errors.MailboxExists, {"address": "a.box"}),
    (p.err_answer_too_large(9000, 4096, 3), errors.AnswerTooLarge,
     {"fits": 3, "size": 9000, "limit": 4096}),
    (p.err_listing_too_large(6, 5000, 4096), errors.ListingTooLarge,
     {"count": 6, "size": 5000, "limit": 4096}),
    (p.err_card_too_large(5000, 4096), errors.TooLarge, {"size": 5000, "limit": 4096}),
    (p.ERR_SEARCH_NOT_BUILT, errors.SearchNotBuilt, {}),
    (f'code: Internal, message: "{p.SEARCH_TABLE_MISSING}"', errors.SearchIndexEmpty, {}),
    (p.ERR_NAME_CHARS, errors.InvalidAddress, {}),
    (p.ERR_NAME_EDGES, errors.InvalidAddress, {}),
    (p.ERR_NAME_EMPTY, errors.InvalidAddress, {}),
    (p.err_invalid_address("Bad"), errors.InvalidAddress, {}),
    (p.err_agent_limit(10), errors.LimitReached, {}),
    (p.err_group_limit(10, "a.box"), errors.LimitReached, {}),
    (p.ERR_REGISTER_EMPTY, errors.InvalidArgument, {}),
    ("missing field `group_name`", errors.InvalidArgument, {}),
    ("something new", Mq9Error, {}),
]  # fmt: skip


@pytest.mark.parametrize(("text", "cls", "attributes"), READ)
def test_a_reply_reads_as_its_class_with_the_words_kept(text, cls, attributes):
    error = from_reply(text, p.MAILBOX_CREATE)
    assert type(error) is cls
    # the broker's words are the message, or the detail of one in plainer words (#54)
    assert text in (error.message, error.detail) and not error.retryable
    for name, value in attributes.items():
        assert getattr(error, name) == value


@pytest.mark.parametrize("marker", errors.TRANSIENT_MARKERS)
def test_a_cluster_out_of_reach_is_retryable_and_says_whether_a_send_stored(marker):
    error = from_reply(f"grpc: {marker} x", p.send_subject("a.box"))
    assert isinstance(error, errors.Unavailable) and error.retryable
    assert error.stored_nothing == (marker == errors.NOT_STORED)
    assert error.stored == (marker == errors.STORED_ANYWAY)  # (#100: written, then failed)
    said = "was stored" if error.stored else "may or may not have been stored"
    assert said in error.message
    assert "may or may not" not in from_reply(marker, p.MSG_QUERY + "a.box").message


def test_every_class_is_an_mq9_error_and_retryable_overrides_its_default():
    for cls in vars(errors).values():
        if isinstance(cls, type) and issubclass(cls, Exception):
            assert issubclass(cls, Mq9Error)
    assert errors.RequestTimeout("x").retryable
    assert not errors.RequestTimeout("x", retryable=False).retryable
    assert Mq9Error("x", retryable=True).retryable and not Mq9Error("x").retryable
    assert issubclass(p.WireError, errors.InvalidArgument) and p.Mq9Error is Mq9Error
    assert errors.MailboxNotFound("x").address is None  # what the words did not say
    with pytest.raises(TypeError, match="no attribute 'fit'"):
        errors.AnswerTooLarge("x", fit=3)


async def test_the_client_raises_the_class_of_each_broker_refusal():
    engine = BrokerEngine(limits=BrokerLimits(max_answer=4096))
    async with Mq9Client(transport=engine) as client:
        with pytest.raises(errors.MailboxNotFound) as missing:
            await client.send("no.box", "x")
        assert missing.value.address == "no.box"
        assert missing.value.detail == p.err_mailbox_missing("no.box")  # RobustMQ's words
        with pytest.raises(errors.MailboxNotFound):
            await client.query("no.box")
        with pytest.raises(errors.MailboxNotFound):
            await client.ack("no.box", "g", 0)
        box = await client.mailbox_create(name="a.box")
        with pytest.raises(errors.MailboxExists):
            await client.mailbox_create(name=box)
        for i in range(6):
            await client.send(box, str(i) * 1000)
        with pytest.raises(errors.AnswerTooLarge) as large:
            await client.fetch(box, group_name="g", deliver="earliest", num_msgs=6)
        assert 0 < large.value.fits < 6
        assert len(await client.fetch(box, group_name="g", num_msgs=large.value.fits)) > 0
        with pytest.raises(errors.InvalidAddress):
            await client.send("Bad", "x")  # the client's own refusal, before any request
        with pytest.raises(errors.PayloadTooLarge) as payload:
            await client.send(box, "x" * (2 * 1024 * 1024))
        assert payload.value.limit == engine.limits.max_payload


def test_sqlite_failures_are_read_by_their_code():
    busy = sqlite3.OperationalError("reworded")
    readonly = sqlite3.OperationalError("reworded")
    busy.sqlite_errorcode, readonly.sqlite_errorcode = sqlite3.SQLITE_BUSY, 1032  # codes only
    assert sqlite.sqlite_busy(busy) and not sqlite.sqlite_readonly(busy)
    assert sqlite.sqlite_readonly(readonly) and not sqlite.sqlite_busy(readonly)
    # an error SQLite did not raise carries no code: it is neither
    assert not sqlite.sqlite_busy(sqlite3.OperationalError("database is locked"))
