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
    from langchain_mq9 import Mq9Client

    def make(server: str, **options: Any) -> Mq9Client:
        client = Mq9Client(server, **options)
        client._transport = NamespacedTransport(client._transport, namespace)
        return client

    return make


async def clear_registry(client: Any) -> None:
    """Unregister every agent the broker lists (RobustMQ registers an agent named "" but
    refuses to unregister it: that one stays)."""
    for agent in await client.agent_discover():
        if agent["name"]:
            await client.agent_unregister(agent["name"])
