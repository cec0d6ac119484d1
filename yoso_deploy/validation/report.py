"""What every check report shares (torch-free): a list of checks, each with ``ok``, ``layer``, ``name`` and
``error``, and notes; the verdict, the failures and the first failure by layer. ``parity.ParityReport`` and
``int8_criteria.Int8Report`` add their tables and JSON groups (:meth:`cases`)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path


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


def format_table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells):
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths])] + [line(r) for r in rows])


@dataclass
class ValidationResult:
    model_dir: str
    reference: str
    backends: dict
    cases: list
    report: CheckReport = field(default_factory=CheckReport)
    seconds: float = 0.0

    @property
    def results(self):
        return self.report.comparisons

    @property
    def passed(self) -> bool:
        return self.report.passed

    def failures(self):
        return self.report.failures()

    def first_failure(self):
        return self.report.first_failure()

    def table(self) -> str:
        return self.report.table()

    def to_json(self) -> dict:
        first = self.report.first_failure()
        return {"model_dir": self.model_dir, "reference": self.reference, "passed": self.passed,
                "first_failure": None if first is None else f"{first.backend} {first.case} {first.name}: {first.error}",
                "seconds": round(self.seconds, 2), "notes": self.report.notes,
                "backends": {k: asdict(v) for k, v in self.backends.items()}, "inputs": self.cases,
                "cases": self.report.cases()}


def write_report(result: ValidationResult, report_dir: Path) -> None:
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "validation.json").write_text(json.dumps(result.to_json(), indent=2) + "\n")
    lines = [f"# Validation of `{result.model_dir}`", "", f"Reference: **{result.reference}**; verdict: "
             f"**{'PASS' if result.passed else 'FAIL'}** ({result.seconds:.1f} s)", "",
             "| backend | available | reason |", "|---|---|---|"]
    lines += [f"| {b.name} | {'yes' if b.available else 'no'} | {b.reason} |" for b in result.backends.values()]
    lines += ["", "```", result.table(), "```", ""]
    (report_dir / "validation.md").write_text("\n".join(lines))


def parity_entry(report, shapes, **extra) -> dict:
    """The manifest's ``parity`` of a check that ran (any :class:`CheckReport`: parity or int8 criteria) on
    ``shapes`` (batch, sequence); ``extra`` keys (e.g. ``kind``) go in too. Torch-free."""
    first = report.first_failure()
    return {"status": "passed" if report.passed else "failed", **extra,
            "shapes": [f"{b}x{s}" for b, s in shapes],
            "first_failure": None if first is None else f"{first.backend} {first.case} {first.name}",
            "table": report.table().splitlines()}
