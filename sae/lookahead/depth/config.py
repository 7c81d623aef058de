"""The depth sweep's settings and fixed choices."""

from __future__ import annotations

from dataclasses import dataclass, field

from sae.options import ModelOptions, at_least, check_fields, key_settings, outside_key

REPORT_FORMAT = 3  # 2: sae_coverage per SAE layer; 3: noun_identity (onset over offsets, ablation at -1)
PLOT_FILE = "depth.png"
LAMBDAS = (1e-3, 1e-2, 1e-1)  # L2 strengths tried (on standardised features), chosen on the training side
ALPHA = 0.01  # "above chance": one-sided binomial p below this and above every shuffled control
# Frames of the identity probe: the noun only implied by its gloss, or named outright.
IMPLIED = ("riddle", "question", "dialogue")
NAMED = ("explicit", "named_question", "named_dialogue")
FRAMES = IMPLIED + ("in_context",) + NAMED


@dataclass
class DepthConfig(ModelOptions):
    """Where across depth the upcoming article and the noun are decodable, and causal."""

    run: str | None = None
    """SAE run folder(s), comma-separated, each used at its own layer (optional: the sweep needs only the model)."""
    model: str | None = field(default=None, kw_only=True)
    """Model; default: the SAE's, else smollm2-135m."""
    layers: str = "5,10,15,20,25"
    """Layers to sweep (comma-separated) or all."""
    out: str | None = outside_key(None)
    """Output folder; default: RUN/depth with a run, else checkpoints/depth-MODEL."""
    prompts: str | None = None
    """JSONL prompt set (prompt, noun, article, optional condition) instead of WordNet riddles; nouns are split
    in halves by name, conditions are the frames of the identity probe."""
    riddles_per_article: int = at_least(2, 48)
    """WordNet riddles per article in each half of the nouns (probe training and test)."""
    identity_nouns: int = at_least(2, 24)
    """Candidate nouns of the identity probe (half an-nouns), each in every frame."""
    max_noun_tokens: int = at_least(1, 2)
    """WordNet riddles only for nouns of at most this many tokens."""
    offsets: int = at_least(1, 4)
    """Article probes at offsets -K..-1 from the article."""
    random_directions: int = at_least(20, 32)
    """Random unit directions (and random SAE feature sets) for the causal control."""
    sae_features: int = at_least(1, 10)
    """SAE features ablated at a layer with an SAE."""
    shuffles: int = at_least(1, 3)
    """Shuffled-label controls per article probe (identity probe: one per held-out frame)."""
    bootstrap: int = at_least(100, 1000)
    """Bootstrap resamples for intervals."""
    batch_size: int = at_least(1, 32)
    """Prompts per forward pass."""
    seed: int = 0
    """Seed for riddle sampling, shuffles, random directions and bootstrap."""
    force: bool = outside_key(False)
    """Recompute even when a complete report with the same settings exists."""

    def __post_init__(self):
        if self.run is not None and not str(self.run).strip():
            self.run = None
        check_fields(self)

    def key(self) -> dict:
        """What a reusable report must have been made with."""
        return key_settings(self)
