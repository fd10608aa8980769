"""CHANGELOG.md stays a changelog users read by release (Keep a Changelog 1.1.0), not a record
of how the work was done (issue #118: it had grown into a diary of 2,500 lines).

The shape it holds, read from the text:

- ``# Changelog``, then an optional intro in prose;
- release headings only: ``## [Unreleased]`` first (CONTRIBUTING.md tells a contributor to add
  a line "under the unreleased heading"), then ``## [x.y.z] - YYYY-MM-DD``, newest first;
- under a release, an optional paragraph, then sections named ``### Upgrading`` (what a user
  must do on moving to the release, first) and Keep a Changelog's six, in its order: Added,
  Changed, Deprecated, Removed, Fixed, Security; each at most once;
- in a section, one bullet per change: ``- `` at the start of a line, wrapped over at most
  ``MOST_LINES`` lines whose continuation is indented two spaces (the repository's prose wraps
  at 100 columns; a change that needs more lines is more than one change, or says how rather
  than what); no nested bullets, no prose between bullets;
- no issue numbers (``#118``: the tracker's history is in git) and none of the words of a work
  diary: sessions of work, CI runs, helpers and leads. "HTTP session" and "MCP session" are
  what a user of mq9-mcp meets, so the word is allowed after those two.

Each failure is one line naming the line of CHANGELOG.md and what to change.
"""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CHANGELOG = ROOT / "CHANGELOG.md"
UNRELEASED = "## [Unreleased]"
RELEASE = re.compile(r"## \[(\d+)\.(\d+)\.(\d+)\] - (\d{4}-\d{2}-\d{2})")
SECTIONS = ["Upgrading", "Added", "Changed", "Deprecated", "Removed", "Fixed", "Security"]
MOST_LINES = 4
# A link reference definition ("[0.4.0]: https://..."), which Keep a Changelog ends the file with
LINK = re.compile(r"\[[^\]]+\]: \S+")
ISSUE_NUMBER = re.compile(r"(?<![\w&/])#\d+\b")
DIARY = [
    (re.compile(r"(?<!HTTP )(?<!MCP )\bsessions?\b", re.IGNORECASE), "a session of work"),
    (re.compile(r"\bCI\b"), "a CI run"),
    (re.compile(r"\bhelpers?\b", re.IGNORECASE), "a helper"),
    (re.compile(r"\blead\b", re.IGNORECASE), "the lead"),
]


def _lines() -> list[str]:
    return CHANGELOG.read_text(encoding="utf-8").splitlines()


def _problems(lines: list[str]) -> list[str]:
    """What breaks the shape, one line each (an empty list when it holds)."""
    problems: list[str] = []
    if not lines or lines[0] != "# Changelog":
        problems.append("line 1: the file opens with '# Changelog'")
    releases: list[tuple[int, str]] = []  # (line number, heading)
    sections: list[str] = []  # the current release's, in order
    where = "intro"  # intro | release (its paragraph) | section
    entry_lines = 0  # lines of the bullet being read; 0 outside one
    for number, line in enumerate(lines[1:], start=2):
        at = f"line {number}"
        if line.startswith("## "):
            if line != UNRELEASED and not RELEASE.fullmatch(line):
                problems.append(
                    f"{at}: {line!r} is not '## [Unreleased]' or '## [x.y.z] - YYYY-MM-DD'"
                )
            releases.append((number, line))
            sections, where, entry_lines = [], "release", 0
        elif line.startswith("### "):
            name = line[4:]
            if where == "intro":
                problems.append(f"{at}: section {name!r} before any release heading")
            elif name not in SECTIONS:
                problems.append(f"{at}: section {name!r} is none of {', '.join(SECTIONS)}")
            elif name in sections:
                problems.append(f"{at}: a second '### {name}' in one release")
            elif sections and SECTIONS.index(name) < SECTIONS.index(sections[-1]):
                problems.append(f"{at}: '### {name}' comes before '### {sections[-1]}'")
            sections.append(name)
            where, entry_lines = "section", 0
        elif line.startswith("#"):
            problems.append(f"{at}: {line!r}: only '## release' and '### section' headings")
        elif where != "section" or not line.strip() or LINK.fullmatch(line):
            entry_lines = 0 if not line.strip() else entry_lines
        elif line.startswith("- "):
            entry_lines = 1
        elif line.startswith("  ") and not line.lstrip().startswith(("- ", "* ")) and entry_lines:
            entry_lines += 1
            if entry_lines == MOST_LINES + 1:
                problems.append(
                    f"{at}: an entry over {MOST_LINES} lines: one change a bullet, said shorter"
                )
        else:
            problems.append(
                f"{at}: {line[:40]!r}: a section holds bullets ('- ' and two-space continuation "
                "lines), nothing nested or in between"
            )
    problems += _release_order(releases)
    return problems


def _release_order(releases: list[tuple[int, str]]) -> list[str]:
    """Unreleased at most once and first; numbered releases newest first, with real dates."""
    problems: list[str] = []
    if not releases or releases[0][1] != UNRELEASED:
        problems.append("the first release heading is '## [Unreleased]' (CONTRIBUTING.md)")
    previous: tuple[int, int, int] | None = None
    for number, heading in releases:
        if heading == UNRELEASED:
            if number != releases[0][0]:
                problems.append(f"line {number}: '## [Unreleased]' comes first, and once")
            continue
        found = RELEASE.fullmatch(heading)
        if found is None:
            continue  # said above
        version = (int(found[1]), int(found[2]), int(found[3]))
        try:
            date.fromisoformat(found[4])
        except ValueError:
            problems.append(f"line {number}: {found[4]!r} is not a date")
        if previous is not None and version >= previous:
            problems.append(f"line {number}: releases go newest first")
        previous = version
    return problems


def _words(lines: list[str]) -> list[str]:
    """Issue numbers and a work diary's words, by line."""
    problems = []
    for number, line in enumerate(lines, start=1):
        if found := ISSUE_NUMBER.search(line):
            problems.append(f"line {number}: {found[0]!r}: no issue numbers in the changelog")
        for pattern, what in DIARY:
            if found := pattern.search(line):
                problems.append(
                    f"line {number}: {found[0]!r} speaks of {what}: say what changed for a user"
                )
    return problems


def test_the_changelog_is_by_release_in_keep_a_changelog_sections() -> None:
    problems = _problems(_lines())
    assert not problems, "CHANGELOG.md:\n" + "\n".join(problems)


def test_the_changelog_has_no_issue_numbers_or_diary_words() -> None:
    problems = _words(_lines())
    assert not problems, "CHANGELOG.md:\n" + "\n".join(problems)


def test_the_shape_check_fails_on_a_diary() -> None:
    """The checks above could fail: the shape the file had before it was rewritten fails both."""
    diary = [
        "# Changelog",
        "",
        "## Why 0.4.0",
        "",
        "## [Unreleased]",
        "",
        "### Session 42, the lead and a helper",
        "",
        "Session 41's stop did not land: its CI failed on one test.",
        "",
        "**Robustness round 11 (#113)**",
        "- A change,",
        "  wrapped",
        "  over",
        "  five",
        "  lines.",
        "  - nested",
        "",
        "## [0.4.0] - 2026-11-23",
        "### Fixed",
        "### Added",
        "## [0.5.0] - 2026-13-01",
    ]
    shape = "\n".join(_problems(diary))
    for expected in (
        "'## Why 0.4.0' is not",
        "section 'Session 42, the lead and a helper' is none of",
        "Session 41's stop",
        "an entry over 4 lines",
        "'  - nested'",
        "'### Added' comes before '### Fixed'",
        "'2026-13-01' is not a date",
        "releases go newest first",
    ):
        assert expected in shape, f"{expected!r} not said in:\n{shape}"
    words = "\n".join(_words(diary))
    for expected in ("'#113'", "'Session'", "'CI'", "'helper'", "'lead'"):
        assert expected in words, f"{expected!r} not said in:\n{words}"
    allowed = ["- A client holding no HTTP session takes an idle MCP session; a stream leader."]
    assert not _words(allowed)
