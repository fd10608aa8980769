"""#77 fairness: who a request is, for the broker's turns (serve.py) and answer room (pacing.py).

Through the open cluster's service import (docs/deploy.md's accounts.conf) every reply subject
is ``_R_.<prefix>.<x>``, one prefix per importing server: the requester is the connection
nats-server names in ``Nats-Request-Info`` (``share: true``). A header missing, malformed or
of another shape falls back to the prefix (one requester per server), never an error. A
reply that did not come through an import is keyed as before, whatever header it carries.
And that header, which tells the sender's host, is never stored with a SEND's message."""

from __future__ import annotations

import json

import pytest

from mq9_broker.engine.sending import read_send
from mq9_broker.serving.pacing import REQUEST_INFO, requester
from mq9_wire import protocol as p

IMPORTED = "_R_.AbCdEf.xYz9"  # what nats-server makes of a request through a service import


def _info(**fields) -> dict[str, str]:
    return {REQUEST_INFO: json.dumps(fields)}


SERVER_INFO = {"acc": "CLIENTS", "server": "NDX4SERVER", "id": 17, "host": "10.0.0.5"}


def test_a_request_through_the_import_is_its_connection():
    one = requester(IMPORTED, _info(**SERVER_INFO))
    other = requester(IMPORTED, _info(**{**SERVER_INFO, "id": 18}))
    elsewhere = requester(IMPORTED, _info(**{**SERVER_INFO, "server": "NOTHER"}))
    assert len({one, other, elsewhere}) == 3
    assert one == requester("_R_.AbCdEf.other", _info(**SERVER_INFO))  # another reply, same
    assert "10.0.0.5" not in one  # keyed by the connection, not by where it came from


@pytest.mark.parametrize(
    "headers",
    [
        None,
        {},
        {"mq9-priority": "urgent"},
        {REQUEST_INFO: ""},
        {REQUEST_INFO: "{not json"},
        {REQUEST_INFO: "[1, 2]"},
        {REQUEST_INFO: '"text"'},
        {REQUEST_INFO: "null"},
        {REQUEST_INFO: json.dumps({"server": "S"})},  # no id
        {REQUEST_INFO: json.dumps({"id": 3})},  # no server
        {REQUEST_INFO: json.dumps({"server": "", "id": 3})},
        {REQUEST_INFO: json.dumps({"server": 5, "id": 3})},
        {REQUEST_INFO: json.dumps({"server": "S", "id": "3"})},
        {REQUEST_INFO: json.dumps({"server": "S", "id": -1})},
        {REQUEST_INFO: json.dumps({"server": "S", "id": True})},
        {REQUEST_INFO: json.dumps({"server": "S", "id": 3.5})},
        {REQUEST_INFO: json.dumps({"server": "S", "id": 3, "acc": ["x"]})},
        {REQUEST_INFO: json.dumps({"server": "S" * 5000, "id": 3})},  # beyond what is read
        {REQUEST_INFO: "\ufffd\ufffd"},
    ],
)
def test_without_a_usable_client_info_the_importing_server_is_one_requester(headers):
    assert requester(IMPORTED, headers) == "_R_.AbCdEf"


def test_a_reply_not_through_an_import_is_keyed_by_its_inbox_whatever_it_claims():
    forged = _info(**SERVER_INFO)
    assert requester("_INBOX.abc.7", forged) == "_INBOX.abc"
    assert requester("_INBOX.abc.7") == "_INBOX.abc"
    assert requester("lonely", forged) == "lonely"
    assert requester("", forged) == ""  # what needs no answer shares one requester


@pytest.mark.parametrize(
    "name", [REQUEST_INFO, "nats-request-info", "NATS-REQUEST-INFO", " Nats-Request-Info "]
)
def test_a_sends_stored_headers_never_hold_the_servers_client_info(name):
    headers = {name: json.dumps(SERVER_INFO), "mq9-tags": "a,b", "x-trace": "t1"}
    message = read_send(headers, b"body", 1_000).message
    kept = p.parse_header_block(message.header)
    assert kept == {"mq9-tags": "a,b", "x-trace": "t1"}
    assert message.tags == ("a", "b")


def test_a_send_with_only_the_servers_header_is_stored_without_headers():
    assert read_send({REQUEST_INFO: json.dumps(SERVER_INFO)}, b"x", 1).message.header is None
