"""Feature labels that persist: a SQLite store with full history, JSON export/import in
Neuronpedia's explanation-record shape, and scoring of a label's testable claim.

A label is keyed by (model, hook point, SAE content hash, feature id), so retraining an
SAE (new weights, new hash) never inherits the old SAE's labels: feature 12 of one SAE has
nothing to do with feature 12 of another. Every `set`, `delete` and import appends a row
to the history table; nothing is ever overwritten without a trace.

Text is stored verbatim: a label such as "<b>an</b> before vowels" stays exactly that.
Escaping is the renderer's job (the explorer escapes whatever it shows as HTML).

Concurrency: the database runs in WAL mode and every write is one `BEGIN IMMEDIATE`
transaction (the version number is read and the new row written under the same write
lock), retried while another process holds the lock, so several app processes can edit
at once without losing an edit or a history row. Each operation opens its own connection,
so a store object may be shared across threads and survives a fork.

Location: `AnnotationStore()` uses $SAEX_ANNOTATIONS, else `checkpoints/annotations.sqlite`
(relative to the working directory); the schema is created on first use and versioned in
the `meta` table.

JSON format (a list of records, one per live label; see docs/formats.md, "Annotations"):

    Neuronpedia key   ours
    modelId           SAEKey.neuronpedia_model_id (the model spec, lower-cased, last path part)
    layer             SAEKey.neuronpedia_layer ("15-res-saex-<first 8 hex of the SAE hash>")
    index             the feature id, as a string (Neuronpedia's convention)
    description       the label
    notes             the longer description
    authorId          the author of the current version
    typeName          "saex-annotation";  explanationModelName: null (written by a person)
    createdAt         when the label was first set; updatedAt: when the current version was
    saex              everything else, so a round trip is lossless: format, model, hook,
                      sae_hash, version, tags, confidence, claim and the full history

A record with a `saex` key is accepted only when its model, hook and sae_hash are this
SAE's. One without (from Neuronpedia, or a tool that dropped the key) is accepted when its
modelId and layer are this SAE's; it then gets no tags, confidence or claim.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import sqlite3
import time
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from sae.errors import SaexError
from sae.fsutil import write_json_atomic

SCHEMA_VERSION = 1
ENV_VAR = "SAEX_ANNOTATIONS"
DEFAULT_PATH = Path("checkpoints") / "annotations.sqlite"
NAMESPACE = "saex"  # the key our extra fields live under in an exported record
EXPORT_FORMAT = 1
TYPE_NAME = "saex-annotation"
ACTIONS = ("set", "delete", "import")
CLAIM_KINDS = ("fires_before",)

_SCHEMA = (
    "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # One row per live label; tags and claim are JSON text.
    """CREATE TABLE labels (
        model TEXT NOT NULL, hook TEXT NOT NULL, sae_hash TEXT NOT NULL, feature INTEGER NOT NULL,
        version INTEGER NOT NULL, label TEXT NOT NULL, description TEXT NOT NULL, tags TEXT NOT NULL,
        confidence REAL, author TEXT NOT NULL, claim TEXT, created_at TEXT NOT NULL, updated_at TEXT NOT NULL,
        PRIMARY KEY (model, hook, sae_hash, feature))""",
    # The primary key makes a lost update impossible: two writers can never both add version n.
    """CREATE TABLE history (
        model TEXT NOT NULL, hook TEXT NOT NULL, sae_hash TEXT NOT NULL, feature INTEGER NOT NULL,
        version INTEGER NOT NULL, action TEXT NOT NULL, label TEXT NOT NULL, description TEXT NOT NULL,
        tags TEXT NOT NULL, confidence REAL, author TEXT NOT NULL, claim TEXT, at TEXT NOT NULL,
        PRIMARY KEY (model, hook, sae_hash, feature, version))""",
)
_CONTENT = ("label", "description", "tags", "confidence", "author", "claim")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds")


# --------------------------------------------------------------------------- values


def _need(ok: bool, problem: str, fix: str) -> None:
    if not ok:
        raise SaexError(problem, fix)


def _text(value: Any, name: str, empty_ok: bool = False) -> str:
    _need(isinstance(value, str) and (empty_ok or value.strip() != ""),
          f"{name} must be a {'' if empty_ok else 'non-empty '}string, got {value!r}", f"give {name} as text")
    return value


def _count(value: Any, name: str, minimum: int = 0) -> int:
    _need(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
          f"{name} must be an integer >= {minimum}, got {value!r}", f"give {name} as a whole number")
    return value


def _timestamp(value: Any, name: str) -> str:
    try:
        datetime.fromisoformat(_text(value, name))
    except ValueError:
        raise SaexError(f"{name} must be an ISO 8601 time, got {value!r}",
                        "use the form 2025-01-31T12:00:00+00:00") from None
    return value


def validate_claim(claim: Any) -> dict | None:
    """Check a testable claim and return it normalised (token ids deduplicated, in order).

    `{"kind": "fires_before", "offset": d, "tokens": [id, ...]}`: the feature fires at
    position p when the token at p + d is one of `tokens` (ids of the SAE's model;
    d = 0 means on the token itself). None means no claim."""
    if claim is None:
        return None
    fix = 'write it as {"kind": "fires_before", "offset": 1, "tokens": [token ids]}'
    _need(isinstance(claim, dict), f"a claim must be an object, got {claim!r}", fix)
    _need(set(claim) == {"kind", "offset", "tokens"},
          f"a claim has exactly the keys kind, offset, tokens; got {sorted(claim)}", fix)
    _need(claim["kind"] in CLAIM_KINDS, f"unknown claim kind {claim['kind']!r} (known: {', '.join(CLAIM_KINDS)})", fix)
    offset = _count(claim["offset"], "the claim's offset")
    tokens = claim["tokens"]
    _need(isinstance(tokens, list) and tokens != [],
          f"the claim's tokens must be a non-empty list, got {tokens!r}", fix)
    ids = [_count(t, "a claim token id") for t in tokens]
    return {"kind": claim["kind"], "offset": offset, "tokens": list(dict.fromkeys(ids))}


def _content(label: Any, description: Any, tags: Any, confidence: Any, author: Any, claim: Any) -> dict:
    """The user-written fields of one version, checked and normalised."""
    _need(isinstance(tags, (list, tuple)), f"tags must be a list of strings, got {tags!r}", 'pass tags=["..."]')
    tags = [_text(t, "a tag").strip() for t in tags]
    if confidence is not None:
        _need(isinstance(confidence, (int, float)) and not isinstance(confidence, bool)
              and math.isfinite(confidence) and 0 <= confidence <= 1,
              f"confidence must be a number between 0 and 1, got {confidence!r}", "pass a value in [0, 1], or None")
        confidence = float(confidence)
    return {"label": _text(label, "the label"), "description": _text(description, "the description", empty_ok=True),
            "tags": list(dict.fromkeys(tags)), "confidence": confidence, "author": _text(author, "the author"),
            "claim": validate_claim(claim)}


@dataclass(frozen=True)
class SAEKey:
    """Which SAE a label belongs to: the model spec, the hook point and the sha256 of its
    weights file (`LoadedSAE.content_hash`)."""

    model: str
    hook: str
    sae_hash: str

    def __post_init__(self):
        for name in ("model", "hook"):
            _text(getattr(self, name), f"the SAE key's {name}")
        _need(isinstance(self.sae_hash, str) and re.fullmatch(r"[0-9a-f]{64}", self.sae_hash) is not None,
              f"the SAE key's sae_hash must be a sha256 (64 lower-case hex digits), got {self.sae_hash!r}",
              "use LoadedSAE.content_hash, or SAEKey.from_sae(load_sae(run))")

    @classmethod
    def from_sae(cls, sae) -> "SAEKey":
        """The key of a `sae.runs.load.LoadedSAE`."""
        _need(bool(sae.model_spec and sae.hook_name),
              f"the SAE in {sae.path} does not record its model or hook point",
              "build the key yourself: SAEKey(model=..., hook=..., sae_hash=sae.content_hash)")
        return cls(sae.model_spec, sae.hook_name, sae.content_hash)

    @property
    def neuronpedia_model_id(self) -> str:
        name = self.model.rstrip("/").rsplit("/", 1)[-1].lower().removesuffix(".gguf")
        return re.sub(r"[^a-z0-9_-]+", "-", name).strip("-") or "model"

    @property
    def neuronpedia_layer(self) -> str:
        """Neuronpedia's "<layer>-<set>" source id; the hash prefix tells SAEs apart."""
        m = re.fullmatch(r"blocks\.(\d+)\.hook_(\w+)", self.hook)
        site = f"{m[1]}-{'res' if m[2] == 'resid_post' else m[2].replace('_', '-')}" if m else \
            re.sub(r"[^a-z0-9]+", "-", self.hook.lower()).strip("-")
        return f"{site}-saex-{self.sae_hash[:8]}"

    def __str__(self) -> str:
        return f"{self.model} {self.hook} sae {self.sae_hash[:12]}"


@dataclass(frozen=True)
class Annotation:
    """The live label of one feature."""

    feature: int
    version: int
    label: str
    description: str
    tags: tuple[str, ...]
    confidence: float | None
    author: str
    claim: dict | None
    created_at: str
    updated_at: str


@dataclass(frozen=True)
class HistoryEntry:
    """One version of a feature's label. A "delete" entry holds the content it removed,
    with the author who deleted it."""

    version: int
    action: str
    label: str
    description: str
    tags: tuple[str, ...]
    confidence: float | None
    author: str
    claim: dict | None
    at: str


@dataclass(frozen=True)
class ImportReport:
    added: int  # features that had no live label
    replaced: int  # live labels overwritten (on_conflict="overwrite")
    skipped: int  # live labels kept (on_conflict="keep") or already identical


# --------------------------------------------------------------------------- the store


class AnnotationStore:
    """Feature labels in one SQLite file, created on first use."""

    def __init__(self, path: str | Path | None = None, timeout: float = 30.0):
        # Absolute, so a later chdir (the app may do one) cannot move the database.
        self.path = Path(path or os.environ.get(ENV_VAR) or DEFAULT_PATH).expanduser().absolute()
        self.timeout = timeout
        fix = f"pass another path (or set ${ENV_VAR})"
        _need(not self.path.is_dir(), f"the annotation database {self.path} is a folder", fix)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise SaexError(f"cannot create the folder of {self.path}: {e.strerror or e}", fix) from None
        try:
            self._create_schema()
        except sqlite3.DatabaseError as e:
            raise SaexError(f"{self.path} is not a usable annotation database ({e})", fix) from None

    # -- connections and transactions

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # isolation_level=None: transactions are begun explicitly below, never implicitly.
        con = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)
        try:
            yield con
        finally:
            con.close()

    def _retry(self, fn):
        """Run fn() again while another process holds the lock (beyond sqlite's own busy
        timeout, which does not cover every case, e.g. switching to WAL)."""
        deadline = time.monotonic() + self.timeout
        while True:
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) and "busy" not in str(e):
                    raise SaexError(f"cannot use the annotation database {self.path}: {e}",
                                    "check that the file and its folder are writable") from None
                if time.monotonic() > deadline:
                    raise SaexError(f"the annotation database {self.path} stayed locked for {self.timeout:.0f} s",
                                    "another process is holding it; close it and try again") from None
                time.sleep(random.uniform(0.005, 0.05))

    @contextmanager
    def _transaction(self, write: bool) -> Iterator[sqlite3.Connection]:
        with self._connect() as con:
            self._retry(lambda: con.execute("BEGIN IMMEDIATE" if write else "BEGIN"))
            try:
                yield con
            except BaseException:
                con.execute("ROLLBACK")
                raise
            self._retry(lambda: con.execute("COMMIT"))

    def _create_schema(self) -> None:
        with self._connect() as con:
            self._retry(lambda: con.execute("PRAGMA journal_mode=WAL").fetchone())
        with self._transaction(write=True) as con:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if not tables:
                for statement in _SCHEMA:
                    con.execute(statement)
                con.executemany("INSERT INTO meta VALUES (?, ?)",
                                [("schema_version", str(SCHEMA_VERSION)), ("created_at", _now())])
                return
            _need("meta" in tables,
                  f"{self.path} is an SQLite database with other tables ({', '.join(sorted(tables))})",
                  f"pass another path (or set ${ENV_VAR})")
            row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            _need(row is not None and row[0] == str(SCHEMA_VERSION),
                  f"{self.path} has annotation schema version {row and row[0]}, "
                  f"this sae-explorer reads {SCHEMA_VERSION}",
                  "use the sae-explorer version that wrote it")

    # -- rows

    @staticmethod
    def _where(key: SAEKey, feature: int | None = None) -> tuple[str, tuple]:
        _need(isinstance(key, SAEKey), f"expected an SAEKey, got {key!r}",
              "build one with SAEKey.from_sae(load_sae(run))")
        if feature is None:
            return "model=? AND hook=? AND sae_hash=?", (key.model, key.hook, key.sae_hash)
        return "model=? AND hook=? AND sae_hash=? AND feature=?", (key.model, key.hook, key.sae_hash, feature)

    _LABEL_COLS = "feature, version, label, description, tags, confidence, author, claim, created_at, updated_at"
    _HISTORY_COLS = "version, action, label, description, tags, confidence, author, claim, at"

    @staticmethod
    def _decode(row: tuple, cls):
        # tags (column 4) and claim (column 7) are JSON text in both tables' column lists.
        values = list(row)
        values[4] = tuple(json.loads(values[4]))
        values[7] = None if values[7] is None else json.loads(values[7])
        return cls(*values)

    def _live(self, con, key: SAEKey, feature: int) -> Annotation | None:
        where, args = self._where(key, feature)
        row = con.execute(f"SELECT {self._LABEL_COLS} FROM labels WHERE {where}", args).fetchone()
        return self._decode(row, Annotation) if row else None

    def _write_version(self, con, key: SAEKey, feature: int, action: str, content: dict,
                       live: Annotation | None) -> int:
        where, args = self._where(key, feature)
        version = con.execute(f"SELECT COALESCE(MAX(version), 0) + 1 FROM history WHERE {where}", args).fetchone()[0]
        at, values = _now(), _columns(content)
        con.execute("INSERT INTO history VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", (*args, version, action, *values, at))
        if action == "delete":
            con.execute(f"DELETE FROM labels WHERE {where}", args)
        else:
            con.execute("INSERT OR REPLACE INTO labels VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (*args, version, *values, live.created_at if live else at, at))
        return version

    @staticmethod
    def _check_expected(live: Annotation | None, expected_version: int | None, feature: int) -> None:
        current = live.version if live else 0
        if expected_version is not None:
            _count(expected_version, "expected_version")
        _need(expected_version is None or expected_version == current,
              f"feature {feature} was changed by someone else (now at version {current}, "
              f"you edited version {expected_version})", "reload it, then apply your edit again")

    # -- the API

    def get(self, key: SAEKey, feature: int) -> Annotation | None:
        """The live label of `feature`, or None."""
        with self._transaction(write=False) as con:
            return self._live(con, key, _count(feature, "the feature id"))

    def set(self, key: SAEKey, feature: int, *, label: str, author: str, description: str = "",
            tags: list[str] | tuple[str, ...] = (), confidence: float | None = None, claim: dict | None = None,
            expected_version: int | None = None) -> int:
        """Write a new version of the label (every field is replaced) and return its number.

        `expected_version`: the version the editor started from (0 for "no label"); if
        someone else saved in between, the edit is refused instead of silently replacing
        theirs."""
        feature = _count(feature, "the feature id")
        content = _content(label, description, tags, confidence, author, claim)
        with self._transaction(write=True) as con:
            live = self._live(con, key, feature)
            self._check_expected(live, expected_version, feature)
            return self._write_version(con, key, feature, "set", content, live)

    def delete(self, key: SAEKey, feature: int, *, author: str, expected_version: int | None = None) -> int:
        """Remove the live label (its history stays) and return the version recording that."""
        feature = _count(feature, "the feature id")
        author = _text(author, "the author")
        with self._transaction(write=True) as con:
            live = self._live(con, key, feature)
            _need(live is not None, f"feature {feature} of {key} has no label to delete",
                  "check the feature id; earlier versions are in history()")
            self._check_expected(live, expected_version, feature)
            content = {name: getattr(live, name) for name in _CONTENT} | {"author": author, "tags": list(live.tags)}
            return self._write_version(con, key, feature, "delete", content, live)

    def history(self, key: SAEKey, feature: int) -> list[HistoryEntry]:
        """Every version of the feature's label, oldest first (deleted ones included)."""
        where, args = self._where(key, _count(feature, "the feature id"))
        with self._transaction(write=False) as con:
            rows = con.execute(f"SELECT {self._HISTORY_COLS} FROM history WHERE {where} ORDER BY version", args)
            return [self._decode(r, HistoryEntry) for r in rows]

    def list_labels(self, key: SAEKey, filter_text: str | None = None, tag: str | None = None) -> list[Annotation]:
        """Live labels of the SAE by feature id. `filter_text`: every word must occur
        (case-insensitively) in the label, description or tags; `tag`: has this tag."""
        where, args = self._where(key)
        with self._transaction(write=False) as con:
            rows = con.execute(f"SELECT {self._LABEL_COLS} FROM labels WHERE {where} ORDER BY feature", args)
            found = [self._decode(r, Annotation) for r in rows]
        if tag is not None:
            found = [a for a in found if tag.strip().casefold() in (t.casefold() for t in a.tags)]
        words = (filter_text or "").casefold().split()
        return [a for a in found if all(w in " ".join((a.label, a.description, *a.tags)).casefold() for w in words)]

    def search_labels(self, key: SAEKey, text: str) -> list[int]:
        """Feature ids whose label, description or tags contain every word of `text`."""
        return [a.feature for a in self.list_labels(key, filter_text=text)]

    # -- export and import

    def export_json(self, key: SAEKey) -> list[dict]:
        """One Neuronpedia-shaped record per live label (the module docstring has the mapping)."""
        where, args = self._where(key)
        with self._transaction(write=False) as con:
            labels = [self._decode(r, Annotation) for r in con.execute(
                f"SELECT {self._LABEL_COLS} FROM labels WHERE {where} ORDER BY feature", args)]
            history: dict[int, list[HistoryEntry]] = {}
            for row in con.execute(f"SELECT feature, {self._HISTORY_COLS} FROM history WHERE {where} "
                                   "ORDER BY feature, version", args):
                history.setdefault(row[0], []).append(self._decode(row[1:], HistoryEntry))
        return [{
            "modelId": key.neuronpedia_model_id, "layer": key.neuronpedia_layer, "index": str(a.feature),
            "description": a.label, "notes": a.description, "authorId": a.author, "typeName": TYPE_NAME,
            "explanationModelName": None, "createdAt": a.created_at, "updatedAt": a.updated_at,
            NAMESPACE: {"format": EXPORT_FORMAT, "model": key.model, "hook": key.hook, "sae_hash": key.sae_hash,
                        "version": a.version, "tags": list(a.tags), "confidence": a.confidence, "claim": a.claim,
                        "history": [{**e.__dict__, "tags": list(e.tags)} for e in history[a.feature]]},
        } for a in labels]

    def export_file(self, key: SAEKey, path: str | Path) -> int:
        """Write export_json(key) to `path` atomically; returns the number of records."""
        records = self.export_json(key)
        write_json_atomic(Path(path), records)
        return len(records)

    def import_file(self, path: str | Path, key: SAEKey, *, author: str, on_conflict: str = "keep") -> ImportReport:
        path = Path(path)
        _need(path.is_file(), f"no annotations file at {path}", "check the path")
        return self.import_json(path.read_bytes(), key, author=author, on_conflict=on_conflict)

    def import_json(self, records: list | str | bytes, key: SAEKey, *, author: str,
                    on_conflict: str = "keep") -> ImportReport:
        """Import exported records (a list, or its JSON text) into `key`'s labels, all or nothing.

        A feature with no history here gets the record's history verbatim (so an export
        imported into a fresh database is identical). Otherwise the record becomes one new
        version, action "import", written by `author`; a live label is kept
        (on_conflict="keep") or replaced ("overwrite")."""
        _need(on_conflict in ("keep", "overwrite"), f"on_conflict must be 'keep' or 'overwrite', got {on_conflict!r}",
              "choose one of the two")
        author = _text(author, "the importing author")
        if isinstance(records, (str, bytes)):
            try:
                records = json.loads(records)
            except (json.JSONDecodeError, UnicodeDecodeError) as e:
                raise SaexError(f"the annotations are not valid JSON ({e})",
                                "import a file written by export_json / Neuronpedia's explanation export") from None
        _need(isinstance(records, list), f"annotations must be a JSON list of records, got {type(records).__name__}",
              "import a file written by export_json / Neuronpedia's explanation export")
        parsed, problems = [], []
        for i, record in enumerate(records):
            try:
                parsed.append(_parse_record(record, key))
            except SaexError as e:
                problems.append(f"record {i}: {e.problem}")
        features = [p["feature"] for p in parsed]
        duplicates = sorted({f for f in features if features.count(f) > 1})
        if duplicates:
            problems.append(f"features {duplicates} appear more than once")
        _need(not problems, "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""),
              "fix or remove those records and import again; nothing was imported")

        added = replaced = skipped = 0
        with self._transaction(write=True) as con:
            for p in parsed:
                live = self._live(con, key, p["feature"])
                where, args = self._where(key, p["feature"])
                has_history = con.execute(f"SELECT 1 FROM history WHERE {where} LIMIT 1", args).fetchone()
                if not has_history and p["history"] is not None:
                    self._copy_history(con, key, p)
                    added += 1
                elif live and (on_conflict == "keep" or _same(live, p["content"])):
                    skipped += 1
                else:
                    self._write_version(con, key, p["feature"], "import", p["content"] | {"author": author}, live)
                    if live:
                        replaced += 1
                    else:
                        added += 1
        return ImportReport(added, replaced, skipped)

    def _copy_history(self, con, key: SAEKey, p: dict) -> None:
        _, args = self._where(key, p["feature"])
        for e in p["history"]:
            con.execute("INSERT INTO history VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                        (*args, e["version"], e["action"], *_columns(e), e["at"]))
        con.execute("INSERT INTO labels VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (*args, p["version"], *_columns(p["content"]), p["created_at"], p["updated_at"]))


def _columns(content: dict) -> tuple:
    """The content fields as stored: tags and claim as JSON text."""
    return (content["label"], content["description"], json.dumps(content["tags"]), content["confidence"],
            content["author"], None if content["claim"] is None else json.dumps(content["claim"]))


def _same(live: Annotation, content: dict) -> bool:
    """Whether importing `content` would change nothing but the author."""
    return all(getattr(live, n) == (tuple(content[n]) if n == "tags" else content[n])
               for n in _CONTENT if n != "author")


def _parse_record(record: Any, key: SAEKey) -> dict:
    """Check one exported record against `key` and return its normalised fields."""
    _need(isinstance(record, dict), f"expected an object, got {type(record).__name__}", "")
    index = record.get("index")
    is_id = (isinstance(index, str) and index.isascii() and index.isdigit()) or \
        (isinstance(index, int) and not isinstance(index, bool) and index >= 0)
    _need(is_id, f"index must be a feature id (a whole number >= 0), got {index!r}", "")
    out = {"feature": int(index), "created_at": _timestamp(record.get("createdAt", _now()), "createdAt"),
           "updated_at": _timestamp(record.get("updatedAt", _now()), "updatedAt")}
    notes = record.get("notes")
    extra = record.get(NAMESPACE)
    if extra is None:  # a plain Neuronpedia record: only its ids tell which SAE it is for
        theirs, ours = (record.get("modelId"), record.get("layer")), (key.neuronpedia_model_id, key.neuronpedia_layer)
        _need(theirs == ours, f"is for {theirs[0]} / {theirs[1]}, not this SAE ({ours[0]} / {ours[1]})", "")
        # Its authorId is a Neuronpedia user; the version is written by the importing author.
        content = _content(record.get("description"), notes or "", [], None, "(importer)", None)
        return out | {"content": content, "version": None, "history": None}

    _need(isinstance(extra, dict), f"{NAMESPACE} must be an object, got {type(extra).__name__}", "")
    expected = {"format", "model", "hook", "sae_hash", "version", "tags", "confidence", "claim", "history"}
    _need(set(extra) == expected, f"{NAMESPACE} must have exactly the keys {sorted(expected)}, got {sorted(extra)}", "")
    _need(extra["format"] == EXPORT_FORMAT, f"{NAMESPACE}.format {extra['format']!r} is not {EXPORT_FORMAT}", "")
    theirs = (extra["model"], extra["hook"], extra["sae_hash"])
    _need(theirs == (key.model, key.hook, key.sae_hash),
          f"is for another SAE ({' '.join(map(str, theirs))}), not {key.model} {key.hook} {key.sae_hash}", "")
    content = _content(record.get("description"), notes or "", extra["tags"], extra["confidence"],
                       record.get("authorId"), extra["claim"])
    history = extra["history"]
    _need(isinstance(history, list) and history != [], f"{NAMESPACE}.history must be a non-empty list", "")
    entries = []
    for entry in history:
        _need(isinstance(entry, dict) and set(entry) == {"version", "action", *_CONTENT, "at"},
              f"a history entry must have the keys version, action, {', '.join(_CONTENT)}, at; got "
              f"{sorted(entry) if isinstance(entry, dict) else type(entry).__name__}", "")
        _need(entry["action"] in ACTIONS, f"history action must be one of {ACTIONS}, got {entry['action']!r}", "")
        entries.append({"version": _count(entry["version"], "a history version", 1), "action": entry["action"],
                        **_content(*(entry[n] for n in _CONTENT)), "at": _timestamp(entry["at"], "a history time")})
    version = _count(extra["version"], f"{NAMESPACE}.version", 1)
    last = entries[-1]
    _need([e["version"] for e in entries] == list(range(1, version + 1)),
          f"history versions {[e['version'] for e in entries]} are not 1..{version}", "")
    _need(last["action"] != "delete" and {n: last[n] for n in _CONTENT} == content and last["at"] == out["updated_at"],
          "the last history entry does not match the label, its fields or updatedAt", "")
    return out | {"content": content, "version": version, "history": entries}


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class ClaimScore:
    precision: float | None  # hits / fired; None when the feature never fired
    recall: float | None  # hits / targets; None when no target token occurred
    hits: int  # positions that fired and have a claimed token at +offset
    fired: int  # positions that fired (and have a token at +offset to check)
    targets: int  # positions with a claimed token at +offset


def _numpy(x: Any) -> np.ndarray | None:
    if hasattr(x, "detach"):  # a torch tensor, possibly on the GPU
        x = x.detach().cpu().numpy()
    return np.asarray(x) if x is not None else None


def score_claim(claim: dict, acts: Any, token_ids: Any, *, threshold: float = 0.0, mask: Any = None) -> ClaimScore:
    """Precision and recall of a "fires_before" claim on held-out text.

    `acts` ("batch pos" or "pos") is one feature's activation per position, `token_ids`
    the tokens at those positions (numpy or torch). The feature fires at p when
    acts[p] > threshold. Position p counts only when p + offset is inside its window
    (windows never run into each other) and, with `mask` (bool, same shape), when
    mask[p] is True (e.g. to leave out BOS)."""
    claim = validate_claim(claim)
    _need(claim is not None, "there is no claim to score", "pass the label's claim")
    acts, tokens, mask = _numpy(acts), _numpy(token_ids), _numpy(mask)
    _need(acts.shape == tokens.shape and acts.ndim in (1, 2) and (mask is None or mask.shape == acts.shape),
          f"acts {acts.shape}, token_ids {tokens.shape} and mask {None if mask is None else mask.shape} "
          "must have one shape, (pos) or (batch, pos)", "pass one feature's activations and the matching tokens")
    _need(np.issubdtype(tokens.dtype, np.integer), f"token_ids must be integers, got {tokens.dtype}", "pass token ids")
    _need(bool(np.isfinite(acts).all()), "acts contain NaN or inf", "recompute the activations")
    _need(isinstance(threshold, (int, float)) and math.isfinite(threshold), f"bad threshold {threshold!r}",
          "pass a finite number")
    acts, tokens = np.atleast_2d(acts), np.atleast_2d(tokens)
    keep = np.ones(acts.shape, bool) if mask is None else np.atleast_2d(mask).astype(bool)
    width = acts.shape[1] - claim["offset"]  # positions p with p + offset inside the window
    if width <= 0:
        return ClaimScore(None, None, 0, 0, 0)
    fired = (acts[:, :width] > threshold) & keep[:, :width]
    target = np.isin(tokens[:, claim["offset"]:], claim["tokens"]) & keep[:, :width]
    hits, n_fired, n_target = int((fired & target).sum()), int(fired.sum()), int(target.sum())
    return ClaimScore(hits / n_fired if n_fired else None, hits / n_target if n_target else None,
                      hits, n_fired, n_target)
