"""nats_floor/fast_path.py's read_headers: a request's header block read as nats-py's own
``_process_headers`` reads it (#90: a keyed SEND's one header cost the broker 3 us there), for
any block it takes; a block it leaves to nats-py (an inline status, no version line) said so."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from nats.aio.client import Client

from mq9_wire.nats_floor.fast_path import read_headers

# names and values with what nats-py skips, strips or replaces: spaces and control characters
# inside and around, no colon, non-ASCII names, invalid UTF-8 values, empty names
_PIECES = st.sampled_from(
    [b"mq9-idempotency-key", b"Mq9-Tags", b" padded ", b"a b", b"x\x1cy", b"", b"\xc3\xa9",
     b"v", b"1700000000", b'["a","b"]', b"\xff\xfe", b"\t", b" ", b"caf\xc3\xa9", b"k\x0bk"]
)  # fmt: skip
_LINE = st.one_of(
    st.tuples(_PIECES, st.sampled_from([b":", b": ", b":\t", b"::"]), _PIECES).map(b"".join),
    _PIECES,  # no colon: skipped
)


def _nats_py(block: bytes) -> dict[str, str] | None:
    return asyncio.run(Client()._process_headers(block))


@settings(max_examples=300, deadline=None)
@given(st.lists(_LINE, max_size=6))
def test_a_block_reads_as_nats_py_reads_it(lines: list[bytes]) -> None:
    block = b"NATS/1.0\r\n" + b"".join(line + b"\r\n" for line in lines) + b"\r\n"
    assert read_headers(block) == _nats_py(block)


@pytest.mark.parametrize(
    "block",
    [
        b"NATS/1.0\r\nmq9-idempotency-key: 1f0e-9a\r\n\r\n",
        b"NATS/1.0\r\nA: 1\r\nA: 2\r\n\r\n",  # the last one stands
        b"NATS/1.0\r\n\r\n",  # empty: None
    ],
)
def test_the_usual_blocks(block: bytes) -> None:
    assert read_headers(block) == _nats_py(block)


@pytest.mark.parametrize(
    "block",
    [b"NATS/1.0 503\r\n\r\n", b"NATS/1.0 100 Idle Heartbeat\r\nA: 1\r\n\r\n", b"HTTP/1.1\r\n\r\n"],
)
def test_a_status_or_another_version_line_is_left_to_nats_py(block: bytes) -> None:
    assert not isinstance(read_headers(block), dict | None)
