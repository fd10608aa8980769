"""#106 item 5: REPORT keeps nothing for a name no registration holds.

Before, ``$mq9.AI.AGENT.REPORT`` kept any name's report, for good: 4,000 REPORTs of made-up
names of 60,000 characters each grew an open broker's RSS from 357 to 596 MiB in 6 s, and a
credentialed agent's 3,000 by 174 MiB. RobustMQ answers any name's REPORT and writes it to a
topic no mq9 command reads (docs/protocol-commands.md §7.3); the bundled broker answers it the same
(``{"error": ""}``) and keeps a report only while its agent is registered (its UNREGISTER drops
it), so the reports held are bounded by the registry's own bound (``--max-agents``).

The attacker plays the flood on an open broker (the memory store, as ``mq9-dev-broker``
runs) and through an enforcing broker's gate: what the broker holds afterwards is the
registered agent's report alone, which its REPORTs, sent in the middle of the flood, keep
answering and updating. (The broker's RSS is measured by hand: docs/broker.md.)
"""

from __future__ import annotations

import json

import pytest

from mq9_broker import BrokerEngine
from mq9_wire import protocol as p

FLOOD, SIZE = 4_000, 60_000  # the issue's: made-up names, 60,000 characters each
AGENT = "agent.real"


def _report(name: str, info: str) -> bytes:
    return p.encode({"name": name, "report_info": info})


def _held(engine: BrokerEngine) -> tuple[int, int]:
    """(reports held, their characters)."""
    return len(engine.reports), sum(len(info) for info, _ in engine.reports.values())


async def test_a_flood_of_made_up_names_keeps_nothing_and_the_agent_s_report_is_answered():
    engine = BrokerEngine()

    async def ask(subject: str, body: bytes) -> dict:
        return json.loads(await engine.handle(subject, None, body))

    assert await ask(p.AGENT_REGISTER, p.encode({"name": AGENT, "payload": "real"})) == {
        "error": ""
    }
    filler = "x" * SIZE
    for n in range(FLOOD):
        assert await ask(p.AGENT_REPORT, _report(f"made.up.{n}", filler)) == {"error": ""}
        if n % 1_000 == 500:  # the registered agent, while the flood runs
            assert await ask(p.AGENT_REPORT, _report(AGENT, f"busy {n}")) == {"error": ""}
            assert engine.reports[AGENT][0] == f"busy {n}"
    # before: 4,001 reports, 240,000,000 characters held
    assert _held(engine) == (1, len("busy 3500"))
    assert engine.reports_unkept == FLOOD
    # its report goes with its registration: register, report, unregister keeps nothing
    for n in range(50):
        name = f"cycled.{n}"
        await ask(p.AGENT_REGISTER, p.encode({"name": name, "payload": "x"}))
        await ask(p.AGENT_REPORT, _report(name, filler))
        assert await ask(p.AGENT_UNREGISTER, p.encode({"name": name})) == {"error": ""}
    assert _held(engine) == (1, len("busy 3500"))


async def test_a_credentialed_agent_s_reports_of_names_not_registered_keep_nothing(tmp_path):
    pytest.importorskip("nkeys")  # the credentials extra
    from mq9_broker.identities.store import IdentityStore
    from tests.platform.broker.identities.test_sender_vouched import enforcing

    store = IdentityStore(tmp_path / "mq9-identities.sqlite3")
    try:
        store.issue("mallory"), store.issue("alice")
        agents = enforcing(store)
        await agents.ok("alice", p.AGENT_REGISTER, {"name": "agent.alice", "payload": "alice"})
        filler = "y" * SIZE
        for n in range(300):  # each answered as RobustMQ answers it, none kept
            made_up = {"name": f"made.up.{n}", "report_info": filler}
            await agents.ok("mallory", p.AGENT_REPORT, made_up)
        await agents.ok("alice", p.AGENT_REPORT, {"name": "agent.alice", "report_info": "idle"})
        assert _held(agents.engine) == (1, len("idle"))
    finally:
        store.close()
