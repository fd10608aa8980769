"""The error tree drawn in ``mq9_wire.protocol.errors``'s docstring is the classes' own tree.

A reader learns which ``except`` catches what from that drawing; a class added, moved under
another parent or removed without the drawing following would teach them wrong, and nothing
else would notice. So the drawing is read as a tree and held to the module's classes: the same
names, each under its real base, each with its line of when it is raised.
"""

from __future__ import annotations

import re

from mq9_wire.protocol import errors

# A drawn row: the indent says the depth (four spaces a level), then the class's name, two or
# more spaces, and when it is raised
ROW = re.compile(r"^(?P<indent>(?: {4})+)(?P<name>[A-Z]\w*)(?: {2,}(?P<when>\S.*))?$")


def _drawing() -> list[tuple[int, str, str]]:
    """(depth, name, when) of each row of the docstring's drawing, in order."""
    doc = errors.__doc__ or ""
    assert "::\n\n" in doc, "errors.py's docstring has no drawn tree (a ``::`` block)"
    block = doc.split("::\n\n", 1)[1]
    rows = []
    for line in block.splitlines():
        if not line.strip():
            break
        found = ROW.match(line)
        assert found, f"not a row of the tree: {line!r}"
        depth = len(found["indent"]) // 4 - 1
        rows.append((depth, found["name"], found["when"] or ""))
    return rows


def _drawn_parents() -> dict[str, str | None]:
    parents: dict[str, str | None] = {}
    path: list[str] = []
    for depth, name, _ in _drawing():
        assert depth <= len(path), f"{name} is drawn {depth} levels deep under no parent"
        del path[depth:]
        parents[name] = path[-1] if path else None
        path.append(name)
    return parents


def _real_parents() -> dict[str, str | None]:
    """Each exception class errors.py defines, and the class it derives from (None: the root)."""
    found = {}
    for value in vars(errors).values():
        if (
            isinstance(value, type)
            and issubclass(value, errors.Mq9Error)
            and value.__module__ == errors.__name__
        ):
            base = value.__bases__[0]
            found[value.__name__] = None if value is errors.Mq9Error else base.__name__
    return found


def test_the_drawing_names_every_class_and_only_them():
    drawn, real = set(_drawn_parents()), set(_real_parents())
    assert not real - drawn, f"classes the drawing misses: {sorted(real - drawn)}"
    assert not drawn - real, f"drawn but not classes of errors.py: {sorted(drawn - real)}"


def test_each_class_is_drawn_under_its_base():
    drawn, real = _drawn_parents(), _real_parents()
    wrong = {
        name: f"drawn under {drawn[name]}, derives from {real[name]}"
        for name in drawn.keys() & real.keys()
        if drawn[name] != real[name]
    }
    assert not wrong, wrong


def test_each_class_has_one_base_and_one_line_of_when():
    for depth, name, when in _drawing():
        assert when, f"{name} is drawn without when it is raised"
        assert len(getattr(errors, name).__bases__) == 1, f"{name} has two bases: draw both"
        assert depth >= 0
