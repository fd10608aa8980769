"""What a user of 0.4 or of one distribution alone types, said back in one line (issue #112
part 2): a misspelt name through an old import path, 0.4's ``python -m langchain_mq9.wake``,
``mq9-dev-broker --console`` where mq9-cli is not installed, and ``mq9`` with no broker to
reach or a login refused."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest

from mq9_broker import BrokerEngine
from mq9_broker.cli import dev_broker
from mq9_cli.connect import Target
from mq9_wire.protocol.errors import Mq9Error
from testbed.ports import unclaimed_port
from testbed.support.robustmq_shaped import RobustMQShapedListener

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("old", ["langchain_mq9.client", "langchain_mq9.operations"])
def test_a_misspelt_name_through_an_old_path_cannot_be_imported(old):
    """Python's own words, naming the path the user wrote (before: "No module named
    'mq9_platform.client.Mq9Clinet'", a ModuleNotFoundError naming a path they never wrote)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        with pytest.raises(ImportError) as raised:
            exec(f"from {old} import Misspelt_Name", {})
    assert type(raised.value) is ImportError
    assert str(raised.value).startswith(f"cannot import name 'Misspelt_Name' from '{old}'")
    assert sys.modules.get(f"{old}.Misspelt_Name") is None


@pytest.mark.slow  # a Python of its own
def test_python_m_the_old_wake_points_at_mq9_wake():
    """0.4's entry point: before, runpy failed with "AttributeError: '_Alias' object has no
    attribute 'get_code'"; now one line says what to run, and it runs the waker."""
    done = subprocess.run(
        [sys.executable, "-m", "langchain_mq9.wake", "--help"],
        capture_output=True, text=True, timeout=120, cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    assert "python -m langchain_mq9.wake is 0.4's path: run `mq9-wake`" in done.stderr
    assert done.stdout.startswith("usage: mq9-wake")


def test_the_console_without_mq9_cli_says_what_to_install(monkeypatch, capsys):
    """``mq9-dev-broker --console`` on the broker-only install (``./wire ./broker``): refused
    before anything starts, naming the folders to install (before: "ready", then the console's
    process failed)."""
    monkeypatch.setitem(sys.modules, "mq9_cli", None)  # as where mq9-cli is not installed
    code = dev_broker.main(["--port", str(unclaimed_port()), "--console", "0"])
    said = capsys.readouterr()
    assert code == 1
    assert "ready" not in said.out + said.err
    assert "not installed here (no mq9_cli)" in said.err
    assert '.venv/bin/pip install ./wire ./broker ./platform "./faces/cli[console]"' in said.err


async def _answer_seconds(target: Target) -> tuple[float, str]:
    started = time.monotonic()
    with pytest.raises(Mq9Error) as raised:
        await target.client().connect()
    return time.monotonic() - started, raised.value.message


@pytest.mark.slow  # waits out a connect's retries; a listener served in process
async def test_mq9_says_nothing_listening_or_no_login_in_about_a_second():
    """``mq9`` is one command a person waits on: its first connect retries twice, 0.15 s
    apart, not nats-py's five retries 2 s apart. The bound is 5 s."""
    nothing = Target.from_options(f"nats://127.0.0.1:{unclaimed_port()}", request_timeout=60)
    seconds, message = await _answer_seconds(nothing)
    assert "cannot connect to the mq9 broker" in message
    assert seconds < 5, f"nothing listening said after {seconds:.1f} s"
    engine = BrokerEngine(search=False)
    async with RobustMQShapedListener(engine, logins={"alice": "s3cret-pw"}) as listener:
        no_login = Target.from_options(listener.url, request_timeout=60)
        seconds, message = await _answer_seconds(no_login)
    assert "wants a login" in message
    assert seconds < 5, f"no credential said after {seconds:.1f} s"


@pytest.mark.slow  # a Python of its own, with Python's default warning filters
def test_an_old_path_imported_inside_a_package_warns_once(tmp_path):
    """Issue #117: a DeprecationWarning is shown only where ``__main__`` imports the old path,
    so a user's package importing it (the usual place) was told nothing; now each old path warns
    once wherever it is imported, its submodules and a second importer adding nothing."""
    package = tmp_path / "users_app"
    package.mkdir()
    (package / "__init__.py").write_text("from . import a, b\n")
    (package / "a.py").write_text("from langchain_mq9.client import Mq9Client\n")
    (package / "b.py").write_text(
        "import langchain_mq9.client.client\nfrom langchain_mq9.groups import reader\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONWARNINGS", "PYTHONDEVMODE")}
    done = subprocess.run(
        [sys.executable, "-c", "import users_app"],
        capture_output=True, text=True, timeout=120, cwd=tmp_path, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    warned = [line for line in done.stderr.splitlines() if "Warning: " in line]
    assert len(warned) == 2, done.stderr
    said = "FutureWarning: langchain_mq9.{0} moved to mq9_platform.{0}: import mq9_platform.{0}"
    assert f"users_app/a.py:1: {said.format('client')}" in warned[0], warned
    assert f"users_app/b.py:2: {said.format('groups')}" in warned[1], warned
