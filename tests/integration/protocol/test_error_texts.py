"""Error texts: each is read back as the class it stands for, and nowhere else (issues #23, #36).

``errors.WIRE_TEXTS`` holds every error text the protocol writes (or RobustMQ answers), the
class it reads as and the pattern that recognises it; the first tests run that table both ways,
so a changed word cannot silently turn a typed error into a plain ``Mq9Error``.

Code decides on an error's class (``wire/mq9_wire/protocol/errors.py``); only ``errors.py`` reads
words, turning a broker's reply into a class (and, in ALLOWED, the few readers of a library's
failure that has no class of its own). The last tests read the package's source and fail on
any other place that tests an exception's text: ``"..." in exc.message``, ``str(exc) == ...``,
``exc.args[0].startswith``, a regex over it, or over a variable holding it.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Callable
from pathlib import Path

import pytest

from mq9_broker import BrokerEngine
from mq9_broker.engine.engine import BrokerLimits
from mq9_platform.client import Mq9Client
from mq9_wire import protocol as p
from mq9_wire.protocol import errors
from mq9_wire.protocol.errors import WIRE_TEXTS, WireText, from_reply

ROOT = Path(__file__).resolve().parents[3]
PACKAGES = (
    "wire/mq9_wire",
    "broker/mq9_broker",
    "platform/mq9_platform",
    "langchain_mq9",
    "mcp_server/mq9_mcp",
    "faces/cli/mq9_cli",
)
CLASSIFIER = "wire/mq9_wire/protocol/errors.py"

# (file, function) pairs that still read words, each with its reason.
ALLOWED = {
    # Python's json module gives its errors no codes: its words are translated into serde's
    # (the wire's), which is not deciding what to do on an mq9 error.
    ("wire/mq9_wire/protocol/serde.py", "_serde_syntax"),
    # nats-py raises a plain error quoting the server's -ERR while connecting: no class to read.
    ("platform/mq9_platform/client/auth.py", "refused_credentials"),
    # The same, for the broker's own login to its nats-servers: a hint added to the line it
    # says, no decision on an mq9 error (the broker imports no platform: test_layout.py).
    ("broker/mq9_broker/nats_servers/survey.py", "refused_login"),
    # A clustered JetStream stream refuses an expected last sequence with another err_code and
    # the words alone ("wrong last sequence"): the one reading of it, on the NATS floor.
    ("wire/mq9_wire/nats_floor/jetstream/api.py", "wrong_last_sequence"),
}

# A value for each parameter of the table's makers: each is named as the attribute it fills.
GIVEN = {"address": "a.box", "size": 9000, "limit": 4096, "fits": 3, "count": 6, "msg_id": 7,
         "value": "Bad", "length": 300, "subject": "$mq9.AI.NOPE", "largest": 3900,
         "bound": "this broker's --max-payload", "key": "order-7", "window": 600,
         "why": "this broker holds as many keys as it may", "delay": 40_000_000,
         "shard": "dc5bfpajueqq1c8il6k0-0"}  # fmt: skip


def _written(maker: str | Callable[..., str]) -> tuple[str, dict[str, object]]:
    """The text ``maker`` writes (a fixed text is its own), and the values it was given."""
    if isinstance(maker, str):
        return maker, {}
    given = {name: GIVEN[name] for name in inspect.signature(maker).parameters}
    return maker(**given), given


WRITTEN = [
    pytest.param(
        entry, *_written(maker), id=maker[:40] if isinstance(maker, str) else maker.__name__
    )
    for entry in WIRE_TEXTS
    for maker in entry.texts
]


@pytest.mark.parametrize(("entry", "text", "given"), WRITTEN)
def test_every_text_the_protocol_writes_reads_back_as_its_class(entry, text, given):
    assert entry.pattern.search(text), f"its own pattern does not match {text!r}"
    error = from_reply(text, p.MAILBOX_CREATE)
    assert type(error) is entry.cls, f"{text!r} reads as {type(error).__name__}"
    if issubclass(entry.cls, errors.ClusterUnavailable):  # its words, then what to do
        assert error.message.startswith(text)
    elif entry.says:  # said in the user's words, the broker's kept as the detail
        assert error.detail == text and error.message != text
    else:
        assert error.message == text
    for name in entry.pattern.groupindex:  # the attributes its words give, as they were given
        assert name in given, f"{name} is read from {text!r} but no maker's parameter"
        assert getattr(error, name) == given[name]


@pytest.mark.parametrize("entry", WIRE_TEXTS, ids=lambda e: e.pattern.pattern[:40])
def test_every_pattern_reads_a_text_that_is_written_and_sets_only_attributes_of_its_class(
    entry: WireText,
):
    assert entry.texts, "a pattern that reads no text the protocol writes or RobustMQ answers"
    assert entry.said_by in (errors.ROBUSTMQ, errors.OURS)
    for name in entry.pattern.groupindex:
        assert hasattr(entry.cls, name), f"{entry.cls.__name__} has no attribute {name}"


def test_every_error_text_of_the_protocol_is_in_the_table():
    in_table = {id(maker) for entry in WIRE_TEXTS for maker in entry.texts}
    makers = {
        name: value
        for name, value in vars(errors).items()
        if name.startswith(("err_", "ERR_")) or name in ("SEARCH_TABLE_MISSING",)
    }
    assert makers and not [name for name, value in makers.items() if id(value) not in in_table]
    assert all(getattr(p, name) is value for name, value in makers.items())  # on the face


def test_a_changed_word_no_longer_reads_as_its_class():
    """What the table guards against: the words are the only link from text to class."""
    text = p.err_mailbox_missing("a.box").replace("does not exist", "is missing")
    assert type(from_reply(text)) is errors.Mq9Error


# Each refusal the protocol raises itself, as a bundled broker sends it back as an error reply.
REFUSALS = [
    lambda: p.check_address("Bad"),
    lambda: p.check_address("a..b"),
    lambda: p.check_address("a" * (p.MAX_ADDRESS_LENGTH + 1)),
    lambda: p.check_int("ttl", -1),
    lambda: p.check_group_name(""),
    lambda: p.parse_priority("high"),
    lambda: p.check_key(" key"),
    lambda: p.check_tags("a,b"),
    lambda: p.extra_headers({"a b": "x"}),
    lambda: p.utf8("name", "\ud800"),
    lambda: p.FETCH_REQUEST.read(b'{"deliver": "newest"}'),
    lambda: p.ACK_REQUEST.read(b'{"group_name": "g", "mail_address": "a.box"}'),
    lambda: p.REGISTER_REQUEST.read(b'{"name": 1, "payload": "x"}'),
    lambda: p.CREATE_REQUEST.read(b'{"name": "a", "name": "b"}'),
    lambda: p.QUERY_REQUEST.read(b'{"limit": -1}'),
]


@pytest.mark.parametrize("refuse", REFUSALS)
def test_each_refusal_the_protocol_raises_reads_back_as_its_class(refuse):
    with pytest.raises(errors.InvalidArgument) as refused:
        refuse()
    read = from_reply(refused.value.message)
    expected = (
        errors.InvalidAddress
        if isinstance(refused.value, errors.InvalidAddress)
        else (errors.InvalidArgument)
    )
    assert type(read) is expected, refused.value.message


async def test_the_bundled_broker_words_its_refusals_as_the_table_writes_them():
    limits = BrokerLimits(max_mailboxes=1, max_messages_per_mailbox=1, max_answer=4096)
    async with Mq9Client(transport=BrokerEngine(limits=limits)) as client:
        box = await client.mailbox_create(name="a.box")
        with pytest.raises(errors.LimitReached) as most:
            await client.mailbox_create(name="b.box")
        assert most.value.message == p.err_mailbox_limit(1)
        with pytest.raises(errors.PayloadTooLarge) as large:
            await client.send(box, "x" * 5000)
        assert large.value.message == p.err_message_too_large(
            large.value.size, 4096, large.value.largest, "this broker's largest answer (max_answer)"
        )
        await client.send(box, "x")
        with pytest.raises(errors.LimitReached) as full:
            await client.send(box, "y")
        assert full.value.message == p.err_mailbox_full(box, 1)


_TEXT_METHODS = {"startswith", "endswith", "find", "index", "count", "lower", "casefold",
                 "split", "partition", "__contains__"}  # fmt: skip
_REGEX_CALLS = {"search", "match", "fullmatch", "findall", "finditer", "sub"}
_RETIRED = {"answer_fits", "never_stored", "is_transient"}
# What makes an exception's words: describe() is nats_floor/redaction.py's line of one (redacted)
_TEXT_OF = ("str", "repr", "describe")


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
                and getattr(part.func, "id", "") in _TEXT_OF
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

def hint(exc: BaseException) -> str:
    text = describe(exc)
    return "log in" if "Authorization Violation" in text else ""
"""
    assert sorted({line for _, line in text_tests(offenders)}) == [5, 6, 7, 9, 10, 13, 17]
    fine = """
try:
    pass
except MailboxExists as exc:
    log.info("failed: %s", exc.message)
    raise OperationError(str(exc)) from None
"""
    assert text_tests(fine) == []


@pytest.mark.slow  # over a second on a quiet machine (#89)
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
    tree = ast.parse((ROOT / "platform" / "mq9_platform" / module).read_text())
    imported = {
        node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module
    }
    assert not any(m.split(".")[0] == "client" for m in imported)
