"""Records of the lab: `Claim`, `Result` and the file names of a run folder.

These are plain data with their JSON form; `ntkit.lab.framework` (running experiments)
and `ntkit.lab.report` (HTML pages) both build on this module and it imports neither, so
the lab's modules form a chain without cycles: records <- report <- framework.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["REPORT_FILE", "RESULT_FILE", "SCHEMA_VERSION", "Claim", "Result", "fmt_value",
           "format_claims", "is_complete_run", "normalize_table", "to_jsonable"]

RESULT_FILE = "result.json"
REPORT_FILE = "report.html"
SCHEMA_VERSION = 1


@dataclass
class Claim:
    """One prediction compared with one measurement.

    Attributes:
      name: what is claimed, e.g. "NTK error slope in width (ReLU, depth 1)".
      predicted: the theory's value (a number) or statement (a string, e.g. "≤ 0.31").
      measured: the measured number.
      tolerance: allowed |measured − predicted| (a number), or a string explaining the
        criterion when it is not symmetric (then ``holds`` is given explicitly).
      holds: whether the measurement agrees with the prediction.
      note: why the tolerance is what it is; what a disagreement means.
    """

    name: str
    predicted: float | str
    measured: float
    tolerance: float | str
    holds: bool
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return to_jsonable(asdict(self))


@dataclass
class Result:
    """What one run produced (also what `Result.load` reads back from ``result.json``).

    ``run_dir`` is the final folder (None if the result was never written); ``figures``
    are paths inside it; ``captions`` maps a figure's file name to its caption. The extra
    fields carry the rest of ``result.json``.
    """

    name: str
    config: dict
    claims: list[Claim]
    tables: dict[str, object]
    figures: list[Path]
    run_dir: Path | None
    summary: str = ""
    description: str = ""
    environment: dict = field(default_factory=dict)
    wall_time_s: float = float("nan")
    started: str = ""
    log: list[str] = field(default_factory=list)
    captions: dict[str, str] = field(default_factory=dict)

    @property
    def all_hold(self) -> bool:
        """True when every claim holds (vacuously for no claims)."""
        return all(c.holds for c in self.claims)

    def claims_table(self) -> str:
        """The claims as a plain-text table (✓/✗, predicted, measured, tolerance, note)."""
        return format_claims(self.claims)

    def to_dict(self) -> dict[str, Any]:
        """The JSON document written as ``result.json``."""
        return to_jsonable({
            "schema": SCHEMA_VERSION,
            "status": "complete",
            "name": self.name,
            "description": self.description,
            "config": self.config,
            "environment": self.environment,
            "started": self.started,
            "wall_time_s": self.wall_time_s,
            "summary": self.summary,
            "claims": [c.to_dict() for c in self.claims],
            "n_claims": len(self.claims),
            "n_holding": sum(bool(c.holds) for c in self.claims),
            "tables": self.tables,
            "figures": [p.name for p in self.figures],
            "captions": self.captions,
            "log": self.log,
        })

    @classmethod
    def load(cls, run_dir: str | Path) -> Result:
        """Read a finished run back from its folder."""
        run_dir = Path(run_dir)
        doc = json.loads((run_dir / RESULT_FILE).read_text(encoding="utf-8"))
        claims = [Claim(**{k: c.get(k) for k in ("name", "predicted", "measured",
                                                 "tolerance", "holds", "note")})
                  for c in doc.get("claims", [])]
        for c in claims:
            c.measured = float("nan") if c.measured is None else c.measured
        return cls(name=doc["name"], config=doc.get("config", {}), claims=claims,
                   tables=doc.get("tables", {}),
                   figures=[run_dir / f for f in doc.get("figures", [])], run_dir=run_dir,
                   summary=doc.get("summary", ""), description=doc.get("description", ""),
                   environment=doc.get("environment", {}),
                   wall_time_s=doc.get("wall_time_s") or float("nan"),
                   started=doc.get("started", ""), log=doc.get("log", []),
                   captions=doc.get("captions", {}))


def fmt_value(v: Any, digits: int = 4) -> str:
    """A compact human form of a claim field (numbers to ``digits`` significant digits)."""
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, (int, float, np.floating, np.integer)):
        v = float(v)
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        if v != 0 and (abs(v) >= 1e5 or abs(v) < 1e-3):
            return f"{v:.{digits - 1}e}"
        return f"{v:.{digits}g}"
    return "" if v is None else str(v)


def format_claims(claims: Sequence[Claim]) -> str:
    """Plain-text table of claims, one per line, with ✓/✗ in front."""
    if not claims:
        return "(no claims)"
    head = ("", "claim", "predicted", "measured", "tolerance")
    rows = [("✓" if c.holds else "✗", c.name, fmt_value(c.predicted), fmt_value(c.measured),
             fmt_value(c.tolerance)) for c in claims]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(r: Sequence[str]) -> str:
        return "  ".join(s.ljust(w) for s, w in zip(r, widths, strict=True)).rstrip()

    out = [line(head), line(["-" * w for w in widths])]
    out += [line(r) for r in rows]
    held = sum(bool(c.holds) for c in claims)
    out.append(f"{held}/{len(claims)} claims hold")
    return "\n".join(out)


def to_jsonable(obj: Any) -> Any:
    """Convert tensors, arrays, numpy scalars, paths to JSON types; non-finite → None."""
    if isinstance(obj, torch.Tensor):
        return to_jsonable(obj.detach().cpu().tolist())
    if isinstance(obj, np.ndarray):
        return to_jsonable(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        f = float(obj)
        return f if math.isfinite(f) else None
    if isinstance(obj, str) or obj is None:
        return obj
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, dict):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    return str(obj)


def normalize_table(name: str, data: Any) -> dict[str, list]:
    """A dict of equal-length columns (lists) from columns or from a list of row dicts.

    Example: ``normalize_table("t", [{"a": 1}, {"a": 2, "b": 3}])`` gives
    ``{"a": [1, 2], "b": [None, 3]}``; ValueError for columns of different lengths.
    """
    if isinstance(data, dict):
        cols = {str(k): to_jsonable(v) for k, v in data.items()}
        for k, v in cols.items():
            if not isinstance(v, list):
                cols[k] = [v]
        lengths = {len(v) for v in cols.values()}
        if len(lengths) > 1:
            raise ValueError(f"table {name!r}: columns have different lengths "
                             f"{ {k: len(v) for k, v in cols.items()} }")
        return cols
    if isinstance(data, (list, tuple)) and all(isinstance(r, dict) for r in data):
        keys: dict[str, None] = {}
        for r in data:
            keys.update(dict.fromkeys(str(k) for k in r))
        return {k: [to_jsonable(r.get(k)) for r in data] for k in keys}
    raise TypeError(f"table {name!r}: expected a dict of columns or a list of row dicts, "
                    f"got {type(data).__name__}")


def is_complete_run(path: Path) -> bool:
    """A visible folder holding a ``result.json`` whose status is complete."""
    if path.name.startswith(".") or not path.is_dir():
        return False
    f = path / RESULT_FILE
    if not f.is_file():
        return False
    try:
        return json.loads(f.read_text(encoding="utf-8")).get("status") == "complete"
    except (OSError, ValueError):
        return False
