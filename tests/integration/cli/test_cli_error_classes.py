"""#113 "errors are read by code, not by words": what ``mq9`` and its console decide on an
error (its exit code, whether a mailbox is another agent's, whether a SEND may have been
stored, whether a call is not found) they decide by the error's class. Played for real on the
enforcing dev broker (``mq9-dev-broker --credentials``): a refused login is ``NotAllowed``, a
port where nothing listens ``ConnectFailed``, another agent's mailbox ``NotOwner``; then each
decision with the words changed and the class kept, and with the words kept and the class
another, so a reworded message can neither break nor fake a decision."""

from __future__ import annotations

import pytest

from mq9_cli.connect import FAILED, NOT_FOUND, REFUSED_LOGIN, UNREACHABLE, Target, failure
from mq9_cli.overview import figures, refusal
from mq9_platform.a2a.caller import CallError, CallNotFound
from mq9_platform.client.auth import Login, refused_login
from mq9_platform.client.client import Mq9Client
from mq9_wire.protocol.errors import (
    ConnectFailed,
    InvalidArgument,
    Mq9Error,
    NotAllowed,
    NotOwner,
    RequestTimeout,
    Unavailable,
)
from testbed.ports import silent_port
from testbed.support.credentials_support import EnforcingBroker
from tests.integration.cli.test_cli import mq9


@pytest.fixture
def enforcing(tmp_path):
    broker = EnforcingBroker(tmp_path, "alice", "bob")
    yield broker
    broker.stop()


async def _refused(server: str) -> Mq9Error:
    """What the command line's own client raises at ``server`` (its short retries)."""
    with pytest.raises(Mq9Error) as raised:
        async with Target.from_options(server).client() as client:
            await client.query("any.box")
    return raised.value


@pytest.mark.slow  # the dev broker
async def test_a_refused_login_is_not_allowed_and_nothing_listening_is_connect_failed(enforcing):
    wrong = enforcing.address("alice:" + "x" * 43)
    refused = await _refused(wrong)
    assert type(refused) is NotAllowed, repr(refused)
    assert failure(refused).code == REFUSED_LOGIN
    code, _, err = await mq9(wrong, "query", "any.box")
    assert code == REFUSED_LOGIN and "x" * 43 not in err, err
    down = await _refused(f"nats://127.0.0.1:{silent_port()}")
    assert type(down) is ConnectFailed, repr(down)
    assert failure(down).code == UNREACHABLE


@pytest.mark.slow  # the dev broker
async def test_another_agents_mailbox_is_not_owner_and_the_overview_says_so(enforcing):
    alice = Mq9Client(enforcing.url, credential=enforcing.credentials["alice"])
    bob = Mq9Client(enforcing.url, credential=enforcing.credentials["bob"])
    async with alice, bob:
        box = await alice.mailbox_create(name="alice.box")
        with pytest.raises(NotOwner) as theirs:
            await bob.query(box)
        seen = await figures(bob, box)
        assert seen.exists and seen.refused == theirs.value.message, seen
        assert (await figures(alice, box)).refused is None  # her own: read, not refused


def test_a_refused_login_in_other_words_is_still_one_and_its_words_alone_are_not():
    assert failure(NotAllowed("the server said no")).code == REFUSED_LOGIN
    # the login's words on an outage (a class the transport never gives them): an outage
    words = refused_login("nats://127.0.0.1:4222", Login())
    assert failure(Unavailable(words)).code == UNREACHABLE


def test_a_mailbox_not_ours_in_other_words_is_still_refused_and_the_words_alone_are_not():
    reworded = NotOwner("QUERY: mailbox 'alice.box' is someone else's")
    assert refusal(reworded) == reworded.message
    assert refusal(InvalidArgument("QUERY refused: mailbox 'alice.box' is odd")) is None
    assert refusal(Mq9Error("QUERY refused: mailbox 'alice.box' belongs to another agent")) is None


def test_a_call_not_found_in_other_words_is_still_not_found_and_the_words_alone_are_not():
    assert failure(CallNotFound("that call is gone")).code == NOT_FOUND
    assert failure(CallError("no call with task id t-1 from this caller")).code == FAILED
    assert failure(CallError("'x' is no task id: list_calls shows yours")).code == FAILED


def test_a_send_unanswered_says_check_first_by_its_class_not_its_words():
    note = "`mq9 query team.box` shows it"
    timed_out = failure(RequestTimeout("no answer"), operation="send_message", mailbox="team.box")
    assert timed_out.code == UNREACHABLE and note in str(timed_out), str(timed_out)
    unsent = ConnectFailed("the broker did not answer; it may or may not have been stored")
    said = failure(unsent, operation="send_message", mailbox="team.box")
    assert said.code == UNREACHABLE and note not in str(said), str(said)
