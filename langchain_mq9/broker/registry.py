"""The agent registry: cards stored as sent, found by keywords or by approximate meaning.

Semantic search here is an approximation (our choice, documented in the README): RobustMQ ranks
by embeddings; the bundled broker ranks by lexical similarity. Every string in a card is split
into words, each word is reduced to a crude stem (``translate``, ``translation`` and
``translator`` all become ``transl``), common English words are dropped, and agents are scored
by the stems they share with the query, each shared stem weighted by its rarity across the
registry (inverse document frequency) and the score divided by the square root of the card's
stem count, so a short focused card beats a long one that mentions everything. Agents sharing
no stem with the query are not returned. An inverted index keeps a query's cost proportional
to the agents that share a stem with it, not to the registry's size.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

_WORD = re.compile(r"[a-z0-9]+")
_SUFFIXES = (  # longest first where one ends another ("ating" before "ing" and "ate")
    "ization",
    "ations",
    "ation",
    "ators",
    "ator",
    "ating",
    "ated",
    "izing",
    "ized",
    "ings",
    "ing",
    "ions",
    "ion",
    "izes",
    "ize",
    "ers",
    "er",
    "ies",
    "ied",
    "ates",
    "ate",
    "ed",
    "es",
    "ly",
    "s",
    "y",
    "e",
)
_STOPWORDS = frozenset(
    [
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "by",
        "can",
        "do",
        "for",
        "from",
        "i",
        "in",
        "into",
        "is",
        "it",
        "me",
        "my",
        "of",
        "on",
        "or",
        "our",
        "please",
        "that",
        "the",
        "this",
        "to",
        "us",
        "we",
        "with",
        "you",
        "your",
    ]
)


def strings_in(value: Any) -> Iterator[str]:
    """Every string inside a JSON value (keys excluded), depth first."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from strings_in(item)
    elif isinstance(value, list):
        for item in value:
            yield from strings_in(item)


def stem(word: str) -> str:
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 4:
            return word[: -len(suffix)]
    return word


def stems(text: str) -> set[str]:
    return {stem(w) for w in _WORD.findall(text.lower()) if w not in _STOPWORDS}


@dataclass(slots=True)
class AgentEntry:
    seq: int
    card: dict[str, Any]
    text: str  # all of the card's strings, lowercased, for keyword search
    stems: set[str]
    report: dict[str, Any] | None = None
    report_time: int | None = None

    def view(self) -> dict[str, Any]:
        """The card as registered, plus the latest merged report if any."""
        if self.report is None:
            return self.card
        return {**self.card, "report": self.report, "report_time": self.report_time}


@dataclass
class AgentRegistry:
    entries: dict[int, AgentEntry] = field(default_factory=dict)  # insertion = registration order
    by_mailbox: dict[str, int] = field(default_factory=dict)
    by_name: dict[str, int] = field(default_factory=dict)
    postings: dict[str, set[int]] = field(default_factory=lambda: defaultdict(set))
    _next_seq: int = 0

    def __len__(self) -> int:
        return len(self.entries)

    def find(self, mailbox: str | None, name: str | None) -> AgentEntry | None:
        seq = self.by_mailbox.get(mailbox) if mailbox else None
        if seq is None and name:
            seq = self.by_name.get(name)
        return self.entries.get(seq) if seq is not None else None

    def register(self, card: dict[str, Any]) -> None:
        """Store ``card``; one with the same mailbox (or the same name) is replaced in place."""
        mailbox = card["mailbox"]
        name = card.get("name") if isinstance(card.get("name"), str) else None
        replaced = [
            seq
            for seq in (self.by_mailbox.get(mailbox), self.by_name.get(name) if name else None)
            if seq is not None
        ]
        text = " ".join(strings_in(card)).lower()
        if replaced:
            seq = replaced[0]
            for old in dict.fromkeys(replaced):
                self._forget(old, keep_slot=old == seq)
        else:
            seq = self._next_seq
            self._next_seq += 1
            self.entries[seq] = None  # type: ignore[assignment]  # reserve the position
        entry = AgentEntry(seq, card, text, stems(text))
        self.entries[seq] = entry
        self.by_mailbox[mailbox] = seq
        if name:
            self.by_name[name] = seq
        for s in entry.stems:
            self.postings[s].add(seq)

    def unregister(self, mailbox: str | None, name: str | None) -> bool:
        entry = self.find(mailbox, name)
        if entry is None:
            return False
        self._forget(entry.seq, keep_slot=False)
        return True

    def _forget(self, seq: int, *, keep_slot: bool) -> None:
        entry = self.entries[seq]
        if self.by_mailbox.get(entry.card["mailbox"]) == seq:
            del self.by_mailbox[entry.card["mailbox"]]
        name = entry.card.get("name")
        if isinstance(name, str) and self.by_name.get(name) == seq:
            del self.by_name[name]
        for s in entry.stems:
            posting = self.postings[s]
            posting.discard(seq)
            if not posting:
                del self.postings[s]
        if not keep_slot:
            del self.entries[seq]

    def search_text(self, text: str) -> list[AgentEntry]:
        words = text.lower().split()
        return [e for e in self.entries.values() if all(w in e.text for w in words)]

    def search_semantic(self, query: str) -> list[AgentEntry]:
        total = len(self.entries)
        scores: dict[int, float] = defaultdict(float)
        for s in stems(query):
            posting = self.postings.get(s)
            if not posting:
                continue
            idf = math.log(1 + total / len(posting))
            for seq in posting:
                scores[seq] += idf * idf
        ranked = sorted(
            scores.items(),
            key=lambda item: (-item[1] / math.sqrt(len(self.entries[item[0]].stems)), item[0]),
        )
        return [self.entries[seq] for seq, _ in ranked]
