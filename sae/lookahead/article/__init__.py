"""`saex lookahead RUN`: which SAE features carry the a/an choice, when they turn on relative
to the article, and whether ablating them moves the choice more than random features of the
same firing density.

config (the settings) -> run (behaviour, selection, test, profiles, target noun; writes
RUN/lookahead/report.json) -> answer (the verdict in words) and plots (the PNGs); ranking
holds the candidate scores the selection starts from."""

from sae.lookahead.article.answer import answer, format_summary
from sae.lookahead.article.config import DEFAULT_DOSES, REPORT_FORMAT, TARGET_FRACTION, LookaheadConfig
from sae.lookahead.article.run import run_lookahead

__all__ = ["DEFAULT_DOSES", "REPORT_FORMAT", "TARGET_FRACTION", "LookaheadConfig", "answer", "format_summary",
           "run_lookahead"]
