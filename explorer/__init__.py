"""The Streamlit explorer (feature pages, search, prompt lab, lookahead, annotations).

It reads everything through the `sae` library and holds no analysis logic of its own.
"""
