"""Serve a ``BrokerEngine`` on a real NATS connection: answer every ``$mq9.AI.>`` request."""

from __future__ import annotations

import asyncio
import logging

from nats.aio.client import Client as NatsConnection
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from .. import protocol as p
from .engine import BrokerEngine

log = logging.getLogger("langchain_mq9.broker")


class NatsService:
    """The engine attached to one NATS connection. ``await service.stop()`` detaches it."""

    def __init__(self, engine: BrokerEngine, connection: NatsConnection) -> None:
        self.engine = engine
        self.connection = connection
        self.subscription: Subscription | None = None
        self._in_flight: set[asyncio.Task] = set()

    async def start(self) -> NatsService:
        self.subscription = await self.connection.subscribe(p.SUBJECT_WILDCARD, cb=self._on_request)
        await self.connection.flush()
        return self

    async def _on_request(self, msg: Msg) -> None:
        # Every command but FETCH is answered at once, in arrival order (the engine never
        # waits on them). A FETCH that finds nothing waits its max_wait_ms before answering,
        # so it gets a task of its own and must not hold up the requests behind it.
        if not msg.subject.startswith(p.MSG_FETCH):
            await self._answer(msg)
            return
        task = asyncio.create_task(self._answer(msg))
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _answer(self, msg: Msg) -> None:
        reply = await self.engine.handle(msg.subject, msg.headers, msg.data)
        if not msg.reply:
            return  # a publish without a reply subject: nobody to answer
        limit = self.connection.max_payload
        if len(reply) > limit:  # NATS would refuse it, and the requester would just time out
            reply = p.encode({"error": (
                f"the answer is {len(reply)} bytes, above this NATS server's max_payload of "
                f"{limit} bytes: ask for less (fewer messages or agents per request), or give "
                "the broker a max_payload no larger than the server's"
            )})
        try:
            await msg.respond(reply)
        except Exception as exc:  # the requester may be gone; the broker keeps serving
            log.warning("could not answer %s: %s", msg.subject, exc)

    async def stop(self) -> None:
        if self.subscription is not None:
            await self.subscription.unsubscribe()
            self.subscription = None
        for task in list(self._in_flight):
            task.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)


async def serve_on_nats(engine: BrokerEngine, connection: NatsConnection) -> NatsService:
    """Answer mq9 requests arriving on ``connection`` with ``engine`` until stopped.

    >>> nc = await nats.connect("nats://127.0.0.1:4222")
    >>> service = await serve_on_nats(BrokerEngine(), nc)
    """
    return await NatsService(engine, connection).start()
