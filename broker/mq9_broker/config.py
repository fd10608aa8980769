"""What a bundled broker is told: ``BrokerConfig``, one typed field per ``mq9-dev-broker``
option, checked when it is made.

Each field bears the name of the command's option (``--cluster-wait``: ``cluster_wait``) and its
default; the ``--max-*`` options are the fields of ``limits`` (``BrokerLimits``), ``--no-search``
is ``search=False``, and ``--credentials [DIR]`` is ``credentials=True`` (kept beside ``data``)
or ``credentials=DIR``. A contradiction is refused in one line (``StartupError``, or
``CredentialError`` for the credentials), naming the options as the command does.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args

from .engine.engine import BrokerLimits
from .identities.store import CredentialError, identities_file
from .nats_servers.survey import ClusterError, check_urls
from .storage.jetstream import DEFAULT_NAME as DEFAULT_STREAM
from .storage.jetstream import STREAMS_MOST

Store = Literal["memory", "sqlite", "jetstream"]
Sync = Literal["normal", "full"]

CLUSTER_WAIT = 60.0  # seconds: a cluster's servers started by hand, one after another
# Answers above serve.py's BULK_ANSWER go out at most this many MiB a second in all: a client
# listing the registry back to back then leaves another client's SEND close to idle (bench 9d)
ANSWER_RATE_MIB = 8
MOST_REPLICAS = 5  # JetStream's largest replica count
CREDENTIALS_EXTRA = "credentials"  # the extra of mq9-broker that brings nkeys


class StartupError(Exception):
    """Why the broker cannot start, in one line."""


@dataclass(frozen=True)
class BrokerConfig:
    """A bundled broker's settings: ``mq9-dev-broker``'s options, typed, with its defaults.

    Where it serves: a nats-server it starts on ``host``:``port`` (0: a free port), or the
    running servers of ``nats`` (one URL, or a NATS cluster's comma-separated). Where the
    state is kept:
    ``store`` (None: ``sqlite`` when ``data`` names a file or directory, else ``memory``;
    ``jetstream``: a stream, ``stream``, on the cluster of ``nats``, with ``replicas``, waiting
    up to ``cluster_wait`` seconds for a cluster still forming; ``streams``: how many message
    streams a new layout spreads its mailboxes over, None: the count the layout recorded, or
    1). ``sync``: SQLite's durability.
    ``answer_rate``: MiB a second for large answers in all (0: no pace). ``announce``: each
    message stored is announced for mq9-wake. ``search``: DISCOVER by text or meaning (False:
    as RobustMQ's default build). ``embedding_model``: 'multilingual+minilm' (the
    default), 'multilingual', 'minilm' or a directory. ``credentials``: enforce per-agent
    credentials (docs/security.md)."""

    host: str = "127.0.0.1"
    port: int = 4222
    nats: str | None = None
    store: Store | None = None
    data: str | Path | None = None
    replicas: int | None = None
    cluster_wait: float = CLUSTER_WAIT
    stream: str = DEFAULT_STREAM
    streams: int | None = None
    sync: Sync = "normal"
    limits: BrokerLimits = field(default_factory=BrokerLimits)
    answer_rate: int = ANSWER_RATE_MIB
    announce: bool = False
    search: bool = True
    embedding_model: str | None = None
    credentials: bool | str | Path = False

    def __post_init__(self) -> None:
        _check_types(self)
        if self.nats:
            checked_urls(self.nats)  # a misspelt URL: one line now, before anything loads
        store = _store_of(self)
        object.__setattr__(self, "store", store)
        check_credentials(self, store)

    @property
    def servers(self) -> list[str]:
        """The URLs of ``nats``, one per server ([] when the broker starts its own)."""
        return checked_urls(self.nats) if self.nats else []


def _check_types(config: BrokerConfig) -> None:
    """What argparse checks for the command, checked for a config made in Python."""
    wrong = _wrong_field(config)
    if wrong:
        raise StartupError(f"BrokerConfig: {wrong}")


def _wrong_field(config: BrokerConfig) -> str:
    """What is wrong with one field of ``config`` ("" when nothing is)."""
    if not isinstance(config.port, int) or not 0 <= config.port < 65536:
        return f"port must be a port number from 0 (a free one) to 65535, not {config.port!r}"
    if config.store not in (None, *get_args(Store)):
        return f"store must be one of memory, sqlite, jetstream, not {config.store!r}"
    if config.sync not in get_args(Sync):
        return f"sync must be normal or full, not {config.sync!r}"
    if config.replicas is not None and config.replicas not in range(1, MOST_REPLICAS + 1):
        return f"replicas must be 1 to {MOST_REPLICAS}, not {config.replicas!r}"
    if config.streams is not None and (
        not isinstance(config.streams, int) or config.streams not in range(1, STREAMS_MOST + 1)
    ):
        return f"streams must be 1 to {STREAMS_MOST}, not {config.streams!r}"
    if not isinstance(config.cluster_wait, (int, float)) or config.cluster_wait <= 0:
        return f"cluster_wait must be a positive number of seconds, not {config.cluster_wait!r}"
    if not isinstance(config.answer_rate, int) or config.answer_rate < 0:
        return f"answer_rate must be MiB a second, 0 or more, not {config.answer_rate!r}"
    if not isinstance(config.limits, BrokerLimits):
        return f"limits must be a BrokerLimits, not {type(config.limits).__name__}"
    if not isinstance(config.credentials, (bool, str, Path)):
        return "credentials must be True, False or the directory holding them"
    return ""


def checked_urls(url: str) -> list[str]:
    """The servers ``--nats`` names, or why not in one line."""
    try:
        return check_urls(url)
    except ClusterError as exc:
        raise StartupError(f"--nats: {exc}") from None


def _store_of(config: BrokerConfig) -> Store:
    """The store ``--store`` names, or the one ``--data`` implies; contradictions refused."""
    store: Store = config.store or ("sqlite" if config.data else "memory")
    if store == "jetstream" and not config.nats:
        raise StartupError(
            "--store jetstream keeps the state on the NATS cluster the broker serves on: "
            "pass --nats nats://H1:P1,nats://H2:P2,... (servers with JetStream enabled)"
        )
    if store != "sqlite" and config.data:
        raise StartupError(f"--data names a SQLite file, which --store {store} does not use")
    if store == "sqlite" and not config.data:
        raise StartupError("--store sqlite needs --data PATH: where the SQLite file is")
    if config.replicas is not None and store != "jetstream":
        raise StartupError("--replicas is for --store jetstream")
    if config.streams is not None and store != "jetstream":
        raise StartupError("--streams is for --store jetstream")
    return store


def credentials_place(given: Any) -> str | None:
    """``--credentials`` as the command line spells it: None (off), "" (on, kept beside
    ``--data``) or the directory. ``given``: that, or a ``BrokerConfig``'s bool or path."""
    if given is None or given is False:
        return None
    return "" if given is True else os.fspath(given)


def need_credentials_extra() -> None:
    """Refuse, in one line, what signs logins (nkeys) when the ``credentials`` extra is not
    installed."""
    try:
        import nkeys  # type: ignore[import-untyped]  # noqa: F401  # no types shipped
    except ImportError:
        extra = CREDENTIALS_EXTRA
        raise CredentialError(
            f"credentials need mq9-broker's '{extra}' extra (nkeys), missing from "
            f"{sys.prefix}: install mq9-broker as you did, with [{extra}] after its name (in "
            f"a clone: {sys.executable} -m pip install -e ./wire -e './broker[{extra}]')"
        ) from None


def check_credentials(settings: Any, store: str) -> None:
    """Refuse what ``--credentials`` cannot be with, before anything is reached. ``settings``:
    a ``BrokerConfig`` or the command's parsed arguments."""
    place = credentials_place(settings.credentials)
    if place is None:
        return
    need_credentials_extra()
    if getattr(settings, "nats", None) and store != "jetstream":
        raise CredentialError(
            "--credentials with --nats keeps the credentials on the NATS cluster: add --store "
            "jetstream and give the DIR 'mq9-dev-broker credentials setup DIR' wrote; or drop "
            "--nats (the broker then starts its nats-server and writes its login config)"
        )
    if store == "jetstream" and not place:
        raise CredentialError(
            "--credentials on --store jetstream needs DIR: run 'mq9-dev-broker credentials "
            "setup DIR', add the config it prints to every nats-server, then pass "
            "--credentials DIR"
        )


def identities_path(settings: Any) -> Path | None:
    """Where a broker without a cluster keeps its credentials: DIR/mq9-identities.sqlite3, or
    beside ``data``; None without ``--credentials``."""
    place = credentials_place(settings.credentials)
    if place is None:
        return None
    check_credentials(settings, getattr(settings, "store", None) or "sqlite")
    if not place and not settings.data:
        raise CredentialError(
            "--credentials needs a place for the credentials: --data PATH (kept beside the "
            "broker's data) or --credentials DIR"
        )
    return Path(place, "mq9-identities.sqlite3") if place else identities_file(settings.data)
