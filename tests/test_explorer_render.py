"""explorer/render.py helpers that need no Streamlit session."""

from __future__ import annotations

import numpy as np

from explorer import render


def test_histogram_bins_sit_at_their_numeric_edges_on_a_log_axis():
    edges = np.exp2(np.arange(-4, 12, dtype=float))  # 0.0625 ... 2048
    counts = np.zeros(len(edges) - 1, dtype=int)
    counts[[3, 7, 11]] = [5, 2, 9]  # bins starting at 0.5, 8 and 128
    spec = render.log_histogram(counts, edges).to_dict()
    rows = spec["datasets"][next(iter(spec["datasets"]))]
    assert [r["from"] for r in rows] == sorted(r["from"] for r in rows)  # numeric, not text, order
    assert (rows[0]["from"], rows[-1]["to"]) == (0.5, 256.0)  # empty bins at the ends trimmed
    assert [r["tokens"] for r in rows if r["tokens"]] == [5, 2, 9]
    assert spec["encoding"]["x"]["scale"]["type"] == "log"
