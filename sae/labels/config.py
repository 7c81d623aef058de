"""`saex label`'s settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sae.errors import SaexError
from sae.options import at_least, check_fields, key_settings, outside_key


@dataclass
class LabelConfig:
    """Label every feature of an SAE run automatically with a testable predicate, scored on held-out text."""

    run: str = outside_key("")
    """Run folder of the SAE; the labels go to RUN/labels.jsonl and RUN/labels_summary.json."""
    store: str | None = outside_key(None)
    """Held-out activation store; default: the run's training store with -train in its name replaced by -heldout."""
    model: str | None = outside_key(None)
    """Model for token strings and output effects; default: the model the store was harvested from."""
    candidates: int = at_least(1, 40)
    """Values (tokens, n-grams, categories, ...) of each family considered for one label."""
    max_values: int = at_least(1, 16)
    """Most values in one label."""
    max_positions: int = at_least(1, 3)
    """Most window positions in one position label."""
    boosted: int = at_least(1, 10)
    """Most-boosted output tokens considered for a boosts_output label."""
    min_count: int = at_least(1, 2)
    """A value needs this many firings beside it in the proposal half to enter a label."""
    split_block: int = at_least(1, 8)
    """Windows per block of the proposal/scoring split (even blocks propose, odd ones score)."""
    example_len: int = at_least(1, 32)
    """Tokens per example window of detection scoring (delphi's default)."""
    per_decile: int = at_least(1, 5)
    """Activating windows drawn per activation decile for detection scoring (delphi: 50 in all)."""
    non_activating: int = at_least(1, 50)
    """Random windows where the feature is quiet, for detection scoring."""
    train_per_decile: int = at_least(1, 30)
    """Activating windows per decile of the proposal half that labels are grown and chosen on."""
    train_non_activating: int = at_least(1, 300)
    """Quiet windows of the proposal half that labels are grown and chosen on."""
    min_precision: float = 0.7
    """A value enters a label only if the feature fires at least this share of the times it occurs (proposal half)."""
    select: Literal["detection", "f1"] = "detection"
    """How the label is chosen among the candidates, on the proposal half: detection balanced accuracy or token F1."""
    conjunctions: bool = True
    """Also try the two best candidates of different families joined by 'and'."""
    wordnet: bool = True
    """Word categories from WordNet (the current word's, the next noun's); off: tokens, n-grams, classes only."""
    control: bool = True
    """Also label the random-direction and decoder-shuffled controls (the baselines in labels_summary.json)."""
    seed: int = 0
    """Seed of the controls and of every draw of example windows."""
    explainer: str | None = None
    """An LLM explainer and detection scorer: openai:URL/MODEL of an OpenAI-compatible server (vLLM, ollama)."""
    llm_features: int = 50
    """Features (a seeded sample) the LLM explainer explains and scores, for the SAE and for the random control."""
    chunk_tokens: int = at_least(1, 32768, in_key=False)
    """Tokens encoded at once; bounds memory."""
    force: bool = outside_key(False)
    """Relabel even if complete labels with the same settings exist."""
    progress: bool = outside_key(True)
    """Show progress."""

    def __post_init__(self):
        if not self.run:
            raise SaexError("no run folder given", "pass the folder of a trained SAE: saex label RUN")
        check_fields(self)

    def content(self) -> dict:
        return key_settings(self)
