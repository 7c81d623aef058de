"""Labels as Neuronpedia explanation records: export (`to_record`) and import (`read_records`,
`parse_record`), lossless for our own fields.

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


def to_record(key: SAEKey, a: Annotation, history: list[HistoryEntry]) -> dict:
    """One live label as a Neuronpedia-shaped record, our fields under NAMESPACE."""
    return {
        "modelId": key.neuronpedia_model_id, "layer": key.neuronpedia_layer, "index": str(a.feature),
        "description": a.label, "notes": a.description, "authorId": a.author, "typeName": TYPE_NAME,
        "explanationModelName": None, "createdAt": a.created_at, "updatedAt": a.updated_at,
        NAMESPACE: {"format": EXPORT_FORMAT, "model": key.model, "hook": key.hook, "sae_hash": key.sae_hash,
                    "version": a.version, "tags": list(a.tags), "confidence": a.confidence, "claim": a.claim,
                    "history": [{**e.__dict__, "tags": list(e.tags)} for e in history]},
    }


def read_records(records: list | str | bytes) -> list:
    """A JSON list of records, from the list itself or its text."""
    if isinstance(records, (str, bytes)):
        try:
            records = json.loads(records)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SaexError(f"the annotations are not valid JSON ({e})",
                            "import a file written by export_json / Neuronpedia's explanation export") from None
    require(isinstance(records, list), f"annotations must be a JSON list of records, got {type(records).__name__}",
          "import a file written by export_json / Neuronpedia's explanation export")
    return records


def parse_record(record: Any, key: SAEKey) -> dict:
    """Check one exported record against `key` and return its normalised fields."""
    require(isinstance(record, dict), f"expected an object, got {type(record).__name__}", "")
    index = record.get("index")
    is_id = (isinstance(index, str) and index.isascii() and index.isdigit()) or \
        (isinstance(index, int) and not isinstance(index, bool) and index >= 0)
    require(is_id, f"index must be a feature id (a whole number >= 0), got {index!r}", "")
    out = {"feature": int(index), "created_at": check_timestamp(record.get("createdAt", now()), "createdAt"),
           "updated_at": check_timestamp(record.get("updatedAt", now()), "updatedAt")}
    notes = record.get("notes")
    extra = record.get(NAMESPACE)
    if extra is None:  # a plain Neuronpedia record: only its ids tell which SAE it is for
        theirs, ours = (record.get("modelId"), record.get("layer")), (key.neuronpedia_model_id, key.neuronpedia_layer)
        require(theirs == ours, f"is for {theirs[0]} / {theirs[1]}, not this SAE ({ours[0]} / {ours[1]})", "")
        # Its authorId is a Neuronpedia user; the version is written by the importing author.
        content = check_content(record.get("description"), notes or "", [], None, "(importer)", None)
        return out | {"content": content, "version": None, "history": None}

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
