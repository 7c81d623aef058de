"""sae-explorer's Streamlit app. Start it with `saex explore [RUN]` (it binds 127.0.0.1).

Every number shown comes from `sae/`; the pages only lay it out. The run being explored
is the `run` query parameter, so any page's URL is a permalink."""

import sys
from pathlib import Path

import streamlit as st

# `streamlit run explorer/app.py` puts explorer/ on sys.path, not the project root.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PAGES = Path(__file__).parent / "views"  # not "pages/", which turns on Streamlit's automatic page list

st.set_page_config(page_title="sae-explorer", layout="wide")
pages = [st.Page(str(PAGES / "overview.py"), title="Overview", default=True)]
for name, title in (("feature", "Feature"), ("search", "Search"), ("finder", "Find a word"),
                    ("prompt_lab", "Prompt lab"), ("lookahead", "Lookahead"), ("depth", "Depth"),
                    ("compare", "Compare"),
                    ("annotations", "Annotations")):
    pages.append(st.Page(str(PAGES / f"{name}.py"), title=title, url_path=name))
st.navigation(pages).run()
