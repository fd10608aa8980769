"""What an operator does in the console (#73), over plain HTTP as a browser's forms do it:
per-message delete, ack and set-aside, replay of one dead letter, search by key, tags and
text with pages past 100, JSON payloads indented, answered calls kept with their question,
who did what in the log; names and payloads that cannot lie (bidirectional overrides shown as
escapes on every page); counts past one answer; the login however the
broker credential was given; an Origin check behind a reverse proxy."""

from __future__ import annotations

import re

import httpx
import pytest

from langchain_mq9 import serve_agent
from mq9_cli import overview
from mq9_cli.connect import Target
from mq9_cli.console.serve import settings_for
from mq9_platform import AgentCaller
from mq9_platform.groups.reader import GroupReader
from testbed.support.a2a_support import asking, text_graph, text_io
from tests.cli.console.console_world import TOKEN, World

pytestmark = pytest.mark.slow
WAIT = 60
RTL = "\u202e"


def logged_in(world: World, **headers: str) -> tuple[httpx.Client, str]:
    http = httpx.Client(base_url=world.url, timeout=WAIT)
    answer = http.post("/login", data={"token": TOKEN}, headers=headers)
    assert answer.status_code == 303, answer.text
    page = http.get("/agents").text
    return http, re.search(r'name="csrf" value="([^"]+)"', page)[1]


async def _dead_letter(client, mailbox: str, payload: str, reason: str) -> None:
    sent = await client.send(mailbox, payload)
    reader = GroupReader(client, mailbox, "workers")
    await reader.fetch()
    await reader.dead_letter(sent, reason)


def test_names_and_payloads_cannot_lie_on_any_page():
    with World(allow_writes=True) as world:
        client = world.client
        world.run(client.mailbox_create(name="team.rtl"))
        card = {"name": f"agent.{RTL}txt.exe", "capabilities": f"reads {RTL}fdp.exe"}
        world.run(client.agent_register({**card, "mailbox": "team.rtl"}))
        world.run(client.send("team.rtl", f"{RTL}exe.txt \x1b[2J", key=f"k{RTL}", tags=["t"]))
        world.run(_dead_letter(client, "team.rtl", "poison", f"bad {RTL}gnp.exe"))
        http, _ = logged_in(world)
        pages = [
            "/agents",
            "/mailboxes",
            "/mailboxes/team.rtl",
            "/mailboxes/team.rtl/messages/0",
            "/mailboxes/team.rtl/dead-letters",
            "/mailboxes/team.rtl.dlq/messages/0",
        ]
        for path in pages:
            page = http.get(path)
            assert page.status_code == 200, (path, page.text)
            assert RTL not in page.text and "\x1b" not in page.text, path
        agents = http.get("/agents").text
        assert "agent.\\u202etxt.exe" in agents
        mailbox = http.get("/mailboxes/team.rtl").text
        assert "\\u202eexe.txt \\u001b[2J" in mailbox and "k\\u202e" in mailbox
        assert "bad \\u202egnp.exe" in http.get("/mailboxes/team.rtl/dead-letters").text
        # the live rows too: the page's script sets what the stream says as text
        with http.stream("GET", "/events/mailbox/team.rtl?after=0") as events:
            world.run(client.send("team.rtl", f"live {RTL}exe.txt"))
            for line in events.iter_lines():
                if line.startswith("data:") and "live " in line:
                    assert "\\\\u202e" in line and "\\u202e" not in line.replace("\\\\", "")
                    break
        # the API hands scripts the exact text (JSON escapes nothing a parser misreads)
        exact = http.get("/api/mailboxes/team.rtl").json()
        assert exact["messages"][0]["payload"] == f"{RTL}exe.txt \x1b[2J"


def test_counts_past_one_answer_are_counted_on_and_pages_go_on():
    """34 messages of 1 MB: one QUERY answers 31 (30 MiB a read); the mailbox's page counts
    the other 3 with a read from there, its first page is the QUERY's 31."""
    with World(sample_seconds=0.2) as world:
        client = world.client
        world.run(client.mailbox_create(name="team.big"))
        for n in range(34):
            world.run(client.send("team.big", f"{n:04d}" + "x" * 999_996))
        http, _ = logged_in(world)
        found = http.get("/api/mailboxes/team.big").json()
        assert found["total"] == 34 and found["capped"] and not found["total_is_lower_bound"]
        assert len(found["messages"]) == 31
        assert found["next_from_id"] == 31
        rest = http.get("/api/mailboxes/team.big?from_id=31").json()
        assert [m["msg_id"] for m in rest["messages"]] == [31, 32, 33]
        assert rest["next_from_id"] is None
        for _ in range(3):  # while the sampler looks too: never a 400 for an answer's size
            page = http.get("/mailboxes/team.big")
            assert page.status_code == 200, page.text
            assert 'id="total">34<' in page.text and 'id="lower-bound"' not in page.text
        page = http.get("/mailboxes/team.big?from_id=31")
        assert page.status_code == 200 and page.text.count('class="message"') == 3
        world.run(client.mailbox_create(name="team.small"))
        world.run(client.send("team.small", "one"))
        small = http.get("/api/mailboxes/team.small").json()
        assert small["total"] == 1 and not small["total_is_lower_bound"]


def test_search_by_key_tags_and_text_and_pages_past_100():
    with World() as world:
        client = world.client
        world.run(client.mailbox_create(name="team.many"))
        for n in range(150):
            needle = " needle" if n in (5, 120) else ""
            tags = ["billing"] if n % 50 == 0 else None
            world.run(client.send("team.many", f"message {n}{needle}", tags=tags))
        world.run(client.send("team.many", "first k", key="order-7"))
        world.run(client.send("team.many", "newest k", key="order-7"))
        http, _ = logged_in(world)

        def ids(page: str) -> list[int]:
            return [int(i) for i in re.findall(r'class="message" data-msg-id="(\d+)"', page)]

        first = http.get("/mailboxes/team.many").text
        assert ids(first) == list(range(100))
        following = re.search(r'href="(\?from_id=\d+)" id="next-page"', first)[1]
        second = http.get("/mailboxes/team.many" + following).text
        assert ids(second) == [*range(100, 150), 151]  # (150 was replaced by its key)
        assert 'id="next-page"' not in second
        text = http.get("/mailboxes/team.many?text=NEEDLE").text
        assert ids(text) == [5, 120]
        assert ids(http.get("/mailboxes/team.many?tags=billing").text) == [0, 50, 100]
        assert ids(http.get("/mailboxes/team.many?key=order-7").text) == [151]
        api = http.get("/api/mailboxes/team.many?text=needle").json()
        assert [m["msg_id"] for m in api["messages"]] == [5, 120]
        bad = http.get("/mailboxes/team.many?from_id=x")
        assert bad.status_code == 400 and "is not a msg_id" in bad.text


def test_per_message_delete_ack_set_aside_and_one_replay_each_logged():
    with World(allow_writes=True) as world:
        client = world.client
        world.run(client.mailbox_create(name="team.ops"))
        for n in range(4):
            world.run(client.send("team.ops", f'{{"job": {n}, "items": [1, 2]}}'))
        http, csrf = logged_in(world)
        message = http.get("/mailboxes/team.ops/messages/0").text
        assert "&#34;job&#34;: 0,\n  &#34;items&#34;: [\n    1," in message  # indented, as text
        assert 'id="delete-form"' in message and 'id="set-aside-form"' in message

        def post(path: str, **fields: str) -> httpx.Response:
            return http.post(path, data={"csrf": csrf, **fields})

        assert post("/mailboxes/team.ops/messages/0/delete").status_code == 303
        assert [m.msg_id for m in world.run(client.query("team.ops"))] == [1, 2, 3]
        again = post("/mailboxes/team.ops/messages/0/delete")
        assert again.status_code == 400 and "no message 0 in team.ops" in again.text

        answer = post("/mailboxes/team.ops/messages/1/set-aside", reason="malformed order")
        assert answer.status_code == 303
        assert [m.msg_id for m in world.run(client.query("team.ops"))] == [2, 3]
        dlq = http.get("/mailboxes/team.ops/dead-letters").text
        assert "malformed order" in dlq and "replay-one" in dlq

        assert post("/mailboxes/team.ops/messages/2/ack", group="workers").status_code == 303
        reader = GroupReader(client, "team.ops", "workers")
        assert [m.msg_id for m in world.run(reader.fetch())] == [3]  # went past 2

        replayed = post("/mailboxes/team.ops/dead-letters/0/replay")
        assert replayed.status_code == 303
        back = world.run(client.query("team.ops"))
        assert [m.text() for m in back][-1] == '{"job": 1, "items": [1, 2]}'
        assert http.get("/api/mailboxes/team.ops.dlq").json()["total"] == 0
        again = post("/mailboxes/team.ops/dead-letters/0/replay")
        assert again.status_code == 400 and "no dead letter 0" in again.text  # once only

        log = http.get("/log").text
        for action in ("delete", "set-aside", "ack", "replay"):
            assert f'class="action">{action}<' in log, action
        assert "the console token from 127.0.0.1" in log
        entries = http.get("/api/log").json()["entries"]
        assert [e["action"] for e in entries] == ["replay", "ack", "set-aside", "delete"]
        assert entries[2]["reason"] == "malformed order"


def test_a_read_only_console_shows_no_action_and_refuses_them():
    with World(allow_writes=False) as world:
        world.run(world.client.mailbox_create(name="team.ro"))
        world.run(world.client.send("team.ro", "x"))
        http, csrf = logged_in(world)
        page = http.get("/mailboxes/team.ro/messages/0").text
        assert 'id="delete-form"' not in page
        for action in ("delete", "ack", "set-aside"):
            answer = http.post(f"/mailboxes/team.ro/messages/0/{action}", data={"csrf": csrf})
            assert answer.status_code == 403 and "read-only" in answer.text
        assert len(world.run(world.client.query("team.ro"))) == 1


def test_an_answered_call_keeps_its_question_and_answer():
    with World(allow_writes=True, reply_mailboxes=("human.calls",)) as world:
        client = world.client
        served = world.run(
            serve_agent(text_graph(asking), name="agent.asker", client=client, **text_io())
        )
        try:
            caller = AgentCaller(client, "human.calls")
            asked = world.run(caller.call("agent.asker", "greet", wait=WAIT))
            http, csrf = logged_in(world)
            path = f"/calls/human.calls/{asked.task_id}/answer"
            assert http.post(path, data={"csrf": csrf, "answer": "French"}).status_code == 303
            assert world.run(caller.check(asked.task_id, wait=WAIT)).state.endswith("COMPLETED")
            calls = http.get("/calls").text
            kept = calls.split('id="answered"', 1)[1]
            assert "Which language?" in kept and "French" in kept and asked.task_id[:12] in kept
            call = http.get(f"/calls/human.calls/{asked.task_id}").text
            assert 'answered “<span class="asked">Which language?</span>”' in call
            [entry] = http.get("/api/log").json()["entries"]
            assert entry["question"] == "Which language?" and entry["answer"] == "French"
        finally:
            world.run(served.stop())


def test_behind_a_proxy_that_rewrites_host_its_public_origin_posts():
    public = "https://mq9.example.com"
    with World(allow_writes=True, public_origins=(public,)) as world:
        world.run(world.client.mailbox_create(name="team.px"))
        http, csrf = logged_in(world, origin=public)  # nginx: Host 127.0.0.1:<port>
        replay = "/mailboxes/team.px/dead-letters/replay"
        ok = http.post(replay, data={"csrf": csrf}, headers={"origin": public})
        assert ok.status_code == 303
        for other in ("https://evil.example", "https://mq9.example.com.evil.example"):
            refused = http.post(replay, data={"csrf": csrf}, headers={"origin": other})
            assert refused.status_code == 403 and "another site" in refused.text
    with World() as world:  # without it, the proxy's origin is another site
        answer = httpx.post(f"{world.url}/login", data={"token": TOKEN}, headers={"origin": public})
        assert answer.status_code == 403


def test_the_console_opens_with_the_broker_credential_however_it_was_given(tmp_path, monkeypatch):
    options = {"allow_writes": False, "mailboxes": (), "reply_mailboxes": ()}

    def secrets(target: Target) -> list[str]:
        settings, _ = settings_for(target, host="127.0.0.1", console_token=None, **options)
        return settings.other_secrets

    monkeypatch.delenv("MQ9_CREDENTIAL", raising=False)
    monkeypatch.delenv("MQ9_CREDENTIAL_FILE", raising=False)
    assert "ops:s3cr3t" in secrets(Target.from_options("nats://ops:s3cr3t@127.0.0.1:4222"))
    assert "tok3n" in secrets(Target.from_options("nats://tok3n@127.0.0.1:4222"))
    monkeypatch.setenv("MQ9_CREDENTIAL", "ops:fr0m-env")
    assert "ops:fr0m-env" in secrets(Target.from_options("nats://127.0.0.1:4222"))
    monkeypatch.delenv("MQ9_CREDENTIAL")
    path = tmp_path / "credential"
    path.write_text("ops:fr0m-file\n")
    path.chmod(0o600)
    monkeypatch.setenv("MQ9_CREDENTIAL_FILE", str(path))
    assert "ops:fr0m-file" in secrets(Target.from_options("nats://127.0.0.1:4222"))
    given = Target.from_options("nats://127.0.0.1:4222", credential_file=str(path))
    assert "ops:fr0m-file" in secrets(given)
    with World(other_secrets=["ops:fr0m-env"]) as world:
        answer = httpx.post(f"{world.url}/login", data={"token": "ops:fr0m-env"})
        assert answer.status_code == 303


def test_the_first_page_is_the_figures_query_not_a_second_read():
    """A mailbox page reads the mailbox once (a QUERY answers up to 30 MiB)."""
    with World(sample_seconds=3600) as world:
        world.run(world.client.mailbox_create(name="team.once"))
        world.run(world.client.send("team.once", "x"))
        http, _ = logged_in(world)
        reads = []
        real = overview.figures

        async def counted(client, address, **how):
            reads.append(address)
            return await real(client, address, **how)

        overview.figures = counted
        try:
            assert http.get("/mailboxes/team.once").status_code == 200
        finally:
            overview.figures = real
        assert reads == ["team.once"]


def test_the_audit_log_file_keeps_who_did_what_across_restarts(tmp_path):
    from mq9_cli.console.audit import AuditLog

    path = tmp_path / "audit.jsonl"
    first = AuditLog(str(path), clock=lambda: 1000.0)
    first.add("the console token from 127.0.0.1", "delete", "team.box", msg_id=3)
    first.add("the broker login from 10.0.0.2", "answer", "me.calls", question="Q", answer="A")
    with path.open("a") as torn:
        torn.write('{"time": 1, "who"')  # a write cut short by a crash
    again = AuditLog(str(path))
    assert [(e.action, e.target) for e in again.entries()] == [
        ("answer", "me.calls"),
        ("delete", "team.box"),
    ]
    assert again.entries(action="answer")[0].detail == {"question": "Q", "answer": "A"}


def test_the_pictures_show_overrides_as_escapes():
    from mq9_cli.console.charts import depth_chart, timeline_chart
    from mq9_cli.overview import Event

    drawn = timeline_chart(f"t{RTL}1", [Event(1, "agent", f"step {RTL}exe.txt", None)])
    assert RTL not in drawn and "step \\u202eexe.txt" in drawn
    assert RTL not in depth_chart(f"x{RTL}", [(0.0, 1), (1.0, 2)], capped=100)


def test_a_public_origin_that_is_no_origin_is_refused_in_one_line():
    from click.testing import CliRunner

    from mq9_cli.app import cli

    for given in ("mq9.example.com", "https://mq9.example.com/console", "ftp://x"):
        argv = ["--server", "memory://", "console", "--public-origin", given]
        result = CliRunner().invoke(cli, argv, prog_name="mq9")
        assert result.exit_code == 2 and result.stdout == "", given
        [line] = result.stderr.splitlines()
        assert line.startswith("mq9: --public-origin") and "https://mq9.example.com" in line
