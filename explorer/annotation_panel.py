"""The annotation editor shown on the Feature and Annotations pages; all storage and
validation is sae/labels/'s."""

from __future__ import annotations

import html
import json
import os

import streamlit as st

from sae.errors import SaexError
from sae.labels.records import SAEKey
from sae.labels.store import AnnotationStore


@st.cache_resource
def _store(location: str) -> AnnotationStore:
    return AnnotationStore(location or None)


def store() -> AnnotationStore:
    """The annotation database ($SAEX_ANNOTATIONS or checkpoints/annotations.sqlite), one per location."""
    return _store(os.environ.get("SAEX_ANNOTATIONS", ""))


def default_author() -> str:
    return st.session_state.get("author") or os.environ.get("USER") or "anonymous"


def _parse_claim(offset: int, tokens_text: str, tokenizer) -> dict | None:
    """ "fires `offset` tokens before any of these tokens": token strings, one per line,
    each turned into the id(s) it encodes to (a string of several tokens claims its first)."""
    words = [w for w in tokens_text.splitlines() if w.strip()]
    if not words:
        return None
    ids = sorted({tokenizer.encode(w, add_special_tokens=False)[0] for w in words})
    return {"kind": "fires_before", "offset": int(offset), "tokens": ids}


def show(key: SAEKey, feature: int, tokenizer=None, widget_key: str = "ann") -> None:
    """Edit form plus history for one feature."""
    s = store()
    live = s.get(key, feature)
    with st.form(f"{widget_key}-form-{feature}"):
        label = st.text_input("label", value=live.label if live else "", key=f"{widget_key}-label-{feature}")
        description = st.text_area("description", value=live.description if live else "",
                                   key=f"{widget_key}-desc-{feature}")
        tags = st.text_input("tags (comma-separated)", value=", ".join(live.tags) if live else "",
                             key=f"{widget_key}-tags-{feature}")
        confidence = st.slider("confidence", 0.0, 1.0, value=float(live.confidence if live and live.confidence
                                                                   is not None else 0.5),
                               key=f"{widget_key}-conf-{feature}")
        author = st.text_input("author", value=default_author(), key=f"{widget_key}-author-{feature}")
        claim_offset, claim_tokens = 1, ""
        if tokenizer is not None:
            st.caption("testable claim (optional): fires d tokens before any of these tokens")
            claim_offset = st.number_input("d", min_value=0, max_value=16,
                                           value=int((live.claim or {}).get("offset", 1)) if live and live.claim else 1,
                                           key=f"{widget_key}-d-{feature}")
            existing = "\n".join(tokenizer.decode([t]) for t in (live.claim or {}).get("tokens", [])) if live else ""
            claim_tokens = st.text_area("tokens, one per line (e.g. ' astronomer')", value=existing,
                                        key=f"{widget_key}-toks-{feature}")
        saved = st.form_submit_button("save")
    if saved:
        try:
            claim = _parse_claim(claim_offset, claim_tokens, tokenizer) if tokenizer is not None else None
            version = s.set(key, feature, label=label, author=author, description=description,
                            tags=[t.strip() for t in tags.split(",") if t.strip()], confidence=confidence,
                            claim=claim, expected_version=live.version if live else None)
            st.session_state["author"] = author
            st.success(f"saved feature {feature}, version {version}")
        except SaexError as e:
            st.error(f"{e.problem} — {e.fix}")
    history = s.history(key, feature)
    if history:
        with st.expander(f"history ({len(history)} versions)"):
            for h in reversed(history):
                st.markdown(f"v{h.version} · {html.escape(h.action)} · {html.escape(h.author)} · {h.at}: "
                            f"**{html.escape(h.label or '')}**")


def export_import(key: SAEKey) -> None:
    s = store()
    data = json.dumps(s.export_json(key), indent=2)
    st.download_button("export JSON (Neuronpedia explanation records)", data, file_name="annotations.json",
                       mime="application/json")
    upload = st.file_uploader("import: our JSON export, or Neuronpedia explanations (JSON, batch-N.jsonl.gz)",
                              type=["json", "jsonl", "jsonl.gz", "gz"])
    source = st.text_input("Neuronpedia source of the explanations, MODEL/LAYER (e.g. pythia-70m-deduped/1-res-sm); "
                           "empty: only records with this SAE's own ids", key="import-source")
    mode = st.radio("on conflict", ["keep", "overwrite"], horizontal=True)
    if upload is not None and st.button("import"):
        try:
            report = s.import_json(upload.getvalue(), key, author=default_author(), on_conflict=mode,
                                   source=source.strip() or None)
            st.success(f"imported: {report.added} added, {report.replaced} replaced, {report.skipped} skipped"
                       + (f", {report.other_source} records of other sources left out" if source.strip() else ""))
        except SaexError as e:
            st.error(f"{e.problem} — {e.fix}")
