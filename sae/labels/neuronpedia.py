"""Labels as Neuronpedia explanation records: export (`to_record`) and import (`read_path`,
`read_records`, `parse_records`), lossless for our own fields.

Our export (a JSON list of records, one per live label; see docs/formats.md, "Annotations"):

    Neuronpedia key   ours
    modelId           SAEKey.neuronpedia_model_id (the model spec, lower-cased, last path part)
    layer             SAEKey.neuronpedia_layer ("15-res-saex-<first 8 hex of the SAE hash>")
    index             the feature id, as a string (Neuronpedia's convention)
    description       the label
    notes             the longer description
    authorId          the author of the current version
    typeName          "saex-annotation" (or the np:type tag of a label imported from Neuronpedia)
    explanationModelName  null, written by a person (or the np:model tag of an imported label)
    createdAt         when the label was first set; updatedAt: when the current version was
    saex              everything else, so a round trip is lossless: format, model, hook,
                      sae_hash, version, tags, confidence, claim and the full history

A record with a `saex` key is accepted only when its model, hook and sae_hash are this
SAE's. One without is an explanation as Neuronpedia publishes them: its database export
writes one per line, gzipped, in `v1/<modelId>/<layer>/explanations/batch-<n>.jsonl.gz`
(hijohnnylin/neuronpedia, utils/neuronpedia-utils/neuronpedia_utils/export-data.py,
`export_explanations`: id, modelId, layer, index, authorId, description, embedding,
typeName, explanationModelName, umap_*; the Explanation model of
apps/webapp/prisma/schema.prisma adds notes, scoreV1, scoreV2, createdAt, updatedAt).
Such a record is accepted when its modelId and layer are this SAE's or, given a source
"MODEL/LAYER" (theirs, e.g. "pythia-70m-deduped/1-res-sm"), that source's; records of
other sources are then counted and left out. A feature may have several explanations:
the highest scored (scoreV2, else scoreV1) is current, ties going to the most recent
(createdAt), then to the last read; the others become earlier versions, oldest first.
They get no confidence or claim; where they came from is kept as tags,

    np:source=MODEL/LAYER   np:type=<typeName>   np:model=<explanationModelName>   np:author=<authorId>

which an export keeps (and turns back into typeName and explanationModelName).
"""

from __future__ import annotations

import gzip
import json
import math
import re
import zlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sae.errors import SaexError
from sae.labels.records import (
    ACTIONS,
    CONTENT_FIELDS,
    Annotation,
    HistoryEntry,
    SAEKey,
    check_content,
    check_count,
    check_timestamp,
    now,
    require,
)

NAMESPACE = "saex"  # the key our extra fields live under in an exported record
EXPORT_FORMAT = 1
TYPE_NAME = "saex-annotation"
PROVENANCE = "np:"  # prefix of the tags that say where an imported explanation came from
BATCH_SUFFIXES = (".jsonl.gz", ".json.gz", ".jsonl", ".json")
_FIX_FILE = "import a file written by export_json, or Neuronpedia explanation batches (batch-N.jsonl.gz)"


def provenance(tags) -> dict[str, str]:
    """A label's np:KEY=VALUE tags as {KEY: VALUE} (the first of each key)."""
    out: dict[str, str] = {}
    for t in tags:
        if t.startswith(PROVENANCE) and "=" in t:
            k, v = t[len(PROVENANCE):].split("=", 1)
            out.setdefault(k, v)
    return out


def to_record(key: SAEKey, a: Annotation, history: list[HistoryEntry]) -> dict:
    """One live label as a Neuronpedia-shaped record, our fields under NAMESPACE."""
    origin = provenance(a.tags)
    return {
        "modelId": key.neuronpedia_model_id, "layer": key.neuronpedia_layer, "index": str(a.feature),
        "description": a.label, "notes": a.description, "authorId": a.author,
        "typeName": origin.get("type", TYPE_NAME), "explanationModelName": origin.get("model"),
        "createdAt": a.created_at, "updatedAt": a.updated_at,
        NAMESPACE: {"format": EXPORT_FORMAT, "model": key.model, "hook": key.hook, "sae_hash": key.sae_hash,
                    "version": a.version, "tags": list(a.tags), "confidence": a.confidence, "claim": a.claim,
                    "history": [{**e.__dict__, "tags": list(e.tags)} for e in history]},
    }


# --------------------------------------------------------------------------- reading files


def read_records(records: list | str | bytes, where: str = "") -> list:
    """The records of a list, or of its bytes or text: a JSON list, or JSON Lines (one
    record a line, as Neuronpedia's batches), either of them possibly gzipped. `where`
    names the file in errors."""
    at = f" in {where}" if where else ""
    if isinstance(records, bytes) and records[:2] == b"\x1f\x8b":
        try:
            records = gzip.decompress(records)
        except (OSError, EOFError, zlib.error) as e:
            raise SaexError(f"the annotations{at} are not a readable gzip file ({e})", _FIX_FILE) from None
    if isinstance(records, bytes):
        try:
            records = records.decode("utf-8")
        except UnicodeDecodeError as e:
            raise SaexError(f"the annotations{at} are not valid JSON (not UTF-8 text: {e})", _FIX_FILE) from None
    if isinstance(records, str):
        text = records.lstrip("\ufeff \t\r\n")
        if text.startswith("{"):  # JSON Lines; split on newlines only (U+2028 may sit inside a string)
            records = []
            for n, line in enumerate(text.split("\n"), 1):
                if line.strip():
                    try:
                        records.append(json.loads(line))
                    except json.JSONDecodeError as e:
                        raise SaexError(f"line {n} of the annotations{at} is not valid JSON ({e})",
                                        "JSON Lines hold one whole record on each line") from None
        elif text == "":
            records = []  # an empty batch
        else:
            try:
                records = json.loads(text)
            except json.JSONDecodeError as e:
                raise SaexError(f"the annotations{at} are not valid JSON ({e})", _FIX_FILE) from None
    require(isinstance(records, list),
          f"the annotations{at} must be a JSON list of records (or JSON Lines), got {type(records).__name__}",
          _FIX_FILE)
    return records


def _natural(name: str) -> list:
    """Sort key that puts batch-2 before batch-10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def read_path(path: str | Path) -> list:
    """The records of one file (see read_records), or of every batch file in a folder
    (*.jsonl.gz, *.json.gz, *.jsonl, *.json, in batch order). A folder laid out as
    Neuronpedia's datasets (`<layer>/` holding `explanations/`) is read from `explanations/`."""
    path = Path(path).expanduser()
    if path.is_dir():
        folder = path / "explanations" if (path / "explanations").is_dir() else path
        files = sorted((f for f in folder.iterdir() if f.is_file() and not f.name.startswith(".")
                        and f.name.lower().endswith(BATCH_SUFFIXES)), key=lambda f: _natural(f.name))
        require(files != [], f"no explanation batches ({', '.join('*' + s for s in BATCH_SUFFIXES)}) in {folder}",
              "give a folder of batch-N.jsonl.gz files, or one file")
        records: list = []
        for f in files:
            records += read_records(f.read_bytes(), where=str(f))
        return records
    require(path.is_file(), f"no annotations file at {path}", "check the path")
    return read_records(path.read_bytes(), where=str(path))


# --------------------------------------------------------------------------- checking records


def parse_source(source: str) -> tuple[str, str]:
    """"MODEL/LAYER" -> (modelId, layer), lower-cased as Neuronpedia stores them."""
    ok = isinstance(source, str) and re.fullmatch(r"[^/\s]+/[^/\s]+", source.strip()) is not None
    require(ok, f"a source is Neuronpedia's MODEL/LAYER (modelId and layer, e.g. pythia-70m-deduped/1-res-sm), "
                f"got {source!r}", "give it as MODEL/LAYER, the two parts of its URL neuronpedia.org/MODEL/LAYER")
    model, layer = source.strip().lower().split("/")
    return model, layer


def _source_of(record: dict) -> tuple[str, str] | None:
    model, layer = record.get("modelId"), record.get("layer")
    return (model.lower(), layer.lower()) if isinstance(model, str) and isinstance(layer, str) else None


def _score(record: dict) -> float | None:
    for name in ("scoreV2", "scoreV1"):
        v = record.get(name)
        if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
            return float(v)
    return None


def _seconds(timestamp: str | None) -> float:
    if timestamp is None:
        return -math.inf
    t = datetime.fromisoformat(timestamp)
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _plain(record: dict, key: SAEKey, source: str | None) -> dict:
    """A Neuronpedia explanation (no NAMESPACE key): its content, provenance tags and rank."""
    theirs = _source_of(record)
    if source is None:
        ours = (key.neuronpedia_model_id, key.neuronpedia_layer)
        require(theirs == ours, f"is for {record.get('modelId')} / {record.get('layer')}, not this SAE "
                                f"({ours[0]} / {ours[1]}); pass its source (MODEL/LAYER) to import it here", "")
    else:
        require(theirs == parse_source(source), f"is for {record.get('modelId')} / {record.get('layer')}, "
                                                f"not the source {source}", "")
    tags = [f"{PROVENANCE}source={theirs[0]}/{theirs[1]}"]
    for name, value in (("type", record.get("typeName")), ("model", record.get("explanationModelName")),
                        ("author", record.get("authorId"))):
        if isinstance(value, str) and value.strip() and not (name == "type" and value == TYPE_NAME):
            tags.append(f"{PROVENANCE}{name}={value.strip()}")
    # The version's author is the importing one (the store fills it in); theirs is a tag.
    content = check_content(record.get("description"), record.get("notes") or "", tags, None, "(importer)", None)
    score = _score(record)
    return {"content": content, "version": None, "history": None,
            "rank": (score is not None, score or 0.0, _seconds(record.get("createdAt") or None))}


def parse_record(record: Any, key: SAEKey, source: str | None = None) -> dict:
    """Check one record against `key` (and `source`, for Neuronpedia's) and return its
    normalised fields."""
    require(isinstance(record, dict), f"expected an object, got {type(record).__name__}", "")
    index = record.get("index")
    is_id = (isinstance(index, str) and index.isascii() and index.isdigit()) or \
        (isinstance(index, int) and not isinstance(index, bool) and index >= 0)
    require(is_id, f"index must be a feature id (a whole number >= 0), got {index!r}", "")
    out = {"feature": int(index), "created_at": check_timestamp(record.get("createdAt") or now(), "createdAt"),
           "updated_at": check_timestamp(record.get("updatedAt") or now(), "updatedAt")}
    notes = record.get("notes")
    extra = record.get(NAMESPACE)
    if extra is None:
        return out | _plain(record, key, source)

    require(isinstance(extra, dict), f"{NAMESPACE} must be an object, got {type(extra).__name__}", "")
    expected = {"format", "model", "hook", "sae_hash", "version", "tags", "confidence", "claim", "history"}
    require(set(extra) == expected,
          f"{NAMESPACE} must have exactly the keys {sorted(expected)}, got {sorted(extra)}", "")
    require(extra["format"] == EXPORT_FORMAT, f"{NAMESPACE}.format {extra['format']!r} is not {EXPORT_FORMAT}", "")
    theirs = (extra["model"], extra["hook"], extra["sae_hash"])
    require(theirs == (key.model, key.hook, key.sae_hash),
          f"is for another SAE ({' '.join(map(str, theirs))}), not {key.model} {key.hook} {key.sae_hash}", "")
    content = check_content(record.get("description"), notes or "", extra["tags"], extra["confidence"],
                       record.get("authorId"), extra["claim"])
    history = extra["history"]
    require(isinstance(history, list) and history != [], f"{NAMESPACE}.history must be a non-empty list", "")
    entries = []
    for entry in history:
        require(isinstance(entry, dict) and set(entry) == {"version", "action", *CONTENT_FIELDS, "at"},
              f"a history entry must have the keys version, action, {', '.join(CONTENT_FIELDS)}, at; got "
              f"{sorted(entry) if isinstance(entry, dict) else type(entry).__name__}", "")
        require(entry["action"] in ACTIONS, f"history action must be one of {ACTIONS}, got {entry['action']!r}", "")
        entries.append({"version": check_count(entry["version"], "a history version", 1), "action": entry["action"],
                        **check_content(*(entry[n] for n in CONTENT_FIELDS)),
                        "at": check_timestamp(entry["at"], "a history time")})
    version = check_count(extra["version"], f"{NAMESPACE}.version", 1)
    last = entries[-1]
    require([e["version"] for e in entries] == list(range(1, version + 1)),
          f"history versions {[e['version'] for e in entries]} are not 1..{version}", "")
    require(last["action"] != "delete" and {n: last[n] for n in CONTENT_FIELDS} == content
          and last["at"] == out["updated_at"],
          "the last history entry does not match the label, its fields or updatedAt", "")
    return out | {"content": content, "version": version, "history": entries}


def parse_records(records: list, key: SAEKey, source: str | None = None) -> tuple[list[dict], int, list[str]]:
    """Check every record (see the module docstring) and return (entries, records of other
    sources left out, problems), entries by feature. An entry is one feature: `content` its
    current version, `earlier` older versions to write before it (Neuronpedia's other
    explanations), `history` the full history of one of our records (None otherwise)."""
    wanted = parse_source(source) if source is not None else None
    entries, groups, problems, other = [], {}, [], 0
    for i, record in enumerate(records):
        if wanted is not None and isinstance(record, dict) and _source_of(record) != wanted:
            other += 1
            continue
        try:
            p = parse_record(record, key, source)
        except SaexError as e:
            problems.append(f"record {i}: {e.problem}")
            continue
        if p["history"] is None:
            groups.setdefault(p["feature"], []).append((p.pop("rank"), i, p))
        else:
            entries.append(p | {"earlier": []})
    for group in groups.values():
        current = max(group, key=lambda g: (g[0], g[1]))
        rest = sorted((g for g in group if g is not current), key=lambda g: (g[0][2], g[1]))
        entries.append(current[2] | {"earlier": [g[2]["content"] for g in rest]})
    entries.sort(key=lambda p: p["feature"])
    return entries, other, problems
