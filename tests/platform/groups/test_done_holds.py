"""A returned ``done`` holds for the other readers of a group on the same client (issue #61,
item 7).

RobustMQ's ACK sets the group's position: of two acks the one stored last wins. Four
``GroupReader``s of one group on one client, through kills of nodes and brokers, handed out
again messages whose ``done`` had returned, and the broker's stored commits showed why: the
group's position moved back (15 times in 9 kills, on the earlier JetStream store's kill lane,
gone with that store in issue #72; docs/groups.md): a reader that fetched before another's ack
acked lower after it, or an ACK sent again after a failover landed behind one sent meanwhile.
The readers of one client now ack in turn, never below the highest ack answered; a position
moved back by someone else is put back before anything is handed out. Issue #98, item 9: and
the answer read after that put-back is checked too, and what is at or below the highest ack
answered is done for every reader of the client, whatever an answer says.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from mq9_platform import GroupReader
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import NoBroker, RequestTimeout

_boxes = itertools.count()


async def _box(client, count: int) -> str:
    box = await client.mailbox_create(name=f"dh.box{next(_boxes)}")
    for i in range(count):
        await client.send(box, f"m{i}")
    return box


async def _ids(reader: GroupReader, num_msgs: int) -> list[int]:
    return [m.msg_id for m in await reader.fetch(num_msgs=num_msgs)]


async def _each_done_first(readers: list[GroupReader], count: int) -> None:
    """Each reader is handed the first ``count`` messages, then each finishes them (a
    reader's later answers then start right above what it finished: its done can ack)."""
    for reader in readers:
        assert await _ids(reader, count) == list(range(count))
    for reader in readers:
        await reader.done(list(range(count)))


async def _b_and_c_holding(client) -> tuple[str, list[GroupReader]]:
    """Four readers past 0..4; b is handed 5..14 and c 5..24, neither finished yet."""
    box = await _box(client, 40)
    readers = [GroupReader(client, box, "g") for _ in range(4)]
    await _each_done_first(readers, 5)
    assert await _ids(readers[1], 10) == list(range(5, 15))
    assert await _ids(readers[2], 20) == list(range(5, 25))
    return box, readers


async def test_a_reader_that_finishes_late_does_not_move_the_group_back(client):
    box = await _box(client, 40)
    a, b, c, d = readers = [GroupReader(client, box, "g") for _ in range(4)]
    await _each_done_first(readers, 10)
    assert await _ids(b, 10) == list(range(10, 20))  # and is slow
    assert await _ids(c, 20) == list(range(10, 30))
    await c.done(list(range(10, 30)))  # returned: 10..29 are done for the group
    await b.done(list(range(10, 20)))  # late: its ack of 19 would move the group back to 20
    assert await _ids(d, 10) == list(range(30, 40))
    assert a.committed == 9


async def test_an_ack_sent_again_after_a_failover_is_not_overtaken(client):
    """b's ACK finds no broker (a failover) and is sent again a moment later; c's higher ACK,
    made meanwhile, waits for b's turn instead of landing before b's repeat."""
    box, (a, b, c, d) = await _b_and_c_holding(client)
    transport = client._transport
    request = transport.request
    failed = asyncio.Event()

    async def away_once(subject, body, headers, timeout):
        if subject == p.ack_subject(box) and b'"msg_id":14' in body and not failed.is_set():
            failed.set()
            await asyncio.sleep(0.2)
            raise NoBroker("no mq9 broker is serving (a failover)")
        return await request(subject, body, headers, timeout)

    transport.request = away_once
    try:
        late = asyncio.create_task(b.done(list(range(5, 15))))
        await asyncio.wait_for(failed.wait(), 10)
        await c.done(list(range(5, 25)))  # returned: 5..24 are done for the group
        await late
    finally:
        transport.request = request
    assert await _ids(d, 10) == list(range(25, 35))
    assert a.committed == 4


async def test_a_position_moved_back_by_another_client_is_put_back_first(client):
    """Reader d never saw 0..19; another client's late ACK moved the group back to 10: d
    acks the highest ack of its client again before handing anything out."""
    box = await _box(client, 30)
    a, d = GroupReader(client, box, "g"), GroupReader(client, box, "g")
    assert await _ids(a, 20) == list(range(20))
    await a.done(list(range(20)))
    await client.ack(box, "g", 9)  # as another client's late ACK
    assert await _ids(d, 10) == list(range(20, 30))
    assert (await client.fetch(box, group_name="g", max_wait_ms=0))[0].msg_id == 20


async def test_an_ack_never_answered_is_not_overtaken_by_a_lower_one(client):
    """c's ACK is stored, yet its answer never comes (its broker killed after storing it, a
    write that reached the stream late): c's done raises. b's lower ACK, sent afterwards,
    would land behind it and move the group back; b sends c's instead."""
    box, (a, b, c, d) = await _b_and_c_holding(client)
    transport = client._transport
    request = transport.request

    async def stored_unanswered(subject, body, headers, timeout):
        answer = await request(subject, body, headers, timeout)
        if subject == p.ack_subject(box) and b'"msg_id":24' in body:
            raise RequestTimeout("no answer in time")
        return answer

    transport.request, timeout = stored_unanswered, client.request_timeout
    client.request_timeout = 0.5  # its repeats, each stored and unanswered, end sooner
    try:
        with pytest.raises(RequestTimeout):
            await c.done(list(range(5, 25)))
    finally:
        transport.request, client.request_timeout = request, timeout
    await b.done(list(range(5, 15)))
    assert (await client.fetch(box, group_name="g", max_wait_ms=0))[0].msg_id == 25
    assert await _ids(d, 10) == list(range(25, 35))
    assert a.committed == 4


async def test_an_ack_answered_while_a_read_is_under_way_is_checked_against_it(client):
    """Issue #98, item 9, as the chaos lane found it (no kill, no stale read: one client's
    readers interleaving; bench/js_chaos.py --group). Past 0..4, c finishes 15..24 while it
    still holds 5..14: its ``done`` returns without an ack, 15..24 done for the client. b's
    fetch is sent after it: its FETCH reads the group at 5, and a's ack of 14 is answered
    before that answer is looked at, so b puts the group back (acks 14 again) and reads again,
    at 15. Before that answer is looked at, c finishes 5..14 and acks 24, which is answered:
    15..24 are behind the group now, no longer "finished above the highest ack". Before the
    fix b took the answer after a put-back as it came and handed 15..24 out again, after c's
    ``done`` of them had returned."""
    box = await _box(client, 35)
    a, b, c = readers = [GroupReader(client, box, "g") for _ in range(3)]
    await _each_done_first(readers, 5)  # (past their first batches)
    assert await _ids(a, 10) == list(range(5, 15))
    assert await _ids(c, 20) == list(range(5, 25))
    await c.done(list(range(15, 25)))  # returned: 15..24 are done (c holds 5..14: no ack)
    transport = client._transport
    request = transport.request
    reads = 0

    async def interleaved(subject, body, headers, timeout):
        nonlocal reads
        answer = await request(subject, body, headers, timeout)
        if subject == p.fetch_subject(box):
            reads += 1
            if reads == 1:  # b's FETCH was read at 5; a's ack of 14 is answered meanwhile
                await a.done(list(range(5, 15)))
            elif reads == 2:  # b's second read, at 15; c's ack of 24 is answered meanwhile
                await c.done(list(range(5, 15)))
        return answer

    transport.request = interleaved
    try:
        handed = await _ids(b, 10)
    finally:
        transport.request = request
    assert reads >= 2  # (b did put the group back, and read again)
    assert c.committed == 24
    assert not set(handed) & set(range(25))  # before the fix: 15..24
    assert handed == list(range(25, 35))


async def test_a_position_still_behind_after_it_was_put_back_hands_nothing_out_again(client):
    """Issue #98, item 9: b's FETCH finds the group behind the ack a's returned ``done`` made
    (a lower commit that landed late, a replica's stale read), and b puts it back; but the
    broker's next answer is behind again (another late write landing between b's ACK and its
    FETCH, or the same stale replica answering). b had never seen 10..19: its own floor kept
    nothing out, and before the fix it handed them out again, after a's ``done`` returned.
    Whatever the group's position a broker reads, a reader of this client hands out nothing at
    or below an ack one of them had answered."""
    box = await _box(client, 30)
    a, b = GroupReader(client, box, "g"), GroupReader(client, box, "g")
    assert await _ids(a, 20) == list(range(20))
    await a.done(list(range(20)))  # returned: 0..19 are done for the group
    await client.ack(box, "g", 9)  # a lower commit landing late: the group back at 10
    transport = client._transport
    request = transport.request
    landed_again = asyncio.Event()

    async def late_once_more(subject, body, headers, timeout):
        answer = await request(subject, body, headers, timeout)
        if subject == p.ack_subject(box) and b'"msg_id":19' in body and not landed_again.is_set():
            landed_again.set()  # after b put the group back, it is behind once more
            await request(subject, body.replace(b'"msg_id":19', b'"msg_id":9'), headers, timeout)
        return answer

    transport.request = late_once_more
    try:
        handed = await _ids(b, 10)
    finally:
        transport.request = request
    assert landed_again.is_set()  # (b did put the group back, and found it behind again)
    assert not set(handed) & set(range(20))  # before the fix: 10..19, done and handed out
    assert handed == list(range(20, 30))
    assert (await client.fetch(box, group_name="g", max_wait_ms=0))[0].msg_id == 20


async def test_an_answer_behind_every_time_hands_out_nothing_done(client):
    """A broker whose reads stay behind for a while (a deposed stream leader answering its
    old state, say): every answer b gets shows 10..19 again, however often b puts the group
    back. b hands out none of them; it hands out 20..29 once an answer shows them."""
    box = await _box(client, 30)
    a, b = GroupReader(client, box, "g"), GroupReader(client, box, "g")
    assert await _ids(a, 20) == list(range(20))
    await a.done(list(range(20)))
    transport = client._transport
    request = transport.request
    stale = {"left": 6}

    async def behind(subject, body, headers, timeout):
        if subject == p.fetch_subject(box) and stale["left"] > 0:
            stale["left"] -= 1
            # the group's position as a replica that missed the last commits reads it
            lower = p.ACK_REQUEST.body(group_name="g", mail_address=box, msg_id=9)
            await request(p.ack_subject(box), lower, None, timeout)
        return await request(subject, body, headers, timeout)

    transport.request = behind
    handed: list[int] = []
    try:
        for _ in range(8):
            handed += await _ids(b, 10)
    finally:
        transport.request = request
    assert stale["left"] == 0
    assert not set(handed) & set(range(20))
    assert handed == list(range(20, 30))
