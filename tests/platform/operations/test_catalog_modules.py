"""#113: the catalog is split by what its parts are about: the operations written out
(``catalog.py``) and what one operation is and how it runs (``operation.py``). The catalog's
import path still gives everything the faces, tests and bench/ import of it, and the names
``prefixed`` rewrites (kept beside ``Operation``, not read from the catalog made of them) are
exactly the catalog's."""

from __future__ import annotations

import mq9_platform.operations.catalog as catalog
from mq9_platform.operations import operation
from mq9_platform.operations.catalog import (
    OPERATIONS,
    Operation,
    OperationError,
    ToolPolicy,
    prefixed,
    unknown_tool,
)


def test_the_catalog_path_still_gives_what_it_gave():
    assert Operation is operation.Operation and prefixed is operation.prefixed
    assert all(hasattr(catalog, name) for name in catalog.__all__)
    assert isinstance(OperationError("x"), Exception) and ToolPolicy().tool_prefix == ""
    assert "fetch_messages" in unknown_tool("nope", ToolPolicy())


def test_every_tool_the_catalog_has_is_a_name_prefixed_rewrites():
    assert sorted(operation.TOOL_NAMES) == sorted(OPERATIONS)
    policy = ToolPolicy(tool_prefix="mq9_")
    for name in OPERATIONS:
        assert prefixed(f"call {name} now", policy) == f"call mq9_{name} now"
