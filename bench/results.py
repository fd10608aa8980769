"""What a benchmark section hands to the report: checked targets, plain figures, plots, notes."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Check:
    """One target: ``ours`` against ``baseline`` measured side by side, as a ratio.

    ``ratio`` is ``ours / baseline`` unless the section says otherwise in ``ratio_label``;
    ``passed`` is None when the figure could not be taken (``note`` says why).
    """

    key: str
    title: str
    ours_label: str
    ours: str
    baseline_label: str
    baseline: str
    ratio: float | None
    op: str  # "<=" or ">="
    limit: float
    ratio_label: str = "ours / baseline"
    note: str = ""

    @property
    def passed(self) -> bool | None:
        if self.ratio is None:
            return None
        return self.ratio <= self.limit if self.op == "<=" else self.ratio >= self.limit

    @property
    def target(self) -> str:
        return f"{'≤' if self.op == '<=' else '≥'} {self.limit:g}×"


@dataclass
class Section:
    key: str
    title: str
    checks: list[Check] = field(default_factory=list)
    # (what, value) rows shown under the section: the figures behind the ratios and more.
    figures: list[tuple[str, str]] = field(default_factory=list)
    plots: list[tuple[str, str]] = field(default_factory=list)  # (file name, caption)
    notes: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
