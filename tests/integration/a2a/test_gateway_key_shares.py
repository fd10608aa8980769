"""The gateway's tenants spend idempotency keys out of shares of their own (#106 items 1 and 7):
the gateway speaks to the broker as one identity, which a ``--credentials`` broker bounds
(``--max-keys-per-sender``, shrunk here to 30 for 10,000); the gateway's ledger gives each
tenant a share of nine tenths of it, so mallory filling hers is refused in words that name her
own count only, and bob's keyed SendMessage is still answered. Before #106 mallory's 15 keyed
SendMessages (2 keys each: the task's record, the request) filled the identity's 30, and bob's
failed JSON-RPC -32603 "no room for another idempotency key"."""

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

AGENT = "agent.shares"
KEYS = 30  # the broker's bound on the gateway identity's keys
MALLORY, BOB = "m" * 16 + "allory-token", "b" * 16 + "ob-token"


@contextlib.asynccontextmanager
async def bounded_gateway(tmp_path):
    """The bounded broker, the served agent (its own identity) and the gateway (its own)."""
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
            async with Mq9Client(broker.url, credential=broker.credentials["gw"]) as client:
                tenants = Tenants({"mallory": MALLORY, "bob": BOB})
                port = unclaimed_port()
                base = f"http://127.0.0.1:{port}"
                shares = tenant_key_shares(tenants, identity_keys=KEYS)
                app = await gateway_app(
                    client, [AGENT], tenants=tenants, public_url=base, key_shares=shares
                )
                async with serve_http(app, port):
                    yield base + "/a2a/" + AGENT, shares
        finally:
            await agent.stop()
    finally:
        broker.stop()


async def test_a_tenant_filling_its_share_leaves_anothers_keyed_send_answered(tmp_path):
    async with (
        bounded_gateway(tmp_path) as (url, shares),
        a2a_client(url, MALLORY, "JSONRPC") as mallory,
        a2a_client(url, BOB, "JSONRPC") as bob,
    ):
        assert shares.share == 13  # 27 for the tenants (nine tenths of 30), split in two
        refusals = []
        for n in range(KEYS // 2):  # as many as fill the identity's 30 keys at 2 a send
            try:
                await sent(mallory, request(f"flood {n}", f"m-{n}"), f"mallory-{n}")
            except A2AError as exc:
                refusals.append(str(exc))
        assert len(refusals) >= KEYS // 2 - 13 // 2
        said = refusals[-1]
        # a call spends its record's key and its request's together, or neither (#106): at 12
        # of 13 the next call is refused whole, never its request sent and its record refused
        assert "you hold 12 of your 13 keys at this gateway" in said, said
        # item 7: nothing of the identity's bound or its total in a tenant's error
        assert str(KEYS) not in said and "27" not in said
        task = await sent(bob, request("hello", "b-1"), "bob-1")
        assert task.status.state in (TaskState.TASK_STATE_SUBMITTED, TaskState.TASK_STATE_WORKING,
                                     TaskState.TASK_STATE_COMPLETED)  # fmt: skip
        again = await sent(bob, request("hello", "b-1"), "bob-1")  # resent: the same task
        assert again.id == task.id
        assert shares.held("bob") == 2 and shares.held("mallory") == 12
