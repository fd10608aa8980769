"""Issue #116, "per-principal bounds across two mq9-mcp replicas behind one broker credential and
across a restart": a principal's share of idempotency keys is one share, however many mq9-mcp
processes carry its calls.

Two mq9-mcp processes serve one tokens file with one broker credential (as an operator scales it
behind a load balancer) in front of a ``--credentials`` dev broker whose bound on that identity's
keys is shrunk (``--max-keys-per-sender`` 30 standing for 10,000); each principal's share is 5.
Before, each process counted mallory's keys in its own ledger from zero, and so did one started
again within the keys' window: her keyed sends spread over the two were all answered, twice her
share, and more again after a restart. Now each keyed send names its caller and share to the
broker (``mq9-key-caller``, ``mq9-key-share``), which counts the key against the share in the
step that keeps it: mallory is refused past her 5 at either process and after the restart, and
bob is answered at both.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2 as httpx
import pytest

from testbed.support.mcp_support import LEGACY, Peer, http_server
from tests.platform.a2a.key_bounds_support import BoundedBroker

pytestmark = pytest.mark.slow  # a dev broker and mq9-mcp processes

KEYS, SHARE = 30, 5  # the broker's bound on mq9-mcp's identity; each principal's share
MALLORY, BOB = "mallory-" + "m" * 40, "bob-" + "b" * 40


def tokens_file(folder: Path) -> str:
    path = folder / "tokens"
    path.write_text("".join(
        f"{name}: {hashlib.sha256(token.encode()).hexdigest()}\n"
        for name, token in (("mallory", MALLORY), ("bob", BOB))
    ))  # fmt: skip
    return str(path)


@contextlib.contextmanager
def replica(broker: BoundedBroker, tokens: str):
    """One mq9-mcp process (a replica, or a start of one) with mq9-mcp's one credential."""
    with http_server(
        "--server", broker.url, "--tokens-file", tokens, "--keys-per-client", str(SHARE),
        "--identity-keys", str(KEYS), MQ9_CREDENTIAL=broker.credentials["mcp"],
    ) as url:  # fmt: skip
        yield url


@contextlib.asynccontextmanager
async def as_client(url: str, token: str) -> AsyncIterator[Peer]:
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(headers=headers, timeout=httpx.Timeout(20, read=60)) as http:
        yield await Peer(http, url, LEGACY, "w").open()


async def keyed_sends(urls: list[str], token: str, box: str, keys: range) -> list[str]:
    """Keyed send_message calls under ``token``, spread over ``urls`` in turn: the refusals."""
    refused = []
    for n in keys:
        async with as_client(urls[n % len(urls)], token) as peer:
            answer = await peer.call(
                "send_message", mail_address=box, payload=f"m{n}", idempotency_key=f"k{n}"
            )
            if answer["result"].get("isError"):
                refused.append(answer["result"]["content"][0]["text"])
    return refused


async def test_a_principals_share_holds_across_replicas_and_a_restart(tmp_path):
    broker = BoundedBroker(tmp_path / "broker", "mcp", keys_each=KEYS)
    tokens = tokens_file(tmp_path)
    try:
        with replica(broker, tokens) as one, replica(broker, tokens) as two:
            async with as_client(one, BOB) as bob:
                box = (await bob.data("create_mailbox"))["mail_address"]
            refused = await keyed_sends([one, two], MALLORY, box, range(2 * SHARE))
            assert len(refused) == SHARE, refused  # her share, not one per process
            assert "no room for another idempotency key" in refused[-1], refused[-1]
            for n, url in enumerate((one, two)):  # bob, at each process
                assert not await keyed_sends([url], BOB, box, range(100 + n, 101 + n))
        with replica(broker, tokens) as again:  # started again within the keys' window
            later = range(2 * SHARE, 2 * SHARE + 2)
            assert len(await keyed_sends([again], MALLORY, box, later)) == 2
            assert not await keyed_sends([again], BOB, box, range(102, 103))
    finally:
        broker.stop()
