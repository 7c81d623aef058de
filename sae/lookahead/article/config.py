"""The settings of `saex lookahead` (sae/lookahead/article/run.py) and the fixed choices
its report is read against."""

from __future__ import annotations

from dataclasses import dataclass

from sae.errors import SaexError
from sae.lookahead.interventions import parse_positions
from sae.options import ModelOptions, at_least, check_fields

REPORT_FORMAT = 1
# The effect size the report checks the chosen features against: half of the an-vs-a gap removed.
TARGET_FRACTION = 0.5
DEFAULT_DOSES = (-1.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0)  # multipliers of the chosen features' activations


@dataclass
class LookaheadConfig(ModelOptions):
    """Find the SAE features that carry the a/an choice and test them causally."""

    run: str = ""
    """Run folder of the SAE (cfg.json + sae_weights.safetensors), a sae-lens release/sae_id, or a sparsify
    hookpoint folder (see docs/formats.md)."""
    out: str | None = None
    """Output folder; default: RUN/lookahead."""
    select_prompts: str | None = None
    """JSONL prompt set (prompt, noun, article) to choose features on; default: WordNet riddles
    of one half of the nouns."""
    test_prompts: str | None = None
    """JSONL prompt set to test the chosen features on; default: WordNet riddles of the other half of the nouns."""
    riddles_per_article: int = at_least(2, 48)
    """Generated riddles per article (an-nouns, and as many a-noun counterparts) in each of the two sets."""
    max_noun_tokens: int = at_least(1, 2)
    """Generated riddles only for nouns of at most this many tokens (keeps to words the model knows)."""
    target_noun: str | None = "astronomer"
    """A noun to rank candidate features for (hand-written and WordNet riddles plus controls); none to skip."""
    n_features: int = at_least(1, 10)
    """Features to choose on the selection set."""
    n_candidates: int = 30
    """Top latents by attribution that are ablated one by one on the selection set before choosing."""
    positions: str = "prompt"
    """Where edits apply, by offset from the article: prompt (all prompt tokens), last (-1), before (<= -2),
    or offsets like -3:-1."""
    random_sets: int = at_least(20, 30)
    """Random feature sets of matched firing density for the control (at least 20)."""
    density_tolerance: float = 0.1
    """Largest |log10 density| difference between a random feature and the feature it stands in for."""
    doses: list[float] | None = None
    """Steering doses: the chosen features' activations multiplied by each
    (1 = clean, 0 = ablated, 2 = doubled, -1 = reversed) at the edit positions (default: -1,0,0.5,1,1.5,2,3)."""
    dose_random_sets: int = at_least(0, 2)
    """Random sets steered the same way, as the dose-response control."""
    profile_before: int = at_least(1, 8)
    """Profiles cover offsets -K..+2 around the article."""
    chat: bool = True
    """Also put the generated test riddles and the target noun's riddles to the model as chat questions ("What do
    you call ...?", answer starting "An"/"A"; models with a chat template): reported as the set "chat"."""
    corpus: str = "builtin:gcide,wordnet"
    """Corpus for natural 'a/an + noun' occurrences in the profiles (held-out split); none to skip."""
    corpus_occurrences: int = at_least(2, 64)
    """Corpus occurrences per article."""
    bootstrap: int = at_least(100, 2000)
    """Bootstrap resamples for intervals."""
    batch_size: int = at_least(1, 48)
    """Prompts per forward pass."""
    seed: int = 0
    """Seed for riddle sampling, random controls and bootstrap."""

    def __post_init__(self):
        if not self.run:
            raise SaexError("no run folder given", "pass the folder of a trained SAE: saex lookahead RUN")
        if self.target_noun is not None and self.target_noun.strip().lower() in ("", "none"):
            self.target_noun = None
        if self.corpus.strip().lower() in ("", "none"):
            self.corpus = "none"
        check_fields(self)
        if self.n_candidates < self.n_features:
            raise SaexError(f"n_candidates ({self.n_candidates}) is below n_features ({self.n_features})",
                            "pass --n-candidates at least --n-features")
        if not self.density_tolerance > 0:
            raise SaexError("density_tolerance must be positive", "pass e.g. --density-tolerance 0.1")
        if self.doses is None:
            self.doses = list(DEFAULT_DOSES)
        if not self.doses:
            raise SaexError("no steering doses", "pass e.g. --doses 0,1,2")
        spec = parse_positions(self.positions)
        if spec in ("article", "sinks", "all") or (isinstance(spec, list) and max(spec) >= 0):
            raise SaexError(f"positions {self.positions!r} reach the article or later, or only sinks: edits there "
                            "cannot move the article choice", "use prompt, last, before, or offsets <= -1")
