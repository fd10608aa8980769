"""The repository's prose speaks of the software, not of how or by whom the work was done
(issue #118): the README, CONTRIBUTING.md, the changelog, docs/, bench/'s pages and each
distribution's README hold no issue number (``#106``, ``(issue #112)``) and none of the phrases
a work diary writes ("this session", "session 35", "round 3", "CI showed", "the lead").

An issue number says where a line came from, which ``git log`` holds; the page says what holds
and why. The number is the pattern a reviewer greps for, ``#[0-9]{2,3}\\b``, as in product code
(test_no_issue_numbers.py); a link to a heading (``(#some-heading)``) and a CSS colour
(``#888888``) are no finding. Each finding is one line: the file, the line number and the line.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# The distributions' READMEs: langchain-mq9's is the root's
PAGES = (
    "README.md",
    "CONTRIBUTING.md",
    "CHANGELOG.md",
    "docs/**/*.md",
    "bench/*.md",
    "wire/README.md",
    "broker/README.md",
    "platform/README.md",
    "mcp_server/README.md",
    "faces/cli/README.md",
)
ISSUE_NUMBER = re.compile(r"#[0-9]{2,3}\b")
# A link's own anchor, `](#...)`, is the page's, never an issue
ANCHOR = re.compile(r"\]\(#[^)]*\)")
DIARY = re.compile(
    r"\bthis session\b|\bsessions? [0-9]+\b|\b(?:structure )?round [0-9]+\b|\bthis round\b"
    r"|\bCI (?:showed|went)\b|\bwas found when\b|\bwe found\b|\bthe lead\b|\bother engineers\b",
    re.I,
)


def pages() -> list[Path]:
    found = {p for pattern in PAGES for p in ROOT.glob(pattern) if p.is_file()}
    return sorted(found)


def findings(text: str) -> list[tuple[int, str]]:
    """(line number, line) for each line holding an issue number or a diary phrase."""
    return [
        (n, line)
        for n, line in enumerate(text.splitlines(), 1)
        if ISSUE_NUMBER.search(ANCHOR.sub("", line)) or DIARY.search(line)
    ]


def test_the_patterns_are_the_reviewers():
    assert [n for n, _ in findings("a (#106) b\n(issue #112)\nclean\nsee #98: x")] == [1, 2, 4]
    # an anchor, a colour, a four-digit number and a commit are no finding
    assert findings("[Bounds](#whose-bound-it-is) [x](#a-81) #888888 a2a#1986 at 8bd49dc") == []
    assert [n for n, _ in findings("Session 35: x\nin this session\nround 3\nHTTP sessions")] == [
        1,
        2,
        3,
    ]


def test_every_page_read_exists():
    # a page moved or renamed fails here, rather than leaving its text unread
    missing = [p for p in PAGES if "*" not in p and not (ROOT / p).is_file()]
    assert not missing, f"no such page: {missing} (PAGES lists them)"
    assert any(p.parent.name == "docs" for p in pages())


def test_no_issue_numbers_or_work_diary_in_the_prose():
    found = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()[:160]}"
        for path in pages()
        for n, line in findings(path.read_text(encoding="utf-8"))
    ]
    assert not found, (
        f"{len(found)} line(s) of prose name an issue or tell how the work was done: say what "
        "holds and why (a figure with the commit it was measured on)\n" + "\n".join(found)
    )
