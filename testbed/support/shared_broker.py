"""Running the broker tests on one long-lived RobustMQ (the real-broker lane, conftest.py).

The bundled broker is fresh for every test; a RobustMQ is not, and mq9 has no way to remove a
mailbox, while group offsets are found by group name across mailboxes. So on RobustMQ each
test gets names of its own: ``Namespace`` appends ``.<tag>`` (a per-test tag) to every mailbox
address in a subject, to CREATE's ``name``, ACK's ``mail_address`` and every ``group_name``, and
takes it out of the answers again, so the test sees the names it wrote. Names the broker would
refuse anyway, and bodies that are not compact JSON objects (the hostile ones), go out as they
are. Agents are not renamed: ``clear_registry`` unregisters every agent before each test.

A test that meets an answer RobustMQ's default build gives for search is skipped, saying so.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from mq9_wire import protocol as p

_ADDRESSED = (p.MSG_SEND, p.MSG_FETCH, p.MSG_ACK, p.MSG_QUERY)
_RENAMED_FIELDS = {
    p.MAILBOX_CREATE: ("name",),
    p.MSG_FETCH: ("group_name",),
    p.MSG_ACK: ("group_name", "mail_address"),
}


class Namespace:
    def __init__(self) -> None:
        self.tag = "t" + uuid.uuid4().hex[:10]
        self._suffix = "." + self.tag
        self._generated: set[str] = set()  # addresses the broker made: unique already

    def address(self, name: Any) -> Any:
        if not isinstance(name, str) or not name or p.name_error(name) or name in self._generated:
            return name
        return name + self._suffix

    def subject(self, subject: str) -> str:
        for prefix in _ADDRESSED:
            if subject.startswith(prefix):
                return prefix + self.address(subject[len(prefix) :])
        if subject.startswith(p.MSG_DELETE):
            address, dot, msg_id = subject[len(p.MSG_DELETE) :].rpartition(".")
            if dot:
                return f"{p.MSG_DELETE}{self.address(address)}.{msg_id}"
        return subject

    def body(self, subject: str, body: bytes) -> bytes:
        kind = next((k for k in _RENAMED_FIELDS if subject.startswith(k)), None)
        if kind is None or not body:
            return body
        try:
            value = json.loads(body)
        except ValueError:
            return body
        try:
            if not isinstance(value, dict) or p.encode(value) != bytes(body):
                return body  # not what our encoder writes: a test of the bytes themselves
        except p.WireError:  # text no broker can carry: sent as it is, to be refused
            return body
        for field in _RENAMED_FIELDS[kind]:
            if field == "group_name" and isinstance(value.get(field), str) and value[field]:
                value[field] = value[field] + self._suffix
            elif field in value:
                value[field] = self.address(value[field])
        return p.encode(value)

    def answer(self, subject: str, data: bytes) -> bytes:
        if p.SEARCH_NOT_BUILT.encode() in data:
            pytest.skip("RobustMQ's default build has no agent search (vector-search feature)")
        if subject == p.MAILBOX_CREATE and self._suffix.encode() not in data:
            address = json.loads(data).get("mail_address")
            if address:
                self._generated.add(address)
        return data.replace(self._suffix.encode(), b"")


class NamespacedTransport:
    """An ``Mq9Client`` transport that sends through ``inner`` with the namespace's names."""

    def __init__(self, inner: Any, namespace: Namespace) -> None:
        self._inner, self._names = inner, namespace

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    async def request(self, subject: str, body: bytes, headers, timeout: float) -> bytes:
        names = self._names
        sent = names.subject(subject)
        reply = await self._inner.request(sent, names.body(subject, body), headers, timeout)
        return names.answer(subject, reply)


def named_client(namespace: Namespace) -> Any:
    """An ``Mq9Client`` maker whose clients take ``namespace``'s names: put in place of the one
    ``Mq9Connection`` opens its clients with (a toolkit's, an in-process MCP server's), so the
    code under test and the test's own ``broker.client()`` meet at the same mailboxes."""
    from mq9_platform import Mq9Client

    def make(server: str, **options: Any) -> Mq9Client:
        client = Mq9Client(server, **options)
        client._transport = NamespacedTransport(client._transport, namespace)
        return client

    return make


# A bound on RobustMQ's search index catching up with its registry on a busy machine (about
# 0.5 s to index a card, 1 s to drop one, measured: robustmq_shaped.py), not a measured time.
INDEX_SETTLES = 60.0


def card_name(agent_info: Any) -> str | None:
    """The name of the A2A card an agent's ``agent_info`` (or a REGISTER body) holds, which
    names its row in RobustMQ's search index; None where nothing is indexed (not a card)."""
    if isinstance(agent_info, str):
        try:
            agent_info = json.loads(agent_info)
        except ValueError:
            return None
    if isinstance(agent_info, dict) and isinstance(agent_info.get("payload"), str):
        return card_name(agent_info["payload"])  # {name, payload: "<card JSON>"}
    if isinstance(agent_info, dict) and "skills" in agent_info and agent_info.get("name"):
        return str(agent_info["name"])
    return None


async def until_indexed(client: Any, card: str, *, present: bool = True) -> None:
    """On RobustMQ's vector-search build, whose search index trails its registry, wait until
    a search finds the card named ``card`` (or, ``present=False``, finds it no more), as
    RobustMQ's own tests wait (they sleep): an UNREGISTER that comes before the insert landed
    leaves the card in the index for good (docs/protocol-commands.md §7.2). Nothing to wait for on a
    build without search. ``client``: a namespaced client of the shared RobustMQ."""
    from testbed.support.waiting import until

    async def settled() -> bool:
        try:
            raw = await client._transport.request(
                p.AGENT_DISCOVER, p.encode({"semantic": card, "limit": 1000}), None, 5
            )
        except pytest.skip.Exception:
            return True  # the default build: no search, nothing trails
        reply = json.loads(raw)
        found = {a.get("name") for a in reply.get("agents") or () if isinstance(a, dict)}
        if reply.get("error") and p.SEARCH_TABLE_MISSING not in reply["error"]:
            raise AssertionError(f"search failed: {reply['error']}")
        return (card in found) == present

    what = f"RobustMQ's search to {'find' if present else 'lose'} the card {card!r}"
    await until(settled, timeout=INDEX_SETTLES, what=what, every=0.1)


async def clear_registry(client: Any) -> None:
    """Unregister every agent the broker lists (RobustMQ registers an agent named "" but
    refuses to unregister it: that one stays). UNREGISTER drops the search row its name
    names: where that is the agent's own card, the card is indexed first and gone after, so
    none stays in the index (a ghost, §7.2) for a later test to find. (A card registered
    under another name has no row to drop: it stays findable, as RobustMQ keeps it.)"""
    listing = await client._transport.request(p.AGENT_DISCOVER, b"{}", None, 5)  # as stored
    for agent in json.loads(listing).get("agents") or ():
        name = agent["name"]
        if name:
            own_row = card_name(agent.get("agent_info")) == name
            if own_row:
                await until_indexed(client, name)
            await client.agent_unregister(name)
            if own_row:
                await until_indexed(client, name, present=False)
