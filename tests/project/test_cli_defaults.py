"""The defaults the docs state for the two command lines are the ones their parsers use
(issue #54: docs/broker.md said 10,000 consumer groups where ``mq9-dev-broker --help`` and its
start-up lines said 1,000). Each doc's option table has a default column; every option whose
argparse default is set must have a row, and that row's default must spell the parser's."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from mq9_broker.cli.dev_broker import build_parser as broker_parser
from mq9_mcp.cli import build_parser as mcp_parser

ROOT = Path(__file__).resolve().parents[2]
TABLES = {"docs/broker.md": broker_parser, "docs/mcp.md": mcp_parser}


def documented_defaults(doc: str) -> dict[str, str]:
    """Flag -> the default column of its row, in ``doc``'s option table (the one whose
    header has a "default" column)."""
    found: dict[str, str] = {}
    column = None
    for line in (ROOT / doc).read_text().splitlines():
        if not line.startswith("|"):
            column = None
            continue
        cells = [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]
        headers = [cell.lower() for cell in cells]
        if column is None and "default" in headers:
            column = headers.index("default")
        elif column is not None:
            for flag in re.findall(r"`(--[\w-]+)", cells[0]):
                found[flag] = cells[column]
    return found


def parser_defaults(parser: argparse.ArgumentParser) -> dict[str, object]:
    """Flag -> the default argparse gives it, for every option that has one."""
    return {
        action.option_strings[-1]: action.default
        for action in parser._actions  # argparse has no public list of its actions
        if action.option_strings and action.default not in (None, argparse.SUPPRESS)
    }


def spells(documented: str, default: object) -> bool:
    """Whether the default column ``documented`` states ``default``."""
    if default is False:  # a switch
        return documented in ("", "off")
    words = documented.replace("`", "")
    if isinstance(default, float) and default.is_integer():
        default = int(default)
    spellings = {str(default)} | ({f"{default:,}"} if isinstance(default, int) else set())
    return any(re.match(rf"{re.escape(s)}(?![\d,.])", words) for s in spellings)


@pytest.mark.parametrize("doc", TABLES)
def test_each_documented_default_is_the_parsers(doc):
    documented = documented_defaults(doc)
    assert documented, f"{doc} has no option table with a default column"
    wrong = {
        flag: (documented.get(flag), default)
        for flag, default in parser_defaults(TABLES[doc]()).items()
        if flag not in documented or not spells(documented[flag], default)
    }
    assert not wrong, f"{doc}: flag: (documented, the parser's default): {wrong}"


@pytest.mark.parametrize("doc", TABLES)
def test_the_help_states_the_parsers_defaults(doc):
    """Where ``--help`` says "(default N ...", N is the default the parser uses."""
    for flag, default in parser_defaults(TABLES[doc]()).items():
        action = next(a for a in TABLES[doc]()._actions if flag in a.option_strings)
        said = re.search(r"\(default:? ([^\s;:,)]+)", action.help or "")
        if said and not isinstance(default, bool):
            assert spells(said.group(1), default), (flag, said.group(0), default)


def test_a_wrong_default_is_caught():
    """The check itself: the row docs/broker.md had before issue #54 fails it."""
    assert not spells("10,000", 1000) and not spells("10000", 1000)
    assert spells("`1000`", 1000) and spells("1,000", 1000) and spells("`5`", 5.0)
