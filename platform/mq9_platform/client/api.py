"""``Mq9ClientLike``: the client the operation catalog (and the console) works with, as a type.

A toolkit or an MCP server may be handed this package's ``Mq9Client`` or the official mq9 SDK's
(robustmq/mq9, ``python/mq9``): the catalog's handlers (``operations/``) use only what the two
share, named here, so a reader can follow a handler's call into ``Mq9Client`` and mypy checks
it. Where the two differ the handlers adapt at run time, and say so where they do: the SDK's
``Message`` has no ``key`` or ``tags`` (read with ``getattr``), its ``query`` takes no ``tags``
and its ``agent_discover`` no ``rerank`` (given only when the client takes them), its
``agent_unregister`` names its argument ``mailbox`` (so it is passed by position), and its
client has no ``warnings`` (read with ``getattr``).
"""

from __future__ import annotations

from typing import Any, Protocol

from mq9_wire.protocol import Message, Priority

__all__ = ["Mq9ClientLike"]


class Mq9ClientLike(Protocol):
    """The methods ``Mq9Client`` and the official SDK's ``Mq9Client`` share, with the arguments
    both take. Typed as ``Mq9Client`` answers (our ``Message``, our ``Priority``)."""

    async def mailbox_create(self, *, name: str | None = ..., ttl: int = ...) -> str: ...

    async def send(
        self,
        mail_address: str,
        payload: bytes | str | dict[str, Any],
        *,
        priority: Priority | str = ...,
        key: str | None = ...,
        delay: int | None = ...,
        ttl: int | None = ...,
        tags: list[str] | None = ...,
    ) -> int: ...

    async def fetch(
        self,
        mail_address: str,
        *,
        group_name: str | None = ...,
        deliver: str | None = ...,
        from_time: int | None = ...,
        from_id: int | None = ...,
        force_deliver: bool = ...,
        num_msgs: int = ...,
        max_wait_ms: int = ...,
    ) -> list[Message]: ...

    async def ack(self, mail_address: str, group_name: str, msg_id: int) -> None: ...

    async def query(
        self,
        mail_address: str,
        *,
        key: str | None = ...,
        limit: int | None = ...,
        since: int | None = ...,
    ) -> list[Message]: ...

    async def delete(self, mail_address: str, msg_id: int) -> None: ...

    async def agent_register(self, agent_card: dict[str, Any]) -> None: ...

    async def agent_unregister(self, name: str, /) -> None: ...

    async def agent_report(self, report: dict[str, Any]) -> None: ...

    async def agent_discover(
        self,
        *,
        text: str | None = ...,
        semantic: str | None = ...,
        limit: int = ...,
        page: int = ...,
    ) -> list[dict[str, Any]]: ...
