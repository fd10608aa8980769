"""The two things that answer mq9 requests in the network benchmarks, each in its own process.

``canned``: the trivial responder, the baseline. It answers every ``$mq9.AI.>`` request with a
fixed, well-formed mq9 reply (a SEND gets the next msg_id, as from a broker, so the client's
check that they only go up passes as in use; a FETCH or QUERY a batch of messages, the rest an
empty success), so a client cannot tell it from a broker, yet it does no work. Switched
on with ``groups``, it also plays along with a ``GroupReader``: a FETCH with a group gets a
batch of new msg_ids each time, and for a competing worker's leases a QUERY by tags answers,
for each claim tag (``c…``), one claim carrying the payload of the last SEND to a lease mailbox
(``mq9.lease.…``), so that sender wins every claim, and no done record. Both sides of a
comparison send the same requests, so both get the same work.

``engine``: the bundled broker, ``BrokerEngine`` served with ``serve_on_nats`` exactly as the
dev broker does.

Both sit on the same nats-server and are switched on and off over a control subject, so the
orchestrator can alternate between them without restarting anything; only one answers at a
time. A responder exits when told to, or when its stdin closes (its parent went away).

    python -m bench.responders --url nats://127.0.0.1:PORT --kind canned --name canned
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
import time

import nats

WILDCARD = "$mq9.AI.>"
CONTROL = "bench.ctl."
PAYLOAD_SIZE = 200


def canned_replies(fetch_count: int) -> dict[str, bytes]:
    """Replies by command (the subject's fourth token: SEND, FETCH, ...)."""
    payload = base64.b64encode(b"x" * PAYLOAD_SIZE).decode()
    now = int(time.time())
    batch = [
        {"msg_id": i, "payload": payload, "priority": "normal", "create_time": now}
        for i in range(fetch_count)
    ]
    messages = json.dumps({"error": "", "messages": batch}, separators=(",", ":")).encode()
    return {
        "FETCH": messages,
        "QUERY": messages,
        "CREATE": b'{"error":"","mail_address":"bench.canned"}',
    }


class Canned:
    def __init__(self, nc) -> None:
        self.nc = nc
        self.sub = None
        self.replies = canned_replies(1)
        self.fetch_count = 1
        self.groups = False
        self.next_id = 0  # the next msg_id a group FETCH hands out
        self.claimant = b""  # the payload of the last SEND to a lease mailbox
        self.sent = 0  # msg_ids go up, as a broker's do: a repeated one would make the client warn

    async def on(self, options: dict) -> None:
        self.fetch_count = int(options.get("fetch_count", 1))
        self.replies = canned_replies(self.fetch_count)
        self.groups = bool(options.get("groups", False))
        if self.sub is None:
            self.sub = await self.nc.subscribe(WILDCARD, cb=self._answer)

    async def _answer(self, msg) -> None:
        command = msg.subject.split(".", 4)[3]
        if self.groups:
            reply = self._group_reply(command, msg.subject, msg.data)
            if reply is not None:
                await msg.respond(reply)
                return
        if command == "SEND":
            self.sent += 1
            await msg.respond(b'{"error":"","msg_id":%d}' % self.sent)
            return
        await msg.respond(self.replies.get(command, b'{"error":""}'))

    def _group_reply(self, command: str, subject: str, body: bytes) -> bytes | None:
        now = int(time.time())
        if command == "SEND" and ".mq9.lease." in subject:
            self.claimant = body
            return None
        if command == "FETCH" and b'"group_name"' in body:
            payload = base64.b64encode(b"x" * PAYLOAD_SIZE).decode()
            first, self.next_id = self.next_id, self.next_id + self.fetch_count
            batch = [
                {"msg_id": i, "payload": payload, "priority": "normal", "create_time": now}
                for i in range(first, self.next_id)
            ]
        elif command == "QUERY" and b'"tags"' in body:
            batch = [
                {
                    "msg_id": i,
                    "payload": self.claimant.decode(),
                    "priority": "normal",
                    "create_time": now,
                    "header": list(f"NATS/1.0\r\nmq9-tags: {tag}\r\n\r\n".encode()),
                }
                for i, tag in enumerate(json.loads(body)["tags"])
                if tag.startswith("c")
            ]
        else:
            return None
        return json.dumps({"error": "", "messages": batch}, separators=(",", ":")).encode()

    async def off(self) -> None:
        if self.sub is not None:
            await self.sub.unsubscribe()
            self.sub = None


class Engine:
    def __init__(self, nc) -> None:
        from mq9_broker import BrokerEngine

        self.nc = nc
        self.engine = BrokerEngine()
        self.service = None

    async def on(self, options: dict) -> None:
        from mq9_broker import serve_on_nats

        announce = bool(options.get("announce", False))  # arrivals on $mq9.WAKE.*
        if self.service is not None and self.service.announce != announce:
            await self.off()
        if self.service is None:
            self.service = await serve_on_nats(self.engine, self.nc, announce=announce)

    async def off(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None


class DevBroker:
    """``mq9-dev-broker --data DIR`` as its main() builds it, switched on and off: the SQLite
    store in a directory of its own, Python's collections frozen, the switch interval, the
    pacer of large answers, the bulk connection. ``on`` options take parts away, to measure
    what each adds: ``store`` ("sqlite", "memory", or "jetstream": a cluster store of its own
    on ``servers``, one replica a server up to 3, as --store jetstream serves it),
    ``switch_interval`` (seconds; the CLI's by default), ``pacer``, ``bulk`` and ``inline``
    (requests handled in the read loop; booleans, on by default)."""

    def __init__(self, nc, url: str) -> None:
        import tempfile

        self.nc, self.url = nc, url
        self.directory = tempfile.TemporaryDirectory(prefix="mq9-bench-dev-")
        self.engines: dict[str, object] = {}
        self.bulk = None
        self.service = None

    def _engine(self, store: str):
        from mq9_broker import BrokerEngine
        from mq9_broker.storage import SqliteStorage

        if store not in self.engines:
            storage = SqliteStorage(self.directory.name) if store == "sqlite" else None
            self.engines[store] = BrokerEngine(storage=storage)
        return self.engines[store]

    async def _cluster_engine(self, servers: list[str]):
        """A ``Engine`` on a layout of its own, served as ``--store jetstream`` serves
        it, its store on a connection of its own."""
        from mq9_broker.engine.engine import Engine
        from mq9_broker.storage.jetstream import ClusterStore

        if "jetstream" not in self.engines:
            connection = await nats.connect(servers, name="bench-dev-store")
            replicas = min(3, len(servers))
            store = ClusterStore(connection, name=f"BENCH{os.getpid()}", replicas=replicas)
            await store.open()
            self.engines["jetstream"] = Engine(store)
        return self.engines["jetstream"]

    async def on(self, options: dict) -> None:
        import gc

        import mq9_broker.cli.dev_broker as cli
        from mq9_broker.broker import BURST_MIB
        from mq9_broker.config import ANSWER_RATE_MIB
        from mq9_broker.serving.pacing import AnswerPacer
        from mq9_broker.serving.serve import NatsService

        await self.off()
        store = options.get("store", "sqlite")
        if store == "jetstream":
            engine = await self._cluster_engine(options.get("servers", [self.url]))
        else:
            engine = await asyncio.to_thread(self._engine, store)
        gc.freeze()
        sys.setswitchinterval(options.get("switch_interval", cli.SWITCH_INTERVAL))
        pacer = None
        if options.get("pacer", True):
            pacer = AnswerPacer(ANSWER_RATE_MIB * 2**20, BURST_MIB * 2**20)
        if options.get("bulk", True) and self.bulk is None:
            self.bulk = await nats.connect(self.url, name="bench-dev-bulk")
        bulk = self.bulk if options.get("bulk", True) else None
        self.service = await NatsService(
            engine, self.nc, bulk, pacer, inline=options.get("inline", True)
        ).start()

    async def off(self) -> None:
        if self.service is not None:
            await self.service.stop()
            self.service = None


async def serve(url: str, kind: str, name: str) -> None:
    nc = await nats.connect(url, name=f"bench-{name}", max_reconnect_attempts=2)
    responder: Canned | Engine | DevBroker
    if kind == "canned":
        responder = Canned(nc)
    elif kind == "dev":
        responder = DevBroker(nc, url)
    else:
        responder = Engine(nc)
    done = asyncio.Event()

    async def control(msg) -> None:
        command = json.loads(msg.data or b"{}")
        if command.get("cmd") == "on":
            await responder.on(command)
        elif command.get("cmd") == "off":
            await responder.off()
        elif command.get("cmd") == "quit":
            done.set()
        await nc.flush()
        await msg.respond(b'{"ok":true}')

    await nc.subscribe(CONTROL + name, cb=control)
    await nc.flush()
    print("ready", flush=True)
    stdin_closed = asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    quit_asked = asyncio.ensure_future(done.wait())
    await asyncio.wait({stdin_closed, quit_asked}, return_when=asyncio.FIRST_COMPLETED)
    quit_asked.cancel()
    await responder.off()
    await nc.drain()
    # The stdin reader thread may still be blocked; leave without waiting for it.
    sys.stdout.flush()
    os._exit(0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--kind", choices=("canned", "engine", "dev"), required=True)
    parser.add_argument("--name", required=True)
    args = parser.parse_args()
    asyncio.run(serve(args.url, args.kind, args.name))


if __name__ == "__main__":
    main()
