"""Each principal acting at the broker as itself: ``--principal-credentials
DIR`` holds one mq9 credential file per principal (its one line ``<id>:<secret>``, as
``mq9-dev-broker credentials issue`` prints it), named by the whole principal, its issuer, subject
and client (``principal_files``: never by a subject alone, which another issuer or a client may
share). A principal's tool calls then go over a broker connection logged in with its
own credential, so the broker's ownership (a mailbox only its owner reads, keys per sender)
holds between the people of one mq9-mcp. A principal without a file is refused in one line, or,
with ``--unmapped-principals shared``, acts as the server's own identity (sharing everything
that identity may reach).

Every broker access made for a request goes so (``ActingConnection``): tool calls, tasks and
their timelines, watches and listen streams, MCP Events and webhooks, resource reads and
completions; work a request starts (a task, a watch) keeps acting for its principal. Only what
no request asks (the start's first connect, the arrival announcements) is the server's own.
``MAX_CONNECTIONS`` principals' connections are open at once, the least recently used idle
one closed for a new one; all are closed at shutdown, ``CLOSE_SECONDS`` at most. The table is
keyed by the whole principal too.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar, Token
from pathlib import Path
from typing import Any, TypeVar

import anyio

from mq9_platform.client.auth import read_credential_file
from mq9_platform.client.client import Mq9Client
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import OperationError
from mq9_wire.protocol.errors import Mq9Error, NotAllowed

from .principal_files import (
    PrintFileName,
    file_names,
    key_of,
    principal_of_request,
    shown,
    tokens_file_name,
)

log = logging.getLogger("mq9_mcp")

T = TypeVar("T")

# The broker connections kept at once, one per principal with a credential
MAX_CONNECTIONS = 256
# The most closing them takes at shutdown: a broker gone quiet holds no shutdown longer
CLOSE_SECONDS = 3.0
# The request whose principal the broker accesses of this task act for (None: no request)
_acting: ContextVar[Any] = ContextVar("mq9_mcp_acting_request", default=None)


def principal_key(request: Any) -> str | None:
    """The whole principal of ``request`` as one string (None: no token naming anyone)."""
    principal = principal_of_request(request)
    return None if principal is None else key_of(principal)


class PrincipalConnections:
    """A broker connection per principal, made on its first use from its credential file (read
    then, so a file added later counts), ``MAX_CONNECTIONS`` open at most: a new one closes the
    least recently used one no call is using (``using``); none idle: refused, try later."""

    def __init__(
        self,
        folder: Path,
        make: Callable[[str], Mq9Connection],
        shared: Mq9Connection,
        *,
        share_unmapped: bool = False,
        limit: int = MAX_CONNECTIONS,
    ) -> None:
        self.folder = folder
        self.make = make  # a credential "<id>:<secret>" -> a connection to the same broker
        self.shared = shared
        self.share_unmapped = share_unmapped
        self.limit = limit
        self._by_name: OrderedDict[str, Mq9Connection] = OrderedDict()  # least recent first
        self._busy: dict[str, int] = {}  # the calls using each principal's connection now
        self._closing: set[asyncio.Task[None]] = set()  # evicted, closing

    @property
    def open(self) -> int:
        """The principals' connections open now (not counting those closing)."""
        return len(self._by_name)

    def connection_for(self, request: Any) -> Mq9Connection:
        """The connection ``request``'s principal acts through; OperationError (the tool's
        error, in one line) for a principal without a credential, unless shared."""
        principal = principal_of_request(request)
        if principal is None:  # no token naming anyone (stdio, the static --auth-token)
            return self.shared
        key = key_of(principal)
        known = self._by_name.get(key)
        if known is not None:
            self._by_name.move_to_end(key)
            return known
        names = file_names(principal)
        path = next((p for p in (self.folder / n for n in names) if p.is_file()), None)
        if path is None:
            if self.share_unmapped:
                return self.shared
            raise OperationError(self._unmapped(principal, names))
        if len(self._by_name) >= self.limit:
            self._evict()
        try:
            credential = ":".join(read_credential_file(str(path)))
            connection = self.make(credential)
        except (Mq9Error, ValueError) as exc:
            log.warning("the broker credential %s is unusable: %s", path.name, exc)
            raise OperationError(
                f"your broker credential at this server is unusable: {exc}"
            ) from None
        self._by_name[key] = connection
        log.info("principal %s acts at the broker as %s", shown(principal), path.name)
        return connection

    def acts_as_itself(self, request: Any) -> bool:
        """Whether ``request``'s principal acts at the broker with a credential of its own
        (OperationError as ``connection_for``)."""
        return self.connection_for(request) is not self.shared

    def _unmapped(self, principal: tuple[str | None, str | None, str], names: list[str]) -> str:
        """The refusal of a principal without a credential file: the file that would be its."""
        if not names:
            return f"no broker credential for you ({shown(principal)}) at this server"
        legacy = tokens_file_name(principal[1])
        note = ""
        if len(names) > 1 and legacy is not None and (self.folder / legacy).is_file():
            note = f" ({legacy} maps only the tokens file's principal of that name)"
        return (
            f"no broker credential for you ({shown(principal)}) at this server{note}: ask its "
            f"operator to put one at {self.folder}/{names[0]}"
        )

    def _evict(self) -> None:
        """Close the least recently used connection no call is using (its principal's next
        call opens it again); every one busy: refused."""
        idle = next((n for n in self._by_name if not self._busy.get(n)), None)
        if idle is None:
            raise OperationError(
                f"this server holds {self.limit} principals' broker connections, each in "
                "use: try later"
            )
        closing = asyncio.get_running_loop().create_task(self._by_name.pop(idle).aclose())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)
        log.debug("closed the idle broker connection of principal %s", idle)

    @asynccontextmanager
    async def using(self, request: Any) -> AsyncIterator[Mq9Connection]:
        """``request``'s principal's connection, counted busy (never closed for another) while
        the block runs."""
        connection = self.connection_for(request)
        name = principal_key(request)
        if name is None or self._by_name.get(name) is not connection:
            yield connection  # the shared one
            return
        self._busy[name] = self._busy.get(name, 0) + 1
        try:
            yield connection
        finally:
            left = self._busy.pop(name) - 1
            if left:
                self._busy[name] = left

    async def aclose(self) -> None:
        """Close every principal's connection, ``CLOSE_SECONDS`` at most in all."""
        opened, self._by_name = list(self._by_name.values()), OrderedDict()
        with anyio.move_on_after(CLOSE_SECONDS) as bound:
            async with anyio.create_task_group() as group:
                for connection in opened:
                    group.start_soon(connection.aclose)
                for closing in list(self._closing):
                    group.start_soon(_finished, closing)
        if bound.cancelled_caught:
            log.warning("principals' broker connections still closing after %gs", CLOSE_SECONDS)


async def _finished(task: asyncio.Task[None]) -> None:
    await asyncio.wait({task})


def acting_for(request: Any) -> Token[Any]:
    """Make the broker accesses of this task (and the tasks it starts) act for ``request``'s
    principal; ``_acting.reset(token)`` ends that."""
    return _acting.set(request)


def stop_acting(token: Token[Any]) -> None:
    _acting.reset(token)


class ActingConnection(Mq9Connection):
    """The server's broker connection as its surfaces use it: each ``run`` goes over the
    connection of the principal of the request being served (``acting_for``), or the shared
    one where there is no request, no token naming anyone, or no ``principals`` mapping. A
    principal refused a connection gets ``NotAllowed``, the broker's own refusal's kind."""

    def __init__(self, shared: Mq9Connection) -> None:  # no client of its own: not super()'s
        self.shared = shared
        self.server = shared.server
        self.client = None
        self.request_timeout = shared.request_timeout
        self._options = {}
        self._clients = {}
        self.principals: PrincipalConnections | None = None

    async def run(self, action: Callable[[Mq9Client], Awaitable[T]]) -> T:
        request = _acting.get()
        if self.principals is None or request is None:
            return await self.shared.run(action)
        try:  # the action raises the broker's errors, never an OperationError
            async with self.principals.using(request) as connection:
                return await connection.run(action)
        except OperationError as exc:
            raise NotAllowed(str(exc)) from None

    async def aclose(self) -> None:
        """Close the shared connection and every principal's."""
        if self.principals is not None:
            await self.principals.aclose()
        await self.shared.aclose()

    def close(self) -> None:
        self.shared.close()


def add_principal_flags(group: Any) -> None:
    group.add_argument(
        "--principal-credentials", metavar="DIR", type=Path,
        help="a folder of mq9 credential files: a tokens file's principal's <name>.cred, "
        "another's p-<digest>.cred (--principal-file prints it); what a principal asks "
        "(tools, tasks, watches, Events, resources) acts at the broker as that identity",
    )  # fmt: skip
    group.add_argument(
        "--principal-file", nargs="+", metavar="WORD",
        action=PrintFileName,
        help="ISSUER SUBJECT [CLIENT]: print the --principal-credentials file name of that "
        "IdP principal (with CLIENT: "
        "that client's alone; without: every client that account signs in through) and stop",
    )  # fmt: skip
    group.add_argument(
        "--unmapped-principals", choices=("refuse", "shared"), default="refuse",
        help="a principal without a credential file: refused (default), or acting as this "
        "server's own identity (sharing all it may reach)",
    )  # fmt: skip


def principal_connections(
    args: argparse.Namespace, parser: argparse.ArgumentParser, server_url: str,
    shared: Mq9Connection, **options: Any,
) -> PrincipalConnections | None:  # fmt: skip
    """The mapping ``--principal-credentials`` names (None without it)."""
    folder: Path | None = getattr(args, "principal_credentials", None)
    if folder is None:
        return None
    if not folder.is_dir():
        parser.error(f"--principal-credentials: {folder} is not a folder")

    def make(credential: str) -> Mq9Connection:
        return Mq9Connection(server_url, credential=credential, **options)

    return PrincipalConnections(
        folder, make, shared, share_unmapped=args.unmapped_principals == "shared"
    )
