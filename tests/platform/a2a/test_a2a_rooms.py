"""``mq9_platform.a2a`` in rooms by job (docs/architecture.md): the core at its top, beside it
``sdk/``, ``http/`` and ``gateway/``. The modules that moved keep their 0.5 paths for one release
(``a2a/_moved.py``): each warns and hands out the new module itself, and ``python -m`` the old
gateway command still runs it. The gateway's package hands out its app's names without loading
the extra's packages for its command. The server answers each A2A method by one table."""

from __future__ import annotations

import importlib
import subprocess
import sys
import warnings

import pytest

from mq9_platform.a2a import mail
from mq9_platform.a2a._moved import PACKAGE, RENAMED
from mq9_platform.a2a.server import ANSWERS


def test_the_server_answers_every_method_the_mail_names_by_its_table():
    assert set(ANSWERS) == set(mail.METHODS)


@pytest.mark.parametrize(("old", "new"), sorted(RENAMED.items()))
def test_an_old_path_warns_and_is_the_new_module(old, new):
    pytest.importorskip("a2a")  # the sdk/, http/ and gateway/ modules need the a2a extra
    moved = importlib.import_module(f"{PACKAGE}.{new}")
    sys.modules.pop(f"{PACKAGE}.{old}", None)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        found = importlib.import_module(f"{PACKAGE}.{old}")
    assert found is moved  # one module: a name patched on either is patched on both
    words = [str(w.message) for w in said if w.category is FutureWarning]
    assert any(f"import {PACKAGE}.{new} instead" in w for w in words), words


def test_a_misspelt_old_path_is_no_module():
    with pytest.raises(ModuleNotFoundError):
        importlib.import_module(f"{PACKAGE}.gateway_clii")


@pytest.mark.slow  # a Python of its own
def test_the_old_gateway_command_path_runs_the_gateway_and_says_what_to_run():
    old = f"{PACKAGE}.gateway_cli"  # 0.5's, as systemd units and scripts may name it
    done = subprocess.run(
        [sys.executable, "-m", old, "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: mq9-a2a-gateway")
    assert f"python -m {old} is 0.5's path: run `mq9-a2a-gateway`" in done.stderr


@pytest.mark.slow  # a Python of its own
def test_the_gateway_command_loads_no_gateway_app():
    """``mq9-a2a-gateway`` says which extra it needs where a2a-sdk or Starlette is missing, so
    importing it, through the gateway's package, loads neither the app nor a2a-sdk."""
    code = (
        "import sys\n"
        "from mq9_platform.a2a.gateway import cli\n"
        "loaded = [m for m in ('mq9_platform.a2a.gateway.app', 'a2a', 'starlette')"
        " if m in sys.modules]\n"
        "print(loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "[]", done.stderr


def test_the_gateway_package_hands_out_its_apps_names():
    pytest.importorskip("starlette")
    from mq9_platform.a2a.gateway import Tenants, app, gateway_app

    assert (Tenants, gateway_app) == (app.Tenants, app.gateway_app)
    with pytest.raises(ImportError):
        from mq9_platform.a2a.gateway import _Authenticated  # noqa: F401  (app's own)
