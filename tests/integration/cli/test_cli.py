"""``mq9``, each subcommand against the bundled broker served on a real nats-server and against
the RobustMQ-shaped listener (testbed/support/robustmq_shaped.py, without agent search as RobustMQ's
default build): what it prints for a person, its ``--json`` parsed, its exit codes.

The command line runs in a worker thread (its own event loop, as in a shell) while the broker
and the agents run on the test's loop."""

from __future__ import annotations

import asyncio
import contextlib
import json

import nats
import pytest
from click.testing import CliRunner

from langchain_mq9 import serve_agent
from mq9_broker import BrokerEngine, serve_on_nats
from mq9_broker.engine.limits import BrokerLimits
from mq9_cli import main
from mq9_cli.app import cli
from mq9_platform import AgentCaller, Mq9Client
from mq9_platform.groups.reader import GroupReader
from testbed.ports import silent_port
from testbed.support.a2a_support import asking, text_graph, text_io
from testbed.support.robustmq_shaped import RobustMQShapedListener

LANES = ["bundled", "shaped"]


@pytest.fixture(params=LANES)
async def server(request, nats_server):
    """The URL of an mq9 server on loopback, and a client of the test's own on it."""
    async with (
        served(request.param, nats_server.url) as url,
        Mq9Client(url, request_timeout=60) as client,
    ):
        yield url, client


@contextlib.asynccontextmanager
async def served(lane: str, nats_url: str):
    """The bundled broker served on the session's nats-server, or the RobustMQ-shaped
    listener (without agent search, as RobustMQ's default build): its URL."""
    if lane == "shaped":
        async with RobustMQShapedListener(BrokerEngine(search=False)) as listener:
            yield listener.url
        return
    connection = await nats.connect(nats_url)
    service = await serve_on_nats(BrokerEngine(), connection)
    try:
        yield nats_url
    finally:
        await service.stop()
        await connection.close()


async def mq9(
    url: str, *args: str, stdin: str | None = None, env: dict | None = None
) -> tuple[int, str, str]:
    """``mq9 --server URL ARGS``: its exit code, standard output and standard error."""

    def invoke():
        # (a generous --timeout: the broker's first REGISTER loads its embedding model)
        argv = ["--server", url, "--timeout", "60", *args]
        result = CliRunner().invoke(cli, argv, input=stdin, prog_name="mq9", env=env)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        return result.exit_code, result.stdout, result.stderr

    return await asyncio.to_thread(invoke)


async def as_json(url: str, *args: str, stdin: str | None = None):
    code, out, err = await mq9(url, *args, "--json", stdin=stdin)
    assert code == 0, err
    return json.loads(out)


@pytest.mark.slow
async def test_agents_register_discover_unregister(server):
    url, _ = server
    done = await as_json(
        url, "register", "agent.translator", "--capabilities", "translates English to Japanese"
    )
    assert done["registered"] and done["mail_address"] == "agent.translator"
    await as_json(
        url,
        "register",
        "agent.billing",
        "--capabilities",
        "sends invoices",
        "--mailbox",
        "team.billing",
    )
    listed = await as_json(url, "agents")
    assert {a["name"]: a["mailbox"] for a in listed["agents"]} == {
        "agent.translator": "agent.translator",
        "agent.billing": "team.billing",
    }
    code, out, _ = await mq9(url, "agents")
    assert code == 0 and "agent.translator" in out and "NAME" in out
    found = await as_json(url, "discover", "invoices")
    assert found["agents"][0]["name"] == "agent.billing"
    gone = await as_json(url, "unregister", "agent.billing")
    assert gone["unregistered"] == "agent.billing"
    code, out, _ = await mq9(url, "unregister", "agent.translator")
    assert code == 0 and out.strip() == "unregistered agent.translator"
    assert (await as_json(url, "agents"))["agents"] == []


@pytest.mark.slow
async def test_send_from_an_argument_standard_input_and_a_file(server, tmp_path):
    url, client = server
    await client.mailbox_create(name="team.inbox")
    one = await as_json(url, "send", "team.inbox", "hello", "--priority", "urgent", "--tag", "a")
    two = await as_json(url, "send", "team.inbox", stdin='{"task": "summarize"}')
    path = tmp_path / "payload.txt"
    path.write_text("from a file\nwith two lines", encoding="utf-8")
    three = await as_json(url, "send", "team.inbox", "--file", str(path), "--key", "k1")
    assert [one["msg_id"], two["msg_id"], three["msg_id"]] == [0, 1, 2]
    stored = {m.msg_id: m for m in await client.query("team.inbox")}
    assert stored[0].text() == "hello" and stored[0].tags == ["a"]
    assert stored[1].json() == {"task": "summarize"}
    assert stored[2].text() == "from a file\nwith two lines" and stored[2].key == "k1"
    code, _, err = await mq9(url, "send", "team.inbox", "x", "--file", str(path))
    assert code == 2 and "not both" in err


@pytest.mark.slow
async def test_fetch_ack_query_delete(server):
    url, client = server
    await client.mailbox_create(name="team.work")
    for n in range(3):
        await client.send("team.work", f"job {n}", priority="critical" if n == 2 else "normal")
    fetched = await as_json(url, "fetch", "team.work", "--group", "workers", "--consume")
    assert [m["msg_id"] for m in fetched["messages"]] == [2, 0, 1]  # most urgent first
    acked = await as_json(url, "ack", "team.work", "2", "--group", "workers")
    assert acked["confirmed"] == [2]
    # the group's position is the broker's: a fetch from a new process starts after it
    again = await as_json(url, "fetch", "team.work", "--group", "workers", "--consume")
    assert 2 not in [m["msg_id"] for m in again["messages"]]
    queried = await as_json(url, "query", "team.work")
    assert [m["payload"] for m in queried["messages"]] == ["job 0", "job 1", "job 2"]
    code, out, _ = await mq9(url, "query", "team.work", "--limit", "1")
    assert code == 0 and "#0 normal" in out and "job 0" in out
    deleted = await as_json(url, "delete", "team.work", "1")
    assert deleted["deleted"] and deleted["msg_id"] == 1
    left = await as_json(url, "query", "team.work")
    assert [m["msg_id"] for m in left["messages"]] == [0, 2]


@pytest.mark.slow
async def test_watch_follows_a_mailbox_live(server):
    url, client = server
    await client.mailbox_create(name="team.live")
    await client.send("team.live", "before")
    watching = asyncio.ensure_future(
        mq9(url, "watch", "team.live", "--from-id", "1", "--count", "2", "--for", "60", "--json")
    )
    await asyncio.sleep(0.5)  # (the watch polls: it sees these whenever they land)
    await client.send("team.live", "first <b>live</b>")
    await client.send("team.live", "second", priority="urgent")
    code, out, err = await asyncio.wait_for(watching, 90)
    assert code == 0, err
    seen = [json.loads(line) for line in out.splitlines()]
    assert [(m["msg_id"], m["payload"]) for m in seen] == [(1, "first <b>live</b>"), (2, "second")]
    # --for ends a quiet watch, and nothing was consumed
    code, out, _ = await mq9(url, "watch", "team.live", "--for", "0.5")
    assert code == 0 and out == ""
    assert len(await client.query("team.live")) == 3


@pytest.mark.slow
async def test_watch_shows_every_message_once_through_cut_answers(nats_server):
    """A broker that keeps every answer within 200,000 bytes (as the bundled one keeps it
    within its NATS server's max_payload): a read from the watch's start answers six critical
    messages of 30 KB and is cut before the normal one below them, which a watch that moved
    past the largest msg_id it saw never showed. Then small ones of every priority arrive
    while watching: each message once, in msg_id order."""
    big = "x" * 30_000
    hiding = ["critical"] * 2 + ["normal"] + ["critical"] * 5
    arriving = ["urgent", "normal", "critical", "normal", "urgent"]
    connection = await nats.connect(nats_server.url)
    engine = BrokerEngine(search=False, limits=BrokerLimits(max_answer=200_000))
    service = await serve_on_nats(engine, connection)
    try:
        async with Mq9Client(nats_server.url, request_timeout=60) as client:
            await client.mailbox_create(name="team.cut")
            sent = [await client.send("team.cut", f"{p}{big}", priority=p) for p in hiding]
            total = str(len(hiding) + len(arriving))
            watch = ["watch", "team.cut", "--from-id", str(sent[0]), "--count", total]
            watching = asyncio.ensure_future(mq9(nats_server.url, *watch, "--for", "60", "--json"))
            sent += [await client.send("team.cut", p, priority=p) for p in arriving]
            code, out, err = await asyncio.wait_for(watching, 90)
    finally:
        await service.stop()
        await connection.close()
    assert code == 0, err
    assert [json.loads(line)["msg_id"] for line in out.splitlines()] == sent


@pytest.mark.slow
async def test_dlq_list_show_replay(server):
    url, client = server
    await client.mailbox_create(name="team.jobs")
    await client.send("team.jobs", "poison <script>alert(1)</script>")
    await client.send("team.jobs", "fine")
    reader = GroupReader(client, "team.jobs", "workers")
    [first, *_] = await reader.fetch()
    await reader.dead_letter(first.msg_id, ValueError("cannot parse"))
    listed = await as_json(url, "dlq", "list", "team.jobs")
    assert listed["dead_letter_mailbox"] == "team.jobs.dlq" and listed["exists"]
    [letter] = listed["letters"]
    assert letter["dead_letter"]["reason"] == "ValueError: cannot parse"
    assert letter["dead_letter"]["msg_id"] == 0 and letter["waiting"] is True
    shown = await as_json(url, "dlq", "show", "team.jobs", str(letter["msg_id"]))
    assert shown["payload"] == "poison <script>alert(1)</script>"
    code, out, _ = await mq9(url, "dlq", "list", "team.jobs")
    assert code == 0 and "cannot parse" in out and "waiting" in out
    replayed = await as_json(url, "dlq", "replay", "team.jobs")
    assert len(replayed["sent"]) == 1 and replayed["skipped"] == {}
    back = [m.text() for m in await client.query("team.jobs")]
    assert back.count("poison <script>alert(1)</script>") == 2
    after = await as_json(url, "dlq", "list", "team.jobs")
    assert after["letters"][0]["waiting"] is False
    again = await as_json(url, "dlq", "replay", "team.jobs")  # each once
    assert again["sent"] == []
    code, _, err = await mq9(url, "dlq", "show", "team.jobs", "99")
    assert code == 3 and "no message 99" in err
    await client.mailbox_create(name="team.other")
    empty = await as_json(url, "dlq", "list", "team.other")
    assert empty == {"dead_letter_mailbox": "team.other.dlq", "exists": False, "letters": []}


@pytest.mark.slow
async def test_calls_list_show_answer_cancel(server):
    url, client = server
    agent = await serve_agent(text_graph(asking), name="agent.asker", client=client, **text_io())
    try:
        caller = AgentCaller(client, "human.calls")
        asked = await caller.call("agent.asker", "greet", wait=30)
        other = await caller.call("agent.asker", "wave", wait=30)
        assert asked.state == other.state == "TASK_STATE_INPUT_REQUIRED"
        listed = await as_json(url, "calls", "--reply", "human.calls", "list")
        assert {c["task_id"] for c in listed["calls"]} == {asked.task_id, other.task_id}
        assert {c["question"] for c in listed["calls"]} == {"Which language?"}
        waiting = await as_json(
            url, "calls", "--reply", "human.calls", "list", "--state", "input-required"
        )
        assert waiting["count"] == 2
        shown = await as_json(url, "calls", "--reply", "human.calls", "show", asked.task_id)
        assert shown["state"] == "input-required" and shown["agent"] == "agent.asker"
        answered = await as_json(
            url,
            "calls",
            "--reply",
            "human.calls",
            "answer",
            asked.task_id,
            "French",
            "--wait",
            "60",
        )
        assert answered["state"] == "completed" and answered["result"] == "greet in French"
        code, _, err = await mq9(
            url, "calls", "--reply", "human.calls", "answer", asked.task_id, "again"
        )
        assert code == 1 and "takes no answer now" in err
        canceled = await as_json(url, "calls", "--reply", "human.calls", "cancel", other.task_id)
        assert canceled["state"] in ("canceled", "input-required")  # the agent confirms later
        done = await caller.check(other.task_id, wait=30)
        assert done.state == "TASK_STATE_CANCELED"
        code, out, _ = await mq9(url, "calls", "--reply", "human.calls", "list")
        assert code == 0 and "completed" in out and "canceled" in out
        code, _, err = await mq9(url, "calls", "--reply", "human.calls", "show", "nope")
        assert code == 3 and "no call" in err
    finally:
        await agent.stop()


@pytest.mark.slow
async def test_exit_codes_say_what_went_wrong(server):
    url, _ = server
    code, _, err = await mq9(url, "query", "no.such.box")
    assert code == 3 and err.startswith("mq9: mailbox 'no.such.box' does not exist")
    code, _, err = await mq9(url, "query", "NOT AN ADDRESS")
    assert code == 1 and "invalid mail_address" in err
    code, _, err = await mq9(url, "fetch", "team.x", "--group", "")
    assert code == 2 and err.startswith("mq9: --group:")
    code, _, err = await mq9(url, "send")
    assert code == 2 and "Missing argument" in err
    code, _, err = await mq9(f"nats://127.0.0.1:{silent_port()}", "agents")
    assert code == 4 and "cannot connect" in err


@pytest.mark.slow
async def test_what_others_wrote_cannot_drive_the_terminal(server):
    url, client = server
    await client.mailbox_create(name="team.term")
    await client.send("team.term", "\x1b]0;owned\x07\x1b[2Jhidden\u202eevil")
    code, out, _ = await mq9(url, "query", "team.term")
    assert code == 0 and "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\u001b]0;owned\\u0007" in out
    code, out, _ = await mq9(url, "query", "team.term", "--json")
    assert "\x1b" not in out and "\u202e" not in out  # escaped: the same text to a parser
    found = json.loads(out)
    assert found["messages"][0]["payload"] == "\x1b]0;owned\x07\x1b[2Jhidden\u202eevil"


async def test_the_shell_gets_completion_and_each_command_an_example():
    for shell in ("bash", "zsh", "fish"):
        result = CliRunner().invoke(cli, ["completion", shell], prog_name="mq9")
        assert result.exit_code == 0 and "_MQ9_COMPLETE" in result.stdout
    env = {"_MQ9_COMPLETE": "bash_complete", "COMP_WORDS": "mq9 dl", "COMP_CWORD": "1"}
    result = CliRunner().invoke(cli, [], env=env, prog_name="mq9")
    assert "dlq" in result.stdout
    commands = [[], ["dlq"], ["calls"]]
    commands += [[name] for name in cli.commands]
    commands += [["dlq", name] for name in cli.commands["dlq"].commands]
    commands += [["calls", "--reply", "x.y", name] for name in cli.commands["calls"].commands]
    for words in commands:
        result = CliRunner().invoke(cli, [*words, "--help"], prog_name="mq9")
        assert result.exit_code == 0 and "Example:" in result.stdout and "mq9 " in result.stdout, (
            words
        )


def test_a_misspelt_option_or_command_names_the_one_meant():
    for argv, meant in [
        (["console", "--allow-write"], "Did you mean '--allow-writes'?"),
        (["fetch", "team.box", "--gruop", "g"], "Did you mean '--group'?"),
        (["dlqq"], "Did you mean 'dlq'?"),
    ]:
        result = CliRunner().invoke(cli, ["--server", "memory://", *argv], prog_name="mq9")
        assert result.exit_code == 2 and meant in result.stderr, argv


def test_the_entry_point_runs_on_the_in_process_broker(capsys):
    assert main(["--server", "memory://", "agents", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"count": 0, "agents": []}
    assert main(["--server", "memory://", "query", "no.box"]) == 3
    assert main(["--bogus"]) == 2


@pytest.mark.slow  # a refused login is waited out as the client waits it
async def test_it_logs_in_as_the_toolkit_does():
    """Against the RobustMQ-shaped listener with logins (RobustMQ's auth_required)."""
    engine = BrokerEngine(search=False)
    async with RobustMQShapedListener(engine, logins={"alice": "s3cret-pw"}) as listener:
        url = listener.url
        found = await as_json(url, "--user", "alice", "--password", "s3cret-pw", "agents")
        assert found == {"count": 0, "agents": []}
        env = {"MQ9_USER": "alice", "MQ9_PASSWORD": "s3cret-pw"}
        code, out, err = await mq9(url, "agents", "--json", env=env)
        assert code == 0 and json.loads(out)["count"] == 0, err
        code, _, err = await mq9(url, "--user", "alice", "--password", "wrong-pw", "agents")
        assert code == 5 and "refused the credentials" in err and "wrong-pw" not in err
        code, _, err = await mq9(url, "agents")
        assert code == 5 and "wants a login" in err
        assert "or nats://<id>:<secret>@host:port" in err  # the hint's example whole (#78)


# -- #73: the exit codes of docs/console.md in every case, in one line a person reads ---------


@pytest.mark.slow
async def test_deleting_a_message_that_is_not_there_says_so(server):
    url, client = server
    await client.mailbox_create(name="team.del")
    kept = await client.send("team.del", "keep me")
    code, out, err = await mq9(url, "delete", "team.del", "987654")
    assert code == 3 and out == "" and "deleted" not in out
    assert err == "mq9: no message 987654 in team.del (nothing deleted)\n"
    code, out, _ = await mq9(url, "delete", "team.del", str(kept))
    assert code == 0 and out.strip() == f"deleted msg_id {kept}"
    assert await client.query("team.del") == []
    code, _, err = await mq9(url, "delete", "no.such.box", "1")
    assert code == 3 and err.startswith("mq9: mailbox 'no.such.box' does not exist")


@pytest.mark.slow
async def test_the_dead_letters_of_no_mailbox_are_not_found(server):
    url, _ = server
    code, out, err = await mq9(url, "dlq", "list", "no.such.mailbox")
    assert code == 3 and out == "" and len(err.splitlines()) == 1
    assert err.startswith("mq9: mailbox 'no.such.mailbox' does not exist")


@pytest.mark.slow
async def test_an_empty_message_is_refused_and_nothing_is_stored(server):
    url, client = server
    await client.mailbox_create(name="team.empty")
    for stdin in ("", None):
        code, out, err = await mq9(url, "send", "team.empty", stdin=stdin)
        assert code == 2 and out == "" and err.startswith("mq9: an empty message"), err
    code, _, err = await mq9(url, "send", "team.empty", "")
    assert code == 2 and "empty message" in err
    assert await client.query("team.empty") == []


def test_a_usage_error_is_one_mq9_line():
    for argv, said in [
        (["send"], "Missing argument 'MAILBOX'"),
        (["fetch", "team.box", "--gruop", "g"], "No such option '--gruop'"),
        (["ack", "team.box", "x"], "'x' is not a valid integer"),
        (["dlqq"], "No such command 'dlqq'"),
        (["--bogus"], "No such option"),
    ]:
        result = CliRunner().invoke(cli, ["--server", "memory://", *argv], prog_name="mq9")
        assert result.exit_code == 2 and result.stdout == "", argv
        [line] = result.stderr.splitlines()
        assert line.startswith("mq9: ") and said in line and "--help" in line, line
        assert "Usage:" not in result.stderr and "Try " not in result.stderr


@pytest.mark.slow
async def test_set_aside_says_what_it_did_and_a_wrong_ack_speaks_to_a_person(server):
    url, client = server
    await client.mailbox_create(name="team.aside")
    await client.send("team.aside", "poison")
    fetched = await as_json(url, "fetch", "team.aside", "--group", "workers", "--consume")
    [msg_id] = [m["msg_id"] for m in fetched["messages"]]
    code, out, err = await mq9(
        url, "ack", "team.aside", str(msg_id), "--group", "workers", "--set-aside", "bad input"
    )
    assert code == 0, err
    assert out.startswith(f"set aside msg_id {msg_id}") and "team.aside.dlq" in out
    assert "nothing" not in out
    listed = await as_json(url, "dlq", "list", "team.aside")
    assert listed["letters"][0]["dead_letter"]["reason"] == "bad input"
    code, out, err = await mq9(url, "ack", "team.aside", "77", "--group", "workers")
    assert code == 1 and out == "" and len(err.splitlines()) == 1
    assert "fetch_messages" not in err and "mail_address" not in err
    assert "mq9 fetch team.aside --group workers --consume" in err


@pytest.mark.slow
async def test_a_table_shows_a_long_reason_whole(server):
    url, client = server
    await client.mailbox_create(name="team.long")
    await client.send("team.long", "x")
    reader = GroupReader(client, "team.long", "workers")
    [message] = await reader.fetch()
    reason = "the upstream invoice service answered 503 three times in a row; " + "z" * 80
    await reader.dead_letter(message.msg_id, reason)
    code, out, _ = await mq9(url, "dlq", "list", "team.long")
    assert code == 0 and reason in out and "..." not in out


@pytest.mark.slow  # over a second on a quiet machine (#89)
async def test_a_query_counts_every_message_past_an_answer_s_30_mib():
    """34 messages of 1 MB: one QUERY answers 31 (RobustMQ reads at most 30 MiB at once)."""
    async with RobustMQShapedListener(BrokerEngine(search=False)) as listener:
        async with Mq9Client(listener.url, request_timeout=60) as client:
            await client.mailbox_create(name="team.big")
            for n in range(34):
                await client.send("team.big", f"{n:04d}" + "x" * 999_996)
            assert len(await client.query("team.big")) == 31  # what one QUERY answers
        found = await as_json(listener.url, "query", "team.big")
        assert found["count"] == 34
        assert [m["msg_id"] for m in found["messages"]] == list(range(34))
        tagged = await as_json(listener.url, "query", "team.big", "--limit", "5")
        assert tagged["count"] == 5


async def test_a_query_reads_on_past_an_answer_cut_to_the_broker_s_answer_size():
    """A broker that keeps answers within 200,000 bytes (as the bundled broker keeps them
    within its NATS server's max_payload) answers six messages of 30 KB a read, saying nothing
    of the cut: ``mq9 query`` reads on from where each answer stops until a read finds nothing
    more, across the lanes (the critical and urgent ones come first in each read)."""
    engine = BrokerEngine(search=False, limits=BrokerLimits(max_answer=200_000))
    plan = ["normal"] * 10 + ["critical"] * 2 + ["normal"] * 10 + ["urgent"] + ["normal"] * 4
    async with RobustMQShapedListener(engine) as listener:
        async with Mq9Client(listener.url, request_timeout=60) as client:
            await client.mailbox_create(name="team.cut")
            sent = [
                await client.send("team.cut", f"{n:03d}" + "x" * 30_000, priority=priority)
                for n, priority in enumerate(plan)
            ]
            assert len(await client.query("team.cut")) < 10  # what one QUERY answers
        found = await as_json(listener.url, "query", "team.cut")
        assert found["count"] == len(sent) == 27
        assert [m["msg_id"] for m in found["messages"]] == sent
        some = await as_json(listener.url, "query", "team.cut", "--limit", "20")
        assert [m["msg_id"] for m in some["messages"]] == sent[:20]


async def test_a_query_from_an_id_says_what_its_first_page_may_miss():
    """``mq9 query --from-id`` shows its first page's "may be missing" (the tool's note is a
    model's, so the command line dropped it): six critical messages of 30 KB fill an answer
    of 200,000 bytes, cut right after them, before the normal one below."""
    engine = BrokerEngine(search=False, limits=BrokerLimits(max_answer=200_000))
    async with RobustMQShapedListener(engine) as listener:
        async with Mq9Client(listener.url, request_timeout=60) as client:
            await client.mailbox_create(name="team.edge")
            await client.send("team.edge", "first")
            below = await client.send("team.edge", "normal" + "x" * 30_000)
            critical = [
                await client.send("team.edge", f"{n}" + "x" * 30_000, priority="critical")
                for n in range(6)
            ]
        found = await as_json(listener.url, "query", "team.edge", "--from-id", str(below))
        assert [m["msg_id"] for m in found["messages"]] == critical
        said = f"less urgent messages between msg_id {below} and {critical[-1]} may be missing"
        assert said in found["warning"] and "fetch_messages" not in found["warning"]
        code, out, _ = await mq9(listener.url, "query", "team.edge", "--from-id", str(below))
        assert code == 0 and f"warning: {said}" in out
        whole = await as_json(listener.url, "query", "team.edge")  # a QUERY: msg_id order
        assert [m["msg_id"] for m in whole["messages"]] == [0, below, *critical]
        assert "warning" not in whole
