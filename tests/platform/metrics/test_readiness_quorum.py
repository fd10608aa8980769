"""#113: a broker's ``/readyz`` tells the truth under a lost quorum, every time. The documented
open cluster's shape (three nats-servers, the stream and buckets on three replicas), one broker
with its operator's endpoint, staying connected to the third server while two are SIGKILLed:
every SEND fails, and a load balancer's probe asked then said ``200 ready`` in 3 runs of 13. It
answered from the last probe that had finished, however old (one from before the kill, asked
10 s before and nothing since), while its own probe waited out its 3 s; and once the servers
were back, the streams took the probe's write seconds before the servers had a JetStream meta
leader, without which a SEND's lookups fail ("JetStream system temporarily unavailable").

Ten times in a row: the quorum lost, a SEND fails, and the ``/readyz`` asked then says 503 with
the reason; the servers started again, ``/readyz`` turns 200 and a SEND is stored."""

from __future__ import annotations

import asyncio
import time
import uuid

import pytest

from mq9_broker import Broker
from mq9_broker.cli.metrics import broker_endpoint
from mq9_broker.config import BrokerConfig
from mq9_broker.storage.jetstream.survey_state import PROBE_FRESH, PROBE_KEPT
from mq9_platform import Mq9Client
from mq9_wire.protocol.errors import Mq9Error
from testbed.support.jetstream_servers import FORMING, JetStreamCluster
from tests.platform.metrics.test_cluster_store_metrics import _get, _status_until

pytestmark = pytest.mark.slow  # nats-servers

ROUNDS = 10
BOX = "quorum.box"  # the SENDs made while the quorum is lost
BACK = "quorum.back"  # those once it is back
# a SEND given up by the client after this long (it tries one that stored nothing again
# meanwhile): the outage as the application sees it
SEND_WITHIN = 5.0


async def test_readyz_says_503_whenever_the_quorum_is_lost_and_200_once_back():
    with JetStreamCluster(3) as servers:
        survivor, lost = servers.servers[0], servers.servers[1:]
        config = BrokerConfig(
            nats=survivor.url, store="jetstream", stream=f"RQ{uuid.uuid4().hex[:10]}",
            replicas=3, search=False, cluster_wait=FORMING,
        )  # fmt: skip
        broker = Broker(config, say=lambda _: None)
        endpoint = broker_endpoint(broker, "127.0.0.1", 0)
        async with endpoint, broker, Mq9Client(survivor.url, request_timeout=30) as client:
            await _status_until(endpoint.port, 200, FORMING)  # (the cluster's leaders elected)
            await client.mailbox_create(name=BOX)
            await client.mailbox_create(name=BACK)
            async with Mq9Client(survivor.url, request_timeout=SEND_WITHIN) as hasty:
                for round_ in range(ROUNDS):
                    await _lose_the_quorum(endpoint.port, lost, hasty, round_)
                    for server in lost:
                        server.start()
                    await _status_until(endpoint.port, 200, FORMING)
                    # what the probe said: the store takes a SEND again (its lookups need the
                    # meta leader the servers elect seconds after the streams' leaders). Given
                    # the store's own deadline (15 s): the SEND the client gave up on during
                    # the outage may still be under way in the broker, and a SEND to its
                    # mailbox waits behind it
                    await client.send(BACK, f"back {round_}")


async def _lose_the_quorum(port: int, lost, client: Mq9Client, round_: int) -> None:
    """Two of the three servers SIGKILLed; a SEND fails; the /readyz asked then says 503."""
    killed = time.monotonic()
    for server in lost:
        server.kill()
    with pytest.raises(Mq9Error):
        await client.send(BOX, f"lost {round_}")
    # The probe before the kill may still answer for PROBE_FRESH s ("within a few seconds"):
    # the rest of that window, if the SEND failed sooner (a time passing is the subject here)
    await asyncio.sleep(max(0.0, PROBE_FRESH + PROBE_KEPT - (time.monotonic() - killed)))
    status, why = await _get(port, "/readyz")
    assert status == 503, f"round {round_}: {status} {why}"
    assert "JetStream" in why, why
