"""What a RobustMQ cluster does to a client, answered by fakes (issue #28, items 2, 3 and 4).

Measured on a 3-node RobustMQ 8bd49dc: while a node, the shard's leader or the meta leader is
out of reach, requests get plain error replies with transient texts; a node lost with a
shard's replicas can restart the shard's msg_ids at 0, the acknowledged messages gone; a broker
with ``default_topic_partition_num = 3`` answers msg_ids 0,0,0,1,1,1; each node keeps its own
idea of a group's position. The fakes here are the
bundled engine with those answers put in, over memory:// and a real nats-server.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import nats
import pytest

from langchain_mq9 import Mq9Toolkit
from mq9_broker import (
    BrokerEngine,
    drop_memory_broker,
    install_memory_broker,
    serve_on_nats,
)
from mq9_broker.state.clock import ManualClock
from mq9_platform import GroupReader, Mq9Client, Mq9Error
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import ClusterUnavailable, RequestTimeout

STORAGE_FORWARD = (
    "Failed to send request to node 1 with error message :exceeded max retry times (10)"
)
META_FORWARD = (
    'Grpc call of the node failed,Grpc status was status: Cancelled, message: "has to forward '
    'request to: Some(2), Some(Node { node_id: 2, rpc_addr: \\"127.0.0.1:2228\\" })"'
)


class FlakyCluster(BrokerEngine):
    """The bundled engine, but the first ``failures`` requests on subjects starting with
    ``prefix`` are answered with ``text`` (after doing the work when ``work_first``: a reply
    lost on its way back). Counts every request by subject prefix."""

    def __init__(self, prefix: str = "", failures: int = 0, text: str = STORAGE_FORWARD,
                 work_first: bool = False) -> None:  # fmt: skip
        super().__init__()
        self.prefix, self.failures, self.text, self.work_first = prefix, failures, text, work_first
        self.seen: list[str] = []
        self.scripted_ids: list[int] | None = None  # SEND answers these msg_ids, in turn
        self.doubled = False  # FETCH and QUERY answers hold every message twice

    async def handle(self, subject, headers, body):
        self.seen.append(subject)
        if self.prefix and subject.startswith(self.prefix) and self.failures > 0:
            self.failures -= 1
            if self.work_first:
                await super().handle(subject, headers, body)
            return p.encode({"error": self.text})
        answer = await super().handle(subject, headers, body)
        if subject.startswith(p.MSG_SEND) and self.scripted_ids:
            return p.encode({"error": "", "msg_id": self.scripted_ids.pop(0)})
        if self.doubled and subject.startswith((p.MSG_FETCH, p.MSG_QUERY)):
            reply = json.loads(answer)
            reply["messages"] = [m for m in reply["messages"] for _ in range(2)]
            return p.encode(reply)
        return answer


@pytest.fixture(params=["memory", pytest.param("nats", marks=pytest.mark.slow)])
async def serve(request):
    """``await serve(engine)``: a URL where ``engine`` answers, over the parametrized transport."""
    stops = []

    async def serving(engine: BrokerEngine) -> str:
        if request.param == "memory":
            name = f"cluster{uuid.uuid4().hex}"
            install_memory_broker(name, engine)
            stops.append(lambda: drop_memory_broker(name))
            return f"memory://{name}"
        url = request.getfixturevalue("nats_server").url
        connection = await nats.connect(url)
        service = await serve_on_nats(engine, connection)

        async def stop():
            await service.stop()
            await connection.close()

        stops.append(stop)
        return url

    yield serving
    for stop in stops:
        done = stop()
        if done is not None:
            await done


# -- item 2: transient texts are retryable, safe requests are repeated, SEND never is -------------


@pytest.mark.slow
@pytest.mark.parametrize("text", [STORAGE_FORWARD, META_FORWARD])
async def test_safe_requests_pass_a_transient_cluster_error(serve, text):
    engine = FlakyCluster()
    async with Mq9Client(await serve(engine)) as client:
        box = await client.mailbox_create(name="orders")
        await client.send(box, "one")
        for prefix, call in [
            (p.MSG_QUERY, lambda: client.query(box)),
            (p.MSG_FETCH, lambda: client.fetch(box, group_name="g", deliver="earliest")),
            (p.MSG_ACK, lambda: client.ack(box, "g", 0)),
            (p.AGENT_DISCOVER, lambda: client.agent_discover()),
            (p.MSG_DELETE, lambda: client.delete(box, 0)),
        ]:
            engine.prefix, engine.failures, engine.text = prefix, 2, text
            await call()
            assert engine.failures == 0  # both failures met, then it went through
            assert sum(s.startswith(prefix) for s in engine.seen) >= 3
            engine.seen.clear()


async def test_a_send_is_never_repeated_and_says_it_may_have_been_stored(serve):
    engine = FlakyCluster(prefix=p.MSG_SEND, failures=1, work_first=True)
    async with Mq9Client(await serve(engine)) as client:
        box = await client.mailbox_create(name="orders")
        engine.seen.clear()
        with pytest.raises(Mq9Error) as caught:
            await client.send(box, "maybe")
        assert caught.value.retryable
        assert "exceeded max retry times" in caught.value.message
        assert "may or may not have been stored" in caught.value.message
        assert engine.seen == [p.send_subject(box)]  # sent once
        assert [m.text() for m in await client.query(box)] == ["maybe"]  # it was stored


async def test_a_named_create_whose_reply_was_lost_is_made_once(serve):
    engine = FlakyCluster(prefix=p.MAILBOX_CREATE, failures=1, work_first=True)
    async with Mq9Client(await serve(engine)) as client:
        assert await client.mailbox_create(name="made.once") == "made.once"
        assert engine.seen.count(p.MAILBOX_CREATE) == 2
        with pytest.raises(Mq9Error, match="already exists"):  # a later CREATE: an error again
            await client.mailbox_create(name="made.once")


@pytest.mark.slow
async def test_a_cluster_that_stays_unreachable_fails_within_the_timeout(serve):
    engine = FlakyCluster(prefix=p.MSG_QUERY, failures=10**6)
    async with Mq9Client(await serve(engine), request_timeout=0.5) as client:
        box = await client.mailbox_create(name="orders")
        with pytest.raises(Mq9Error) as caught:
            await client.query(box)
    assert caught.value.retryable and "try again shortly" in caught.value.message
    assert 2 <= engine.seen.count(p.query_subject(box)) <= 10  # a few tries, then the error


# -- item 4: a log that went back or is split is noticed and said ---------------------------------


async def test_msg_ids_that_start_again_are_noticed_and_reach_the_model(serve):
    engine = FlakyCluster()
    url = await serve(engine)
    engine.scripted_ids = [0, 1, 2, 0]  # the fourth SEND: the shard restarted at 0
    async with Mq9Client(url) as client, Mq9Toolkit(client=client) as kit:
        box = await client.mailbox_create(name="orders")
        assert [await client.send(box, f"m{i}") for i in range(3)] == [0, 1, 2]
        assert box not in client.warnings
        tool = next(t for t in kit.get_tools() if t.name == "send_message")
        message = await tool.ainvoke(
            {"name": tool.name, "args": {"mail_address": box, "payload": "m3"}, "id": "1",
             "type": "tool_call"}
        )  # fmt: skip
    result = json.loads(message.content)
    assert result["sent"] and result["msg_id"] == 0  # stored: its id is still reported
    assert "a SEND got msg_id 0, but an earlier one got 2" in result["warning"]
    assert "messages it acknowledged may be lost" in client.warnings[box]


class AnswersOutOfOrder(BrokerEngine):
    """The bundled engine, but the first SEND's answer (msg_id 0) is held until the second's
    (msg_id 1) is given: two SENDs in flight at once, answered in the other order."""

    def __init__(self) -> None:
        super().__init__()
        self.sends = 0
        self.second_answered = asyncio.Event()

    async def handle(self, subject, headers, body):
        answer = await super().handle(subject, headers, body)
        if subject.startswith(p.MSG_SEND):
            self.sends += 1
            if self.sends == 1:
                await self.second_answered.wait()
            else:
                self.second_answered.set()
        return answer


async def test_sends_in_flight_at_once_answered_in_the_other_order_are_no_log_going_back(serve):
    """Only a msg_id answered before a SEND went out must be below its own."""
    engine = AnswersOutOfOrder()
    url = await serve(engine)
    if not url.startswith("memory://"):
        pytest.skip("the bundled broker on NATS answers a connection's requests in arrival order")
    async with Mq9Client(url) as client:
        box = await client.mailbox_create(name="orders")
        both = await asyncio.wait_for(
            asyncio.gather(client.send(box, "first"), client.send(box, "second")), 30
        )
        assert both == [0, 1] and box not in client.warnings
        assert await client.send(box, "third") == 2 and box not in client.warnings


class LogWentBack(BrokerEngine):
    """The bundled engine, but once ``lost`` is set, every msg_id is shown that much lower: the
    shard's log started again at 0, its acknowledged messages gone (docs/deploy-robustmq.md)."""

    def __init__(self) -> None:
        super().__init__(clock=ManualClock())
        self.lost = 0

    async def handle(self, subject, headers, body):
        if self.lost and subject.startswith(p.MSG_ACK):
            request = json.loads(body)
            request["msg_id"] += self.lost
            body = p.encode(request)
        answer = await super().handle(subject, headers, body)
        if self.lost and subject.startswith((p.MSG_SEND, p.MSG_FETCH)):
            reply = json.loads(answer)
            for message in [reply, *reply.get("messages", [])]:
                if "msg_id" in message:
                    message["msg_id"] -= self.lost
            answer = p.encode(reply)
        return answer


async def test_a_reader_hands_out_what_comes_under_ids_it_acked_past_at_once(serve):
    engine = LogWentBack()
    url = await serve(engine)
    async with Mq9Client(url) as sender, Mq9Client(url) as client:
        box = await sender.mailbox_create(name="restarted")
        for text in ("a", "b", "c"):
            await sender.send(box, text)
        reader = GroupReader(client, box, "g")
        assert [m.msg_id for m in await reader.fetch()] == [0, 1, 2]
        await reader.done([0, 1, 2])
        engine.lost = 3
        engine.clock.advance(5)
        assert [await sender.send(box, text, priority=pr) for text, pr in
                [("d", "normal"), ("e", "urgent")]] == [0, 1]  # fmt: skip
        # The same fetch that meets the reused ids hands the new messages out, and says why.
        batch = await reader.fetch()
        assert [(m.msg_id, m.payload) for m in batch] == [(1, b"e"), (0, b"d")]
        assert "went back" in client.warnings[box]
        await reader.done([0, 1])
        assert await reader.fetch() == []
        assert await client.fetch(box, group_name="g", max_wait_ms=0) == []


async def test_an_answer_holding_a_msg_id_twice_says_the_mailbox_is_split(serve):
    engine = FlakyCluster()
    url = await serve(engine)
    async with Mq9Client(url) as client:
        box = await client.mailbox_create(name="split")
        await client.send(box, "x")
        engine.doubled = True
        await client.fetch(box, deliver="earliest")
    assert "default_topic_partition_num" in client.warnings[box]
    assert "held msg_id 0 twice" in client.warnings[box]


async def test_a_send_to_a_shard_not_set_up_yet_is_sent_again(serve):
    """Right after a CREATE, RobustMQ may answer a SEND "Offset state for shard X-0 not
    initialized" (seen in the real-broker lane): nothing was stored (the offset is read before
    any write), so the SEND is safe to repeat, and is."""
    engine = FlakyCluster(text="Offset state for shard dc1ujc2jueqppuo0eb9g-0 not initialized")
    async with Mq9Client(await serve(engine)) as client:
        box = await client.mailbox_create(name="fresh")
        engine.prefix, engine.failures = p.MSG_SEND, 2
        assert await client.send(box, "once") == 0
        assert [m.text() for m in await client.query(box)] == ["once"]


async def test_a_send_answered_shard_not_set_up_after_its_write_is_stored_once(serve):
    """#100: RobustMQ's other words for a shard not set up yet ("offset state not found for
    shard X, shard may not be initialized", met by the real-broker lane) come after the record
    was written (storage-engine core/write.rs): the client does not send it again and reads
    its msg_id back, where one message newer than its last answer holds the bytes; where two
    do, it says the message was stored."""
    text = "offset state not found for shard dc5asfajueqq6358nlng-0, shard may not be initialized"
    engine = FlakyCluster(text=text, work_first=True)
    url = await serve(engine)
    async with Mq9Client(url) as client, Mq9Client(url) as other:
        box = await client.mailbox_create(name="fresh")
        engine.prefix, engine.failures = p.MSG_SEND, 1
        assert await client.send(box, "first") == 0
        assert await other.send(box, "same") == 1
        engine.failures = 1
        with pytest.raises(ClusterUnavailable, match=r"was stored .*do not send it again") as e:
            await client.send(box, "same")  # 1 or 2: which is this one's?
        assert e.value.stored and not e.value.stored_nothing
        assert [m.text() for m in await client.query(box)] == ["first", "same", "same"]


async def test_a_group_record_to_a_lease_mailbox_made_a_moment_ago_goes_through(serve):
    """The lane's case: a group's lease mailbox lived out its TTL, the reader makes it again
    and its record's SEND meets the new shard not set up yet; the record is sent again (a
    record twice is the same record) and ``done`` returns."""

    class FreshShards(FlakyCluster):  # the first two SENDs after each CREATE: stored, then that
        async def handle(self, subject, headers, body):
            if subject == p.MAILBOX_CREATE:
                self.prefix, self.failures = p.MSG_SEND + json.loads(body)["name"], 2
            return await super().handle(subject, headers, body)

    text = "offset state not found for shard dc5asfajueqq6358nlng-0, shard may not be initialized"
    engine = FreshShards(text=text, work_first=True)
    async with Mq9Client(await serve(engine)) as client:
        box = await client.mailbox_create(name="work")
        engine.failures = 0
        await client.send(box, "job")
        reader = GroupReader(client, box, "g", worker="w1")
        [job] = await reader.fetch()  # its read makes the lease mailbox, its claim sent again
        await reader.done([job.msg_id])
        assert await reader.fetch() == []


# -- item 3: group positions are per node; a reader puts its position back on the new node ------


class PerNodePositions(BrokerEngine):
    """One log, but each "node" keeps its own group positions, as a RobustMQ cluster's nodes
    were measured to: an ACK on node 0 does not move the group on node 1."""

    def __init__(self) -> None:
        super().__init__()
        self.positions = [self.offsets, {}]
        self.node = 0

    async def handle(self, subject, headers, body):
        self.store.offsets = self.positions[self.node]
        return await super().handle(subject, headers, body)


async def test_a_reader_that_moves_to_another_node_puts_its_position_back_first(serve):

    engine = PerNodePositions()
    async with Mq9Client(await serve(engine)) as client:
        box = await client.mailbox_create(name="jobs")
        for i in range(8):
            await client.send(box, f"m{i}")
        reader = GroupReader(client, box, "g")
        batch = await reader.fetch(num_msgs=5)
        await reader.done([m.msg_id for m in batch])
        assert reader.committed == 4
        engine.node = 1  # failover: this node never saw the ack
        assert [m.msg_id for m in await client.fetch(box, group_name="g", deliver="earliest",
                                                      max_wait_ms=0)][:1] == [0]  # fmt: skip
        again = await reader.fetch(num_msgs=5)
        assert [m.msg_id for m in again] == [5, 6, 7]  # nothing acked is handed out again
        assert engine.positions[1]["g-normal"]  # the position was put back on node 1


async def test_workers_done_records_hold_on_a_node_with_an_older_position(serve):

    engine = PerNodePositions()
    async with Mq9Client(await serve(engine)) as client:
        box = await client.mailbox_create(name="jobs")
        for i in range(6):
            await client.send(box, f"m{i}")
        first = GroupReader(client, box, "g", worker="a")
        batch = await first.fetch(num_msgs=4)
        await first.done([m.msg_id for m in batch])
        engine.node = 1  # a new worker reaches a node whose position is still at 0
        newcomer = GroupReader(client, box, "g", worker="b")
        assert [m.msg_id for m in await newcomer.fetch(num_msgs=10)] == [4, 5]


async def test_a_create_waiting_behind_another_of_its_name_keeps_its_own_deadline():
    """(#100) CREATEs of one name from one process go one after another (RobustMQ loses a
    mailbox whose first CREATEs cross): one waiting behind a CREATE that hangs gives up at its
    own ``request_timeout``, saying why, and is not held for the other's."""
    from testbed.support.robustmq_shaped import RobustMQShapedListener

    async with (
        RobustMQShapedListener(BrokerEngine(), create_takes=60) as listener,
        Mq9Client(listener.url, request_timeout=90) as slow,
        Mq9Client(listener.url, request_timeout=0.5) as waiting,
    ):
        hanging = asyncio.create_task(slow.mailbox_create(name="one.name", ttl=0))
        await asyncio.sleep(0)  # (its turn taken)
        with pytest.raises(RequestTimeout, match=r"another CREATE of 'one\.name'"):
            await waiting.mailbox_create(name="one.name", ttl=0)
        listener.create_takes = 0  # (every CREATE there hangs until now)
        assert await waiting.mailbox_create(name="another.name", ttl=0) == "another.name"
        hanging.cancel()


async def test_the_send_tool_never_tells_the_model_to_send_again_what_was_stored():
    """(#100) On RobustMQ (no keys: the tool's SEND is not sent again), the stored SEND whose
    msg_id cannot be read back: the model reads that it was stored and must not send it
    again, never "try again"."""
    from testbed.support.robustmq_shaped import RobustMQShapedListener

    text = "offset state not found for shard dc5asfajueqq6358nlng-0, shard may not be initialized"
    engine = FlakyCluster(text=text, work_first=True)
    async with (
        RobustMQShapedListener(engine) as listener,
        Mq9Client(listener.url) as client,
        Mq9Client(listener.url) as other,
        Mq9Toolkit(client=client) as kit,
    ):
        box = await client.mailbox_create(name="fresh.tool")
        await other.send(box, "same")  # the same bytes, not this client's: which is the tool's?
        engine.prefix, engine.failures = p.MSG_SEND, 1
        send = next(t for t in kit.get_tools() if t.name == "send_message")
        call = {"mail_address": box, "payload": "same"}
        said = await send.ainvoke({"name": send.name, "args": call, "id": "1", "type": "tool_call"})
    assert "do not send it again" in said.content and "try again" not in said.content, said
