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

