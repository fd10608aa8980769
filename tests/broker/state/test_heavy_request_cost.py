"""Bench 9d's text and query kinds (issue #35): what the heaviest valid text DISCOVER and tag
QUERY cost the broker. A 64 KiB text query of words no agent holds was matched by a regex,
looked up word by word and then compared with every agent (1.3 ms of the worker's time, which
shares Python's lock with the loop); a QUERY of 5,000 tags bisected the mailbox's sorted tag
names twice for each tag, most of which it does not hold (9 ms of the loop's time). Costs are
counted here (lookups, walks, bisections), never timed; the answers stay exactly as before.
"""

from __future__ import annotations

import json
import re
from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

import mq9_broker.state.mailbox as mailbox_module
from mq9_broker.state.mailbox import Mailbox, StoredMessage
from mq9_wire.protocol import Priority
from mq9_wire.semantic.ranking import AgentEntry, AgentIndex, word_pieces, words

# -- text search ----------------------------------------------------------------------------


@settings(max_examples=300, deadline=None)
@given(text=st.text(max_size=80), piece=st.integers(1, 8))
def test_the_words_of_any_text_are_the_regex_words_of_it_lowered(text, piece):
    """Words are found without a regex now (lowered, written as ASCII, split a piece at a
    time): the same words as the regex [a-z0-9]+ over the lowered text, for any characters."""
    assert words(text, piece) == set(re.findall("[a-z0-9]+", text.lower()))


class CountingIndexed(tuple):
    """The index as a search ranks it, counting the walks over its agents."""

    walks = 0

    def __iter__(self):
        self.walks += 1
        return super().__iter__()


class CountingCounter(Counter):
    """How many agents hold each word, counting the words looked up one by one."""

    lookups = 0

    def get(self, key, default=None):
        self.lookups += 1
        return super().get(key, default)

    def __getitem__(self, key):
        self.lookups += 1
        return super().__getitem__(key)


def _index(agents: int) -> AgentIndex:
    index = AgentIndex(embedder=None)
    for i in range(agents):
        card = f'{{"name":"agent.{i}","description":"agent {i} translates and reviews"}}'
        index.put_index(AgentEntry.make(f"agent.{i}", card, 0))
    index.word_count = CountingCounter(index.word_count)
    return index


def test_a_text_query_of_words_no_agent_holds_walks_no_agent_and_looks_up_no_word():
    """Bench 9d: 4,000 distinct unknown words were looked up one by one, then every agent was
    compared with none of them. Now they are left out in one set operation and no agent is
    walked; a query holding a known word still ranks as before."""
    index = _index(50)
    indexed = CountingIndexed(index.indexed())
    unknown = " ".join(f"translate1x{i}" for i in range(4_000))
    assert index.search_words(words(unknown), indexed) == []
    assert (indexed.walks, index.word_count.lookups) == (0, 0)
    found = index.search_words(words(unknown + " Agent 7"), indexed)
    assert [entry.name for entry in found][:2] == ["agent.7", "agent.0"]
    assert len(found) == 50
    assert index.word_count.lookups == 2  # "agent" and "7", the words some agent holds


# -- tag QUERY ------------------------------------------------------------------------------


def _expected(mailbox: Mailbox, asked: str, limit: int) -> list[int]:
    """What a tag read finds, comparing every tag of every live message (RobustMQ's key
    order: ``<tag>/<msg_id as 20 digits>``)."""
    keys = sorted(
        (f"{tag}/{message.msg_id:020}", message.msg_id)
        for message in mailbox.messages.values()
        for tag in dict.fromkeys(message.tags)
        if tag == asked or tag.startswith(asked + "/")
    )
    return [msg_id for _, msg_id in keys][:limit]


def test_a_tag_with_no_tag_below_it_reads_without_bisecting_the_tag_names(monkeypatch):
    """Bench 9d: each of a QUERY's 5,000 tags bisected the sorted tag names twice, held or
    not. A tag that no held tag lies below reads its own index (or nothing) at once; a tag
    with tags below it still finds them."""
    mailbox = Mailbox("box", create_time=0, ttl=0)
    for i in range(300):
        mailbox.append(StoredMessage(-1, b"", Priority.NORMAL, 0, tags=(f"t{i % 5}", f"x/y{i}")))
    bisections = []
    monkeypatch.setattr(
        mailbox_module, "bisect_left", lambda *a: bisections.append(a) or _bisect_left(*a)
    )
    for asked in ("x/y7", "t3", "missing", "x/y", "y7"):
        assert [m.msg_id for m in mailbox.read_tag(asked, 100, 0)] == _expected(mailbox, asked, 100)
    assert bisections == []
    assert [m.msg_id for m in mailbox.read_tag("x", 3, 0)] == [0, 1, 10]  # key order
    assert len(bisections) == 2


_bisect_left = mailbox_module.bisect_left


@settings(max_examples=150, deadline=None)
@given(
    carried=st.lists(st.lists(st.text("ab/", min_size=1, max_size=4), max_size=3), max_size=40),
    removed=st.sets(st.integers(0, 39)),
    asked=st.text("ab/", min_size=1, max_size=4),
)
def test_a_tag_read_after_messages_were_removed_and_the_indexes_compacted_finds_the_same(
    carried, removed, asked
):
    """The parts of tag names before their slashes are made again when the indexes are
    compacted: a read finds what comparing every tag finds, before and after."""
    mailbox = Mailbox("box", create_time=0, ttl=0)
    for tags in carried:
        mailbox.append(StoredMessage(-1, b"", Priority.NORMAL, 0, tags=tuple(tags)))
    for msg_id in removed:
        mailbox.remove(msg_id)
    assert [m.msg_id for m in mailbox.read_tag(asked, 40, 0)] == _expected(mailbox, asked, 40)
    mailbox._compact()
    assert [m.msg_id for m in mailbox.read_tag(asked, 40, 0)] == _expected(mailbox, asked, 40)


async def test_a_long_text_query_pauses_between_its_pieces_with_the_same_hits(monkeypatch):
    """Bench 9d: a client sending 64 KiB text queries back to back kept the loop busy with
    their bytes (each answered in 0.35 ms). The worker now sleeps ``TEXT_PAUSE`` between the
    query's 4 KiB pieces (Python's lock left to the loop at once); a short query never sleeps,
    and the hits are those of the whole query."""
    import mq9_broker.engine.worker as engine_module
    from mq9_broker import BrokerEngine
    from mq9_wire import protocol as p

    engine = BrokerEngine()
    engine.search_index.ranker.embedder = None
    for name in ("agent.a", "agent.b"):
        card = p.agent_card(name, description=f"{name} translates contracts")
        await engine.handle(p.AGENT_REGISTER, None, p.encode(card))
    pauses: list[float] = []
    monkeypatch.setattr(engine_module.time, "sleep", pauses.append)

    async def hits(text: str) -> list[str]:
        reply = json.loads(await engine.handle(p.AGENT_DISCOVER, None, p.encode({"text": text})))
        return [agent["name"] for agent in reply["agents"]]

    assert await hits("contracts agent.b") == ["agent.b", "agent.a"]
    assert pauses == []
    long_query = " ".join(f"unknown{i}" for i in range(5_000)) + " B"
    assert await hits(long_query) == ["agent.b"]
    pieces = list(word_pieces(long_query))  # 4 KiB and a word each: 15 of them
    assert len(pieces) == 15
    assert pauses == [engine_module.TEXT_PAUSE] * 14
