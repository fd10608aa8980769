"""Each principal acting at the broker as itself (issue #112 item 3): ``--principal-credentials
DIR`` holds one mq9 credential file per principal, ``<name>.cred`` (its one line ``<id>:<secret>``,
as ``mq9-dev-broker credentials issue`` prints it; ``name`` is a tokens file's name, or an OAuth
token's subject). A principal's tool calls then go over a broker connection logged in with its
own credential, so the broker's ownership (a mailbox only its owner reads, keys per sender)
holds between the people of one mq9-mcp. A principal without a file is refused in one line, or,
with ``--unmapped-principals shared``, acts as the server's own identity (sharing everything
that identity may reach).

Every broker access made for a request goes so (``ActingConnection``): tool calls, tasks and
their timelines, watches and listen streams, MCP Events and webhooks, resource reads and
completions; work a request starts (a task, a watch) keeps acting for its principal. Only what
no request asks (the start's first connect, the arrival announcements) is the server's own.
``MAX_CONNECTIONS`` principals' connections are open at once, the least recently used idle
one closed for a new one; all are closed at shutdown, ``CLOSE_SECONDS`` at most.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from contextvars import ContextVar, Token
from pathlib import Path
from typing import Any, TypeVar

import anyio
from mcp.server.auth.provider import AccessToken

from mq9_platform.client.auth import read_credential_file
from mq9_platform.client.client import Mq9Client
from mq9_platform.client.connection import Mq9Connection
from mq9_platform.operations.catalog import OperationError
from mq9_wire.protocol.errors import Mq9Error, NotAllowed

log = logging.getLogger("mcp_server")

T = TypeVar("T")

# The broker connections kept at once, one per principal with a credential
MAX_CONNECTIONS = 256
# The most closing them takes at shutdown: a broker gone quiet holds no shutdown longer
CLOSE_SECONDS = 3.0
# The request whose principal the broker accesses of this task act for (None: no request)
_acting: ContextVar[Any] = ContextVar("mq9_mcp_acting_request", default=None)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,127}")


def subject_of(request: Any) -> str | None:
    """The subject of the token the SDK's bearer auth checked for ``request`` (None: none)."""
    scope = getattr(request, "scope", None) or {}
    token = getattr(scope.get("user"), "access_token", None)
    return token.subject if isinstance(token, AccessToken) else None


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
        name = subject_of(request)
        if name is None:  # no token naming anyone (stdio, the static --auth-token)
            return self.shared
        known = self._by_name.get(name)
        if known is not None:
            self._by_name.move_to_end(name)
            return known
        path = self.folder / f"{name}.cred"
        if not _NAME.fullmatch(name) or not path.is_file():
            if self.share_unmapped:
                return self.shared
            raise OperationError(
                f"no broker credential for you ({name!r}) at this server: ask its operator to "
                f"put one in {self.folder}/ (mq9-dev-broker credentials issue {name})"
            )
        if len(self._by_name) >= self.limit:
            self._evict()
        try:
            credential = ":".join(read_credential_file(str(path)))
            connection = self.make(credential)
        except (Mq9Error, ValueError) as exc:
            log.warning("the broker credential of %s is unusable: %s", name, exc)
            raise OperationError(
                f"your broker credential at this server is unusable: {exc}"
            ) from None
        self._by_name[name] = connection
        log.info("principal %s acts at the broker with its own credential", name)
        return connection

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
        name = subject_of(request)
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
        help="a folder of mq9 credential files, <principal>.cred each: what a principal asks "
        "(tools, tasks, watches, Events, resources) acts at the broker as that identity (#112)",
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
