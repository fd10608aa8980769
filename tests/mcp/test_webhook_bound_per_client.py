"""The webhook address bound is not two clients' to fill (#113,
``mq9_mcp/webhook_consent.py``): an
address takes 10 verification POSTs a minute, a client 5 of them, so two clients at their shares
filled it and a third client's verification there was refused for the minute, every minute
(docs/security-broker.md's bounds table: "another client's verification of it is made"). Now every
client gets ``VERIFY_EACH`` at an address whoever filled the rest; past that the address's bound
holds for it too.

Played against a real mq9-mcp over HTTP (clients told apart by their loopback addresses), and
minute after minute on one ``Webhooks`` with an injected clock (no minute slept)."""

from __future__ import annotations

import json

import httpx2 as httpx
import pytest

from mq9_mcp import webhooks
from mq9_mcp.webhooks import Answer
from testbed.support.mcp_support import MODERN, Peer
from tests.mcp.test_mcp_events import WAIT, Receiver, arrived, hook_of, new_secret, webhook_server
from tests.mcp.test_mcp_events_bounds import Service, in_process, no_pause

TOKEN = "v" * 40
ATTACKERS = ("127.0.0.1", "127.0.0.2")  # two clients: the one token from two addresses
CAROL = "127.0.0.3"


def peer_from(address: str) -> httpx.AsyncClient:
    """An HTTP client of the token whose connections come from ``address``."""
    transport = httpx.AsyncHTTPTransport(local_address=address)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    return httpx.AsyncClient(timeout=WAIT, headers=auth, transport=transport)


@pytest.mark.slow  # starts mq9-mcp (a process) and loopback receivers
async def test_two_clients_at_their_shares_leave_a_third_its_verification_at_the_address():
    with webhook_server(TOKEN) as url:
        async with Service("silent") as target, Receiver() as carols:
            for n, address in enumerate(ATTACKERS):
                async with peer_from(address) as http:
                    attacker = Peer(http, url, MODERN, f"attacker{n}")
                    inbox = f"inbox.attacker{n}"
                    await attacker.data("create_mailbox", name=inbox)
                    for _ in range(webhooks.VERIFY_CLIENT_SHARE + 1):  # its share, and one more
                        hook = hook_of(target.url(), new_secret())
                        answer = await attacker.rpc("events/subscribe", **arrived(inbox), **hook)
                    assert "this client" in answer["error"]["message"], answer
            # the address's 10 spent, by two clients at their shares
            assert len(target.hosts) == webhooks.VERIFY_PER_ADDRESS

            async with peer_from(CAROL) as http:  # a third client, at the same address
                carol = Peer(http, url, MODERN, "carol")
                await carol.data("create_mailbox", name="inbox.carol")
                made = await carol.rpc("events/subscribe", **arrived("inbox.carol"),
                                       **hook_of(carols.url, new_secret()))  # fmt: skip
                assert "result" in made, made
                assert len(carols.verifications) == 1
                # past her one, the address's bound holds for her too
                again = await carol.rpc("events/subscribe", **arrived("inbox.carol"),
                                        **hook_of(target.url(), new_secret()))  # fmt: skip
                assert "whoever asked" in again["error"]["message"], again
            assert len(target.hosts) == webhooks.VERIFY_PER_ADDRESS


async def test_every_minute_the_shares_are_spent_each_other_client_is_still_verified_there():
    """Five minutes of the injected clock: each minute two clients spend their shares at
    127.0.0.1 (receivers that never confirm), and three other clients each have a receiver
    there verified; the address is POSTed its bound plus one for each of them, no more."""
    now = [0.0]
    posted: list[str] = []

    async def post(url: str, body: bytes, headers: dict[str, str]) -> Answer:
        envelope = json.loads(body)
        if envelope.get("type") != "verification":
            return Answer(200)
        posted.append(url)
        if "/never" in url:  # the attackers' receivers: no echo
            return Answer(404)
        return Answer(200, json.dumps({"challenge": envelope["challenge"]}).encode())

    async with in_process(
        ["127.0.0.0/8"], clock=lambda: now[0], post=post, sleep=no_pause
    ) as hooks:
        others = ("carol", "dave", "erin")
        for minute in range(5):
            posted.clear()
            for attacker in ("mallory", "trudy"):
                for n in range(webhooks.VERIFY_CLIENT_SHARE):
                    url = f"http://127.0.0.1:8000/never/{minute}/{n}"
                    refused = await hooks.subscribe(attacker, url)
                    assert refused["data"] == {"reason": "challenge_failed"}, refused
            assert len(posted) == webhooks.VERIFY_PER_ADDRESS
            for other in others:  # a new URL each minute: each needs its verification
                made = await hooks.subscribe(other, f"http://127.0.0.1:9000/{other}/{minute}")
                assert "id" in made, (minute, other, made)
                more = await hooks.subscribe(other, f"http://127.0.0.1:9000/{other}/{minute}/2")
                assert "whoever asked" in more["message"], more
            limit = webhooks.VERIFY_PER_ADDRESS + webhooks.VERIFY_EACH * len(others)
            assert len(posted) == limit, posted
            now[0] += webhooks.VERIFY_WINDOW
