"""`saex find WORD RUN`: which SAE features mean "about to say WORD".

contexts (the word's texts, with clusters and frames) -> controls (other nouns, the word's
category) -> activation (discovery on one half, confirmation and specificity on the other)
-> causal (edits before the article against matched random features) -> answer (the
verdict in words); run runs them in order and caches the result."""

from sae.lookahead.finder.answer import find_answer, format_find
from sae.lookahead.finder.causal import NEUTRAL_FRAMES
from sae.lookahead.finder.config import FindConfig
from sae.lookahead.finder.run import answer_path, cached_report, find_word, latest_report, stored_reports

__all__ = ["FindConfig", "NEUTRAL_FRAMES", "answer_path", "cached_report", "find_answer", "find_word",
           "format_find", "latest_report", "stored_reports"]
