"""Every raw nats-py request the tests and the benchmarks make names its bound. nats-py's
default is half a second: enough on a quiet machine, too short beside a busy suite, where a
setup request left to it failed a clean-clone run (a benchmark's heavy client, session 35)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The names our tests and benchmarks give a raw nats-py connection
RAW = {"nc", "connection", "conn", "raw", "plain", "nats_client"}


def _unbounded(path: Path) -> list[str]:
    text = path.read_text()
    if ".request(" not in text:  # (most files: not parsed)
        return []
    found = []
    for node in ast.walk(ast.parse(text, str(path))):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "request" or ast.unparse(node.func.value) not in RAW:
            continue
        names = {keyword.arg for keyword in node.keywords}
        # (a third argument is the timeout; **options may hold it)
        if "timeout" not in names and None not in names and len(node.args) < 3:
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return found


def test_every_raw_request_names_its_timeout():
    files = [*ROOT.glob("tests/**/*.py"), *ROOT.glob("bench/**/*.py"), *ROOT.glob("testbed/*.py")]
    unbounded = [where for path in sorted(files) for where in _unbounded(path)]
    assert not unbounded, f"nats-py requests on its 0.5 s default: {unbounded}"
