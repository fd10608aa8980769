"""``mq9-a2a-gateway --tokens-file``: the tenants, in the format of ``mq9-mcp --tokens-file``.

One ``name: sha256-of-token`` line a tenant (``#`` comments and blank lines ignored), so the
file holds digests only and a leaked copy names no token::

    app: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

A file of the gateway's former format, JSON of raw tokens (``{"app": "<token>"}``), is still
read for one release, with a one-line warning saying what to write instead.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from ..._http.tokens_file import read_digests
from .app import Tenants

DEPRECATED_JSON = (
    "mq9-a2a-gateway: warning: {path} holds raw tokens as JSON, read for this release only: "
    "write a 'name: sha256-of-token' line a tenant instead, as mq9-mcp's (docs/a2a.md)"
)


def read_tenants(path: str, *, scheme: str) -> Tenants:
    """The tenants of the file at ``path``; ValueError in one line naming what is wrong."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read the tokens file: {exc}") from None
    if text.lstrip().startswith("{"):
        tenants = Tenants(_raw_tokens(path, text), scheme=scheme)  # a bad one: its line alone
        print(DEPRECATED_JSON.format(path=path), file=sys.stderr, flush=True)
        return tenants
    return Tenants.from_digests(read_digests(path, text), scheme=scheme)


def _raw_tokens(path: str, text: str) -> dict[str, str]:
    try:
        found: Any = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None
    if not isinstance(found, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in found.items()
    ):
        raise ValueError(f'{path}: the JSON form is {{"<tenant>": "<token>", ...}}')
    return found
