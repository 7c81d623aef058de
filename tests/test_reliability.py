"""Project-wide guarantees: no pickle anywhere, and the explorer listens on localhost."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [p for d in ("sae", "training", "explorer", "bench", "docs") for p in (ROOT / d).rglob("*.py")]


def test_nothing_unpickles():
    offenders = []
    for p in SOURCES:
        for i, line in enumerate(p.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if re.search(r"\bimport pickle\b|\bpickle\.loads?\(|allow_pickle\s*=\s*True|\bdill\b", code) or \
                    ("torch.load(" in code and "weights_only=True" not in code):
                offenders.append(f"{p.relative_to(ROOT)}:{i}: {line.strip()}")
    assert SOURCES and not offenders, offenders


def test_explorer_binds_localhost_by_default():
    from saex.cli import build_parser

    ns = build_parser().parse_args(["explore"])
    assert ns.host == "127.0.0.1"
