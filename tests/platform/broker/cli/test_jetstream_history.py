"""The state an earlier version kept in JetStream (one stream holding a log of changes and
snapshots) moved into the cluster store's layout by ``mq9-dev-broker state import`` (issue #72),
then served by ``--store jetstream``.

tests/data/jetstream_old_format.mq9state is what ``state export`` wrote of a stream the earlier
store made (written by that store before it was removed): a snapshot (two mailboxes, messages of
every priority, a key sent twice, tags, a deleted message, a group that read and acked msg_id 0)
and change records after it (three agents registered, one of them unregistered, an A2A card
indexed, a message delayed by an hour).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import uuid
from pathlib import Path

import nats
import pytest

from mq9_broker import Broker, BrokerConfig
from mq9_broker.cli import state
from mq9_broker.cli.state import OldState, _records
from mq9_platform import Mq9Client

pytestmark = pytest.mark.slow  # a nats-server process

OLD_FILE = Path(__file__).resolve().parents[3] / "data" / "jetstream_old_format.mq9state"


async def _state(argv: list[str]) -> int:
    """``mq9-dev-broker state ...`` (it runs an event loop of its own)."""
    return await asyncio.to_thread(state.main, argv)


@pytest.fixture(scope="module")
def servers(shared_jetstream: list[str]) -> list[str]:
    # the session's JetStream server: nothing here kills, restarts or reconfigures it
    return shared_jetstream


def test_the_old_format_is_read_as_the_earlier_store_read_it():
    old = OldState.read(_records(OLD_FILE))
    assert old.read_records == 8
    assert sorted(old.mailboxes) == ["jobs", "short"]
    jobs = old.mailboxes["jobs"]
    assert jobs.desc == "the jobs" and jobs.ttl == 0
    assert [m.payload for _, m in sorted(jobs.messages.items())] == [
        *(f"normal {i}".encode() for i in range(6)),
        b"urgent",
        b"later",
        b"keyed two",
        b"tagged",
    ]
    assert [agent for agent in old.agents] == ["billing-agent", "card-agent"]
    assert list(old.index) == ["card-agent"]
    assert [message.payload for _, _, message in old.delayed.values()] == [b"delayed"]
    assert {group for group, _ in old.offsets} == {
        "workers-critical",
        "workers-urgent",
        "workers-normal",
    }


async def test_an_old_stream_is_moved_into_the_layout_and_served(servers, tmp_path, capsys):
    stream = f"H{uuid.uuid4().hex[:10]}"
    url = servers[0]
    # The file's delayed message was due an hour after the file was written (a fixed second):
    # imported after that second it is sent at once, the newest of the log, as any late one
    [(_, due, _)] = OldState.read(_records(OLD_FILE)).delayed.values()
    late = ["delayed"] if due <= time.time() else []
    assert await _state(["import", str(OLD_FILE), "--nats", url, "--stream", stream]) == 0
    said = capsys.readouterr().out
    assert "8 records read" in said
    assert "2 mailboxes, 11 messages, 1 delayed messages, 1 group positions, 2 agents" in said
    # a second import into the same layout is refused: it holds the first one's
    assert await _state(["import", str(OLD_FILE), "--nats", url, "--stream", stream]) == 1
    assert "import into a new or empty layout only" in capsys.readouterr().err

    config = BrokerConfig(nats=url, store="jetstream", stream=stream, search=False, port=0)
    async with Broker(config, say=lambda _: None), Mq9Client(url) as client:
        everything = await client.query("jobs")
        async with asyncio.timeout(30):  # a late one is sent by the broker once it serves
            while late and "delayed" not in [m.text() for m in everything]:
                await asyncio.sleep(0.05)
                everything = await client.query("jobs")
        assert [m.text() for m in everything] == [
            *(f"normal {i}" for i in range(6)),
            "urgent",
            "later",
            "keyed two",
            "tagged",
            *late,
        ]
        by_key = await client.query("jobs", key="status")
        assert [m.text() for m in by_key] == ["keyed two"]
        tagged = await client.query("jobs", tags=["billing"])
        assert [m.text() for m in tagged] == ["tagged"]
        # the group goes on past msg_id 0, which it acked before the move
        workers = await client.fetch("jobs", group_name="workers", num_msgs=10)
        assert [m.text() for m in workers] == [
            "urgent",
            "later",
            *(f"normal {i}" for i in range(1, 6)),
            "keyed two",
            "tagged",
            *late,
        ]
        assert [m.text() for m in await client.query("short")] == ["in short"]
        names = {agent["name"] for agent in await client.agent_discover()}
        assert names == {"billing-agent", "card-agent"}


async def test_a_broker_starts_beside_the_old_stream_once_its_state_was_imported(servers, tmp_path):
    stream = f"O{uuid.uuid4().hex[:10]}"
    url = servers[0]
    connection = await nats.connect(servers)
    try:  # the old stream, holding the file's records as the earlier store wrote them
        js = connection.jetstream()
        await js.add_stream(name=stream, subjects=[f"mq9state.{stream.lower()}"])
        for record in _records(OLD_FILE):
            await js.publish(f"mq9state.{stream.lower()}", record)
    finally:
        await connection.close()
    exported = tmp_path / "state"
    assert await _state(["export", str(exported), "--nats", url, "--stream", stream]) == 0
    assert _records(exported) == _records(OLD_FILE)
    config = BrokerConfig(nats=url, store="jetstream", stream=stream, search=False, port=0)
    with pytest.raises(Exception, match="holds the state as an earlier langchain-mq9"):
        async with Broker(config, say=lambda _: None):
            pass
    assert await _state(["import", str(exported), "--nats", url, "--stream", stream]) == 0
    async with Broker(config, say=lambda _: None), Mq9Client(url) as client:
        # (the file's delayed message, due at a fixed second now past, is sent once the broker
        # serves: the query may come before or after it)
        texts = [m.text() for m in await client.query("jobs")]
        assert len([text for text in texts if text != "delayed"]) == 10, texts
    shutil.rmtree(tmp_path, ignore_errors=True)
