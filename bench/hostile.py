"""Target 9: what one hostile client costs the honest ones.

Each measure is a module of its own with ``measure(quick) -> (checks, figures, notes)``; every
ratio is the honest client's figure with the hostile one beside it against without, taken side
by side in the same run.
"""

from __future__ import annotations

import importlib

from .config import Config
from .results import Section

TITLE = "One hostile client against the honest ones (target 9)"
MEASURES = ("hostile_query", "hostile_waiters", "hostile_loop", "mcp_hostile", "hostile_count")


def run(cfg: Config) -> Section:
    section = Section("hostile", TITLE)
    for name in MEASURES:
        module = importlib.import_module(f".{name}", __package__)
        checks, figures, notes = module.measure(cfg.quick)
        section.checks.extend(checks)
        section.figures.extend(figures)
        section.notes.extend(notes)
    section.checks.sort(key=lambda check: check.key)
    return section
