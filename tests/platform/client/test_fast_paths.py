"""The client's fast paths on every SEND (bench 1), each held to the general way it stands in
for: a SEND's reply read without the JSON decoder gives what decoding it gives (the same dict
or the same error), and a NATS control line split at single spaces gives nats-server's split."""

from __future__ import annotations

import json

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from mq9_platform.client.client import _json_reply, _reply
from mq9_wire.nats_floor.guard import _SEPARATORS, _arguments
from mq9_wire.protocol.errors import Mq9Error

SUBJECT = "$mq9.AI.MSG.SEND.box"
I64 = 2**63 - 1


def _read(read, raw: bytes):
    try:
        reply = read(raw, SUBJECT)
    except Mq9Error as exc:
        return type(exc), str(exc)
    return reply, [type(value) for value in reply.values()]


_msg_ids = st.one_of(
    st.integers(min_value=-1, max_value=I64).map(str),
    st.sampled_from(["-1", "0", "-0", "00", "07", "+7", "1.0", "1e3", "-", "", "true"]),
    st.sampled_from([str(I64), str(I64 + 1), str(-I64 - 1), "9" * 19, "9" * 20]),
    st.integers().map(str),
    st.text(alphabet="0123456789-+. e", max_size=22),
)
_errors = st.sampled_from(['""', '"x"', '"mailbox a does not exist"', "null", "0", '" "'])


@st.composite
def _send_replies(draw) -> bytes:
    """Mostly a SEND's success as brokers write it, its msg_id anything that looks like a
    number; sometimes its error set, its fields swapped or spaced, or a byte changed."""
    error, msg_id = draw(_errors | st.just('""')), draw(_msg_ids)
    pairs = [f'"error":{error}', f'"msg_id":{msg_id}']
    if draw(st.booleans()):
        pairs = draw(st.permutations(pairs))
    raw = "{" + draw(st.sampled_from([",", ", ", ",\n"]) | st.just(",")).join(pairs) + "}"
    data = bytearray(raw.encode())
    if draw(st.integers(0, 4)) == 0:
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@pytest.mark.slow  # over a second on a quiet machine (#89)
@settings(max_examples=600)
@given(_send_replies())
@example(b'{"error":"","msg_id":5}')
@example(b'{"error":"","msg_id":-1}')
@example(b'{"error":"","msg_id":007}')
@example(b'{"error":"","msg_id":' + b"9" * 5000 + b"}")  # past int()'s 4,300 digits
@example(b'{"error":"","msg_id":5} ')
@example(b'{"error":"","msg_id":57')  # cut short: no closing brace
@example(b'{"error":"x","msg_id":5}')
@example(b'{"msg_id":5,"error":""}')
def test_a_send_reply_reads_the_same_either_way(raw):
    assert _read(_reply, raw) == _read(_json_reply, raw)


@given(st.integers(min_value=-1, max_value=I64))
def test_a_plain_send_reply_is_read_without_the_decoder(msg_id):
    raw = json.dumps({"error": "", "msg_id": msg_id}, separators=(",", ":")).encode()
    assert _reply(raw, SUBJECT) == {"error": "", "msg_id": msg_id} == _json_reply(raw, SUBJECT)


@pytest.mark.slow  # a property test of about a second (#89)
@settings(max_examples=600)
@given(st.binary(max_size=40) | st.text(alphabet="ab1 \t\x0b\x0c\r", max_size=20).map(str.encode))
@example(b"_INBOX.x 1 22")
@example(b"_INBOX.x  1 22")
@example(b" _INBOX.x 1 22 ")
@example(b"_INBOX.x\t1 22")
@example(b"a\x0bb 1 2")
@example(b"")
def test_a_control_line_splits_as_nats_server_splits_it(rest):
    assert _arguments(rest) == _SEPARATORS.split(rest.strip(b" \t"))
