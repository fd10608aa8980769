"""The console over plain HTTP, as any local process reaches it: nothing without a token, a
session cookie only a same-site page sends, a CSRF token on every write, writes only when
allowed, and the checks before it listens. Its pictures and its JSON API."""

from __future__ import annotations

import re
import socket

import httpx
import pytest
from click.testing import CliRunner
from console_world import TOKEN, World

from mq9_cli.app import cli
from mq9_cli.connect import Target
from mq9_cli.console.auth import Gate
from mq9_cli.console.serve import settings_for
from mq9_platform.groups.reader import GroupReader
from testbed.ports import silent_port

pytestmark = pytest.mark.slow

PAGES = [
    "/",
    "/agents",
    "/agents?q=x",
    "/mailboxes",
    "/mailboxes/team.box",
    "/mailboxes/team.box/messages/0",
    "/mailboxes/team.box/depth.svg",
    "/mailboxes/team.box/dead-letters",
    "/calls",
    "/calls/human.calls/abc",
    "/calls/human.calls/abc/timeline.svg",
    "/events/mailbox/team.box",
    "/events/call/human.calls/abc",
    "/api/agents",
    "/api/mailboxes/team.box",
    "/api/mailboxes/team.box/dead-letters",
    "/api/calls",
]
WRITES = [
    "/mailboxes/team.box/dead-letters/replay",
    "/calls/human.calls/abc/answer",
    "/calls/human.calls/abc/cancel",
    "/logout",
]


@pytest.fixture(scope="module")
def world():
    with World(allow_writes=True, reply_mailboxes=("human.calls",)) as started:
        started.run(started.client.mailbox_create(name="team.box"))
        yield started


def logged_in(world) -> tuple[httpx.Client, str]:
    """A session as a browser gets it: the cookie, and the CSRF token of its forms."""
    http = httpx.Client(base_url=world.url, timeout=30)
    answer = http.post("/login", data={"token": TOKEN})
    assert answer.status_code == 303 and answer.headers["location"] == "/agents"
    page = http.get("/agents").text
    return http, re.search(r'name="csrf" value="([^"]+)"', page)[1]


def test_without_a_token_every_page_stream_picture_and_api_call_is_refused(world):
    with httpx.Client(base_url=world.url, timeout=30) as http:
        for path in PAGES:
            for headers in ({}, {"authorization": "Bearer wrong"}, {"cookie": "mq9_console=x"}):
                answer = http.get(path, headers=headers)
                program = path.startswith(("/api/", "/events/")) or path.endswith(".svg")
                if program:
                    assert answer.status_code == 401, (path, headers)
                else:  # a person's page: sent to the login page (#78), shown nothing else
                    assert answer.status_code == 303, (path, headers)
                    assert answer.headers["location"] == "/login", path
                assert "team.box" not in answer.text
        landing = http.get("/", follow_redirects=True)  # where a browser lands
        assert landing.status_code == 200 and str(landing.url).endswith("/login")
        assert 'id="token"' in landing.text
        for path in WRITES:
            answer = http.post(path, data={"csrf": "x", "answer": "y"})
            assert answer.status_code == 401, path
        answer = http.post("/login", data={"token": "not the token"})
        assert answer.status_code == 401 and "set-cookie" not in answer.headers
        assert http.get("/static/console.js").status_code == 200  # the console's own code


def test_the_token_opens_a_session_whose_cookie_stays_on_this_site(world):
    http, csrf = logged_in(world)
    cookie = http.cookies.jar and next(iter(http.cookies.jar))
    assert cookie.name == "mq9_console" and cookie.has_nonstandard_attr("HttpOnly")
    answer = httpx.post(f"{world.url}/login", data={"token": TOKEN})
    flags = answer.headers["set-cookie"]
    assert "HttpOnly" in flags and "SameSite=Strict" in flags and "Path=/" in flags
    for path in PAGES[1:9] + PAGES[13:]:
        if "abc" in path or "messages/" in path:  # (no such call or message: 400, 404)
            continue
        answer = http.get(path)
        assert answer.status_code == 200, path
        assert "default-src 'none'" in answer.headers["content-security-policy"]
        assert answer.headers["x-content-type-options"] == "nosniff"
    bearer = {"authorization": f"Bearer {TOKEN}"}
    assert httpx.get(f"{world.url}/api/agents", headers=bearer).status_code == 200
    assert http.post("/logout", data={"csrf": csrf}).status_code == 303
    assert http.get("/agents").headers["location"] == "/login"  # the session ended
    assert http.get("/api/agents").status_code == 401


def test_the_pages_own_mailboxes_dead_letters_and_notes(world):
    """An open broker (no credential of the console's own): every mailbox a link, its dead
    letters in a column of its own (none yet: a link to the page that says so), the agents
    page's note on reports apart from the cards' data (#78)."""
    world.run(world.client.agent_register({"name": "team.box", "mailbox": "team.box"}))
    http, _ = logged_in(world)
    page = http.get("/mailboxes").text
    row = page.split('<a href="/mailboxes/team.box">team.box</a>', 1)[1].split("</tr>", 1)[0]
    assert '<a href="/mailboxes/team.box/dead-letters">none yet</a>' in row, row
    assert 'id="others"' not in page  # nobody's mailbox is kept from an open broker's reader
    agents = http.get("/agents").text
    assert '<a class="mailbox-link" href="/mailboxes/team.box">' in agents
    assert 'id="reports-note"' in agents and "Last report:" not in agents
    cards = agents.split('id="agents"', 1)[1].split("</div>", 1)[0]
    assert "never answered" not in cards  # the note is not in a card's data
    assert http.get("/mailboxes/team.box/dead-letters").status_code == 200


def test_every_write_needs_its_session_csrf_token_and_this_origin(world):
    world.run(world.client.send("team.box", "x"))
    http, csrf = logged_in(world)
    replay = "/mailboxes/team.box/dead-letters/replay"
    assert http.post(replay, data={}).status_code == 403
    assert http.post(replay, data={"csrf": "forged"}).status_code == 403
    _, other_csrf = logged_in(world)
    assert http.post(replay, data={"csrf": other_csrf}).status_code == 403  # another session's
    foreign = {"origin": "http://evil.example"}
    answer = http.post(replay, data={"csrf": csrf}, headers=foreign)
    assert answer.status_code == 403 and "another site" in answer.text
    assert http.post(replay, data={"csrf": csrf}).status_code == 303
    big = {"csrf": csrf, "answer": "x" * 100_000}
    assert http.post("/calls/human.calls/abc/answer", data=big).status_code == 413
    # a reply mailbox the console was not given is not its to answer for
    answer = http.post("/calls/other.calls/abc/answer", data={"csrf": csrf, "answer": "y"})
    assert answer.status_code == 400 and "shows no calls of &#39;other.calls&#39;" in answer.text


def test_a_read_only_console_shows_no_write_form_and_refuses_writes():
    with World(allow_writes=False) as world:
        world.run(world.client.mailbox_create(name="team.jobs"))
        world.run(world.client.send("team.jobs", "poison"))

        async def dead_letter():
            reader = GroupReader(world.client, "team.jobs", "workers")
            [message] = await reader.fetch()
            await reader.dead_letter(message.msg_id, "bad")

        world.run(dead_letter())
        http, csrf = logged_in(world)
        page = http.get("/mailboxes/team.jobs/dead-letters").text
        assert "bad" in page and 'id="replay"' not in page and "read-only" in page
        answer = http.post("/mailboxes/team.jobs/dead-letters/replay", data={"csrf": csrf})
        assert answer.status_code == 403 and "read-only" in answer.text
        assert len(world.run(world.client.query("team.jobs"))) == 1  # nothing sent back


def test_the_pictures_are_svg_with_every_word_escaped(world):
    http, _ = logged_in(world)
    for n in range(3):
        world.run(world.client.send("team.box", f"m{n}"))
        http.get("/mailboxes/team.box")  # each look is a point
    svg = http.get("/mailboxes/team.box/depth.svg")
    assert svg.headers["content-type"].startswith("image/svg+xml")
    assert "<polyline" in svg.text and "messages in team.box over time" in svg.text
    from mq9_cli.console.charts import timeline_chart
    from mq9_cli.overview import Event

    drawn = timeline_chart("t1", [Event(1, "agent", "<script>x</script>", "a" * 32)])
    assert "<script>" not in drawn and "&lt;script&gt;" in drawn


def test_the_json_api_hands_payloads_back_exactly(world):
    hostile = '<script>alert(1)</script><img src=x onerror="alert(2)">'
    world.run(world.client.send("team.box", hostile))
    http, _ = logged_in(world)
    found = http.get("/api/mailboxes/team.box").json()
    assert hostile in [m["payload"] for m in found["messages"]]
    assert found["mailbox_ttl"] is None and found["exists"]
    calls = http.get("/api/calls").json()
    assert "lists no calls" in calls["unanswered"]["calls"]


def test_the_broker_login_also_opens_it_and_each_secret_is_compared_whole():
    gate = Gate("the-console-token-123456", ["broker-password"])
    assert gate.opens("the-console-token-123456") and gate.opens("broker-password")
    for wrong in ("", "the-console-token-12345", "broker-password ", "BROKER-PASSWORD"):
        assert not gate.opens(wrong)
    assert gate.bearer("Bearer the-console-token-123456")
    assert not gate.bearer("Bearer broker-password")  # programs use the console's token


def test_it_binds_beyond_loopback_only_with_a_token_it_was_given():
    target = Target("memory://")
    options = {"allow_writes": False, "mailboxes": (), "reply_mailboxes": ()}
    with pytest.raises(Exception, match="not a loopback address"):
        settings_for(target, host="0.0.0.0", console_token=None, **options)
    with pytest.raises(Exception, match="at least 16 characters"):
        settings_for(target, host="127.0.0.1", console_token="short", **options)
    settings, made = settings_for(target, host="::1", console_token=None, **options)
    assert made and len(settings.token) >= 32
    settings, made = settings_for(
        target, host="0.0.0.0", console_token="a-long-random-secret-here", **options
    )
    assert not made and settings.token == "a-long-random-secret-here"
    result = CliRunner().invoke(cli, ["--server", "memory://", "console", "--host", "0.0.0.0"])
    assert result.exit_code == 2 and "not a loopback address" in result.stderr


def test_it_says_in_one_line_why_it_cannot_start():
    nowhere = f"nats://127.0.0.1:{silent_port()}"
    result = CliRunner().invoke(cli, ["--server", nowhere, "console", "--port", "0"])
    assert result.exit_code == 4 and result.stderr.startswith("mq9: cannot connect")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        result = CliRunner().invoke(cli, ["--server", "memory://", "console", "--port", port])
    assert result.exit_code == 2 and "Address already in use" in result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.splitlines()) == 1
