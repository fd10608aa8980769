"""How a value shows on a page: the templates' Jinja2 environment, every value escaped, and
what another agent wrote (a name, a payload, a reason) shown with its control characters and
bidirectional overrides as escapes (``\\u202e``), as the command line prints them."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader
from markupsafe import Markup

from .. import overview
from ..render import printable, when

HERE = Path(__file__).parent
PREVIEW_CHARS = 2000  # of a payload in a list; the message's own page shows more


def environment() -> Environment:
    """The templates' environment: every value goes through ``shown`` before Jinja2 escapes
    its HTML."""
    env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=True, finalize=shown)
    env.filters["when"] = when
    env.filters["pretty"] = overview.pretty
    env.filters["path"] = lambda text: quote(str(text), safe="")
    env.filters["preview"] = preview
    return env


def shown(value: Any) -> Any:
    """A value as a page shows it: text with its control characters escaped (markup the
    templates made, such as ``tojson``'s, too: the escapes are plain text in it)."""
    if isinstance(value, Markup):
        return Markup(printable(str(value)))
    if isinstance(value, str):
        return printable(value)
    return value


def shown_text(value: Any) -> Any:
    return printable(value) if isinstance(value, str) else value


def preview(text: str) -> dict[str, Any]:
    return {"text": text[:PREVIEW_CHARS], "more": max(0, len(text) - PREVIEW_CHARS)}
