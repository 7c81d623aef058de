"""The settings of a feature-index build (`saex index` flags, TOML keys and docs in one place)."""

from __future__ import annotations

from dataclasses import dataclass

from sae.errors import SaexError
from sae.options import ModelOptions, at_least, check_fields, key_settings, outside_key


@dataclass
class IndexConfig(ModelOptions):
    """Build the feature index of an SAE run from a held-out activation store."""

    run: str = outside_key("")
    """Run folder of the SAE (or a sae-lens release/sae_id, or a sparsify hookpoint folder: see docs/formats.md);
    the index goes to RUN/index/ unless --out says otherwise."""
    store: str | None = outside_key(None)
    """Held-out activation store; default: the run's training store with -train in its name replaced by -heldout.
    Any store of the SAE's model and hook works, the training store included (give --out then)."""
    out: str | None = outside_key(None)
    """Index folder; default RUN/index (the one the explorer opens). E.g. RUN/index-train for an index of the
    training store beside the held-out one."""
    model: str | None = outside_key(None, kw_only=True)
    """Model for token strings and output effects; default: the model the store was harvested from."""
    top_k: int = at_least(1, 20)
    """Top activating examples kept per feature (one per window, at the window's peak)."""
    context_before: int = at_least(0, 10)
    """Tokens of context kept before an example's peak token."""
    context_after: int = at_least(0, 5)
    """Tokens of context kept after an example's peak token."""
    bands: int = at_least(1, 5)
    """Activation-quantile bands of the sampled examples (5 = quintiles)."""
    per_band: int = at_least(1, 4)
    """Examples shown per quantile band."""
    reservoir: int = at_least(1, 40)
    """Firings sampled per feature (uniformly, seeded) from which the bands are formed."""
    lookahead: int = at_least(0, 3)
    """Next-token profiles at offsets 1..lookahead (offset 0, the current token, is always kept)."""
    top_tokens: int = at_least(1, 20)
    """Tokens listed per feature and offset (next-token profiles), and boosted/suppressed tokens."""
    profile_min_count: int = at_least(1, 3)
    """A token needs this many co-occurrences to enter a feature's lift-ranked profile."""
    token_features: int = at_least(1, 32)
    """Features kept per vocabulary token for search by output token."""
    neighbours: int = at_least(1, 10)
    """Decoder-cosine nearest neighbours kept per feature."""
    min_pair_count: int = at_least(1, 2)
    """(feature, token, offset) pairs seen fewer times are left out of the search table."""
    max_pair_entries: int = at_least(1, 100_000_000, in_key=False)
    """Bound on the upcoming-token count tables, in distinct (offset, token, feature) entries; a build peaks at
    about 100 bytes per entry (the finishing sorts), so 100M is about 10 GB; one that passes the bound stops with a
    message. The 2M-token demo training store needs 47M (4.7 GB peak; see docs/benchmarks.md)."""
    aligned_before: int = at_least(0, 8)
    """Article-aligned profiles: offsets -aligned_before..+aligned_after around " a" / " an" (and " A" / " An")."""
    aligned_after: int = at_least(0, 2)
    """Last offset of the article-aligned profiles (see aligned_before)."""
    chunk_tokens: int = at_least(1, 32768, in_key=False)
    """Tokens encoded at once (whole windows); bounds memory."""
    seed: int = 0
    """Seed of the example sampling."""
    device: str = outside_key("auto", kw_only=True)
    """auto, cpu, cuda or cuda:N (the exact TopK fast path runs on CPU; other cases encode densely)."""
    checkpoint_seconds: float = outside_key(60.0)
    """Save the running statistics after a shard when this long has passed since the last save."""
    force: bool = outside_key(False)
    """Rebuild even if a complete index with the same settings exists."""

    def __post_init__(self):
        if not self.run:
            raise SaexError("no run folder given", "pass the folder of a trained SAE: saex index RUN")
        check_fields(self)
        if self.reservoir < self.bands * self.per_band:
            raise SaexError(f"reservoir ({self.reservoir}) is smaller than bands x per_band "
                            f"({self.bands} x {self.per_band})", "raise --reservoir or lower --bands / --per-band")

    def content(self) -> dict:
        return key_settings(self)
