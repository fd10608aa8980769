"""Old import paths of modules that moved to a distribution of their own, kept for one release
(issue #108, 0.5.0: the platform's parts are ``mq9_platform``'s: ``langchain_mq9.client`` is
``mq9_platform.client`` now, and so are ``groups``, ``operations``, ``a2a``, ``wake`` and
``tracing``; #92's ``langchain_mq9.broker`` and ``langchain_mq9.protocol`` went in 0.5.0, as
they said). Importing an old path warns (``DeprecationWarning``, naming the new import) and
hands out the new module's names; its submodules (``langchain_mq9.client.client``) are the new
package's own modules, the same objects, found under the old name at their first import.

Nothing in this repository imports an old path (tests/project/test_distributions.py).
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import warnings
from collections.abc import Callable
from types import ModuleType


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``OLD.x.y`` imported as ``NEW.x.y``: the same module object under both names (after the
    path finder, so a file the old package still holds, its ``__main__``, comes first)."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self.old + "."):
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self.new + spec.name[len(self.old) :])

    def exec_module(self, module: ModuleType) -> None:
        pass  # the new module ran when it was imported under its own name


def moved(old: str, new: str) -> ModuleType:
    """Warn that ``old`` moved to ``new``, let ``old``'s submodules be found, and return the
    new module, whose public names the old one re-exports."""
    warnings.warn(
        f"{old} moved to {new}: import {new} instead ({old} goes in the next release)",
        DeprecationWarning,
        stacklevel=4,
    )
    if not any(isinstance(f, _Alias) and f.old == old for f in sys.meta_path):
        sys.meta_path.append(_Alias(old, new))
    return importlib.import_module(new)


def forward(old: str, new: str) -> Callable[[str], object]:
    """An old package's ``__getattr__``: it warns once, at the old path's import, and then hands
    out each name of ``new`` asked of it (``from langchain_mq9.client import Mq9Client``)."""
    target = moved(old, new)

    def name_of_new(name: str) -> object:
        try:
            return getattr(target, name)
        except AttributeError:
            raise AttributeError(f"module {old!r} ({new} now) has no attribute {name!r}") from None

    return name_of_new
