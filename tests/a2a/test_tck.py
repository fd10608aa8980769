"""The A2A conformance kit (the A2A project's TCK for A2A 1.0) through ``mq9-a2a-gateway``: the
TCK's own reference executor served over mq9, behind the gateway, over both bindings the gateway
serves (JSON-RPC, HTTP+JSON), push notifications on. Every MUST requirement that applies to
them passes (#71). The level table is in docs/a2a.md.

The TCK is no package on any registry: it is read from ``../shared/a2a-tck`` beside the
checkout (or ``MQ9_A2A_TCK``), installed into a venv of its own (its dependencies from PyPI),
kept under the user's cache directory between runs. Skipped, saying why, where either is
missing."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest
from tck_support import TCK_DIR, gateway_sut, run_tck, tck_python

pytestmark = pytest.mark.slow

# MUST requirements the kit skips through the gateway, each for a reason that leaves it
# inapplicable (every gRPC one too: the gateway serves no gRPC)
NOT_APPLICABLE = {
    "CORE-CAP-001": "push notifications are supported: no error to give",
    "CORE-CAP-002": "streaming is supported: no error to give",
    "CORE-CAP-004": "the card requires no extension",
    "CARD-EXT-001": "no extended agent card",
    "CARD-EXT-002": "no extended agent card",
}


def _cache() -> Path:
    """Where the TCK's venv is kept: per version of the kit's dependencies."""
    if not TCK_DIR.is_dir():
        pytest.skip(f"the A2A TCK is not at {TCK_DIR} (set MQ9_A2A_TCK to its folder)")
    spec = b"".join((TCK_DIR / name).read_bytes() for name in ("pyproject.toml", "uv.lock"))
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "langchain-mq9" / f"a2a-tck-{hashlib.sha256(spec).hexdigest()[:12]}"


async def test_every_must_requirement_of_the_served_bindings_passes(tmp_path):
    cache = _cache()
    cache.mkdir(parents=True, exist_ok=True)
    try:
        python = tck_python(cache)
    except (subprocess.SubprocessError, OSError) as exc:  # no PyPI here: nothing to run it on
        pytest.skip(f"the TCK's venv could not be built (PyPI unreachable?): {exc}")
    async with gateway_sut() as url:
        outcome = await run_tck(python, url, tmp_path)
    must = {k: v for k, v in outcome.requirements.items() if v["level"] == "MUST"}
    assert must, outcome.output[-3000:]
    assert outcome.failing("MUST") == {}, outcome.output[-3000:]
    skipped = {
        req_id
        for req_id, req in must.items()
        if req["status"] == "SKIPPED" and set(req["transports"]) != {"grpc"}
    }
    assert skipped <= set(NOT_APPLICABLE), skipped - set(NOT_APPLICABLE)
    # Both bindings ran: the kit tested the gateway through each of them
    transports = {t for req in must.values() for t, s in req["transports"].items() if s == "PASS"}
    assert {"jsonrpc", "http_json", "agent_card"} <= transports
