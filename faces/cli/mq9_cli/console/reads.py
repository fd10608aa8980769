"""What every request shares, ``Console``: the settings, the broker client, the depth history
and the counts; and the reads the pages make of the broker through it (a mailbox's figures and
its one count, a page of its messages, the mailboxes page's survey, which mailboxes this console
may open, the calls followed), with the depth sampler that looks at the watched mailboxes
between page views."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse

from mq9_platform.client.client import Mq9Client
from mq9_platform.groups.dead_letters import dead_letter_address
from mq9_wire.protocol import is_valid_address
from mq9_wire.protocol.errors import MailboxNotFound, Mq9Error

from .. import overview
from ..connect import failure
from . import charts
from .audit import AuditLog
from .auth import Gate, Session
from .census import Census, Censuses
from .rendering import environment
from .settings import Settings

log = logging.getLogger("mq9_cli.console")
MAX_MAILBOXES = 100  # shown on the mailboxes page
PAGE = 100  # messages a mailbox's page lists (then a link to the next page)
# A mailbox whose look answered more payload bytes than this is sampled at most this often:
# a dev broker paces large answers (8 MiB/s), and pages wait behind the sampler's looks
HEAVY_BYTES = 1 << 20
HEAVY_SAMPLE_SECONDS = 60.0
MAX_WATCHED = 20  # mailboxes sampled for their depth pictures between page views
# How long a look counts a mailbox on past its QUERY (census.py): a mailbox's page, the list
# (all its rows together), the depth sampler's look at each watched mailbox
PAGE_COUNT_SECONDS = 2.0
LIST_COUNT_SECONDS = 2.0
SAMPLE_COUNT_SECONDS = 2.0
# A text search's click: it reads pages for up to this long, and at most this
# many (each a page of the mailbox): 100,000 short messages are looked through in a click or
# two, not a hundred
SEARCH_SECONDS = 3.0
SEARCH_PAGES = 2_000
# How long a look that found whether this console may read a mailbox holds (the agents page's
# links): a credential's rights change rarely, a page view should not cost a QUERY a card
ACCESS_SECONDS = 30.0
MAX_ACCESS = 1000  # mailboxes whose access is remembered (then forgotten all at once)


class Console:
    """What every request shares: the settings, the broker client, the depth history."""

    def __init__(
        self,
        connect: Callable[[], Mq9Client],
        settings: Settings,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connect = connect
        self.settings = settings
        self.gate = Gate(settings.token, settings.other_secrets, clock)
        self.history = charts.DepthHistory(clock)
        self.censuses = Censuses(clock)
        self.client: Mq9Client | None = None
        self.streams = 0
        self.watched: dict[str, None] = dict.fromkeys(settings.mailboxes[:MAX_WATCHED])
        self.audit = AuditLog(settings.audit_log, clock)
        self.clock = clock
        # when each mailbox was last looked at, and its answer's payload bytes
        self.weight: dict[str, tuple[float, int]] = {}
        # whether this console may open each mailbox's page, and since when it is known
        self.access: dict[str, tuple[float, bool]] = {}
        # Reads that answer payloads (up to 30 MiB each) take turns: a page's read and the
        # depth sampler's would otherwise wait behind each other at the broker's pace, which
        # refuses a requester more than it may have waiting (HTTP 400 on a large mailbox)
        self.reading = asyncio.Lock()
        self.env = environment()  # every value a page shows escaped (rendering.py)

    @property
    def broker(self) -> Mq9Client:
        assert self.client is not None, "the console's client opens with the application"
        return self.client

    def page(
        self, request: Request, template: str, status: int = 200, **values: Any
    ) -> HTMLResponse:
        session: Session | None = request.scope.get("mq9_session")
        notice = session.notice if session is not None else None
        if session is not None:
            session.notice = None
        html = self.env.get_template(template).render(
            settings=self.settings,
            csrf=session.csrf if session else "",
            notice=notice,
            unanswered=overview.UNANSWERED,
            **values,
        )
        return HTMLResponse(html, status)

    async def figures(
        self, address: str, count_for: float = 0.0, pages: int = 0
    ) -> overview.MailboxFigures:
        """``address``'s figures: its QUERY's, and past it the mailbox's count (``census``),
        counted on first for ``pages`` pages and then up to ``count_for`` seconds: the one
        count every page, picture and live row shows."""
        async with self.reading:
            found = await overview.figures(self.broker, address)
        self.weight[address] = (self.clock(), sum(len(m.payload) for m in found.messages))
        self._known_access(address, found.exists and found.refused is None)
        if not (found.exists and found.refused is None):
            self.censuses.forget(address)
            return found
        async with self.reading:
            if found.capped:  # more than its QUERY holds: the count, as far as it went
                count = await self.censuses.count(
                    self.broker, address, count_for, pages=pages, seed=list(found.messages)
                )
                found = counted(found, count)
            else:  # whole in its QUERY: the broker's count, for what no read shows
                told = await self.censuses.told(self.broker, address, seed=list(found.messages))
                found = found if told is None else scheduled(found, told)
        self.history.add(address, found.total, found.lower_bound)
        return found

    async def page_of(self, address: str, **search: Any) -> overview.Page:
        """A page of ``address``'s messages; a text search looks through as many pages as
        ``SEARCH_SECONDS`` reach (at most ``SEARCH_PAGES``), so a click goes far."""
        loop = asyncio.get_running_loop()
        until = loop.time() + SEARCH_SECONDS
        async with self.reading:
            return await overview.search(
                self.broker,
                address,
                limit=PAGE,
                scan=SEARCH_PAGES,
                until=until,
                clock=loop.time,
                **search,
            )

    async def mailboxes(self) -> list[str]:
        """The mailboxes this console knows: those named and the agents' (mq9 lists none:
        ``overview.UNANSWERED``); ``survey`` adds the dead-letter mailbox of each it may read."""
        found = await overview.operate(self.broker, "agent_discover", {"query": ""})
        named = [*self.settings.mailboxes, *(a.get("mailbox") for a in found["agents"])]
        known = [a for a in dict.fromkeys(named) if isinstance(a, str) and is_valid_address(a)]
        return known[: MAX_MAILBOXES * 2]

    async def survey(self) -> tuple[list[MailboxRow], list[overview.MailboxFigures]]:
        """The mailboxes page: each known mailbox this console may read, its dead letters
        beside it (their mailbox a row of its own once it exists), and apart, those another
        agent owns (a tenant sees its own, dead letters included; another tenant's are
        never links, and their dead letters are not looked at: they are that tenant's too)."""
        own: list[MailboxRow] = []
        others: list[overview.MailboxFigures] = []
        known = await self.mailboxes()
        seen: set[str] = set()
        loop = asyncio.get_running_loop()
        until = loop.time() + LIST_COUNT_SECONDS  # the rows' counts share it
        for address in known:
            if address in seen:
                continue  # a dead-letter mailbox named too: shown beside its mailbox
            found = await self.figures(address, max(until - loop.time(), 0.0))
            if found.refused is not None:
                others.append(found)
            elif found.exists and len(own) < MAX_MAILBOXES:
                dead = await self._dead_letters_of(address)
                own.append(MailboxRow(found, dead))
                if dead is not None and dead.exists and dead.refused is None:
                    own.append(MailboxRow(dead, None))
                    seen.add(dead.address)
        return own, others

    async def _dead_letters_of(self, address: str) -> overview.MailboxFigures | None:
        """The figures of ``address``'s dead-letter mailbox (None: it is one itself)."""
        dlq = dead_letter_address(address)
        if address.endswith(".dlq") or not is_valid_address(dlq):
            return None
        return await self.figures(dlq, 0.0)

    async def may_open(self, addresses: list[str]) -> dict[str, bool]:
        """Whether this console may open each mailbox's page: every one on a broker it logs in
        to without a credential of its own (an open broker refuses no reader), else what a
        one-message QUERY of each answered (remembered ``ACCESS_SECONDS``): the agents page
        links only those, as another tenant's page opens on a refusal."""
        if self.broker.principal is None:
            return dict.fromkeys(addresses, True)
        now = self.clock()
        for address in dict.fromkeys(addresses):
            known = self.access.get(address)
            if known is not None and now - known[0] < ACCESS_SECONDS:
                continue
            try:
                await self.broker.query(address, limit=1)
                self._known_access(address, True)
            except MailboxNotFound:
                self._known_access(address, False)
            except Mq9Error as exc:
                if overview.refusal(exc) is None:
                    raise
                self._known_access(address, False)
        return {a: self.access[a][1] for a in addresses}

    def _known_access(self, address: str, readable: bool) -> None:
        if len(self.access) >= MAX_ACCESS:
            self.access.clear()
        self.access[address] = (self.clock(), readable)

    async def calls(self) -> list[dict[str, Any]]:
        """Each reply mailbox this console follows (``--calls``), with its calls."""
        callers = []
        for reply in self.settings.reply_mailboxes:
            policy = overview.person_policy(reply_mailbox=reply)
            found = await overview.operate(self.broker, "list_calls", {}, policy)
            callers.append({"reply": reply, "calls": found["calls"]})
        return callers

    async def check_call(self, reply: str, task_id: str) -> dict[str, Any]:
        """The call ``task_id`` made from ``reply``, as the catalog's ``check_call`` shows it."""
        policy = overview.person_policy(reply_mailbox=reply)
        return await overview.operate(self.broker, "check_call", {"task_id": task_id}, policy)

    def watch(self, address: str) -> None:
        """Sample ``address`` from now on (the ``MAX_WATCHED`` last opened are)."""
        self.watched.pop(address, None)
        self.watched[address] = None
        while len(self.watched) > MAX_WATCHED:
            del self.watched[next(iter(self.watched))]

    async def sample(self) -> None:
        """Look at the mailboxes watched now and then: the depth pictures' points (a QUERY
        each, up to an answer's worth of payloads: so only those, not every one known)."""
        while True:
            await asyncio.sleep(self.settings.sample_seconds)
            for address in list(self.watched):
                looked, weight = self.weight.get(address, (0.0, 0))
                if weight > HEAVY_BYTES and self.clock() - looked < HEAVY_SAMPLE_SECONDS:
                    continue  # a look at it costs the broker's pace seconds: less often
                try:
                    await self.figures(address, SAMPLE_COUNT_SECONDS)
                except Exception as exc:  # a point missed; the pages say what is wrong
                    log.debug("no depth sample of %s: %s", address, failure(exc))


def counted(found: overview.MailboxFigures, count: Census) -> overview.MailboxFigures:
    """``found`` (a QUERY's figures) with the mailbox's count in place of the QUERY's."""
    tally = count.tally
    ttls = min(tally.ttls, default=None)
    ids = [i for i in (tally.newest_id, found.newest_id) if i is not None]
    found = dataclasses.replace(
        found,
        counts=dict(tally.counts),
        lower_bound=not count.exact,
        why=count.why(),
        counted_at=count.done_at,
        oldest=tally.oldest if tally.oldest is not None else found.oldest,
        newest_id=max(ids, default=None),
        message_ttl=ttls if ttls is not None else found.message_ttl,
    )
    return scheduled(found, count)


def scheduled(found: overview.MailboxFigures, count: Census) -> overview.MailboxFigures:
    """``found`` with the delayed messages its broker's count told of (None: not
    told), and when the soonest is due."""
    return dataclasses.replace(
        found,
        scheduled=count.scheduled,
        next_due=count.next_due if count.scheduled else None,
    )


@dataclass(frozen=True)
class MailboxRow:
    """A row of the mailboxes page: a mailbox this console may read, and its dead-letter
    mailbox's figures (None: the row is a dead-letter mailbox itself)."""

    figures: overview.MailboxFigures
    dead: overview.MailboxFigures | None
