"""HTML for token sequences. Every token string is escaped here, so a token such as
`<script>` shows as text; colour is proportional to activation, the value is on hover."""

from __future__ import annotations

import html


def _visible(text: str) -> str:
    """Whitespace made visible enough to read (a newline token shows as ⏎)."""
    return html.escape(text.replace("\n", "⏎"), quote=True).replace(" ", "&nbsp;") or "&#8203;"


def tokens_html(texts: list[str], acts: list[float], scale: float, center: int | None = None) -> str:
    """One line of tokens; background alpha = activation / scale, the `center` token boxed."""
    spans = []
    for i, (t, a) in enumerate(zip(texts, acts)):
        alpha = 0.0 if scale <= 0 else max(0.0, min(1.0, float(a) / scale))
        border = "border-bottom:2px solid #c0392b;" if i == center else ""
        spans.append(f'<span title="{float(a):.3g}" style="background:rgba(230,126,34,{alpha:.2f});{border}'
                     f'padding:1px 0;">{_visible(t)}</span>')
    return ('<div style="font-family:monospace;font-size:0.9em;line-height:1.8;white-space:nowrap;'
            'overflow-x:auto;">' + "".join(spans) + "</div>")


def log_histogram(counts, edges):
    """Bars between their numeric bin edges on a log axis (as a bar chart over text labels would
    sort "181" before "5.66"); empty bins at either end are trimmed."""
    import altair as alt
    import numpy as np
    import pandas as pd

    counts, edges = np.asarray(counts), np.asarray(edges, dtype=float)
    used = np.flatnonzero(counts)
    lo, hi = (used[0], used[-1] + 1) if len(used) else (0, 1)
    data = pd.DataFrame({"from": edges[lo:hi], "to": edges[lo + 1:hi + 1], "tokens": counts[lo:hi]})
    return alt.Chart(data).mark_bar().encode(
        x=alt.X("from:Q", scale=alt.Scale(type="log"), title="activation"), x2="to:Q",
        y=alt.Y("tokens:Q", title="tokens"), tooltip=["from", "to", "tokens"])


def aligned_chart(offsets, rows: dict):
    """Mean activation against the offset from the article, one line per article with its 95%
    interval as a band. rows: {article: object with mean, lo, hi lists over `offsets`}."""
    import altair as alt
    import pandas as pd

    data = pd.DataFrame([{"offset": o, "article": name, "mean": r.mean[j], "lo": r.lo[j], "hi": r.hi[j],
                          "n": r.n[j], "fired": r.fired[j]}
                         for name, r in rows.items() for j, o in enumerate(offsets)])
    base = alt.Chart(data).encode(x=alt.X("offset:Q", title="offset from the article (0 = the article, -1 = "
                                                           "the token that chooses it)", axis=alt.Axis(tickMinStep=1)),
                                  color=alt.Color("article:N", title="article"))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("lo:Q", title="mean activation"), y2="hi:Q")
    line = base.mark_line(point=True).encode(y="mean:Q", tooltip=["article", "offset", "mean", "lo", "hi", "n",
                                                                  "fired"])
    return band + line


def profile_chart(data):
    """Mean activation against the offset from the article, one line per group of contexts
    with its 95% interval as a band. data: offset, group, mean, lo, hi, n."""
    import altair as alt

    base = alt.Chart(data).encode(x=alt.X("offset:Q", title="offset from the article (0 = the article, -1 = the "
                                                           "token that chooses it)", axis=alt.Axis(tickMinStep=1)),
                                  color=alt.Color("group:N", title="contexts"))
    band = base.mark_area(opacity=0.2).encode(y=alt.Y("lo:Q", title="mean activation"), y2="hi:Q")
    line = base.mark_line(point=True).encode(y="mean:Q", tooltip=["group", "offset", "mean", "lo", "hi", "n"])
    return band + line


def finder_profile_frame(profiles: dict, feature: str):
    """A finder report's profile of one feature (profiles["features"][feature]) as profile_chart's
    long frame: offset, group, mean, lo, hi, n."""
    import pandas as pd

    entry = profiles["features"][feature]
    return pd.DataFrame([{"offset": o, "group": g, "mean": entry[g]["mean"][j], "lo": entry[g]["lo"][j],
                          "hi": entry[g]["hi"][j], "n": entry[g]["n"][j]}
                         for g in ("word", "controls", "category", "other article") if g in entry
                         for j, o in enumerate(profiles["offsets"])])


def compared_histograms(series: dict[str, dict], title: str):
    """Score distributions of an SAE and its controls, one row each on a shared axis (never stacked), as
    fractions of each one's features, with each median marked. series: {name: {"hist_edges", "hist_counts",
    "median"}}."""
    import altair as alt
    import pandas as pd

    rows = []
    for name, s in series.items():
        total = max(sum(s["hist_counts"]), 1)
        rows += [{"scores": name, "from": lo, "to": hi, "features": c, "fraction": c / total,
                  "median": s.get("median")}
                 for lo, hi, c in zip(s["hist_edges"][:-1], s["hist_edges"][1:], s["hist_counts"])]
    data = pd.DataFrame(rows)
    base = alt.Chart().encode(color=alt.Color("scores:N", legend=None))
    bars = base.mark_bar(opacity=0.75).encode(
        x=alt.X("from:Q", title=title), x2="to:Q", y=alt.Y("fraction:Q", title="share of features",
                                                            axis=alt.Axis(format="%")),
        tooltip=["scores", "from", "to", "features", alt.Tooltip("fraction:Q", format=".1%")])
    median = base.mark_rule(strokeWidth=2, strokeDash=[4, 2], color="black").encode(
        x="median:Q", tooltip=[alt.Tooltip("median:Q", format=".3f", title="median")])
    return alt.layer(bars, median, data=data).properties(height=110).facet(
        row=alt.Row("scores:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left")))
