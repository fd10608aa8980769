"""A command rule's environment (#77 item 7): the names a rule may set are under one prefix
the operator chooses (``MQ9_RULE_`` by default), which no program reads as code. Before #77 a
deny-list stood there, and ``--allow-command-env`` took 14 of 15 names that hook code into a
program (LESSOPEN ran a shell command through an allowed ``/usr/bin/less``). Played with the
real programs where this machine has them: each hook is first shown to run code here, then
the waker is shown never to let a rule set it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest

from mq9_platform.wake import Deliverer, Destinations, Limits, RuleBook, Waker, WakeRule
from mq9_platform.wake.deliver import ENV_PREFIX, check_env_prefix
from mq9_platform.wake.rules import FAILED_ADDRESS
from testbed.support.waiting import until

NO_FLOOR = Limits(min_interval=0)


WAIT = 60.0  # seconds: a guard against hangs only, never a timing claim


async def failed_reasons(client) -> list[str]:
    return [json.loads(m.payload)["reason"] for m in await client.query(FAILED_ADDRESS)]


# every name #77 found taken, the ones refused before, and a plain one outside the prefix
HOOKS = [
    "LESSOPEN",
    "LESSCLOSE",
    "LESSEDIT",
    "VIMINIT",
    "GVIMINIT",
    "EXINIT",
    "LUA_INIT",
    "LUA_INIT_5_4",
    "ERL_AFLAGS",
    "ERL_FLAGS",
    "ERL_ZFLAGS",
    "ZDOTDIR",
    "PHP_INI_SCAN_DIR",
    "PHPRC",
    "DOTNET_STARTUP_HOOKS",
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "PYTHONSTARTUP",
    "PYTHONWARNINGS",
    "PERL5OPT",
    "PERL5LIB",
    "NODE_OPTIONS",
    "RUBYOPT",
    "BASH_ENV",
    "ENV",
    "PATH",
    "BROWSER",
    "EDITOR",
    "PAGER",
    "GIT_SSH_COMMAND",
    "JAVA_TOOL_OPTIONS",
    "MQ9_WAKE_MAILBOX",
    "MQ9_SERVER",
    "AGENT_PROFILE",
]


@pytest.mark.parametrize("name", HOOKS)
def test_no_name_outside_the_prefix_can_be_allowed(name):
    with pytest.raises(ValueError) as refused:
        Destinations(commands=["/bin/true"], command_env=[name])
    said = str(refused.value)
    assert "\n" not in said and f"only names under {ENV_PREFIX!r}" in said, said


@pytest.mark.parametrize("name", [n for n in HOOKS if n != "AGENT_PROFILE"])
def test_a_hook_is_refused_under_the_operators_own_prefix_too(name):
    prefix = name.split("_")[0] + "_" if "_" in name[1:] else "AGENT_"
    with pytest.raises(ValueError, match=r"may never set it|hook code into a program"):
        Destinations(command_env=[name], command_env_prefix=prefix)


@pytest.mark.parametrize(
    "prefix",
    [
        "LD_",
        "DYLD_",
        "PYTHON_",
        "PERL5_",
        "NODE_",
        "LESS_",
        "LUA_",
        "ERL_",
        "PHP_",
        "DOTNET_",
        "GIT_",
        "MQ9_WAKE_",
        "BASH_FUNC_",
        "MQ9_",
        "X",
        "A_",
        "lower_",
        "MQ9_RULE",
    ],
)
def test_a_prefix_a_hook_family_shares_is_refused(prefix):
    with pytest.raises(ValueError, match="--allow-command-env-prefix"):
        check_env_prefix(prefix)


def test_names_under_the_prefix_are_what_a_rule_may_set():
    allowed = Destinations(commands=["/bin/true"], command_env=["MQ9_RULE_PROFILE"])
    allowed.check_command(("/bin/true",), {"MQ9_RULE_PROFILE": "x"})
    with pytest.raises(ValueError, match="only names under"):
        Destinations(command_env=["MQ9_RULE_"])  # the prefix alone names nothing
    own = Destinations(command_env=["AGENT_PROFILE"], command_env_prefix="AGENT_")
    assert own.command_env == {"AGENT_PROFILE"}


def _hook_runs_here(argv: list[str], env: dict[str, str], pwned) -> bool:
    """Whether ``env`` makes ``argv`` run code on this machine (as the waker starts it)."""
    subprocess.run(
        argv,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        timeout=30,
        check=False,
    )
    return pwned.exists()


@pytest.mark.slow  # processes: the real programs
@pytest.mark.parametrize(
    "program, name, hook",
    [
        ("less", "LESSOPEN", "|touch {pwned}; cat %s"),
        ("vim", "VIMINIT", 'call system("touch {pwned}") | q'),
    ],
)
async def test_a_real_programs_hook_never_runs_through_the_waker(
    memory_lane, tmp_path, program, name, hook
):
    path = shutil.which(program)
    if path is None:
        pytest.skip(f"no {program} on this machine")
    pwned = tmp_path / "pwned"
    target = tmp_path / "mail.txt"
    target.write_text("mail\n")
    argv = [path, "-c", "q", str(target)] if program == "vim" else [path, str(target)]
    value = hook.format(pwned=pwned)
    assert _hook_runs_here(argv, {name: value}, pwned), f"{name} runs no code through {program}"
    pwned.unlink()
    with pytest.raises(ValueError, match="may never set it"):  # #77: it was accepted
        Destinations(commands=[path], command_env=[name])
    out = tmp_path / "out.json"
    script = (
        "import json, os, sys; json.dump({k: v for k, v in os.environ.items() "
        "if k.startswith('MQ9_RULE_') or k == sys.argv[2]}, open(sys.argv[1], 'w'))"
    )
    async with memory_lane.client() as client:
        await client.mailbox_create(name="agent.hook")
        await RuleBook(client).add(
            WakeRule(mailbox="agent.hook", target="command", argv=tuple(argv), env={name: value})
        )
        await client.mailbox_create(name="agent.good")
        await RuleBook(client).add(
            WakeRule(
                mailbox="agent.good",
                target="command",
                env={"MQ9_RULE_PROFILE": "nightly"},
                argv=(sys.executable, "-c", script, str(out), name),
            )
        )
        destinations = Destinations(
            commands=[path, sys.executable], command_env=["MQ9_RULE_PROFILE"]
        )
        waker = await Waker(
            client, Deliverer(destinations, limits=NO_FLOOR), poll_interval=0.05
        ).start()
        try:
            await client.send("agent.hook", "go")
            await until(lambda: waker.set_aside == 1, timeout=WAIT, what="the hook refused")
            await client.send("agent.good", "go")
            await until(
                lambda: out.exists() and out.read_text(), timeout=WAIT, what="the good command"
            )
            assert json.loads(out.read_text()) == {"MQ9_RULE_PROFILE": "nightly"}
            (reason,) = await failed_reasons(client)
            assert f"env {name!r} is not one the waker lets a rule set" in reason
        finally:
            await waker.stop()
    assert not pwned.exists()
