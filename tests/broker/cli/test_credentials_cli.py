"""``mq9-dev-broker credentials issue|list|revoke`` and the broker's ``--credentials`` refusals,
run in process as the command line runs them (#53)."""

from __future__ import annotations

import pytest

from mq9_broker.cli.dev_broker import main
from mq9_broker.identities.store import IdentityStore, identities_file

pytest.importorskip("nkeys")


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_issue_prints_the_credential_once_and_list_never_shows_it(tmp_path, capsys):
    data = str(tmp_path / "data")
    (tmp_path / "data").mkdir(mode=0o700)  # the broker's --data, which its first start makes
    status, out, _ = _run(capsys, "credentials", "issue", "billing", "--data", data, "--label", "w")
    assert status == 0
    credential = out.strip()
    name, secret = credential.split(":")
    assert name == "billing" and len(secret) == 43
    store = IdentityStore(identities_file(data))
    assert store.verify("billing", secret)
    store.close()
    status, out, _ = _run(capsys, "credentials", "list", "--data", data)
    assert status == 0 and secret not in out
    header, row = out.splitlines()
    assert header.split() == ["NAME", "LABEL", "CREATED", "REVOKED", "LAST", "SEEN"]
    assert row.split()[:2] == ["billing", "w"] and row.split()[3:] == ["-", "-"]


def test_issue_to_a_file_readable_by_its_owner_only(tmp_path, capsys):
    out_file = tmp_path / "billing.cred"
    status, out, _ = _run(
        capsys, "credentials", "issue", "billing", "--data", str(tmp_path), "--out", str(out_file)
    )
    assert status == 0
    secret = out_file.read_text().strip().split(":")[1]
    assert secret not in out
    assert out_file.stat().st_mode & 0o077 == 0
    # an existing file is never overwritten, and nothing is issued then
    status, _, err = _run(
        capsys, "credentials", "issue", "other", "--data", str(tmp_path), "--out", str(out_file)
    )
    assert status == 1 and "exists" in err
    assert [c.id for c in IdentityStore(identities_file(tmp_path)).listing()] == ["billing"]


def test_revoke_and_the_errors_an_operator_can_meet(tmp_path, capsys):
    data = str(tmp_path)
    _run(capsys, "credentials", "issue", "billing", "--data", data)
    status, _, err = _run(capsys, "credentials", "issue", "billing", "--data", data)
    assert status == 1 and "revoke it first" in err
    status, out, _ = _run(capsys, "credentials", "revoke", "billing", "--data", data)
    assert status == 0 and "revoked" in out
    status, _, err = _run(capsys, "credentials", "revoke", "nobody", "--data", data)
    assert status == 1 and "no credential 'nobody'" in err
    status, _, err = _run(capsys, "credentials", "issue", "a.b", "--data", data)
    assert status == 1 and "invalid credential name" in err
    with pytest.raises(SystemExit):  # where the credentials are is required
        main(["credentials", "list"])


@pytest.mark.slow  # the broker's start loads the embedding model before it checks these
@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["--credentials"], "--data PATH"),
        (["--credentials", "--nats", "nats://127.0.0.1:1"], "add --store jetstream"),
        (
            ["--credentials", "--nats", "nats://127.0.0.1:1", "--store", "jetstream"],
            "needs DIR: run 'mq9-dev-broker credentials setup DIR'",
        ),
    ],
)
def test_the_broker_says_what_credentials_need(capsys, argv, words):
    status, _, err = _run(capsys, *argv)
    assert status == 1 and words in err


def test_the_command_follows_any_broker_option_and_only_it_is_one(tmp_path, capsys):
    status, out, _ = _run(capsys, "--port", "4999", "credentials", "list", "--data", str(tmp_path))
    assert status == 0 and out.split() == ["NAME", "LABEL", "CREATED", "REVOKED", "LAST", "SEEN"]
    status, _, err = _run(capsys, "credential")
    assert status == 2 and "the commands are 'credentials'" in err


def test_credentials_dir_names_where_they_are_kept(tmp_path):
    from argparse import Namespace

    from mq9_broker import BrokerEngine
    from mq9_broker.broker import identities_for

    args = Namespace(credentials=str(tmp_path / "ids"), nats=None, data=None)
    identities = identities_for(args, BrokerEngine())
    assert identities is not None
    assert identities.store.path == tmp_path / "ids" / "mq9-identities.sqlite3"
    identities.store.close()
    beside = identities_for(
        Namespace(credentials="", nats=None, data=str(tmp_path)), BrokerEngine()
    )
    assert beside is not None and beside.store.path == tmp_path / "mq9-identities.sqlite3"
    beside.store.close()
    assert identities_for(Namespace(credentials=None, nats=None, data=None), BrokerEngine()) is None


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("issue", "a", "--data", "x", "--nats", "nats://127.0.0.1:1"), "needs --credentials DIR"),
        (("issue", "a", "--store", "jetstream", "--data", "x"), "needs --nats URL"),
        (("list", "--credentials", "{dir}", "--nats", "nats://127.0.0.1:1"), "credentials setup"),
    ],
)
def test_the_cluster_commands_say_what_they_need(tmp_path, capsys, argv, words):
    argv = tuple(arg.replace("{dir}", str(tmp_path)) for arg in argv)
    status, _, err = _run(capsys, "credentials", *argv)
    assert status == 1 and words in err, err


def test_setup_writes_the_issuer_once_and_prints_the_servers_config(tmp_path, capsys):
    status, config, err = _run(capsys, "credentials", "setup", str(tmp_path / "auth"))
    assert status == 0 and "readable by you only" in err
    assert "auth_callout" in config and "jetstream: enabled" in config
    assert (tmp_path / "auth" / "mq9-callout.json").stat().st_mode & 0o077 == 0
    status, again, err = _run(capsys, "credentials", "setup", str(tmp_path / "auth"))
    assert status == 0 and again == config and "kept" in err


def test_a_cluster_broker_needs_the_setup_dir(tmp_path):
    from argparse import Namespace

    from mq9_broker.broker import cluster_issuer as _cluster_issuer
    from mq9_broker.identities.store import CredentialError

    assert _cluster_issuer(Namespace(credentials=None)) is None
    with pytest.raises(CredentialError, match="needs DIR"):
        _cluster_issuer(Namespace(credentials=""))
    with pytest.raises(CredentialError, match="credentials setup"):
        _cluster_issuer(Namespace(credentials=str(tmp_path)))
    (tmp_path / "mq9-callout.json").write_text('{"issuer_seed": "not a seed"}')
    with pytest.raises(CredentialError, match="not a setup file") as refused:
        _cluster_issuer(Namespace(credentials=str(tmp_path)))
    assert "not a seed" not in str(refused.value)
