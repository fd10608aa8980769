"""The client's name for a broker answering in this process is ``InProcessBroker`` (issue #92:
``Engine`` is the broker's class); the old name is kept a release, with a warning."""

from __future__ import annotations

import pytest

from mq9_platform.client import transport


def test_engine_is_a_deprecated_alias_of_in_process_broker() -> None:
    with pytest.warns(DeprecationWarning, match="InProcessBroker"):
        old = transport.Engine  # type: ignore[attr-defined]
    assert old is transport.InProcessBroker


def test_an_unknown_name_is_still_an_attribute_error() -> None:
    with pytest.raises(AttributeError):
        _ = transport.NoSuchName  # type: ignore[attr-defined]
