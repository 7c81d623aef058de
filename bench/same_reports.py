"""Do two versions of the code give the same reports? For refactors that promise "numbers
unchanged": runs `saex lookahead`, `saex depth`, `saex find` and a single- and a multi-layer
harvest on the tiny random model of the tests, in this checkout and in a git worktree of REV,
and compares every report (timings, paths and cache keys aside) and every store file byte
for byte.

    python bench/same_reports.py [--against HEAD~1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SNAPSHOT = ROOT / "tests" / "snapshot_reports.py"
# What a report may differ in between two runs of the same code: how long it took, and the finder's
# cache key (it hashes the SAE files' modification times).
TIMINGS = ("seconds", "timing")
KEYS = ("key", "cached")


def _strip(x):
    if isinstance(x, dict):
        return {k: _strip(v) for k, v in x.items() if k not in KEYS and not any(s in k for s in TIMINGS)}
    return [_strip(v) for v in x] if isinstance(x, list) else x


def _snapshot(tree: Path, out: Path) -> dict[str, object]:
    """Run the snapshot in `tree` (with this checkout's snapshot script) and read what it wrote."""
    test = tree / "tests" / "test_zz_snapshot_reports.py"
    shutil.copy(SNAPSHOT, test)
    try:
        env = os.environ | {"SNAP": str(out), "PYTHONPATH": str(tree)}
        # one --basetemp for both trees: the paths the reports record are then the same
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                            f"--basetemp={out.parent / 'pytest'}", str(test)],
                           cwd=tree, env=env, capture_output=True, text=True)
        if r.returncode:
            sys.exit(f"the snapshot failed in {tree}:\n{r.stdout[-3000:]}{r.stderr[-2000:]}")
    finally:
        test.unlink(missing_ok=True)
    got: dict[str, object] = {}
    for p in sorted(out.rglob("*")):
        if p.is_file():
            rel = p.relative_to(out).as_posix()
            got[rel] = _strip(json.loads(p.read_text())) if rel.startswith("reports/") else p.read_bytes()
    return got


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--against", default="HEAD", help="the git revision to compare this checkout with")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        subprocess.run(["git", "worktree", "add", "-q", "--detach", str(tmp / "other"), args.against], cwd=ROOT,
                       check=True)
        try:
            mine, theirs = _snapshot(ROOT, tmp / "mine"), _snapshot(tmp / "other", tmp / "theirs")
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(tmp / "other")], cwd=ROOT, check=False)
    differ = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
    print(f"{len(mine)} files here, {len(theirs)} at {args.against}; "
          + (f"{len(differ)} differ: {', '.join(differ[:20])}" if differ else "every report and store file the same"))
    sys.exit(1 if differ else 0)


if __name__ == "__main__":
    main()
