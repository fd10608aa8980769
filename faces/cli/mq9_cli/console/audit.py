"""Who did what through the console: each write (a delete, an ack, a message set aside, a
replay, a call answered or cancelled) with when, who (how the session was opened, and from
where) and what it touched; an answer keeps the question it answered, which the call's own
record drops once the call goes on. Kept in memory (the newest ``KEPT``), shown on the Log
page, and, given ``--audit-log FILE``, appended there as JSON lines and read back at start."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("mq9_cli.console.audit")
KEPT = 1000


@dataclass(frozen=True)
class Entry:
    time: float
    who: str
    action: str
    target: str
    detail: dict[str, Any] = field(default_factory=dict)


class AuditLog:
    def __init__(self, path: str | None = None, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path) if path else None
        self.clock = clock
        self._entries: deque[Entry] = deque(maxlen=KEPT)
        if self.path is not None and self.path.exists():
            self._load(self.path)

    def _load(self, path: Path) -> None:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                try:
                    self._entries.append(Entry(**json.loads(line)))
                except (TypeError, ValueError):  # a torn last line: the rest still count
                    log.warning("%s line %d is no audit entry: skipped", path, number)

    def add(self, who: str, action: str, target: str, **detail: Any) -> Entry:
        entry = Entry(self.clock(), who, action, target, detail)
        self._entries.append(entry)
        log.info("%s: %s %s %s", who, action, target, detail)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as out:
                out.write(json.dumps(asdict(entry)) + "\n")
        return entry

    def entries(self, *, action: str | None = None, target: str | None = None) -> list[Entry]:
        """Newest first."""
        return [
            e
            for e in reversed(self._entries)
            if (action is None or e.action == action) and (target is None or e.target == target)
        ]
