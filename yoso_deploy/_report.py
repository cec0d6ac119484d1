"""What every check report shares (torch-free): a list of checks, each with ``ok``, ``layer``, ``name`` and
``error``, and notes; the verdict, the failures and the first failure by layer. ``parity.ParityReport`` and
``int8_parity.Int8Report`` add their tables and JSON groups (:meth:`cases`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


@dataclass
class CheckReport:
    comparisons: list = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return bool(self.comparisons) and all(c.ok for c in self.comparisons)

    @property
    def ok(self) -> bool:
        return self.passed

    def failures(self) -> list:
        return [c for c in self.comparisons if not c.ok]

    def first_failure(self):
        """The failure of the earliest layer (within a layer, in the order the checks were made; checks
        without a layer, e.g. outputs, last)."""
        bad = [(i, c) for i, c in enumerate(self.comparisons) if not c.ok]
        if not bad:
            return None
        return min(bad, key=lambda ic: (math.inf if ic[1].layer is None else ic[1].layer, ic[0]))[1]

    def cases(self) -> list[dict]:
        raise NotImplementedError  # each report groups its checks its own way

    def to_json(self) -> dict:
        first = self.first_failure()
        return {"passed": self.passed, "first_failure": None if first is None else f"{first.name}: {first.error}",
                "notes": self.notes, "cases": self.cases()}
