"""Search: features by the token they fire on, the token they boost, an upcoming token at
an offset, label text, or decoder neighbours. All ranking is sae/index/search.py's."""

from urllib.parse import quote

import pandas as pd
import streamlit as st

from explorer import annotation_panel, state
from sae.errors import SaexError
from sae.index import search
from sae.labels.auto import short_label
from sae.labels.records import SAEKey

st.title("Search")
run = state.require_run()
index = state.require_index(run)


@st.cache_resource(show_spinner="loading the tokenizer ...")
def _tokenizer(spec: str):
    """The model's tokenizer alone (no weights; None: split on the index's vocabulary instead)."""
    return search.model_tokenizer(spec)


MODES = {"upcoming token (fires d tokens before it)": "upcoming", "current token (fires on it)": "current",
         "output token (decoder boosts it)": "output", "label text": "label", "decoder neighbours of a feature": "nbr"}
mode = MODES[st.radio("find features by", list(MODES), key="mode")]
c1, c2, c3 = st.columns([3, 1, 1])
hits, empty, shown = [], None, {}
MIN_COUNT = 3  # the searches' default minimum co-occurrence count
try:
    if mode in ("upcoming", "current", "output"):
        token = c1.text_input("word or token, with its leading space (e.g. ' astronomer'), or a token id",
                              value=" astronomer", key="token")
        raw = int(token) if token.strip().isdigit() else token
        piece = search.first_piece(index, raw, tokenizer=None if isinstance(raw, int) or raw in index.vocab
                                   else _tokenizer(index.manifest["model"]["spec"]))
        if piece.note:
            st.info(piece.note)
        tok = piece.query
        if mode == "upcoming":
            offset = c2.number_input("d", min_value=1, max_value=max(index.offsets), value=1, key="offset")
            rank = c3.selectbox("rank by", search.RANKS, key="rank-upcoming")
            hits = search.by_upcoming_token(index, tok, offset=int(offset), rank=rank, top=25, min_count=MIN_COUNT)
            empty = None if hits else search.no_hits_sentence(index, tok, int(offset), MIN_COUNT)
        elif mode == "current":
            rank = c3.selectbox("rank by", search.RANKS, index=search.RANKS.index("f1"), key="rank-current")
            hits = search.by_current_token(index, tok, rank=rank, top=25, min_count=MIN_COUNT)
            empty = None if hits else search.no_hits_sentence(index, tok, 0, MIN_COUNT)
        else:
            hits = search.by_output_token(index, tok, top=25)
    elif mode == "label":
        text = c1.text_input("words in the label", key="label")
        if text.strip():
            key = SAEKey.from_sae(state.load_sae(str(run.path)))
            # searched on the full predicate, shown by its short label
            auto = [(f, f"{r['label']} (automatic, F1 {r['f1'] or 0:.2f})")
                    for f, r in state.auto_labels(str(run.path)).items() if r.get("label")]
            shown = {text: f"{short_label(state.auto_labels(str(run.path))[f])} (automatic)" for f, text in auto}
            hits = search.by_label(lambda: [(a.feature, a.label) for a in annotation_panel.store().list_labels(key)]
                                   + auto, text, top=25)
    else:
        feat = c1.number_input("feature", min_value=0, max_value=index.d_sae - 1, value=0, key="nbr")
        hits = search.neighbours(index, int(feat), top=25)
except SaexError as e:
    st.error(f"{e.problem} — {e.fix}")
    mode = "failed"

if hits:
    rows = [{"feature": h.feature, "score": round(h.score, 4), "count": h.count,
             "precision": None if h.precision is None else round(h.precision, 3),
             "recall": None if h.recall is None else round(h.recall, 3),
             "lift": None if h.lift is None else round(h.lift, 1),
             "label": shown.get(h.detail.get("label", ""), h.detail.get("label", "")),
             "open": f"/feature?run={run.path}&feature={h.feature}"} for h in hits]
    st.dataframe(pd.DataFrame(rows), hide_index=True,
                 column_config={"open": st.column_config.LinkColumn("page", display_text="open")})
elif empty:
    st.info(empty)
elif mode == "output":
    st.info("No feature's decoder direction is stored as boosting this token.")

if mode == "upcoming" and isinstance(raw, str) and raw.strip():
    word = raw.strip()
    st.markdown(f"The indexed text holds few contexts of most words. [Find a word](/finder?run={run.path}&"
                f"word={quote(word)}) gathers contexts where the model is about to say '{word}' from the whole corpus, "
                "definitions and chat questions, and checks the candidates causally.")
