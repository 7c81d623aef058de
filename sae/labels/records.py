"""What a feature label is: the SAE it belongs to (`SAEKey`), its versions (`Annotation`,
`HistoryEntry`), and the checks every written field passes, including a label's testable
claim (`validate_claim`)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sae.errors import SaexError

ACTIONS = ("set", "delete", "import")
CLAIM_KINDS = ("fires_before",)

CLAIM_KINDS = ("fires_before",)
CONTENT_FIELDS = ("label", "description", "tags", "confidence", "author", "claim")


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


def require(ok: bool, problem: str, fix: str) -> None:
    if not ok:
        raise SaexError(problem, fix)


def check_text(value: Any, name: str, empty_ok: bool = False) -> str:
    require(isinstance(value, str) and (empty_ok or value.strip() != ""),
          f"{name} must be a {'' if empty_ok else 'non-empty '}string, got {value!r}", f"give {name} as text")
    return value


def check_count(value: Any, name: str, minimum: int = 0) -> int:
    require(isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
          f"{name} must be an integer >= {minimum}, got {value!r}", f"give {name} as a whole number")
    return value


def check_timestamp(value: Any, name: str) -> str:
    try:
        datetime.fromisoformat(check_text(value, name))
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
    require(isinstance(claim, dict), f"a claim must be an object, got {claim!r}", fix)
    require(set(claim) == {"kind", "offset", "tokens"},
          f"a claim has exactly the keys kind, offset, tokens; got {sorted(claim)}", fix)
    require(claim["kind"] in CLAIM_KINDS,
          f"unknown claim kind {claim['kind']!r} (known: {', '.join(CLAIM_KINDS)})", fix)
    offset = check_count(claim["offset"], "the claim's offset")
    tokens = claim["tokens"]
    require(isinstance(tokens, list) and tokens != [],
          f"the claim's tokens must be a non-empty list, got {tokens!r}", fix)
    ids = [check_count(t, "a claim token id") for t in tokens]
    return {"kind": claim["kind"], "offset": offset, "tokens": list(dict.fromkeys(ids))}


def check_content(label: Any, description: Any, tags: Any, confidence: Any, author: Any, claim: Any) -> dict:
    """The user-written fields of one version, checked and normalised."""
    require(isinstance(tags, (list, tuple)), f"tags must be a list of strings, got {tags!r}", 'pass tags=["..."]')
    tags = [check_text(t, "a tag").strip() for t in tags]
    if confidence is not None:
        require(isinstance(confidence, (int, float)) and not isinstance(confidence, bool)
              and math.isfinite(confidence) and 0 <= confidence <= 1,
              f"confidence must be a number between 0 and 1, got {confidence!r}", "pass a value in [0, 1], or None")
        confidence = float(confidence)
    return {"label": check_text(label, "the label"),
            "description": check_text(description, "the description", empty_ok=True),
            "tags": list(dict.fromkeys(tags)), "confidence": confidence, "author": check_text(author, "the author"),
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
            check_text(getattr(self, name), f"the SAE key's {name}")
        require(isinstance(self.sae_hash, str) and re.fullmatch(r"[0-9a-f]{64}", self.sae_hash) is not None,
              f"the SAE key's sae_hash must be a sha256 (64 lower-case hex digits), got {self.sae_hash!r}",
              "use LoadedSAE.content_hash, or SAEKey.from_sae(load_sae(run))")

    @classmethod
    def from_sae(cls, sae) -> SAEKey:
        """The key of a `sae.runs.load.LoadedSAE`."""
        require(bool(sae.model_spec and sae.hook_name),
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
    other_source: int = 0  # records for another Neuronpedia source, left out (only when a source is given)
