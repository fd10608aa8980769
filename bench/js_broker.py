"""A broker on the cluster store, as a process: ``Engine`` answering mq9
requests on ``$mq9.AI.>`` in the queue group ``mq9-brokers``, so any number of them serve one
layout at once and NATS hands each request to one. For the tests and the bench until the
cluster store is ``mq9-dev-broker --store jetstream`` (docs/broker.md, the design's status).

    python -m bench.js_broker --nats nats://127.0.0.1:4222 --stream MQ9_STATE [--replicas 3]
        [--profile FILE] [--served]

``--count``: the broker counts its reads of a mailbox's head (``Numbering.read_last``: once
a mailbox when it first writes it, then once for each write another broker's came before:
refused, read again, renumbered) and answers ``{"head_reads": n}`` on ``bench.counts.<pid>``
(bench/js_scale.py reads it before and after a run).

``--served``: the requests go through ``serve_on_nats`` (what ``mq9-dev-broker --store
jetstream`` runs: a request handled in the connection's read loop), not this file's
subscription handing each request to a task of its own.

Without ``--served``, the serving connection also answers ``bench.alive.<pid>``: a test that
kills the broker knows NATS dropped that connection (and with it the broker's share of the
requests) once a request there gets "no responders".

Prints ``ready <pid>`` once it serves; stops on SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from typing import Any

import nats

from mq9_broker.engine.engine import Engine
from mq9_broker.serving.serve import serve_on_nats
from mq9_broker.storage import StorageError
from mq9_broker.storage.jetstream import ClusterStore
from mq9_broker.storage.jetstream.numbering import Numbering

QUEUE = "mq9-brokers"
SUBJECTS = "$mq9.AI.>"
OPEN_WAIT = 120.0  # seconds a start waits for the cluster's JetStream to answer


async def count_head_reads(urls: list[str]) -> Any:
    """Count every ``Numbering.read_last`` of this process; the counts answered on
    ``bench.counts.<pid>``, on a connection of their own (the broker's is guarded and read
    by its fast path: a subscription made on it before stopped the broker's reading). Returns
    that connection."""
    counts = {"head_reads": 0}
    read_last = Numbering.read_last

    async def counted(self: Numbering, box: str) -> Any:
        counts["head_reads"] += 1
        return await read_last(self, box)

    Numbering.read_last = counted  # type: ignore[method-assign]

    async def answer(msg: Any) -> None:
        await msg.respond(json.dumps(counts).encode())

    connection = await nats.connect(urls)
    await connection.subscribe(f"bench.counts.{os.getpid()}", cb=answer)
    return connection


async def serve(
    urls: list[str],
    stream: str,
    replicas: int,
    stop: asyncio.Event,
    served: bool = False,
    count: bool = False,
    streams: int | None = None,
) -> None:
    connection = await nats.connect(urls, max_reconnect_attempts=-1, reconnect_time_wait=0.2)
    counting = await count_head_reads(urls) if count else None
    store = ClusterStore(connection, name=stream, replicas=replicas, streams=streams)
    deadline = asyncio.get_running_loop().time() + OPEN_WAIT
    while True:  # a cluster forming, or one of its servers restarting, answers later
        try:
            await store.open()
            break
        except StorageError:
            await store.close()
            if asyncio.get_running_loop().time() > deadline:
                raise
            await asyncio.sleep(0.5)
    engine = Engine(store)
    if served:
        service = await serve_on_nats(engine, connection, queue=QUEUE)
        print(f"ready {os.getpid()}", flush=True)
        await stop.wait()
        await service.stop()
        await store.close()
        await connection.close()
        if counting is not None:
            await counting.close()
        return
    running: set[asyncio.Task[None]] = set()

    async def answer(message: Any) -> None:
        reply = await engine.handle(message.subject, message.headers, message.data)
        if message.reply:
            await connection.publish(message.reply, reply)

    async def take(message: Any) -> None:
        # each request a task: a FETCH that waits holds no other request
        task = asyncio.create_task(answer(message))
        running.add(task)
        task.add_done_callback(running.discard)

    async def alive(message: Any) -> None:
        await message.respond(b"")

    subscription = await connection.subscribe(SUBJECTS, queue=QUEUE, cb=take)
    # on the serving connection: nats-server removes a closed connection's subscriptions in
    # one step, so once this subject has no responders, neither has the queue subscription
    await connection.subscribe(f"bench.alive.{os.getpid()}", cb=alive)
    await connection.flush()
    print(f"ready {os.getpid()}", flush=True)
    await stop.wait()
    await subscription.drain()
    if running:
        await asyncio.wait(running, timeout=5)
    await store.close()
    await connection.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nats", required=True, help="comma-separated nats:// URLs")
    parser.add_argument("--stream", default="MQ9_STATE")
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--profile", help="write cProfile's figures of the run to this file")
    parser.add_argument("--served", action="store_true", help="through serve_on_nats")
    parser.add_argument("--count", action="store_true", help="count the head reads")
    parser.add_argument("--uvloop", action="store_true", help="on uvloop's event loop")
    parser.add_argument("--streams", type=int, help="the layout's message streams")
    args = parser.parse_args(argv)

    async def run() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            args.nats.split(","),
            args.stream,
            args.replicas,
            stop,
            args.served,
            args.count,
            args.streams,
        )

    if args.uvloop:
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    if not args.profile:
        asyncio.run(run())
        return 0
    import cProfile

    profiler = cProfile.Profile()
    profiler.runcall(asyncio.run, run())
    profiler.dump_stats(args.profile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
