"""What every analysis returns: its JSON document, with one `Answer` shape inside.

`run_lookahead`, `run_depth`, `find_word`, `run_eval` and `label_sae` take their config dataclass and
return a `Report`: the dict written to disk (so `report["causal"]` reads as before), plus its `kind`,
its `path` and its `answer` as an `Answer`: one plain verdict and the lines of evidence it rests on.
The explorer, the CLI and the demo print answers through this one shape.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Answer:
    """A verdict in one sentence, the evidence a line each, and the verdict's machine-readable parts."""

    verdict: str
    lines: list[str] = field(default_factory=list)
    label: str = ""
    """A short name for the verdict (e.g. "found", "inconclusive"), for code that branches on it."""
    details: dict = field(default_factory=dict)
    """Flags the verdict rests on (e.g. gap_reliable, beats_random)."""

    def to_dict(self) -> dict:
        return {"verdict": self.verdict, "label": self.label, "lines": list(self.lines), **self.details}

    @classmethod
    def from_dict(cls, d: dict | list | None) -> Answer:
        """Read an answer as stored, including the shapes of reports written before this one:
        a bare list of lines (depth), lines ending in "Verdict: ..." (lookahead), a heading (finder)."""
        if d is None:
            return cls("no answer was recorded")
        if isinstance(d, list):
            return cls(d[-1] if d else "no answer was recorded", list(d))
        lines = list(d.get("lines", []))
        verdict = d.get("verdict")
        label = d.get("label", "")
        if "heading" in d:  # format-2 finder: verdict held the label, heading the sentence
            label = label or (verdict or "")
            verdict = d["heading"]
        if not verdict:
            said = [ln for ln in lines if ln.startswith("Verdict:")]
            verdict = said[-1].removeprefix("Verdict:").strip() if said else (lines[-1] if lines else "")
            lines = [ln for ln in lines if not ln.startswith("Verdict:")]
        details = {k: v for k, v in d.items() if k not in ("verdict", "label", "lines", "heading")}
        return cls(verdict, lines, label, details)

    def text(self, bullet: str = "- ") -> str:
        """The verdict, then the evidence as a list."""
        return "\n".join([self.verdict, ""] + [bullet + line for line in self.lines]) if self.lines else self.verdict


class Report(dict):
    """An analysis's JSON document (a dict, as written) with its kind, where it was written, and its answer."""

    def __init__(self, kind: str, data: dict, path: str | Path | None = None):
        super().__init__(data)
        self.kind = kind
        self.path = Path(path) if path is not None else None

    @property
    def answer(self) -> Answer:
        return Answer.from_dict(self.get("answer"))


class Clock:
    """Seconds per step of an analysis, as its report's `seconds` records them."""

    def __init__(self):
        self.t0 = self.last = time.perf_counter()
        self.steps: dict[str, float] = {}

    def tick(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = round(now - self.last, 2)
        self.last = now
