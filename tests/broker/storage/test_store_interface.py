"""Issue #92, "the interface owns its types": the store protocol and the values it speaks in
(storage/mailbox_store.py) import neither store; the cluster store (storage/jetstream/) and the
state held in this process (storage/in_process/) import the interface, never
each other; each store declares what it takes of a SEND, and the engine takes its store's,
with no parameter that picks another's. And a tag's subtree is one meaning, computed in one
place (state/mailbox.py) that both stores read by.

The import graph is test_layout.py's (every import counts, under ``TYPE_CHECKING`` too).
"""

from __future__ import annotations

import inspect
import random

import pytest

from mq9_broker.engine.engine import Engine
from mq9_broker.engine.process import BrokerEngine
from mq9_broker.engine.sending import read_send
from mq9_broker.state.mailbox import finds, subtree, tags_above
from mq9_broker.storage.in_process import ProcessStore
from mq9_broker.storage.jetstream import ClusterStore
from mq9_broker.storage.mailbox_store import OPEN, SendLimits
from mq9_wire import protocol as p
from mq9_wire.protocol.errors import Mq9Error
from tests.project import test_layout as layout

INTERFACE = "mq9_broker.storage.mailbox_store"
CLUSTER = "mq9_broker.storage.jetstream"
# The state held in this process: its store and what it stands on (persistence.py: the
# Storage a ProcessStore tells of each change), one folder
IN_PROCESS = ("mq9_broker.storage.in_process",)


def _imports(prefixes: tuple[str, ...]) -> dict[str, frozenset[str]]:
    return {m: e for m, e in layout.graph().items() if m.startswith(prefixes)}


@pytest.mark.slow  # parses the package: over a second of CPU (#89)
def test_the_interface_imports_neither_store():
    reached = layout.graph()[INTERFACE]
    assert [m for m in reached if m.startswith((CLUSTER, *IN_PROCESS))] == []


def test_the_cluster_store_imports_nothing_of_the_in_process_one():
    found = {
        module: sorted(m for m in targets if m.startswith(IN_PROCESS))
        for module, targets in _imports((CLUSTER,)).items()
    }
    assert {module: there for module, there in found.items() if there} == {}


def test_the_in_process_store_imports_nothing_of_the_cluster_one():
    found = {
        module: sorted(m for m in targets if m.startswith(CLUSTER))
        for module, targets in _imports(IN_PROCESS).items()
    }
    assert {module: there for module, there in found.items() if there} == {}


def test_the_engine_picks_no_stores_limits():
    """The engine's modules import no store's folder (its limits were the cluster store's by
    default), and its constructor takes no send limits: the store's are its own."""
    engine = _imports(("mq9_broker.engine.",))
    assert {m: sorted(t for t in ts if t.startswith(CLUSTER)) for m, ts in engine.items()} == {
        m: [] for m in engine
    }
    assert "sending" not in inspect.signature(Engine.__init__).parameters
    assert ProcessStore.send_limits is OPEN
    assert BrokerEngine(search=False).sending is OPEN
    cluster = ClusterStore.send_limits
    assert isinstance(cluster, SendLimits) and cluster.store == "cluster store"
    assert (cluster.tags_most, cluster.tag_bytes, cluster.tag_parts, cluster.key_bytes) == (
        998,
        1024,
        32,
        4096,
    )


def _send(limits: SendLimits, tags: int, *, keyed: bool, delay: int | None = None) -> None:
    headers = {p.HEADER_TAGS: ",".join(f"t{n}" for n in range(tags))}
    if delay is not None:
        headers[p.HEADER_DELAY] = str(delay)
    read_send(headers, b"x", 1_000, limits, keyed=keyed)


def test_a_keyed_send_written_at_once_takes_one_tag_fewer_on_the_cluster_store():
    cluster = ClusterStore.send_limits
    _send(cluster, 998, keyed=False)
    _send(cluster, 997, keyed=True)
    _send(cluster, 998, keyed=True, delay=5)  # (its key is written apart from its tags)
    for tags, keyed, most in ((999, False, "998"), (998, True, "997 with an idempotency key")):
        try:
            _send(cluster, tags, keyed=keyed)
        except Mq9Error as refused:
            assert str(refused) == (
                f"SEND refused: a message with {tags} distinct tags: this broker's cluster "
                f"store takes at most {most}"
            )
        else:
            raise AssertionError(f"{tags} tags (keyed: {keyed}) taken")
    _send(OPEN, 5_000, keyed=True)  # the state held in this process keeps tags as data


def test_a_tag_read_finds_what_robustmqs_key_scan_finds():
    """RobustMQ's tag index is a key scan of ``<tag>/`` over keys ``<tag>/<msg_id:020>``:
    ``finds``, ``subtree`` and ``tags_above`` say the same, for tags of few characters (the
    near misses: a shared prefix without a slash, an empty part, a trailing slash)."""
    rng = random.Random(92)
    alphabet = "ab/0."
    names = {"".join(rng.choice(alphabet) for _ in range(rng.randint(1, 5))) for _ in range(400)}
    for asked in names:
        low, high = subtree(asked)
        for tag in names:
            scanned = f"{tag}/{7:020}".startswith(f"{asked}/")
            assert finds(asked, tag) is scanned, (asked, tag)
            assert (tag == asked or low <= tag < high) is scanned, (asked, tag)
            assert (asked in set(tags_above(tag)) or asked == tag) is scanned, (asked, tag)
