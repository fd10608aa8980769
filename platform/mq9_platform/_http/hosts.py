"""Which HTTP hosts an A2A card import or a call out may reach: the operator's allow-list.

A card's URL is written by whoever registered or served it, so it may point inside the network
(127.0.0.1, 169.254.169.254, 10.0.0.0/8, ...). Nothing goes out unless the allow-list lets it:

- ``MQ9_A2A_ALLOW_HOSTS`` (or ``HostPolicy(allow=...)``): comma-separated entries, each a host
  name (``agents.example.com``), a suffix (``*.example.com``), an address or a network
  (``10.1.0.0/16``), or ``*`` for any host whose every address is public;
- a host that resolves to a private, loopback, link-local or otherwise non-public address is
  refused unless an entry names it or a network holding it (``*`` is not enough).

The package's one SSRF guard does the checking (``_http/ssrf.py``): every request is
checked and sent to the address checked (``pinned_transport``), so a card that was fine when
imported cannot send a later call elsewhere, nor can a DNS answer that changes between the
check and the connection.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from . import ssrf
from .ssrf import Address, HostRefused, pinned_transport

ENV = "MQ9_A2A_ALLOW_HOSTS"

__all__ = ["ENV", "Address", "HostPolicy", "HostRefused", "pinned_transport"]


class HostPolicy(ssrf.HostPolicy):
    """The A2A allow-list (see the module's text). Empty: no HTTP A2A traffic at all."""

    def __init__(self, allow: Iterable[str] = (), *, resolve: ssrf.Resolve | None = None):
        super().__init__(allow, knob=ENV, trust_names=True, resolve=resolve)

    @classmethod
    def from_env(cls, extra: Iterable[str] = ()) -> HostPolicy:
        return cls([*os.environ.get(ENV, "").split(","), *extra])
