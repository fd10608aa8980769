"""#99 item 4: a person's command line looks without consuming. ``mq9 fetch`` run again and again
to see a mailbox, never acking, moved nothing and set aside nothing (it dead-lettered the
messages after 8 fetches: "handed out 8 times and never finished"); ``--consume`` takes them for
the group and says so; ``mq9 create`` makes a mailbox (TTL, description); every command's help
says what it changes. On the bundled broker served on a real nats-server and on the
RobustMQ-shaped listener (test_cli.py's ``server``)."""

from __future__ import annotations

import pytest
from click.testing import CliRunner

from mq9_cli.app import cli
from tests.integration.cli.test_cli import as_json, mq9, server  # noqa: F401  (server: the fixture)

LOOKS = 12  # more than a group reader's hand-outs before it sets a message aside


@pytest.mark.slow  # a nats-server
async def test_fetch_looks_however_often_and_consume_says_it_takes(server):  # noqa: F811
    url, client = server
    await client.mailbox_create(name="team.look")
    for n in range(3):
        await client.send("team.look", f"job {n}", priority="urgent" if n == 1 else "normal")
    for _ in range(LOOKS):
        looked = await as_json(url, "fetch", "team.look", "--group", "workers")
        assert [m["msg_id"] for m in looked["messages"]] == [1, 0, 2]  # most urgent first
        assert looked["consumed"] is False and "nothing taken" in looked["said"]
    code, out, _ = await mq9(url, "fetch", "team.look", "--group", "workers")
    assert code == 0 and "a look: nothing taken for group workers" in out
    # nothing was set aside, nothing handed out: no dead-letter mailbox, every message there
    listed = await as_json(url, "dlq", "list", "team.look")
    assert listed["exists"] is False and listed["letters"] == []
    assert [m.msg_id for m in await client.query("team.look")] == [0, 1, 2]
    # an ack of a looked-at message: nothing was handed out to ack
    code, _, err = await mq9(url, "ack", "team.look", "1", "--group", "workers")
    assert code == 1 and "--consume" in err, err
    # taking them says so, and they are the group's to ack
    taken = await as_json(url, "fetch", "team.look", "--group", "workers", "--consume")
    assert [m["msg_id"] for m in taken["messages"]] == [1, 0, 2]
    assert taken["consumed"] is True and "taken for group workers" in taken["said"]
    code, out, _ = await mq9(url, "fetch", "team.look", "--group", "workers", "--consume")
    assert code == 0 and "taken for group workers: ack each with" in out
    acked = await as_json(url, "ack", "team.look", "2", "--group", "workers")
    assert acked["confirmed"], acked
    after = await as_json(url, "fetch", "team.look", "--group", "workers")
    assert after["messages"] == [] and after["said"] == "nothing waits for group workers"
    # another group's look still sees them all
    other = await as_json(url, "fetch", "team.look", "--group", "auditors")
    assert [m["msg_id"] for m in other["messages"]] == [1, 0, 2]


@pytest.mark.slow  # a nats-server
async def test_create_makes_a_mailbox_with_its_ttl_and_description(server):  # noqa: F811
    url, client = server
    code, out, err = await mq9(url, "create", "team.made", "--ttl", "3600",
                               "--description", "the team's requests")  # fmt: skip
    assert code == 0 and out.strip() == "created team.made (lives 3600 s)", (out, err)
    made = await as_json(url, "create", "team.made2")
    assert made == {"mail_address": "team.made2", "ttl": 0, "description": "", "created": True}
    sent = await as_json(url, "send", "team.made", "hello")  # send no longer points to register
    assert sent["msg_id"] == 0
    assert [m.text() for m in await client.query("team.made")] == ["hello"]
    code, _, err = await mq9(url, "create", "team.made")  # there already: left as it is
    assert code == 1 and len(err.splitlines()) == 1 and "exist" in err, err
    assert [m.text() for m in await client.query("team.made")] == ["hello"]
    code, _, err = await mq9(url, "create", "NOT AN ADDRESS")
    assert code == 1 and "invalid" in err, err


def _commands(group, path=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


@pytest.mark.parametrize("path", [p for p, _ in _commands(cli)], ids=" ".join)
def test_every_commands_help_says_what_it_changes(path):
    result = CliRunner().invoke(cli, [*path, "--help"], prog_name="mq9")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Changes nothing" in text or "Changes:" in text, text
