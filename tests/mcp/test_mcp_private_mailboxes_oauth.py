"""OAuth principals keep their mailboxes their own too (issue #116): two people signed in at a
real authorization server (oidc-provider on loopback, client credentials) through one mq9-mcp,
one broker identity behind it. Before, bob read alice's ``payroll.inbox`` with
``query_messages`` and ``resources/read``."""

from __future__ import annotations

import pytest

from testbed.ports import unclaimed_port
from testbed.support.mcp_support import http_server
from tests.mcp.oauth.support import client, running
from tests.mcp.test_mcp_private_mailboxes import REFUSED, as_peer, error_of, tool_error

pytestmark = pytest.mark.slow  # an authorization server and an mq9-mcp process


async def test_oauth_principals_read_only_their_own_mailboxes():
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with running(resource, [client("alice"), client("bob")]) as authority, http_server(
        "--server", "memory://", "--oauth-issuer", authority.url, "--resource-url", resource,
        port=port,
    ) as url:  # fmt: skip
        alice_token = authority.token("alice", "alice-secret", "mq9:admin")
        bob_token = authority.token("bob", "bob-secret", "mq9:admin")
        async with as_peer(url, alice_token) as alice, as_peer(url, bob_token) as bob:
            await alice.data("create_mailbox", name="payroll.inbox")
            await bob.data("send_message", mail_address="payroll.inbox", payload="salary 9000")
            stolen = await bob.call("query_messages", mail_address="payroll.inbox")
            assert REFUSED in tool_error(stolen)
            read = await bob.rpc("resources/read", uri="mq9://mailbox/payroll.inbox")
            assert REFUSED in error_of(read)
            mine = await alice.data("query_messages", mail_address="payroll.inbox")
            assert [m["payload"] for m in mine["messages"]] == ["salary 9000"]
