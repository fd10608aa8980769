"""Faults: nats-server goes away and comes back on the same port under running clients.

What must hold: a request in flight fails at once with a retryable ``Mq9Error`` (it does not
hang until its timeout); the client reconnects by itself, even after nats-py has given up; and
under a dev broker that loses its nats-server mid-stream, every message whose SEND succeeded
reaches the consuming group (a SEND that failed may or may not have been stored: the producer
counts only successes).

The first two tests are about ``Mq9Client``'s own fault handling; the last one speaks raw
nats-py to the dev broker, with a consumer that follows RobustMQ's offset rules (an ACK that
was lost hands the same messages out again, so it drops msg_ids it has seen).
"""

from __future__ import annotations

import asyncio
import json
import time

import nats
import pytest

from mq9_platform import Mq9Client, Mq9Error
from mq9_wire import protocol as p
from testbed.nats_server import start_nats_server
from testbed.support.devbroker_helpers import DevBroker
from testbed.support.waiting import until

pytestmark = pytest.mark.slow


async def restart(server, port: int):
    """Stop nats-server and start a new one on the same port."""
    await asyncio.to_thread(server.stop)
    return await asyncio.to_thread(start_nats_server, "127.0.0.1", port)


async def wait_served(connection, timeout: float = 10) -> None:
    """Until the broker's own connection is back and its subscription is registered."""
    what = "the broker reconnected"
    await until(lambda: connection.is_connected, timeout=timeout, what=what, every=0.01)
    await connection.flush(timeout)


async def test_a_request_in_flight_fails_at_once_and_retryably(restartable_nats):
    async with Mq9Client(restartable_nats["url"], reconnect_delay=0.05) as client:
        box = await client.mailbox_create(name="waiting")
        started = time.monotonic()
        # Mq9Client.fetch never asks the broker to wait (it looks again instead): a FETCH
        # that parks on the broker is sent raw, as another SDK would send it
        parked = p.encode({"config": {"max_wait_ms": 20_000}})
        long_poll = asyncio.create_task(client._call(p.fetch_subject(box), parked))
        await asyncio.sleep(0.2)  # let the FETCH reach the broker and park there
        assert not long_poll.done()
        restartable_nats["server"] = await restart(
            restartable_nats["server"], restartable_nats["port"]
        )
        with pytest.raises(Mq9Error) as caught:
            await asyncio.wait_for(long_poll, 10)
        assert caught.value.retryable
        assert "lost the connection to the mq9 broker" in caught.value.message
        assert "may or may not have been carried out" in caught.value.message
        assert time.monotonic() - started < 10  # not the 25 s the request was allowed

        # the same client carries on once the broker is reachable again
        await wait_served(restartable_nats["connection"])
        for _ in range(100):  # bounded retry, as a producer would
            try:
                assert await client.send(box, "after the restart") == 0
                break
            except Mq9Error as exc:
                assert exc.retryable, exc
                await asyncio.sleep(0.05)
        assert [m.msg_id for m in await client.query(box)] == [0]
        assert client.is_connected


async def test_the_client_dials_again_after_nats_py_gave_up(restartable_nats):
    client = Mq9Client(
        restartable_nats["url"], reconnect_attempts=1, reconnect_delay=0.05, request_timeout=2
    )
    async with client:
        box = await client.mailbox_create(name="outage")
        await asyncio.to_thread(restartable_nats["server"].stop)
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

        restartable_nats["server"] = await asyncio.to_thread(
            start_nats_server, "127.0.0.1", restartable_nats["port"]
        )
        await wait_served(restartable_nats["connection"])
        assert await client.send(box, "back") == 0
    assert not client.is_connected


class Retried:
    """Raw mq9 requests on one nats-py connection that reconnects forever; a request that
    fails (the server is restarting) raises, and the caller decides whether to retry."""

    def __init__(self, connection) -> None:
        self.connection = connection

    async def call(self, subject: str, body: bytes | dict = b"", headers=None) -> dict:
        if isinstance(body, dict):
            body = p.encode(body)
        reply = await self.connection.request(subject, body, timeout=2, headers=headers)
        answer = json.loads(reply.data)
        assert answer["error"] == "", answer
        return answer

    async def until_done(self, subject: str, body: bytes | dict = b"", headers=None) -> dict:
        return await until(
            lambda: self.call(subject, body, headers),
            timeout=20,
            what=f"{subject} through",
            every=0.05,
            ignoring=(TimeoutError, nats.errors.Error),
        )


async def test_server_restart_under_producer_and_consumer_loses_nothing():
    server = start_nats_server()  # on the system's choice of port: the restart takes it again
    port = server.port
    broker = DevBroker("--nats", server.url)
    options = dict(max_reconnect_attempts=-1, reconnect_time_wait=0.05)
    box = "jobs"
    try:
        producing = Retried(await nats.connect(server.url, **options))
        consuming = Retried(await nats.connect(server.url, **options))
        try:
            await producing.until_done(p.MAILBOX_CREATE, {"name": box})
            handled: dict[int, bytes] = {}
            succeeded: set[bytes] = set()
            attempted: set[bytes] = set()
            failures: list[str] = []
            halfway, restarted, finished = asyncio.Event(), asyncio.Event(), asyncio.Event()
            after_restart: list[bytes] = []

            async def produce() -> None:
                i = 0
                while i < 300 or len(after_restart) < 100:
                    payload = f"job {i}".encode()
                    attempted.add(payload)
                    priority = ("normal", "urgent", "critical")[i % 3]
                    try:
                        await producing.call(
                            p.send_subject(box), payload, {"mq9-priority": priority}
                        )
                    except (TimeoutError, nats.errors.Error) as exc:
                        failures.append(repr(exc))
                        await asyncio.sleep(0.01)  # the producer's own retry pacing
                    else:
                        succeeded.add(payload)
                        if restarted.is_set():
                            after_restart.append(payload)
                    i += 1
                    if i == 150:
                        halfway.set()
                    assert i < 10_000, f"the producer never got through again: {failures[-3:]}"
                finished.set()

            async def consume() -> None:
                # num_msgs above the backlog: every lane is read to its end, so acking the
                # largest msg_id of an answer skips nothing
                request = {
                    "group_name": "workers",
                    "deliver": "earliest",
                    "config": {"num_msgs": 100_000, "max_wait_ms": 50},
                }
                while not (finished.is_set() and succeeded <= set(handled.values())):
                    try:
                        reply = await consuming.call(p.fetch_subject(box), request)
                        if reply["messages"]:
                            for message in reply["messages"]:
                                handled.setdefault(message["msg_id"], message["payload"].encode())
                            top = max(m["msg_id"] for m in reply["messages"])
                            await consuming.call(
                                p.ack_subject(box),
                                {"group_name": "workers", "mail_address": box, "msg_id": top},
                            )
                    except (TimeoutError, nats.errors.Error):
                        await asyncio.sleep(0.05)  # lost with the connection: fetch again

            consumer = asyncio.create_task(consume())
            producer = asyncio.create_task(produce())
            await asyncio.wait_for(halfway.wait(), 20)
            server = await restart(server, port)
            restarted.set()
            await asyncio.wait_for(producer, 60)
            await asyncio.wait_for(consumer, 30)
            # the group's offset is past everything it was handed
            last = max(handled)
            await consuming.until_done(
                p.ack_subject(box), {"group_name": "workers", "mail_address": box, "msg_id": last}
            )
            left = await consuming.until_done(
                p.fetch_subject(box), {"group_name": "workers", "config": {"max_wait_ms": 0}}
            )
            assert left["messages"] == []
        finally:
            await producing.connection.close()
            await consuming.connection.close()

        summary = (
            f"{len(attempted)} sent, {len(succeeded)} succeeded, {len(failures)} failed, "
            f"{len(handled)} handled"
        )
        payloads = list(handled.values())
        assert len(payloads) == len(set(payloads)), f"one payload under two msg_ids: {summary}"
        assert succeeded <= set(payloads), f"lost: {summary}"
        assert set(payloads) <= attempted, summary
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
