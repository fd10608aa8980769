"""Which receiver a rule wakes, as the operator's ceilings count it (docs/wake.md, "The
operator's ceilings"). A rule is data its writer spells as it likes, and each spelling of one
URL used to be a receiver of its own (``HTTP://``, a ``?``, a ``#x``, a port ``:0PORT``: seven
rules, seven ceilings, seven times the POSTs the operator allowed). So a URL is normalised
once, here, and that key is what every ceiling counts by:

- the scheme lower-cased; the host as the allow-list judges it, by one function
  (``canonical_host`` in ``_http/ssrf.py``): percent escapes decoded, case and a
  trailing ``.`` dropped, a name in its IDNA (ASCII) form, an address in one spelling
  whichever a resolver reads (``127.1``, ``2130706433``, ``0x7f000001``, ``0177.0.0.1``,
  ``::ffff:127.0.0.1`` are all ``127.0.0.1``; IPv6 expanded or zero-padded in its short form);
- the port always explicit (80 for http, 443 for https), read as a number (``:0080`` is 80);
- the user and password dropped (the same server answers);
- the fragment dropped, always (it never leaves the client);
- the path and the query as the operator's policy says (``KEYS``): ``origin`` (the default)
  keys by scheme, host and port alone, since a server that ignores its path or query is one
  receiver however a rule writer varies them; ``path`` adds the path (empty is ``/``, dot
  segments removed, percent escapes in one case, unreserved characters decoded); ``query``
  adds the query too (normalised alike, an empty one dropped), for receivers that truly differ
  by it, at the cost that a rule writer mints a new receiver with every query.

A name is counted by the addresses it resolves to (``receiver_keys``: the waker resolves it
through its allow-list and connects to those addresses only, ``deliver.py``), so one receiver
under many names is one receiver; ``receiver_key`` alone keys the name as written. Pure: no
I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from functools import lru_cache
from urllib.parse import urlsplit

from .._http.ssrf import canonical_host, literal

KEYS = ("origin", "path", "query")  # what distinguishes two receivers beside the origin
DEFAULT_KEY = "origin"
DEFAULT_PORTS = {"http": 80, "https": 443}
# Every URL no key can be made of counts as this one receiver: a spelling that cannot be
# parsed (a port out of range, a broken IPv6 literal) buys no ceiling of its own
UNPARSABLE = "unparsable-url"
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")


def receiver_key(url: str, keep: str = DEFAULT_KEY) -> str:
    """The receiver ``url`` names, as the ceilings count it (the module's docstring); raises
    ``ValueError`` for a URL with no http(s) scheme, no host or a port that is no port."""
    scheme, host, port, rest = _parts(url, keep)
    return _key(scheme, host, port, rest)


def receiver_keys(url: str, keep: str = DEFAULT_KEY, addresses: Iterable[str] = ()) -> list[str]:
    """The receivers a wake to ``url`` may reach: one key per address its name resolved to
    (``addresses``, each as ``canonical_host`` writes it), else ``url``'s own key. A name
    is counted by its addresses (docs/wake.md): many names for one receiver are one."""
    scheme, host, port, rest = _parts(url, keep)
    found = sorted({canonical_host(a) for a in addresses}) or [host]
    return [_key(scheme, one, port, rest) for one in found]


@lru_cache(maxsize=65_536)  # asked at every wake; a waker's rules name few URLs
def key_or_unparsable(url: str, keep: str = DEFAULT_KEY) -> str:
    try:
        return receiver_key(url, keep)
    except ValueError:
        return UNPARSABLE


def _parts(url: str, keep: str) -> tuple[str, str, int, str]:
    """Scheme, host (``canonical_host``), port and what ``keep`` adds of ``url``."""
    if keep not in KEYS:
        raise ValueError(f"receiver key {keep!r}: one of {', '.join(KEYS)}")
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is no http:// or https:// URL with a host")
    port = parts.port  # a number: ":0080" is 80; ValueError when out of range
    host = canonical_host(parts.hostname)
    if not host or "/" in host or (":" in host and literal(host) is None):
        raise ValueError(f"{url!r}: its host {parts.hostname!r} is no host")
    rest = ""
    if keep != "origin":
        rest = _dots(_escapes(parts.path) or "/")
        query = _escapes(parts.query)
        if keep == "query" and query:
            rest += "?" + query
    return scheme, host, port or DEFAULT_PORTS[scheme], rest


def _key(scheme: str, host: str, port: int, rest: str) -> str:
    if ":" in host:  # an IPv6 address, bracketed as in a URL
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}{rest}"


def _escapes(text: str) -> str:
    """Percent escapes in one form: an unreserved character decoded, any other upper-cased."""

    def one(match: re.Match[str]) -> str:
        char = chr(int(match[1], 16))
        return char if char in _UNRESERVED else "%" + match[1].upper()

    return _ESCAPE.sub(one, text)


def _dots(path: str) -> str:
    """``path`` with its ``.`` and ``..`` segments removed (RFC 3986, 5.2.4)."""
    if not path.startswith("/"):
        path = "/" + path
    segments = path.split("/")[1:]
    kept: list[str] = []
    for n, segment in enumerate(segments):
        last = n == len(segments) - 1
        if segment in (".", ".."):
            if segment == ".." and kept:
                kept.pop()
            if last:
                kept.append("")  # "/a/." is "/a/": the directory
        else:
            kept.append(segment)
    return "/" + "/".join(kept)
