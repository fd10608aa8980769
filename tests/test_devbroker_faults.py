"""Faults: nats-server goes away and comes back on the same port under running clients.

What must hold: a request in flight fails at once with a retryable ``Mq9Error`` (it does not
hang until its timeout); the client reconnects by itself, even after nats-py has given up; a
consumer resumes; and every message whose SEND succeeded reaches the consuming group exactly
once (a SEND that failed may or may not have been stored: the producer counts only successes).
"""

from __future__ import annotations

import asyncio
import time

import nats
import pytest
from devbroker_helpers import DevBroker

from langchain_mq9 import Mq9Client, Mq9Error, Priority
from langchain_mq9.broker import BrokerEngine, serve_on_nats
from langchain_mq9.broker.nats_process import free_port, start_nats_server

ACK_WAIT = 1.0  # short, so that leases lost with the connection come back within the test


async def restart(server, port: int):
    """Stop nats-server and start a new one on the same port."""
    await asyncio.to_thread(server.stop)
    return await asyncio.to_thread(start_nats_server, "127.0.0.1", port)


@pytest.fixture
async def served():
    """A nats-server the test restarts, with an in-process broker that reconnects forever."""
    port = free_port()
    state = {"server": start_nats_server(port=port)}
    connection = await nats.connect(
        state["server"].url, max_reconnect_attempts=-1, reconnect_time_wait=0.05
    )
    service = await serve_on_nats(BrokerEngine(), connection)
    state.update(port=port, url=state["server"].url, connection=connection)
    try:
        yield state
    finally:
        await service.stop()
        await connection.close()
        state["server"].stop()


async def wait_served(connection, timeout: float = 10) -> None:
    """Until the broker's own connection is back and its subscription is registered."""
    deadline = time.monotonic() + timeout
    while not connection.is_connected:
        assert time.monotonic() < deadline, "the broker did not reconnect"
        await asyncio.sleep(0.01)
    await connection.flush(timeout)


async def test_a_request_in_flight_fails_at_once_and_retryably(served):
    async with Mq9Client(served["url"], reconnect_delay=0.05) as client:
        box = await client.mailbox_create(name="waiting")
        started = time.monotonic()
        long_poll = asyncio.create_task(client.fetch(box, max_wait_ms=20_000))
        await asyncio.sleep(0.2)  # let the FETCH reach the broker and park there
        assert not long_poll.done()
        served["server"] = await restart(served["server"], served["port"])
        with pytest.raises(Mq9Error) as caught:
            await asyncio.wait_for(long_poll, 10)
        assert caught.value.retryable
        assert "lost the connection to the mq9 broker" in caught.value.message
        assert "may or may not have been carried out" in caught.value.message
        assert time.monotonic() - started < 10  # not the 25 s the request was allowed

        # the same client carries on once the broker is reachable again
        await wait_served(served["connection"])
        for _ in range(100):  # bounded retry, as a producer would
            try:
                assert await client.send(box, "after the restart") == 0
                break
            except Mq9Error as exc:
                assert exc.retryable, exc
                await asyncio.sleep(0.05)
        assert [m.text() for m in await client.query(box)] == ["after the restart"]
        assert client.is_connected


async def test_the_client_dials_again_after_nats_py_gave_up(served):
    client = Mq9Client(served["url"], reconnect_attempts=1, reconnect_delay=0.05, request_timeout=2)
    async with client:
        box = await client.mailbox_create(name="outage")
        await asyncio.to_thread(served["server"].stop)
        # nats-py tries once more, then closes its connection: calls fail, retryably
        for _ in range(50):
            with pytest.raises(Mq9Error) as caught:
                await client.send(box, "lost")
            assert caught.value.retryable, caught.value.message
            if client._transport._connection.is_closed:
                break
            await asyncio.sleep(0.05)
        assert client._transport._connection.is_closed, "nats-py did not give up"
        assert client.is_connected  # until close(): the next call dials again
        with pytest.raises(Mq9Error, match="cannot connect to the mq9 broker") as caught:
            await client.send(box, "still down")
        assert caught.value.retryable

        served["server"] = await asyncio.to_thread(start_nats_server, "127.0.0.1", served["port"])
        await wait_served(served["connection"])
        assert await client.send(box, "back") == 0
    assert not client.is_connected


async def test_server_restart_under_producer_and_consumer_loses_and_repeats_nothing():
    port = free_port()
    server = start_nats_server(port=port)
    broker = DevBroker("--nats", server.url, "--ack-wait", str(ACK_WAIT))
    options = dict(request_timeout=2, reconnect_delay=0.05)
    try:
        async with (
            Mq9Client(server.url, **options) as producer,
            Mq9Client(server.url, **options) as consuming,
        ):
            box = await producer.mailbox_create(name="jobs")
            handled: list[bytes] = []
            succeeded: set[bytes] = set()
            attempted: set[bytes] = set()
            failures: list[str] = []
            halfway, restarted, all_in = asyncio.Event(), asyncio.Event(), asyncio.Event()
            finished_producing = asyncio.Event()

            def check_all_in() -> None:
                if finished_producing.is_set() and succeeded <= set(handled):
                    all_in.set()

            def handler(message) -> None:
                handled.append(message.payload)
                check_all_in()

            consumer = await consuming.consume(
                box,
                handler,
                group_name="workers",
                deliver="earliest",
                num_msgs=10,
                max_wait_ms=200,
            )

            after_restart: list[bytes] = []

            async def produce() -> None:
                i = 0
                while i < 300 or len(after_restart) < 100:
                    payload = f"job {i}".encode()
                    attempted.add(payload)
                    try:
                        await producer.send(box, payload, priority=list(Priority)[i % 3])
                    except Mq9Error as exc:
                        assert exc.retryable, exc.message
                        failures.append(exc.message)
                        await asyncio.sleep(0.01)  # the producer's own retry pacing
                    else:
                        succeeded.add(payload)
                        if restarted.is_set():
                            after_restart.append(payload)
                    i += 1
                    if i == 150:
                        halfway.set()
                    assert i < 10_000, f"the producer never got through again: {failures[-3:]}"
                finished_producing.set()
                check_all_in()

            producing = asyncio.create_task(produce())
            await asyncio.wait_for(halfway.wait(), 20)
            server = await restart(server, port)
            restarted.set()
            await asyncio.wait_for(producing, 60)
            await asyncio.wait_for(all_in.wait(), 30)
            # The window in which a lease lost with the connection (a FETCH answer or an ACK
            # that never arrived) ends and its message comes back to the running consumer,
            # which must ack it without handling it a second time.
            await asyncio.sleep(ACK_WAIT + 0.5)
            await consumer.stop()
            # nothing the group was handed is left unacked: a long poll past the ack-wait
            # gets nothing back
            left = await consuming.fetch(
                box, group_name="workers", max_wait_ms=int((ACK_WAIT + 0.5) * 1000)
            )
            assert left == []

        summary = (
            f"{len(attempted)} sent, {len(succeeded)} succeeded, {len(failures)} failed, "
            f"{len(handled)} handled"
        )
        assert len(handled) == len(set(handled)), f"handled twice: {summary}"
        assert succeeded <= set(handled), f"lost: {summary}"
        assert set(handled) <= attempted, summary
        assert len(succeeded) - len(after_restart) >= 100, summary  # before the restart
        assert len(after_restart) >= 100, summary
        assert broker.process.poll() is None
        assert any("lost the connection to nats-server" in line for line in broker.stderr), (
            broker.output()
        )
        assert broker.stop() == 0
    finally:
        broker.kill()
        server.stop()
