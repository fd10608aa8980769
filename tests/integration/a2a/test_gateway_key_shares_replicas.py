"""#113 items "the gateway's tenants' key shares hold across replicas" and "... and across a
restart".

The gateway speaks to a ``--credentials`` broker as one identity, whose keys the broker bounds
(``--max-keys-per-sender``, shrunk here to 30 for 10,000); each tenant has a share (13 of the
tenants' 27). Before, the share lived in each gateway process's ledger alone: three replicas
behind one credential (as an operator scales it behind a load balancer) each counted mallory's
keys from zero, and so did a gateway started again within the keys' window; her keyed
SendMessages spread over them filled the identity's 30, and bob's keyed SendMessage was refused
at every replica ("the mq9 broker has no room for another idempotency key"). Now each keyed
send names its tenant and share to the broker, which counts the key against the share in the
step that keeps it: mallory is refused past her 13 however many replicas and starts carry her
calls, and bob is answered at every replica, a restarted one included.

Played with a real dev broker process; the replicas are gateways in this process, each with
its own broker connection and its own ledger, as separate processes have (what the defect
was about), one of them stopped and started again (the restart).
"""

from __future__ import annotations

import contextlib

import pytest
from a2a.types.a2a_pb2 import TaskState
from a2a.utils.errors import A2AError

from mq9_platform import Mq9Client
from mq9_platform.a2a.gateway import Tenants, gateway_app, tenant_key_shares
from mq9_platform.a2a.server import serve_agent
from testbed.ports import unclaimed_port
from testbed.support.a2a_support import text_graph, text_io
from tests.integration.a2a.test_gateway_idempotency import request, sent
from tests.integration.a2a.test_gateway_resent import a2a_client
from tests.platform.a2a.http_agents import serve_http
from tests.platform.a2a.key_bounds_support import BoundedBroker

pytestmark = pytest.mark.slow  # a dev broker process, HTTP in process

AGENT = "agent.replicas"
KEYS = 30  # the broker's bound on the gateway identity's keys
SHARE = 13  # each tenant's: nine tenths of 30, split in two
MALLORY, BOB = "m" * 16 + "allory-token", "b" * 16 + "ob-token"
ANSWERED = (
    TaskState.TASK_STATE_SUBMITTED,
    TaskState.TASK_STATE_WORKING,
    TaskState.TASK_STATE_COMPLETED,
)


@contextlib.asynccontextmanager
async def replica(broker: BoundedBroker):
    """One gateway (a replica, or a start of one): its own connection with the gateway's
    credential, its own ledger; its agent URL."""
    async with Mq9Client(broker.url, credential=broker.credentials["gw"]) as client:
        tenants = Tenants({"mallory": MALLORY, "bob": BOB})
        port = unclaimed_port()
        base = f"http://127.0.0.1:{port}"
        shares = tenant_key_shares(tenants, identity_keys=KEYS)
        assert shares.share == SHARE
        app = await gateway_app(
            client, [AGENT], tenants=tenants, public_url=base, key_shares=shares
        )
        async with serve_http(app, port):
            yield base + "/a2a/" + AGENT


async def _flood(urls: list[str], calls: range) -> list[str]:
    """mallory's keyed SendMessages, spread over ``urls`` in turn: the refusals."""
    refused = []
    for n in calls:
        async with a2a_client(urls[n % len(urls)], MALLORY, "JSONRPC") as mallory:
            try:
                await sent(mallory, request(f"flood {n}", f"m-{n}"), f"mallory-{n}")
            except A2AError as exc:
                refused.append(str(exc))
    return refused


async def _bob_answered(url: str, n: int) -> None:
    async with a2a_client(url, BOB, "JSONRPC") as bob:
        task = await sent(bob, request("hello", f"b-{n}"), f"bob-{n}")
        assert task.status.state in ANSWERED, task


async def test_a_tenants_share_holds_across_replicas_and_a_restart(tmp_path):
    broker = BoundedBroker(tmp_path, "gw", "vault", keys_each=KEYS)
    try:
        agent = await serve_agent(
            text_graph(str.upper),
            name=AGENT,
            server=broker.url,
            client_options={"credential": broker.credentials["vault"]},
            worker="w1",
            **text_io(),
        )
        try:
            async with contextlib.AsyncExitStack() as stack:
                urls = [await stack.enter_async_context(replica(broker)) for _ in range(3)]
                # 15 calls of 2 keys: 10 keys a replica, under each one's own ledger
                refused = await _flood(urls, range(KEYS // 2))
                for n, url in enumerate(urls):  # bob, at every replica (before: refused)
                    await _bob_answered(url, n)
                assert refused, "mallory's calls past her share are refused"
            # a gateway started again within the window: its ledger empty, hers still full
            async with replica(broker) as url:
                again = await _flood([url], range(KEYS // 2, KEYS // 2 + 4))
                assert len(again) == 4, again
                await _bob_answered(url, 9)
        finally:
            await agent.stop()
    finally:
        broker.stop()
