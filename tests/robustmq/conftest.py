"""The official mq9 SDKs (robustmq/mq9 ``python/`` and ``javascript/``) from the snapshot that
``MQ9_SDK_REPO`` names (testbed/support/sdk_snapshot.py), for the interop tests of this folder:
skipped, saying why, where there is none."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path

import pytest

from testbed.brokers import broker, client, jetstream_broker, nats_broker
from testbed.support.js_sdk import JsSdkUnavailable, built_js_sdk
from testbed.support.sdk_snapshot import sdk_repo, write_folder


@pytest.fixture(scope="module")
def sdk(tmp_path_factory):
    """The ``mq9`` package from the snapshot, imported for this module only."""
    target = tmp_path_factory.mktemp("mq9-sdk")
    write_folder(sdk_repo(), "python/mq9", target)
    root = target / "python"
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("mq9")
    finally:
        sys.path.remove(str(root))
        for name in [m for m in sys.modules if m == "mq9" or m.startswith("mq9.")]:
            del sys.modules[name]


@pytest.fixture(scope="module")
def js_sdk() -> Path:
    """The snapshot's JavaScript SDK, installed and compiled once per snapshot in a cache
    directory outside the repository (testbed/support/js_sdk.py)."""
    try:
        return built_js_sdk(sdk_repo())
    except JsSdkUnavailable as missing:
        pytest.skip(str(missing))


__all__ = ["broker", "client", "jetstream_broker", "nats_broker"]
