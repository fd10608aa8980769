"""The wire and the broker log under their own names (#92): no logger of ``mq9_wire`` or
``mq9_broker`` is named after ``langchain_mq9``, a distribution above them that an operator
running the broker alone does not have (a ``logging`` configuration for ``langchain_mq9`` would
have caught the wire's NATS guard and its ranking, and nothing else of that install)."""

from __future__ import annotations

import ast
from pathlib import Path

import mq9_wire.nats_floor.guard as guard
import mq9_wire.semantic as semantic

ROOT = Path(__file__).resolve().parents[2]
BELOW = ("wire/mq9_wire", "broker/mq9_broker", "platform/mq9_platform")


def logger_names(folder: Path) -> list[tuple[str, str]]:
    """(file, name) for each ``getLogger("name")`` with a literal name under ``folder``."""
    found = []
    for path in sorted(folder.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and getattr(node.func, "attr", getattr(node.func, "id", None)) == "getLogger"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.append((str(path.relative_to(ROOT)), node.args[0].value))
    return found


def test_no_logger_below_the_toolkit_is_named_after_it():
    named = [(f, n) for below in BELOW for f, n in logger_names(ROOT / below)]
    assert named  # the scan sees the literal names (mq9_broker's)
    above = [(f, n) for f, n in named if n.split(".")[0] == "langchain_mq9"]
    assert not above, above


def test_the_guard_and_the_ranking_log_under_their_modules():
    assert guard.log.name == "mq9_wire.nats_floor.guard"
    assert semantic.log.name == "mq9_wire.semantic"
