"""The one format of a ``--tokens-file`` (mq9-mcp's and the A2A gateway's): a line a person,
``name: sha256-hex-of-token``, ``#`` comments, so the file holds digests and never a token."""

from __future__ import annotations

import hashlib
import re

_LINE = re.compile(r"([A-Za-z0-9][A-Za-z0-9._@-]{0,63})\s*:\s*([0-9a-fA-F]{64})")


def digest_line(name: str, token: str) -> str:
    """The file's line for ``name`` holding ``token``."""
    return f"{name}: {hashlib.sha256(token.encode()).hexdigest()}"


def read_digests(where: str, text: str) -> dict[str, str]:
    """The digests of a file's ``text`` by name; ValueError in one line naming the bad line
    of ``where`` (the file)."""
    names: dict[str, str] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        found = _LINE.fullmatch(line)
        if found is None:
            raise ValueError(
                f"{where}:{number}: expected 'name: sha256-hex-of-token' (a name of letters, "
                "digits, '.', '_', '@' or '-', then 64 hex digits)"
            )
        name, digest = found.groups()
        if name in names:
            raise ValueError(f"{where}:{number}: {name!r} is named twice")
        names[name] = digest.lower()
    return names
