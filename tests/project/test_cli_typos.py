"""A misspelt command-line flag names the flag meant (issue #35: a misspelt safety option must
never pass unnoticed, and the error should say which option was meant)."""

from __future__ import annotations

import pytest

import mq9_broker.cli.dev_broker as broker_cli
from mq9_mcp import cli as mcp_cli


@pytest.mark.parametrize(
    ("build", "argv", "meant"),
    [
        (mcp_cli.build_parser, ["--read-onyl"], "--read-only"),
        (mcp_cli.build_parser, ["--allowed-mailboxs=team"], "--allowed-mailboxes"),
        (broker_cli.build_parser, ["--max-mialboxes", "3"], "--max-mailboxes"),
    ],
)
def test_an_unknown_flag_names_the_nearest(build, argv, meant, capsys):
    """Before: ``unrecognized arguments: --read-onyl``, with no word of --read-only."""
    with pytest.raises(SystemExit) as stopped:
        build().parse_args(argv)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert f"unrecognized arguments: {argv[0]}" in err and f"did you mean {meant}?" in err
