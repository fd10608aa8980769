"""Old import paths of modules that moved, kept for one release. Importing an old path warns once
(a ``FutureWarning``, naming the new import: a ``DeprecationWarning`` is shown only where
``__main__`` imports it, so a package of the user's importing an old path was told nothing) and
hands out the new module's names; its submodules (``OLD.x``) are the new package's own modules,
the same objects, found under the old name at their first import. ``python -m OLD.x`` runs the
new module, after one line saying what to run instead.

Every distribution's old paths use it: ``langchain_mq9.client`` (``mq9_platform.client``) and
the other platform parts, ``mcp_server`` (``mq9_mcp``), ``mq9_wire._nats``
(``mq9_wire.nats_floor``) and ``mq9_wire._cli`` (``mq9_wire.command_line``); the agent-call
modules that moved into ``mq9_platform.a2a``'s sub-folders load through it too (a2a/_moved.py).
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
from types import CodeType, ModuleType

# The commands the moved modules run as (``python -m OLD`` points at them), added by each old path
COMMANDS: dict[str, str] = {}


class _Alias(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """``OLD.x.y`` imported as ``NEW.x.y``: the same module object under both names. It is asked
    before the path finder, which would load a second copy of ``NEW.x.y`` from the aliased
    ``OLD.x``'s folder; a file the old package itself still holds (its ``__main__``) comes first."""

    def __init__(self, old: str, new: str) -> None:
        self.old, self.new = old, new

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if not fullname.startswith(self.old + "."):
            return None
        parent_name = fullname.rpartition(".")[0]
        parent = sys.modules.get(parent_name)
        if parent is not None and parent.__name__ == parent_name:
            own_path = getattr(parent, "__path__", None)
            if importlib.machinery.PathFinder.find_spec(fullname, own_path) is not None:
                return None
        # Only a module the new package has: ``from OLD import Misspelt`` asks for the
        # submodule ``OLD.Misspelt`` after the attribute; said "no such module" here, Python
        # raises its own "cannot import name" (a spec for it failed later as "No module named
        # NEW.Misspelt", naming a path the user never wrote).
        if importlib.util.find_spec(self._new_name(fullname)) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def _new_name(self, fullname: str) -> str:
        return self.new + fullname[len(self.old) :]

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return importlib.import_module(self._new_name(spec.name))

    def exec_module(self, module: ModuleType) -> None:
        pass  # the new module ran when it was imported under its own name

    def get_code(self, fullname: str) -> CodeType | None:
        """``python -m OLD.x`` (0.4's ``python -m langchain_mq9.wake``): runpy asks for the
        code to run as ``__main__``; it runs the new module's, after one line on stderr saying
        what to run instead (without it, runpy failed with an AttributeError traceback)."""
        new = self._new_name(fullname).removesuffix(".__main__")
        command = COMMANDS.get(new)
        instead = f"`{command}` (or `python -m {new}`)" if command else f"`python -m {new}`"
        old = fullname.removesuffix(".__main__")
        print(f"python -m {old} is 0.4's path: run {instead}", file=sys.stderr)
        spec = importlib.util.find_spec(self._new_name(fullname))
        loader = spec.loader if spec is not None else None
        if spec is None or not isinstance(loader, importlib.abc.InspectLoader):
            return None
        return loader.get_code(spec.name)


def moved(old: str, new: str, commands: dict[str, str] | None = None) -> ModuleType:
    """Warn that ``old`` moved to ``new``, let ``old``'s submodules be found, and return the
    new module, whose public names the old one re-exports."""
    warnings.warn(
        f"{old} moved to {new}: import {new} instead ({old} goes in the next release)",
        FutureWarning,
        stacklevel=4,
    )
    COMMANDS.update(commands or {})
    if not any(isinstance(f, _Alias) and f.old == old for f in sys.meta_path):
        sys.meta_path.insert(0, _Alias(old, new))
    return importlib.import_module(new)


def forward(old: str, new: str, commands: dict[str, str] | None = None) -> Callable[[str], object]:
    """An old package's ``__getattr__``: it warns once, at the old path's import, and then hands
    out each name of ``new`` asked of it (``from langchain_mq9.client import Mq9Client``)."""
    target = moved(old, new, commands)

    def name_of_new(name: str) -> object:
        try:
            return getattr(target, name)
        except AttributeError:
            raise AttributeError(f"module {old!r} ({new} now) has no attribute {name!r}") from None

    return name_of_new
