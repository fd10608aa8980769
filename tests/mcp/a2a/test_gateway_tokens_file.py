"""``mq9-a2a-gateway --tokens-file`` reads the format of ``mq9-mcp --tokens-file`` (issue #117):
``name: sha256-of-token`` lines, made by docs/mcp.md's line, so the file holds no token. The
gateway's former JSON of raw tokens is read for one release, with a one-line warning."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
from pathlib import Path

import pytest
from starlette.datastructures import Headers

from mq9_mcp.http.tokens_file import TokensFile, read_tokens
from mq9_platform._http.tokens_file import digest_line
from mq9_platform.a2a.gateway import API_KEY, API_KEY_HEADER
from mq9_platform.a2a.gateway.tokens import DEPRECATED_JSON, read_tenants

ROOT = Path(__file__).resolve().parents[3]


def bearer(token: str) -> Headers:
    return Headers({"authorization": f"Bearer {token}"})


def docs_line() -> str:
    """docs/mcp-oauth.md's line that makes a person's token and tokens-file line."""
    text = (ROOT / "docs" / "mcp-oauth.md").read_text(encoding="utf-8")
    found = re.search(r"`(python3? -c '[^`]*token_urlsafe[^`]*)`", text)
    assert found, "docs/mcp-oauth.md has no tokens-file line"
    return found[1]


@pytest.mark.slow  # runs the docs' line in a shell, twice
async def test_the_docs_line_makes_a_file_that_mq9_mcp_and_the_gateway_both_read(tmp_path):
    """docs/mcp.md's line used to call ``python`` (absent where only ``python3`` is) and write
    ``alice:`` whoever it was for; now it takes the person's name, and the one file it grows is
    every person's at mq9-mcp and every tenant's at the gateway."""
    line = docs_line()
    assert line.startswith("python3 ") and line.endswith(" alice >> tokens"), line
    tokens = {}
    for name in ("alice", "bob"):
        typed = line.removesuffix(" alice >> tokens") + f" {name} >> tokens"
        ran = subprocess.run(["bash", "-c", typed], cwd=tmp_path, capture_output=True,
                             text=True, timeout=60)  # fmt: skip
        assert ran.returncode == 0, ran.stderr
        tokens[name] = ran.stderr.split()[-1]  # printed to hand to them, not into the file
    path = tmp_path / "tokens"
    assert not any(token in path.read_text() for token in tokens.values())
    assert set(read_tokens(path)) == {"alice", "bob"}
    checked = await TokensFile(path).verify_token(tokens["bob"])
    assert checked is not None and checked.subject == "bob"
    tenants = read_tenants(str(path), scheme="bearer")
    assert tenants.names == {"alice", "bob"}
    assert [tenants.find(bearer(t)) for t in tokens.values()] == ["alice", "bob"]


def test_a_tenants_line_names_its_tenant_and_nothing_else_does(tmp_path, capsys):
    token, other = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    path = tmp_path / "tokens"
    path.write_text(f"# the gateway's tenants\n\n{digest_line('app', token)}  # the app\n")
    tenants = read_tenants(str(path), scheme=API_KEY)
    assert tenants.find(Headers({API_KEY_HEADER: token})) == "app"
    assert tenants.find(Headers({API_KEY_HEADER: other})) is None
    assert tenants.find(Headers({API_KEY_HEADER: digest_line("app", token).split()[-1]})) is None
    assert capsys.readouterr().err == ""  # the file's own format: no warning


def test_the_former_json_is_read_with_one_warning(tmp_path, capsys):
    token = secrets.token_hex(16)
    path = tmp_path / "tokens.json"
    path.write_text(json.dumps({"app": token}))
    tenants = read_tenants(str(path), scheme="bearer")
    assert tenants.find(bearer(token)) == "app"
    warned = capsys.readouterr().err
    assert warned == DEPRECATED_JSON.format(path=path) + "\n"
    assert "sha256-of-token" in warned and token not in warned


@pytest.mark.parametrize(
    ("text", "said"),
    [
        ("app: 1234\n", ":1: expected 'name: sha256-hex-of-token'"),
        (f"app: {'a' * 64}\napp: {'b' * 64}\n", ":2: 'app' is named twice"),
        ('{"app": "short"}', "shorter than 16 characters"),
        ('{"app": 7}', 'the JSON form is {"<tenant>": "<token>", ...}'),
        ("", "at least one tenant"),
    ],
)
def test_a_bad_file_is_one_line_naming_what_is_wrong(tmp_path, text, said):
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(ValueError, match=re.escape(said)) as refused:
        read_tenants(str(path), scheme="bearer")
    assert "\n" not in str(refused.value)
