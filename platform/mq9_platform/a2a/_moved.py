"""0.5's paths of the agent-call modules that moved into ``a2a``'s sub-folders, kept for one
release through ``mq9_wire.moved``: importing one warns once and hands out the new module itself
(one module object under both names, so a patched name is patched for both), and ``python -m``
an old path runs the new module after one line saying what to run instead."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import importlib.util
import sys
from types import CodeType, ModuleType

from mq9_wire.moved import moved

PACKAGE = "mq9_platform.a2a"
# Each old module of PACKAGE, and its name there now
RENAMED = {
    "gateway_cli": "gateway.cli",
    "gateway_grpc": "gateway.grpc",
    "gateway_metrics": "gateway.metrics",
    "gateway_push": "gateway.push",
    "gateway_tokens": "gateway.tokens",
    "transport": "sdk.transport",
    "executor": "sdk.executor",
    "protojson": "sdk.protojson",
    "http_caller": "http.caller",
    "cards_import": "http.cards",
    "wire": "mail",
}
# The commands the moved modules run as, for the line ``python -m OLD`` says
COMMANDS = {f"{PACKAGE}.gateway.cli": "mq9-a2a-gateway"}


def new_name(old: str) -> str | None:
    """The module ``old`` (a dotted name) is now, or None when it is no old path."""
    head, _, leaf = old.rpartition(".")
    return f"{PACKAGE}.{RENAMED[leaf]}" if head == PACKAGE and leaf in RENAMED else None


class _OldPath(importlib.abc.MetaPathFinder, importlib.abc.InspectLoader):
    """Finds an old module name after the path finder (no file holds it) and loads it as the
    new module."""

    def find_spec(
        self, fullname: str, path: object = None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if new_name(fullname) is None:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        return moved(spec.name, str(new_name(spec.name)), COMMANDS)

    def exec_module(self, module: ModuleType) -> None:
        pass  # the new module ran when it was imported under its own name

    def is_package(self, fullname: str) -> bool:
        return False

    def get_source(self, fullname: str) -> str | None:
        return None

    def get_code(self, fullname: str) -> CodeType:
        """``python -m OLD``: the new module run as ``__main__`` under its own name (its
        relative imports are its package's), after one line on stderr."""
        new = str(new_name(fullname))
        command = COMMANDS.get(new)
        instead = f"`{command}` (or `python -m {new}`)" if command else f"`python -m {new}`"
        said = f"python -m {fullname} is 0.5's path: run {instead}"
        source = (
            f"import runpy, sys\nprint({said!r}, file=sys.stderr)\n"
            f"runpy.run_module({new!r}, run_name='__main__', alter_sys=True)\n"
        )
        return compile(source, f"<{fullname}>", "exec")


def keep_old_paths() -> None:
    """Let the old names be imported (once per process, from the package's ``__init__``)."""
    if not any(isinstance(finder, _OldPath) for finder in sys.meta_path):
        sys.meta_path.append(_OldPath())
