"""Each of nats_guard's overrides is on only while this nats-py has the internals it uses
(checked before its first use): when one differs, that override is off, whole, with one
warning line, and the connection works as plain nats-py does. Simulated by re-declaring, with
other parameters, one nats-py method the override relies on; on a real nats-server."""

from __future__ import annotations

import logging

import nats
import pytest
from nats.aio.client import Client
from nats.protocol.parser import Parser

from mq9_wire.nats_floor import guard as nats_guard
from mq9_wire.nats_floor.guard import GuardedClient, GuardedParser, protect

pytestmark = pytest.mark.asyncio


def _differ(monkeypatch, name: str) -> None:
    """nats-py's Client.<name> re-declared with other parameters, working as before."""
    original = getattr(Client, name)

    def changed(self, *args, **kwargs):
        return original(self, *args, **kwargs)

    monkeypatch.setattr(nats_guard, "_verdicts", {})
    monkeypatch.setattr(Client, name, changed)


def _warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


async def test_each_check_finds_this_nats_py_as_checked():
    connection = GuardedClient()
    assert nats_guard._parser_problem(connection) is None
    assert nats_guard._handshake_problem(connection) is None
    assert nats_guard._header_problem(connection) is None
    assert nats_guard._drain_problem(connection) is None


@pytest.mark.slow
async def test_the_parser_guard_is_off_when_nats_py_differs(nats_server, monkeypatch, caplog):
    _differ(monkeypatch, "_process_msg")
    connection = await nats.connect(nats_server.url)
    try:
        with caplog.at_level(logging.WARNING, "mq9_wire.nats_floor.guard"):
            assert protect(connection) is None
            assert protect(connection) is None
        assert type(connection._ps) is Parser  # nats-py's own, and no watchdog
        [said] = _warnings(caplog)
        assert "_process_msg" in said and "the lenient parser and its watchdog is off" in said
        assert {r.name for r in caplog.records} == {"mq9_wire.nats_floor.guard"}  # the wire's (#92)
        subscription = await connection.subscribe("guard.off")
        await connection.flush()
        await connection.publish("guard.off", b"still works")
        assert (await subscription.next_msg(timeout=5)).data == b"still works"
    finally:
        await connection.close()


@pytest.mark.slow
async def test_the_handshake_is_off_whole_when_nats_py_differs(nats_server, monkeypatch, caplog):
    _differ(monkeypatch, "_connect_command")
    connection = GuardedClient()
    with caplog.at_level(logging.WARNING, "mq9_wire.nats_floor.guard"):
        await connection.connect(nats_server.url, max_reconnect_attempts=0)
    try:
        # neither half: nats-py's transport, and nats-py's CONNECT
        assert not isinstance(connection._transport, nats_guard.PatientTcpTransport)
        assert b"tls_required" not in connection._connect_command()
        [said] = _warnings(caplog)
        assert "_connect_command" in said and "RobustMQ's handshake is off" in said
        await connection.flush(timeout=5)  # nats-server answers its PING: it works
    finally:
        await connection.close()


@pytest.mark.slow
async def test_the_handshake_is_on_here(nats_server):
    connection = GuardedClient()
    await connection.connect(nats_server.url, max_reconnect_attempts=0)
    try:
        assert isinstance(connection._transport, nats_guard.PatientTcpTransport)
        assert b'"tls_required": false' in connection._connect_command()
    finally:
        await connection.close()


@pytest.mark.slow
async def test_the_header_writer_is_off_when_nats_py_differs(nats_server, monkeypatch, caplog):
    _differ(monkeypatch, "_send_publish")

    def never(*args, **kwargs):
        raise AssertionError("the header block writer is off")

    monkeypatch.setattr(GuardedClient, "_send_block", never)
    connection = GuardedClient()
    with caplog.at_level(logging.WARNING, "mq9_wire.nats_floor.guard"):
        await connection.connect(nats_server.url, max_reconnect_attempts=0)
    try:
        subscription = await connection.subscribe("guard.headers")
        await connection.flush()
        await connection.publish("guard.headers", b"x", headers={"traceparent": "00-ab-cd-01"})
        got = await subscription.next_msg(timeout=5)
        assert got.headers == {"traceparent": "00-ab-cd-01"}
        assert any("the header block writer is off" in line for line in _warnings(caplog))
    finally:
        await connection.close()


@pytest.mark.slow
async def test_a_guarded_parser_stays_when_protect_is_called_again(nats_server):
    connection = await nats.connect(nats_server.url)
    try:
        first = protect(connection)
        parser = connection._ps
        second = protect(connection)
        assert isinstance(parser, GuardedParser) and connection._ps is parser
        for watchdog in (first, second):
            assert watchdog is not None
            watchdog.cancel()
    finally:
        await connection.close()


@pytest.mark.slow
async def test_the_in_order_drain_is_nats_pys_drain_when_nats_py_differs(
    nats_server, monkeypatch, caplog
):
    _differ(monkeypatch, "_remove_sub")
    connection = await nats.connect(nats_server.url)
    try:

        async def take(msg):
            return None

        subscription = await connection.subscribe("guard.drain", cb=take)
        with caplog.at_level(logging.WARNING, "mq9_wire.nats_floor.guard"):
            await nats_guard.drain_in_order(connection, [subscription])
        assert "guard.drain" not in {sub.subject for sub in connection._subs.values()}
        assert len(_warnings(caplog)) == 1 and "in-order drain" in _warnings(caplog)[0]
    finally:
        await connection.close()
