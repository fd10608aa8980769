"""Passwords never leak through ``redact`` (issue #12, item 7), whatever the URL form.

Every message and log line that names a broker goes through
``mq9_wire.nats_floor.redaction.redact`` (Mq9Client errors, mq9-mcp tool results and logs,
mq9-dev-broker logs).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mq9_platform import Mq9Client
from mq9_platform.client.transport import describe, open_transport, redact
from mq9_wire.protocol import Mq9Error
from testbed.ports import silent_port

pytestmark = pytest.mark.slow

MARK = "SECRETX"  # in every generated secret, so a leak of any part around it shows
SCHEMES = ["nats://", "tls://", "ws://", "wss://", ""]
HOSTS = ["localhost", "127.0.0.1", "[::1]", "[2001:db8::7]", "mq9.example.com"]
# Anything a user might type unencoded, unicode included; not whitespace, nor "," (the
# separator of a server list: a password holding one goes in password= instead).
_CHARS = st.characters(blacklist_categories=("Z", "C"), blacklist_characters=",")
_EDGES = st.text(alphabet=st.one_of(st.sampled_from("@:/#?%"), _CHARS), max_size=8)


@st.composite
def server(draw):
    scheme = draw(st.sampled_from(SCHEMES))
    host = draw(st.sampled_from(HOSTS)) + draw(st.sampled_from(["", ":4222", ":65000"]))
    secret = draw(_EDGES) + MARK + draw(_EDGES)
    if not scheme:  # without a scheme, "://" would make the secret's start read as one
        secret = secret.replace("://", ":/")
    if draw(st.booleans()):
        return f"{scheme}alice:{secret}@{host}", host, "alice:"
    token = secret.replace(":", "")  # a colon would make it user:password
    return f"{scheme}{token}@{host}", host, ""


@settings(max_examples=400, deadline=None)
@given(st.lists(server(), min_size=1, max_size=3), st.sampled_from(["{}", "at {} (refused)"]))
def test_no_secret_survives_and_hosts_stay_readable(servers, frame):
    text = frame.format(",".join(url for url, _, _ in servers))
    shown = redact(text)
    assert MARK not in shown, (text, shown)
    for _, host, user in servers:
        assert f"{user}***@{host}" in shown, (text, shown)


def test_urls_without_credentials_are_left_alone():
    text = "nats://127.0.0.1:4222,tls://[::1]:4443 and ws://mq9.example.com/ws"
    assert redact(text) == text


def test_unsupported_url_error_hides_the_password():
    with pytest.raises(Mq9Error) as caught:
        open_transport("nats://alice:p@ss@h:1,http://bob:pa@ss" + MARK + "@h:2")
    assert MARK not in str(caught.value) and "bob:***@h:2" in str(caught.value)


def test_exception_texts_are_redacted():
    assert MARK not in describe(ValueError(f"bad URL 'ws://u:a@b{MARK}@h:1/'"))


async def test_connect_error_names_the_host_not_the_password():
    url = f"nats://alice:p@ss{MARK}/#?@127.0.0.1:{silent_port()}"
    with pytest.raises(Mq9Error) as caught:
        await Mq9Client(url, request_timeout=0.5, reconnect_attempts=0).connect()
    assert MARK not in str(caught.value)
    assert "alice:***@127.0.0.1" in str(caught.value)


def test_log_lines_and_tracebacks_are_redacted(capsys):
    """mq9-mcp and mq9-dev-broker log through configure_logging: a traceback quoting a URL
    (a library's error, an internal error logged with log.exception) shows no password."""
    import logging

    from mq9_wire.command_line import configure_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("info")
    try:
        raise ConnectionError(f"cannot reach nats://alice:p@ss{MARK}@h:4222")
    except ConnectionError:
        logging.getLogger("mq9_mcp").exception("send_message crashed on tls://%s@h", MARK)
    finally:
        root.handlers[:], root.level = handlers, level
    logged = capsys.readouterr().err
    assert "Traceback" in logged and "alice:***@h:4222" in logged and "***@h" in logged
    assert MARK not in logged


@pytest.mark.parametrize(
    "url", [f"nats://alice:{MARK}@127.0.0.1:4222", f"nats://{MARK}@127.0.0.1:4222"]
)
def test_no_repr_or_str_of_a_public_object_shows_a_secret(url):
    """repr() and str() end up in prints, f-strings, logs and LangSmith traces (#22, item 7)."""
    from langchain_mq9 import Mq9Toolkit
    from mq9_platform.client.connection import Mq9Connection

    options = {"password": MARK + "p", "token": MARK + "t"}
    with Mq9Toolkit(server=url, client_options=options) as kit:
        client = Mq9Client(url, password=MARK + "p")
        shown = [kit, client, Mq9Connection(url), *kit.get_tools()]
        with Mq9Toolkit(client=client) as given:
            shown += [given, *given.get_tools()]
            for thing in shown:
                for text in (repr(thing), str(thing), f"{thing!r:}"):
                    assert MARK not in text, text
    assert "127.0.0.1:4222" in repr(kit)  # still says where it connects


@pytest.mark.parametrize(
    "text",
    [
        "a name of letters, digits, '.', '_', '@' or '-'",
        'the "@" sign',
        "(@) and <@> and x @ y",
        "@alice asked",
        "nats://@127.0.0.1:4222",
    ],
)
def test_an_at_sign_with_nothing_before_it_stays_as_written(text):
    """Issue #117: the masking read a quoted '@' as an empty token and wrote '***@' in its
    place, so a tokens file's warning listed the characters a name may hold wrong."""
    assert redact(text) == text


def test_a_token_that_starts_with_an_at_sign_is_still_hidden():
    for url in (f"nats://@{MARK}@h:1", f"@{MARK}@h:1", f"'@{MARK}@h:1'"):
        assert MARK not in redact(url) and "***@h:1" in redact(url), url


def test_the_tokens_files_warning_is_logged_as_written(tmp_path, capsys):
    """mq9-mcp's log (configure_logging's masking) of a tokens file broken meanwhile: its
    warning names the characters of a name, '@' among them, as written."""
    import hashlib
    import logging

    from mq9_mcp.http.tokens_file import TokensFile
    from mq9_wire.command_line import configure_logging

    path = tmp_path / "tokens"
    path.write_text(f"alice: {hashlib.sha256(b'x').hexdigest()}\n")
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    configure_logging("info")
    try:
        tokens = TokensFile(path)
        path.write_text("alice: not-a-digest-at-all\n")
        tokens.reload()
    finally:
        root.handlers[:], root.level = handlers, level
    logged = capsys.readouterr().err
    assert "'.', '_', '@' or '-'" in logged, logged
