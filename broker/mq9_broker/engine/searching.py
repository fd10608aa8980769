"""The registry as an engine lists and ranks it: the store's registrations and search-index
rows (``MailboxStore.agents``, ``index_rows``), brought up to date before each DISCOVER by what
changed since the last one, each card embedded once. Everything here runs on the worker thread
(worker.py), one DISCOVER after another, so it needs no lock: the loop only reads the rows.

RobustMQ's search index has a row per *card* name, which a registration of another name may
write (state/registry.py); the rows are applied in the order the store gives them, which is
the order they were written, so a search ranks ties as RobustMQ's does."""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from mq9_wire import protocol as p
from mq9_wire.protocol.errors import Mq9Error
from mq9_wire.semantic.ranking import AgentEntry

from ..state.registry import AgentRegistry
from ..storage.mailbox_store import AgentRow
from . import answers, bodies
from .worker import paced_words


class SearchIndex:
    """What the last look found in the store, as an ``AgentRegistry`` (``ranker``: its
    ``embedder`` and ``hybrid`` choose how a search ranks): this engine's own REGISTERs and
    UNREGISTERs applied as they are done, every broker's found by the next DISCOVER."""

    def __init__(self) -> None:
        self.ranker = AgentRegistry()
        self._rows: dict[str, AgentRow] = {}  # registration name -> the row it was made of
        self._by_card: dict[str, AgentRow] = {}  # card name -> the index row it was put from
        # The last listing answered, for the registry changes and answer limit it was made for
        self._listed: tuple[int, int | None, bytes] | None = None
        # Entries embedded by this engine's REGISTERs, until their rows are taken
        self._made: OrderedDict[AgentRow, AgentEntry] = OrderedDict()

    def embed(self, entry: AgentEntry) -> None:
        """Give a registration's card its vector before it is stored (the CPU-heavy part), so
        that the model's failure is that REGISTER's answer, and its card is not embedded
        again when its row is taken."""
        self.ranker.embed(entry)
        row = entry.row
        self._made[row] = entry
        self._made.move_to_end(row)
        while len(self._made) > _MADE_KEPT:
            self._made.popitem(last=False)

    def registered(self, entry: AgentEntry, indexed: bool) -> None:
        """This engine's REGISTER of ``entry`` kept (``indexed``: its card's row written)."""
        row = entry.row
        self._made.pop(row, None)
        self._take_row(entry.name, row, entry)
        if indexed:
            self._put(row, entry)

    def unregistered(self, name: str) -> None:
        """This engine's UNREGISTER of ``name`` done: the registration and the index row
        named ``name`` gone (RobustMQ's, whatever card the registration held)."""
        if self._rows.pop(name, None) is not None:
            self.ranker.unregister(name, index=False)
        if self._by_card.pop(name, None) is not None:
            self.ranker.drop_index(name)

    def answer(
        self,
        request: dict[str, Any],
        rows: list[AgentRow],
        index_rows: list[AgentRow],
        limits: tuple[bool, int | None, int],
    ) -> bytes:
        """A DISCOVER's answer over ``rows`` and ``index_rows`` as the store holds them now.
        ``limits``: whether this broker searches, the answer limit, a message's limit."""
        search, answer_limit, message_limit = limits
        if not (request["semantic"] or request["text"]):
            self._take_rows(rows)
            return self._listing(answer_limit)
        if not search:
            raise Mq9Error(p.ERR_SEARCH_NOT_BUILT)
        self._take_index(index_rows)
        ranker = self.ranker
        indexed = ranker.indexed()
        if request["semantic"]:
            hits = ranker.search_semantic(request["semantic"], indexed)
        else:
            hits = ranker.search_words(paced_words(request["text"]), indexed)
        return answers.search_answer(hits[bodies.search_page(request)], message_limit)

    def _take_rows(self, rows: list[AgentRow]) -> None:
        """The registrations as ``rows`` hold them: an entry made only for a row not seen."""
        now = {row[0]: row for row in rows}
        for gone in self._rows.keys() - now.keys():
            del self._rows[gone]
            self.ranker.unregister(gone, index=False)
        for name, row in now.items():
            if self._rows.get(name) != row:
                self._take_row(name, row, self._entry(row))

    def _take_row(self, name: str, row: AgentRow, entry: AgentEntry) -> None:
        if name in self._rows:
            self.ranker.unregister(name, index=False)
        self.ranker.register(entry, index=False)
        self._rows[name] = row

    def _take_index(self, index_rows: list[AgentRow]) -> None:
        """The search index as ``index_rows`` hold it, in their order; each card new since
        the last look embedded (once) as it is put."""
        now = set(index_rows)
        for card_name, row in list(self._by_card.items()):
            if row not in now:
                del self._by_card[card_name]
                self.ranker.drop_index(card_name)
        held = set(self._by_card.values())
        for row in index_rows:
            if row not in held:
                entry = self.ranker.entries.get(row[0])
                self._put(row, entry if entry is not None and entry.row == row else None)

    def _put(self, row: AgentRow, entry: AgentEntry | None) -> None:
        entry = entry if entry is not None else self._entry(row)
        self.ranker.put_index(entry)
        self._by_card[entry.card_name] = row

    def _entry(self, row: AgentRow) -> AgentEntry:
        made = self._made.pop(row, None)
        return made if made is not None else AgentEntry.make(*row)

    def _listing(self, limit: int | None) -> bytes:
        """Every agent in one answer by name, as RobustMQ answers; never cut (a cut list
        would hide agents, and let a taken name look free), but refused when too large for an
        answer (our choice: RobustMQ sends it whatever its size). Kept until the registry
        changes: a client listing 1,000 agents back to back had the worker join 2 MB each time."""
        ranker, kept = self.ranker, self._listed
        if kept is not None and kept[:2] == (ranker.changes, limit):
            return kept[2]
        answer = answers.listing_answer(ranker.listing(), ranker.listed, limit)
        self._listed = (ranker.changes, limit, answer)
        return answer


_MADE_KEPT = 1024  # registrations embedded here and not yet seen by a DISCOVER, at most
