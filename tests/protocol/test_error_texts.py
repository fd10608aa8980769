"""No error is recognised by its words outside the one classifier (issue #23).

Code decides on an error's class (``langchain_mq9/protocol/errors.py``); only ``errors.py`` reads
words, turning a broker's reply (or a library's failure that has no class of its own) into
a class. This test reads the package's source and fails on any other place that tests an
exception's text: ``"..." in exc.message``, ``str(exc) == ...``, ``exc.args[0].startswith``,
a regex over it, or over a variable holding it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("langchain_mq9", "mcp_server")
CLASSIFIER = "langchain_mq9/protocol/errors.py"

# (file, function) pairs that still read words, each with its reason.
ALLOWED = {
    # Python's json module gives its errors no codes: its words are translated into serde's
    # (the wire's), which is not deciding what to do on an mq9 error.
    ("langchain_mq9/protocol/__init__.py", "_serde_syntax"),
}

_TEXT_METHODS = {"startswith", "endswith", "find", "index", "count", "lower", "casefold",
                 "split", "partition", "__contains__"}  # fmt: skip
_REGEX_CALLS = {"search", "match", "fullmatch", "findall", "finditer", "sub"}
_RETIRED = {"answer_fits", "never_stored", "is_transient"}


def _is_error_annotation(node: ast.expr | None) -> bool:
    text = ast.unparse(node) if node is not None else ""
    return "Error" in text or "Exception" in text


class _Finder(ast.NodeVisitor):
    """The lines where one function tests the text of an exception it holds."""

    def __init__(self) -> None:
        self.found: list[tuple[str, int]] = []  # (function, line)
        self._function = "<module>"
        self._errors: set[str] = set()  # names holding an exception
        self._texts: set[str] = set()  # names holding an exception's words

    def visit_FunctionDef(self, node: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        saved = self._function, self._errors, self._texts
        self._function, self._texts = node.name, set()
        self._errors = {
            a.arg for a in [*node.args.args, *node.args.kwonlyargs]
            if _is_error_annotation(a.annotation)
        }  # fmt: skip
        self.generic_visit(node)
        self._function, self._errors, self._texts = saved

    visit_AsyncFunctionDef = visit_FunctionDef

    def visit_ExceptHandler(self, node: ast.ExceptHandler) -> None:
        if node.name:
            self._errors.add(node.name)
        self.generic_visit(node)

    def visit_Assign(self, node: ast.Assign) -> None:
        if self._holds_text(node.value):
            self._texts.update(t.id for t in node.targets if isinstance(t, ast.Name))
        self.generic_visit(node)

    def visit_Compare(self, node: ast.Compare) -> None:
        textual = any(isinstance(op, (ast.In, ast.NotIn, ast.Eq, ast.NotEq)) for op in node.ops)
        if textual and any(self._holds_text(part) for part in [node.left, *node.comparators]):
            self._flag(node)
        self.generic_visit(node)

    def visit_Call(self, node: ast.Call) -> None:
        func = node.func
        name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
        if name in _RETIRED:
            self._flag(node)
        elif isinstance(func, ast.Attribute) and name in _TEXT_METHODS:
            if self._holds_text(func.value):
                self._flag(node)
        elif name in _REGEX_CALLS and any(self._holds_text(arg) for arg in node.args):
            self._flag(node)
        self.generic_visit(node)

    def _holds_text(self, node: ast.expr) -> bool:
        """Whether ``node`` is (or is made from) an exception's words."""
        for part in ast.walk(node):
            if isinstance(part, ast.Name) and part.id in self._texts:
                return True
            if (
                isinstance(part, ast.Attribute)
                and part.attr in ("message", "args", "msg")
                and isinstance(part.value, ast.Name)
                and part.value.id in self._errors
            ):
                return True
            if (
                isinstance(part, ast.Call)
                and getattr(part.func, "id", "") in ("str", "repr")
                and any(isinstance(a, ast.Name) and a.id in self._errors for a in part.args)
            ):
                return True
        return False

    def _flag(self, node: ast.AST) -> None:
        self.found.append((self._function, node.lineno))


def text_tests(source: str) -> list[tuple[str, int]]:
    finder = _Finder()
    finder.visit(ast.parse(source))
    return finder.found


def test_the_finder_sees_each_way_of_reading_an_error():
    offenders = """
try:
    pass
except Mq9Error as exc:
    if "already exists" in exc.message: pass
    if exc.message != expected: pass
    if str(exc).lower().startswith("x"): pass
    text = clipped(exc.message, 10)
    if any(needle in text for needle in NEEDLES): pass
    fit = p.answer_fits(exc.message)

def explain(exc: Mq9Error) -> str:
    return "hint" if re.search("does not exist", exc.message) else ""
"""
    assert sorted({line for _, line in text_tests(offenders)}) == [5, 6, 7, 9, 10, 13]
    fine = """
try:
    pass
except MailboxExists as exc:
    log.info("failed: %s", exc.message)
    raise OperationError(str(exc)) from None
"""
    assert text_tests(fine) == []


def test_no_error_is_recognised_by_its_words_outside_the_classifier():
    found, used = [], set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            name = path.relative_to(ROOT).as_posix()
            if name == CLASSIFIER:
                continue
            for function, line in text_tests(path.read_text()):
                if (name, function) in ALLOWED:
                    used.add((name, function))
                else:
                    found.append(f"{name}:{line} (in {function})")
    assert not found, "errors read by their words; raise or catch a class of errors.py instead"
    stale = ALLOWED - used
    assert not stale, f"allowed but reading no words any more: remove {sorted(stale)}"


@pytest.mark.parametrize("module", ["groups/reader.py", "groups/leases.py", "groups/state.py"])
def test_readers_do_not_import_the_client(module):
    """The client imports the group readers (consume, fetch's wait): not the other way round."""
    tree = ast.parse((ROOT / "langchain_mq9" / module).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not any(m.split(".")[0] == "client" for m in imported)
