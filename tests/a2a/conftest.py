"""Fixtures of the A2A tests: the embedding model loaded as a real broker loads it."""

from __future__ import annotations

import contextlib

import pytest

from langchain_mq9 import semantic


@pytest.fixture(scope="session")
def embedding_model() -> None:
    """The process's embedding model, loaded before the test's broker answers anything.

    ``Broker`` loads it before it says ready (issue #54); the suites' in-process broker
    (``tests/conftest.py``'s ``start_broker``) does not, so its first REGISTER loaded it on the
    engine's worker thread, which runs at nice 10: beside busy processes on 2 cores that took
    more than the client's 5 s and the REGISTER (an agent starting, a card imported) failed
    with RequestTimeout. Loaded here, with no deadline, as the broker would have."""
    # (no model here: the engine ranks without one, and says so where it must)
    with contextlib.suppress(semantic.ModelError):
        semantic.embedder()  # once per process: every engine of this process finds it loaded
