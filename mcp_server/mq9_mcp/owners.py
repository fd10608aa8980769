"""Who is asking: the owner of every task, question, watch, listen stream and group reader.

Over stdio the process is the one client (owner ``""``). Over HTTP a client is what the
sessions' fair share counts (``client_identity``: the peer's address and a digest of the
credentials it gave) together with the worker name it sends in the ``Mq9-Worker`` header (none:
the server's ``--worker``, or the group's one reader). A stateless request (MCP 2026-07-28, or
a 2025 client opening a session per call) has the same owner as its client's other requests, so
it fetches in one request and acks in another. What one owner made, another never sees: its
``tasks/*`` answer as for an id that never existed (docs/mcp.md).

Worker names cost nothing to make up, so the bounds hold per client as well (``client_of``):
the worker names of one client share its slice of tasks and listen streams, and when every
remembered owner holds work, a client holding fewer than the one holding the most takes that
one's least recently used owner: one peer inventing names cannot lock out a client never seen.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections import Counter, OrderedDict
from typing import Any

from mcp.server.auth.provider import AccessToken, principal_components
from starlette.datastructures import Headers
from starlette.types import Scope

from mq9_platform.client.key_shares import KeyShares, KeysRefused, callers_total
from mq9_platform.client.scoped_keys import caller_key
from mq9_platform.operations.catalog import OperationError, ToolPolicy

from .http.tokens_file import ISSUER as TOKENS_FILE_ISSUER

log = logging.getLogger("mq9_mcp")

# A worker name an HTTP client may send (docs/mcp.md): which competing worker of a consumer group
# it reads as, and whose fetched messages it may ack.
WORKER_HEADER = "mq9-worker"
_WORKER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# The owners (client and worker name) remembered at once. Past this the least recently used
# one holding nothing (no message handed out and not acked, no mailbox it created, no agent
# call) is forgotten; when every one holds something, the client holding the most owners gives
# its least recently used one up to a client holding fewer (``ClientPolicies``), and only a
# client holding as many as any other is refused.
MAX_WORKERS = 256
# The idempotency keys one HTTP client's tool calls may hold at once (the broker holds a
# key 600 s, and mq9-mcp's one identity at most 10,000): a tenth of the callers' part of the
# identity's bound, so nine clients filling theirs still leave room for others. A stdio server
# has one client, which gets the whole part (``callers_total``).
KEYS_PER_CLIENT = 900
# What a keyed tool call stores under its key at the broker: a message (send_message), a call's
# record and its request (call_agent), an answer (answer_call)
KEYS_A_CALL = {"send_message": 1, "call_agent": 2, "answer_call": 1}
# The part of the server's keys the principals who cost nothing to make hold together: an
# identity provider's principals (open registration makes one for anyone) acting as this
# server's own identity. Their flood refuses only them: the rest stays for the principals the
# operator named (a tokens file's, the static token's clients).
FREE_KEYS_PART = 0.5
FREE_PRINCIPALS = "principals without a broker credential of their own"
# The one principal every holder of the static --auth-token is (http/auth.py's PRINCIPAL):
# it tells no one apart, so the address does
SHARED_PRINCIPAL = "mq9-mcp"


def normalized_credentials(authorization: str) -> str:
    """The Authorization header as the token check reads it: the scheme's case and the spaces
    around the credentials do not make ``Bearer T`` another client than ``bearer  T``."""
    scheme, _, credentials = authorization.strip().partition(" ")
    return f"{scheme.lower()} {credentials.strip()}"


def client_identity(scope: Scope) -> str:
    """Who is connecting (the sessions' fair share counts clients so): with a checked token
    naming a principal of its own (an OAuth access token, a tokens file's line) that
    principal, its issuer, subject and client (``principal_components``), wherever it
    connects from; else (no token, or the one static token every holder shares) the peer's
    address and a digest of the credentials it gave."""
    principal = principal_of(scope)
    if principal is not None:
        return principal
    peer = scope.get("client") or ("", 0)
    credentials = normalized_credentials(Headers(scope=scope).get("authorization", ""))
    return f"{peer[0]} {hashlib.sha256(credentials.encode()).hexdigest()[:12]}"


def principal_of(scope: Scope) -> str | None:
    """``principal <digest of issuer, subject, client>`` of the token the SDK's bearer auth
    checked for this request (``scope["user"]``); None without one, or for the static token's
    one shared principal (``http.auth.PRINCIPAL``). A digest: the owner names stay one word
    pair (``client_of``) whatever a subject holds."""
    token = getattr(scope.get("user"), "access_token", None)
    if not isinstance(token, AccessToken):
        return None
    client, issuer, subject = principal_components(token)
    if issuer is None and subject is None and client == SHARED_PRINCIPAL:
        return None
    named = json.dumps([issuer, subject, client])
    return f"principal {hashlib.sha256(named.encode()).hexdigest()[:24]}"


def is_free(scope: Scope) -> bool:
    """Whether the request's principal costs nothing to make: an identity provider's (any
    issuer but a tokens file's; open registration makes a client for anyone, and each client
    of one account is another principal). The operator named the others: a tokens file's
    principal, the static token's one."""
    token = getattr(scope.get("user"), "access_token", None)
    if not isinstance(token, AccessToken):
        return False
    _client, issuer, subject = principal_components(token)
    return subject is not None and issuer != TOKENS_FILE_ISSUER


def client_of(owner: str) -> str:
    """The client of an owner (``ClientPolicies.owner_of``: the client's identity, then its
    worker name): the one whose slice the owner's tasks and streams count in. An owner named
    without a worker (stdio's ``""``) is its own client."""
    client, separator, _worker = owner.rpartition(" ")
    return client if separator else owner


def holds_work(policy: ToolPolicy) -> bool:
    """Whether forgetting ``policy`` would lose something of its client's: messages handed out
    and not acked, mailboxes it created, agent calls it follows."""
    unacked = any(reading.unacked for reading in policy.readings.values())
    return unacked or bool(policy.created) or bool(policy.call_state)


class ClientPolicies:
    """The ``ToolPolicy`` of each client (owner): what the tools remember (mailboxes it created,
    messages handed to it and not acked yet, its agent calls) belongs to the client, never to an
    MCP session. Clients with different worker names are competing workers of a consumer group:
    neither gets or acks a message the other holds (docs/groups.md); the same worker name sent
    from another peer or with other credentials is another client."""

    def __init__(self, policy: ToolPolicy, *, workers_from_header: bool = False) -> None:
        self.policy = policy
        self.workers_from_header = workers_from_header
        self._by_owner: OrderedDict[str, ToolPolicy] = OrderedDict()
        # the keys each client's tool calls send, out of a share of its own (the CLI's
        # --keys-per-client sets another ledger)
        share = KEYS_PER_CLIENT if workers_from_header else callers_total()
        self.key_shares = KeyShares(share, where="server")

    def spend_keys(
        self,
        request: Any,
        operation: str | None,
        arguments: dict[str, Any] | None,
        *,
        own_identity: bool = False,
    ) -> str | None:
        """Count a tool call's idempotency keys against its client's share (``client_of``:
        worker names share their client's): None when they fit (or it sends no key), else
        the refusal in the client's own words (its own count, nothing of the server's
        identity or of another client's). Call it once the call is sure to be carried (its
        principal and scope allowed): a refused call holds no key. A principal acting as
        ``own_identity`` at the broker counts nothing here: its keys are that identity's,
        which the broker bounds; an identity provider's principal acting as the server's
        identity counts in the free principals' part (``FREE_KEYS_PART``)."""
        key = (arguments or {}).get("idempotency_key")
        cost = KEYS_A_CALL.get(operation or "", 0)
        if own_identity or not cost or not isinstance(key, str) or not key:
            return None
        # what the key names, as the broker keeps it: the tool, where it goes, the key
        args = arguments or {}
        target = next((str(args[a]) for a in ("mail_address", "agent", "task_id") if a in args), "")
        names = [(f"{operation} {target}", f"{key}\n{n}") for n in range(cost)]
        part = None
        if is_free(getattr(request, "scope", None) or {}):
            part = (FREE_PRINCIPALS, max(1, int(self.key_shares.total * FREE_KEYS_PART)))
        try:
            self.key_shares.spend(client_of(self.owner_of(request)), names, part=part)
        except KeysRefused as exc:
            return str(exc)
        return None

    def key_naming(self, request: Any) -> tuple[str, int] | None:
        """The caller and share a client's keyed sends name to the broker (``NamingKeys``):
        a broker vouching for mq9-mcp counts them against that share, however many replicas
        and starts of mq9-mcp carry the client's calls; over stdio (one client): none."""
        client = client_of(self.owner_of(request))
        return (client, self.key_shares.share) if client else None

    def client_keys(
        self, request: Any, operation: str | None, arguments: dict[str, Any] | None
    ) -> dict[str, Any] | None:
        """A keyed tool call's arguments with its key as the broker holds it for the client
        (``caller_key``): mq9-mcp is one identity at the broker, so a key passed on as
        given would be every client's (another client's same key answered with this one's
        msg_id, or refusing it). Worker names share their client's keys; over stdio the one
        client's go as they are. Anything else is returned as it came."""
        key = (arguments or {}).get("idempotency_key")
        if operation not in KEYS_A_CALL or not isinstance(key, str) or not key:
            return arguments
        client = client_of(self.owner_of(request))
        return {**(arguments or {}), "idempotency_key": caller_key(client, key)}

    def of(self, request: Any) -> ToolPolicy:
        """The policy of the client that sent ``request`` (a Starlette request, or None)."""
        owner = self.owner_of(request)
        policy = self._by_owner.get(owner)
        if policy is None:
            self._make_room(client_of(owner))
            worker = self.worker_of(request)
            policy = self.policy.session(worker=worker) if worker else self.policy.session()
        self._by_owner[owner] = policy
        self._by_owner.move_to_end(owner)
        return policy

    def _make_room(self, client: str) -> None:
        """While ``MAX_WORKERS`` owners are remembered, forget the least recently used one
        holding nothing, else one of the client holding the most (``_fair_share``); refuse
        the newcomer of ``client`` when neither is there."""
        while len(self._by_owner) >= MAX_WORKERS:
            idle = next((o for o, p in self._by_owner.items() if not holds_work(p)), None)
            victim = idle if idle is not None else self._fair_share(client)
            if victim is None:
                raise OperationError(
                    f"this server serves {MAX_WORKERS} clients (worker names) that each hold "
                    "messages or agent calls, and yours holds as many as any other: ack or "
                    "finish with them, or reuse a worker name"
                )
            del self._by_owner[victim]

    def _fair_share(self, client: str) -> str | None:
        """The least recently used owner of the client holding the most owners, when
        ``client`` holds fewer than it even after one more; else None. What that owner
        held is handed out again once its lease lapses (``GroupReader``), or adopted by a
        later ack from the broker's records."""
        held = Counter(client_of(owner) for owner in self._by_owner)
        hog, most = held.most_common(1)[0]
        if held[client] + 1 >= most:
            return None
        victim = next(owner for owner in self._by_owner if client_of(owner) == hog)
        log.info("forgot worker %r of the client holding %d owners for another", victim, most)
        return victim

    def owner_of(self, request: Any) -> str:
        """The owner of ``request``: ``""`` over stdio; over HTTP the client's identity and its
        worker name (checked)."""
        scope = getattr(request, "scope", None)
        if scope is None:
            return ""
        return f"{client_identity(scope)} {self.worker_of(request)}"

    def worker_of(self, request: Any) -> str:
        """The worker name the client sent (checked), or "" for the server's own."""
        headers = getattr(request, "headers", None)
        sent: str | None = (
            headers.get(WORKER_HEADER) if self.workers_from_header and headers else None
        )
        if sent is None:
            return ""
        if not _WORKER_NAME.fullmatch(sent):
            raise OperationError(
                f"the {WORKER_HEADER} header must be 1 to 64 letters, digits, '.', '_' or '-', "
                "starting with a letter or digit"
            )
        return sent
