"""The figures a bench run collects, printed as a table and written as JSON."""

from __future__ import annotations

import json
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass
class Figure:
    key: str
    value: float
    unit: str
    section: str
    target: str = ""
    note: str = ""


@dataclass
class Report:
    figures: list[Figure] = field(default_factory=list)
    section: str = ""

    def figure(self, key: str, value: float, unit: str, *, target: str = "", note: str = "") -> None:
        self.figures.append(Figure(key, round(value, 3), unit, self.section, target, note))
        print(f"  {key} = {value:.3f} {unit}" + (f"  (target {target})" if target else ""), flush=True)

    def table(self) -> str:
        rows = [("section", "figure", "value", "unit", "target", "note")]
        rows += [(f.section, f.key, f"{f.value:g}", f.unit, f.target, f.note) for f in self.figures]
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
        lines.insert(1, "  ".join("-" * w for w in widths))
        return "\n".join(lines)

    def write(self, path: Path) -> None:
        """Update the figures measured now; figures of sections not run this time stay."""
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            data = {}
        data.update({f.key: f.value for f in self.figures})
        data["_units"] = {**data.get("_units", {}), **{f.key: f.unit for f in self.figures}}
        data["_machine"] = {"python": platform.python_version(), "platform": platform.platform()}
        path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def timed(fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[float, T]:
    """(seconds, result) of one call."""
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(pct / 100 * (len(ordered) - 1))))
    return ordered[index]


median = statistics.median
