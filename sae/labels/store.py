"""Feature labels that persist: a SQLite store with full history.

A label is keyed by (model, hook point, SAE content hash, feature id), so retraining an
SAE (new weights, new hash) never inherits the old SAE's labels: feature 12 of one SAE has
nothing to do with feature 12 of another. Every `set`, `delete` and import appends a row
to the history table; nothing is ever overwritten without a trace. What a label holds is
`sae.labels.records`; export and import go through `sae.labels.neuronpedia` (the
export for a Neuronpedia instance, with the feature index, is `sae.labels.neuronpedia_export`).

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
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sae.errors import SaexError
from sae.fsutil import write_json_atomic
from sae.labels import neuronpedia
from sae.labels.records import (
    CONTENT_FIELDS,
    Annotation,
    HistoryEntry,
    ImportReport,
    SAEKey,
    check_content,
    check_count,
    check_text,
    now,
    require,
)

SCHEMA_VERSION = 1
ENV_VAR = "SAEX_ANNOTATIONS"
DEFAULT_PATH = Path("checkpoints") / "annotations.sqlite"
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
# --------------------------------------------------------------------------- the store


class AnnotationStore:
    """Feature labels in one SQLite file, created on first use."""

    def __init__(self, path: str | Path | None = None, timeout: float = 30.0):
        # Absolute, so a later chdir (the app may do one) cannot move the database.
        self.path = Path(path or os.environ.get(ENV_VAR) or DEFAULT_PATH).expanduser().absolute()
        self.timeout = timeout
        fix = f"pass another path (or set ${ENV_VAR})"
        require(not self.path.is_dir(), f"the annotation database {self.path} is a folder", fix)
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
                                [("schema_version", str(SCHEMA_VERSION)), ("created_at", now())])
                return
            require("meta" in tables,
                  f"{self.path} is an SQLite database with other tables ({', '.join(sorted(tables))})",
                  f"pass another path (or set ${ENV_VAR})")
            row = con.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
            require(row is not None and row[0] == str(SCHEMA_VERSION),
                  f"{self.path} has annotation schema version {row and row[0]}, "
                  f"this sae-explorer reads {SCHEMA_VERSION}",
                  "use the sae-explorer version that wrote it")

    # -- rows

    @staticmethod
    def _where(key: SAEKey, feature: int | None = None) -> tuple[str, tuple]:
        require(isinstance(key, SAEKey), f"expected an SAEKey, got {key!r}",
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
        at, values = now(), _columns(content)
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
            check_count(expected_version, "expected_version")
        require(expected_version is None or expected_version == current,
              f"feature {feature} was changed by someone else (now at version {current}, "
              f"you edited version {expected_version})", "reload it, then apply your edit again")

    # -- the API

    def get(self, key: SAEKey, feature: int) -> Annotation | None:
        """The live label of `feature`, or None."""
        with self._transaction(write=False) as con:
            return self._live(con, key, check_count(feature, "the feature id"))

    def set(self, key: SAEKey, feature: int, *, label: str, author: str, description: str = "",
            tags: list[str] | tuple[str, ...] = (), confidence: float | None = None, claim: dict | None = None,
            expected_version: int | None = None) -> int:
        """Write a new version of the label (every field is replaced) and return its number.

        `expected_version`: the version the editor started from (0 for "no label"); if
        someone else saved in between, the edit is refused instead of silently replacing
        theirs."""
        feature = check_count(feature, "the feature id")
        content = check_content(label, description, tags, confidence, author, claim)
        with self._transaction(write=True) as con:
            live = self._live(con, key, feature)
            self._check_expected(live, expected_version, feature)
            return self._write_version(con, key, feature, "set", content, live)

    def delete(self, key: SAEKey, feature: int, *, author: str, expected_version: int | None = None) -> int:
        """Remove the live label (its history stays) and return the version recording that."""
        feature = check_count(feature, "the feature id")
        author = check_text(author, "the author")
        with self._transaction(write=True) as con:
            live = self._live(con, key, feature)
            require(live is not None, f"feature {feature} of {key} has no label to delete",
                  "check the feature id; earlier versions are in history()")
            self._check_expected(live, expected_version, feature)
            content = ({name: getattr(live, name) for name in CONTENT_FIELDS}
                       | {"author": author, "tags": list(live.tags)})
            return self._write_version(con, key, feature, "delete", content, live)

    def history(self, key: SAEKey, feature: int) -> list[HistoryEntry]:
        """Every version of the feature's label, oldest first (deleted ones included)."""
        where, args = self._where(key, check_count(feature, "the feature id"))
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
        return [neuronpedia.to_record(key, a, history[a.feature]) for a in labels]

    def export_file(self, key: SAEKey, path: str | Path) -> int:
        """Write export_json(key) to `path` atomically; returns the number of records."""
        records = self.export_json(key)
        write_json_atomic(Path(path), records)
        return len(records)

    def import_file(self, path: str | Path, key: SAEKey, *, author: str, on_conflict: str = "keep",
                    source: str | None = None) -> ImportReport:
        """import_json of a file (a JSON list or JSON Lines, possibly gzipped) or of a folder
        of Neuronpedia explanation batches (see `neuronpedia.read_path`)."""
        return self.import_json(neuronpedia.read_path(path), key, author=author, on_conflict=on_conflict,
                                source=source)

    def import_json(self, records: list | str | bytes, key: SAEKey, *, author: str,
                    on_conflict: str = "keep", source: str | None = None) -> ImportReport:
        """Import exported records or Neuronpedia explanations (a list, or its JSON / JSON
        Lines text, possibly gzipped) into `key`'s labels, all or nothing.

        A feature with no history here gets our record's history verbatim (so an export
        imported into a fresh database is identical). Otherwise the record becomes one new
        version, action "import", written by `author`; Neuronpedia's explanations of one
        feature become one such version each, the current one last. A live label is kept
        (on_conflict="keep") or replaced ("overwrite"). `source` ("MODEL/LAYER", their
        modelId and layer) says whose explanations are imported onto this SAE; records of
        other sources are counted (ImportReport.other_source) and left out."""
        require(on_conflict in ("keep", "overwrite"), f"on_conflict must be 'keep' or 'overwrite', got {on_conflict!r}",
              "choose one of the two")
        author = check_text(author, "the importing author")
        parsed, other, problems = neuronpedia.parse_records(neuronpedia.read_records(records), key, source)
        features = [p["feature"] for p in parsed]
        duplicates = sorted({f for f in features if features.count(f) > 1})
        if duplicates:
            problems.append(f"features {duplicates} appear more than once")
        require(not problems,
              "; ".join(problems[:3]) + (f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""),
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
                    latest = live
                    for content in p["earlier"]:
                        self._write_version(con, key, p["feature"], "import", content | {"author": author}, latest)
                        latest = self._live(con, key, p["feature"])
                    self._write_version(con, key, p["feature"], "import", p["content"] | {"author": author}, latest)
                    if live:
                        replaced += 1
                    else:
                        added += 1
        return ImportReport(added, replaced, skipped, other)

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
               for n in CONTENT_FIELDS if n != "author")


