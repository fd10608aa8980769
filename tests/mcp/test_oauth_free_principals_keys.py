"""Principals who cost nothing to make cannot deny the others their keys (issue #116, "A refused
caller spends nothing, and principals who cost nothing cannot deny the others").

mq9-mcp serves a tokens file (alice) and a real authorization server (oidc-provider on loopback)
whose users anyone can become (open registration: a client for anyone, each client of one
account another principal), with ``--unmapped-principals shared``: a principal without a
credential of its own acts as the server's identity, whose keys the server bounds (here 9 for
its callers, 3 a principal). Before, three strangers' keyed sends filled the 9 and alice's keyed
send was refused "this server's keys for its callers are all in use now (you hold 0 of your 3)".
Now the identity provider's principals acting as the server's identity hold half its keys
together at most: their flood refuses only them, and alice, named by the operator, keeps hers.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator

import pytest

from testbed.ports import unclaimed_port
from testbed.support.mcp_support import http_server
from tests.mcp.oauth.support import AuthorizationServer, running
from tests.mcp.test_oauth_principal_whole import ALICE, as_client, text_of, user

pytestmark = pytest.mark.slow  # an authorization server and an mq9-mcp process

SHARE, IDENTITY_KEYS = 3, 10  # the callers' total is 9; the free principals' part 4


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[tuple[AuthorizationServer, str]]:
    data = tmp_path_factory.mktemp("free")
    tokens = data / "tokens"
    tokens.write_text(f"alice: {hashlib.sha256(ALICE.encode()).hexdigest()}\n")
    folder = data / "principals"
    folder.mkdir()  # nobody has a credential of their own: everyone acts as the server
    port = unclaimed_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    with running(resource, []) as authority, http_server(
        "--server", "memory://", "--tokens-file", str(tokens),
        "--oauth-issuer", authority.url, "--resource-url", resource,
        "--principal-credentials", str(folder), "--unmapped-principals", "shared",
        "--keys-per-client", str(SHARE), "--identity-keys", str(IDENTITY_KEYS), port=port,
    ) as url:  # fmt: skip
        yield authority, url


async def test_free_principals_filling_their_part_leave_the_named_ones_their_keys(served):
    authority, url = served
    async with as_client(url, ALICE) as alice:
        box = (await alice.data("create_mailbox"))["mail_address"]
    refused = []
    for n in range(3):  # three self-registered clients, each filling its share
        async with as_client(url, user(authority, f"stranger-{n}", f"registered-{n}")) as them:
            for k in range(SHARE):
                answer = await them.call(
                    "send_message", mail_address=box, payload="x", idempotency_key=f"k{k}"
                )
                if answer["result"].get("isError"):
                    refused.append(text_of(answer))
    assert len(refused) == 3 * SHARE - 4, refused  # they hold their part, 4, together
    assert "principals without a broker credential of their own are all in use" in refused[-1]
    assert f"you hold 0 of your {SHARE}" in refused[-1]
    async with as_client(url, ALICE) as alice:  # named by the operator: never refused for them
        for k in range(SHARE):
            sent = await alice.data(
                "send_message", mail_address=box, payload="mine", idempotency_key=f"a{k}"
            )
            assert sent["sent"] is True
