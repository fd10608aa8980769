"""The docs as a reader moves through them: no page of docs/ too long to finish, one index
(docs/README.md) that links every page and nothing that is gone, and every relative link and
``#anchor`` of every Markdown file of the repository leading somewhere: to a file that exists
and, for a Markdown file, to a heading it has (GitHub's anchor for it) or an ``<a id>``.

Read from the text, as the rule is about what is written. Links inside fenced code and inline
code are shown, not followed, so they are not read. Each finding is one line: the file, the
line number and the link.
"""

from __future__ import annotations

import re
import subprocess
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
INDEX = DOCS / "README.md"
# A page a reader finishes; past this a page is two tasks and splits by what the reader does
MAX_LINES = 600

FENCE = re.compile(r"^(```|~~~).*?^\1", re.M | re.S)
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t#]*$", re.M)
HTML_ANCHOR = re.compile(r"<a\s+(?:id|name)=\"([^\"]+)\"", re.I)
INLINE_CODE = re.compile(r"`[^`\n]*`")
# [text](target) and ![alt](target), a title after the target allowed; [name]: target
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
SCHEME = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)
# Folders that hold no one's pages: build outputs, caches, installed packages
SKIPPED = {"__pycache__", "build", "dist", "node_modules", "site-packages"}


def _skipped(path: Path) -> bool:
    return any(p in SKIPPED or p.startswith(".") for p in path.relative_to(ROOT).parts)


def markdown_files() -> list[Path]:
    """Every Markdown file git tracks here (a tree without git: every one outside build folders)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-z", "*.md"], cwd=ROOT, capture_output=True, check=True
        ).stdout.decode()
        found = [ROOT / name for name in listed.split("\0") if name]
    except (OSError, subprocess.CalledProcessError):
        found = [p for p in ROOT.rglob("*.md") if not _skipped(p)]
    return sorted(p for p in found if p.is_file())


def prose(text: str) -> str:
    """The text with its fenced code blocks blanked, line numbers kept."""
    return FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces to
    hyphens (markup and a link's target dropped first)."""
    text = re.sub(r"<[^>]+>", "", heading)
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)
    text = re.sub(r"[^\w\- ]", "", text.strip().lower())
    return text.replace(" ", "-")


@cache
def anchors(path: Path) -> frozenset[str]:
    """Every anchor a page makes: each heading's (a repeated one gets -1, -2, ... as on GitHub)
    and each ``<a id="...">``."""
    text = path.read_text(encoding="utf-8")
    found = set(HTML_ANCHOR.findall(text))
    seen: dict[str, int] = {}
    for heading in HEADING.findall(prose(text)):
        base = slug(heading)
        count = seen.get(base, 0)
        found.add(base if count == 0 else f"{base}-{count}")
        seen[base] = count + 1
    return frozenset(found)


def links(text: str) -> list[tuple[int, str]]:
    """(line number, target) of each relative link in the prose of a page."""
    found = []
    for number, line in enumerate(prose(text).splitlines(), 1):
        line = INLINE_CODE.sub("", line)
        for target in LINK.findall(line) + REFERENCE.findall(line):
            if not SCHEME.match(target):
                found.append((number, target))
    return found


def broken_links(page: Path) -> list[str]:
    """One line per relative link of ``page`` that leads to no file, or to no anchor of it."""
    problems = []
    for number, target in links(page.read_text(encoding="utf-8")):
        path, _, anchor = target.partition("#")
        destination = (page.parent / path).resolve() if path else page
        where = f"{page.relative_to(ROOT)}:{number}: {target}"
        if not destination.exists():
            problems.append(f"{where} (no such file)")
        elif anchor and destination.suffix == ".md" and anchor not in anchors(destination):
            problems.append(f"{where} (no heading of {destination.name} makes #{anchor})")
    return problems


def test_the_anchor_is_githubs():
    assert slug("Whose bound it is") == "whose-bound-it-is"
    assert slug("The HTTP edge: what the MCP SDK does, what mq9-mcp keeps") == (
        "the-http-edge-what-the-mcp-sdk-does-what-mq9-mcp-keeps"
    )
    assert slug("The `mq9` command line and the web console") == (
        "the-mq9-command-line-and-the-web-console"
    )
    assert slug("mq9-mcp's start") == "mq9-mcps-start"
    assert slug("Leases (invariants 6–8)") == "leases-invariants-68"


def test_links_in_code_are_not_followed():
    text = "See [a](a.md).\n\n```bash\necho [b](b.md)\n```\n\nand `[c](c.md)` and [d](#d)."
    assert links(text) == [(1, "a.md"), (7, "#d")]
    assert links("[x](https://example.com/a.md) [y](mailto:a@b.c)") == []


def test_no_docs_page_is_too_long_to_finish():
    long = [
        f"docs/{page.name}: {count} lines"
        for page in sorted(DOCS.glob("*.md"))
        if (count := len(page.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    ]
    assert not long, (
        f"over {MAX_LINES} lines: split each by what its reader is doing (docs/README.md's "
        "groups), and link the new page from the index\n" + "\n".join(long)
    )


def test_the_index_links_every_docs_page_once_and_nothing_gone():
    assert INDEX.is_file(), "docs/README.md, the index of docs/, is missing"
    linked = [target.partition("#")[0] for _, target in links(INDEX.read_text(encoding="utf-8"))]
    here = [t for t in linked if t and "/" not in t]
    pages = sorted(p.name for p in DOCS.glob("*.md") if p != INDEX)
    missing = [page for page in pages if page not in here]
    twice = sorted({t for t in here if here.count(t) > 1})
    gone = [t for t in here if not (DOCS / t).is_file()]
    assert not missing, f"docs/README.md does not link {missing}: one line each, in its group"
    assert not twice, f"docs/README.md links {twice} more than once"
    assert not gone, f"docs/README.md links {gone}, which docs/ does not hold"


@pytest.mark.slow  # (git ls-files: a process)
def test_every_relative_link_and_anchor_leads_somewhere():
    problems = [line for page in markdown_files() for line in broken_links(page)]
    assert not problems, (
        f"{len(problems)} link(s) lead nowhere: point each at the page and heading that holds "
        "it now\n" + "\n".join(problems)
    )
