"""What the credentialed-broker tests share: each store a broker may enforce credentials on
(``place``: memory, SQLite, the cluster store), and the identities file with the agents the
tests play (alice, bob, carol, mallory)."""

from __future__ import annotations

import pytest

from mq9_broker.identities.store import IdentityStore
from tests.broker.identities.test_sender_vouched import Place


@pytest.fixture(params=["memory", "sqlite", pytest.param("jetstream", marks=pytest.mark.slow)])
async def place(request, tmp_path):
    made = Place(request.param, tmp_path)
    yield made
    await made.drop()


@pytest.fixture
def identity_store(tmp_path):
    store = IdentityStore(tmp_path / "mq9-identities.sqlite3")
    for name in ("alice", "bob", "carol", "mallory"):
        store.issue(name)
    yield store
    store.close()
