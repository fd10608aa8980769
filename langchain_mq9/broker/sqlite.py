"""What a SQLite failure of the bundled broker's store means, read by its code."""

from __future__ import annotations

import sqlite3


def sqlite_busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused because another process holds the database (locked/busy)."""
    return _sqlite_code(exc, ("SQLITE_BUSY", "SQLITE_LOCKED"), "locked")


def sqlite_readonly(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused to write a database it may only read."""
    return _sqlite_code(exc, ("SQLITE_READONLY",), "readonly")


def _sqlite_code(exc: sqlite3.Error, names: tuple[str, ...], words: str) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is None:  # Python 3.10: its words are all there is
        return words in str(exc)
    return any(code & 0xFF == getattr(sqlite3, name) for name in names)
