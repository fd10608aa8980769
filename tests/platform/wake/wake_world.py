"""The wake tests' brokers and a webhook receiver.

``lane``: the bundled broker in process (memory://, its engine announcing arrivals), served on
a real nats-server announcing arrivals (``--announce``), and the RobustMQ-shaped listener
(testbed/support/robustmq_shaped.py: no announcements, so the waker polls). ``Receiver``: a real
HTTP
server on loopback that keeps every request it is sent and answers as told.
"""

from __future__ import annotations

import http.server
import json
import threading
import uuid
from dataclasses import dataclass

import nats
import pytest

from mq9_broker import (
    BrokerEngine,
    drop_memory_broker,
    install_memory_broker,
    serve_on_nats,
)
from mq9_platform import Mq9Client
from mq9_platform.wake import verify
from testbed.support.robustmq_shaped import RobustMQShapedListener
from testbed.support.waiting import until

LANES = ["memory", pytest.param("nats", marks=pytest.mark.slow), "robustmq_shaped"]
SECRET = "s3cret-s3cret-s3cret"


@dataclass
class Lane:
    name: str
    url: str
    engine: BrokerEngine
    announces: bool

    def client(self) -> Mq9Client:
        return Mq9Client(self.url)


@pytest.fixture(params=LANES)
async def lane(request):
    engine = BrokerEngine()
    if request.param == "memory":
        name = f"wake-{uuid.uuid4().hex[:8]}"
        install_memory_broker(name, engine)
        yield Lane("memory", f"memory://{name}", engine, True)
        drop_memory_broker(name)
    elif request.param == "nats":
        server = request.getfixturevalue("nats_server")
        connection = await nats.connect(server.url)
        service = await serve_on_nats(engine, connection, announce=True)
        try:
            yield Lane("nats", server.url, engine, True)
        finally:
            await service.stop()
            await connection.close()
    else:
        async with RobustMQShapedListener(engine) as listener:
            yield Lane("robustmq_shaped", listener.url, engine, False)


@pytest.fixture
async def memory_lane():
    engine = BrokerEngine()
    name = f"wake-{uuid.uuid4().hex[:8]}"
    install_memory_broker(name, engine)
    yield Lane("memory", f"memory://{name}", engine, True)
    drop_memory_broker(name)


class _Server(http.server.ThreadingHTTPServer):
    # a fleet's wakes arrive together: the default backlog of 5 reset the 30th connection
    request_queue_size = 256


class Receiver:
    """A webhook receiver on ``host`` (loopback): ``url``, ``requests`` (body, headers), and
    ``status`` to answer."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        self.requests: list[tuple[bytes, dict[str, str]]] = []
        self.status = 200
        self.arrived = threading.Condition()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with receiver.arrived:
                    receiver.requests.append((body, dict(self.headers)))
                    receiver.arrived.notify_all()
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = _Server((host, 0), Handler)
        self.url = f"http://{host}:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wakes(self) -> list[dict]:
        """The bodies received, each checked against its signature."""
        found = []
        for body, headers in list(self.requests):
            key = headers.get("X-Mq9-Wake-Key", "")
            assert verify(SECRET, body, headers.get("X-Mq9-Signature", ""), key), headers
            found.append(json.loads(body))
        return found

    async def wait_for(self, count: int, timeout: float = 30.0) -> list[dict]:
        """The wakes received, once there are ``count`` (a hang guard: ``timeout``)."""
        await until(
            lambda: len(self.requests) >= count,
            timeout=timeout,
            what=f"{count} wakes received",
            show=lambda: f"{len(self.requests)} wakes",
        )
        return self.wakes()


@pytest.fixture
def receiver():
    found = Receiver()
    yield found
    found.close()
