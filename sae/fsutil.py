"""Atomic file writes, hashing and the cache folder.

Every file the project writes goes through a temp file in the same folder and
`os.replace`, so a crash (even kill -9) leaves either the old file or the new one,
never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sae.errors import SaexError

TMP_SUFFIX = ".tmp"


def cache_dir() -> Path:
    """Where downloaded models and corpora live: $SAEX_CACHE, else ~/.cache/sae-explorer."""
    root = os.environ.get("SAEX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "sae-explorer"
    )
    return Path(root)


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Create `path` if needed and check that we can write into it."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = tempfile.NamedTemporaryFile(dir=path, prefix=".write-probe-", delete=True)
        probe.close()
    except OSError as e:
        raise SaexError(
            f"cannot write to the {what} folder {path}: {e.strerror or e}",
            "choose a folder you can write to, or fix its permissions",
        ) from None
    return path


@contextmanager
def atomic_path(dest: Path) -> Iterator[Path]:
    """Yield a temp path beside `dest`; on success rename it onto `dest`."""
    dest = Path(dest)
    # The writer's pid is in the name, so cleanup never removes a live writer's file.
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.pid{os.getpid()}.", suffix=TMP_SUFFIX)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp_path, dest)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def write_json_atomic(dest: Path, obj) -> None:
    with atomic_path(dest) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(folder: Path) -> int:
    """Delete temp files left by killed writers (not those of live ones); returns how many."""
    n = 0
    if Path(folder).is_dir():
        for p in Path(folder).glob(f".*{TMP_SUFFIX}"):
            m = re.search(r"\.pid(\d+)\.", p.name)
            if m and int(m.group(1)) != os.getpid() and _pid_alive(int(m.group(1))):
                continue
            p.unlink(missing_ok=True)
            n += 1
    return n


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def iter_jsonl(path: Path, fix: str):
    """(line number, object) for each non-blank line of a JSONL file; a line that is not a
    JSON object is one SaexError naming the file and line, with `fix`."""
    import json

    from sae.errors import SaexError

    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SaexError(f"{path} line {lineno} is not valid JSON ({e.msg})", fix) from None
            if not isinstance(rec, dict):
                raise SaexError(f"{path} line {lineno} is not a JSON object", fix)
            yield lineno, rec
