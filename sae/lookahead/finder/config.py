"""The word finder's settings: one dataclass, the source of the CLI flags and the docs."""

from __future__ import annotations

from dataclasses import dataclass

from sae.errors import SaexError
from sae.options import ModelOptions, at_least, check_fields, outside_key

FIND_FORMAT = 4  # 3: the answer's verdict is its sentence, its label the short name; 4: power


@dataclass
class FindConfig(ModelOptions):
    """Find the SAE features that mean "about to say WORD"."""

    word: str = ""
    """The word or phrase (several tokens are fine: the first one is what the model must predict)."""
    run: str = outside_key("")
    """Run folder of the SAE, a sae-lens release/sae_id, or a sparsify hookpoint folder."""
    corpus: str | None = None
    """Corpus to take "a/an WORD" contexts from, every split; default: the SAE's training corpus; none to skip."""
    prompts: str | None = None
    """Your own contexts: a .txt file (one prompt per line, ending where the article comes) or a
    .jsonl prompt set (prompt, noun, article; lines for other nouns are ignored)."""
    prompt: list[str] | None = None
    """A context typed out (repeatable): text that ends where the article comes."""
    question: list[str] | None = None
    """A chat question (repeatable), put to the model in its chat template; the answer's first word is the article."""
    chat: bool = True
    """Also ask every definition as a chat question (models with a chat template)."""
    definitions: bool = True
    """Make riddles from the word's WordNet and GCIDE definitions, with control riddles of other nouns and of the
    word's WordNet category."""
    corpus_contexts: int = at_least(0, 40)
    """Most corpus contexts of the word to use (a seeded sample, one per document)."""
    controls_per_article: int = at_least(4, 16)
    """Corpus contexts of other nouns of the word's article (half as many written " A", and half as many of the other
    article); a quarter as many other nouns give definition riddles and chat questions."""
    category_nouns: int = at_least(0, 6)
    """Nouns of the word's WordNet category (same article, siblings first) whose definitions are category controls."""
    top: int = at_least(1, 10)
    """Features in the table, by the ranking half's z."""
    confirm: int = at_least(1, 5)
    """Most features, the ranking half's best, tested on the held-out half (fewer when its design cannot resolve so
    many at alpha)."""
    causal_features: int = at_least(1, 1)
    """Most confirmed features tested causally, the most specific and separating first (each adds three tests to
    the Holm family and its own matched random features: about 15 s on 2 CPU cores)."""
    alpha: float = 0.05
    """Family-wise error rate of each family of tests (activation confirmation, specificity, causal)."""
    steer: float = 2.0
    """Steering dose in neutral frames, in multiples of each feature's typical activation."""
    shuffle_labels: bool = False
    """A control run: shuffle the word's and the controls' labels among comparable clusters first; anything found
    is then a false positive."""
    bootstrap: int = at_least(100, 1000)
    """Bootstrap resamples for intervals of causal effects."""
    power_sims: int = at_least(20, 200)
    """Simulated word features per firing rate for the power estimate (planted in the activations, put through the
    same ranking, held-out test and Holm); "null" is said only where one the tests would confirm in 80% of draws
    exists."""
    power_rate: float = 0.5
    """The share of the word's independent sources a feature fires before, for the power line's reference figure
    and for the extra sources an inconclusive answer asks for."""
    power_control_rate: float = 0.05
    """The share of the control sources the simulated word feature fires before as well."""
    batch_size: int = at_least(1, 16, in_key=False)
    """Contexts per forward pass."""
    seed: int = 0
    """Seed for sampling contexts and controls, the split and the permutations."""
    out: str | None = outside_key(None)
    """Report file; default: RUN/find/<word>-<hash of the settings>.json."""
    force: bool = outside_key(False)
    """Recompute even when a report for the same question exists."""

    def __post_init__(self):
        if not self.run:
            raise SaexError("no run folder given", "pass the folder of a trained SAE: saex find WORD RUN")
        from sae.lookahead.finder.contexts import check_word

        self.word = check_word(self.word)
        if self.corpus is not None and self.corpus.strip().lower() in ("", "none"):
            self.corpus = "none"
        check_fields(self)
        if not 0 < self.alpha < 0.5:
            raise SaexError(f"alpha must lie between 0 and 0.5, got {self.alpha}", "pass e.g. --alpha 0.05")
        for name in ("power_rate", "power_control_rate"):
            if not 0 <= getattr(self, name) <= 1:
                raise SaexError(f"{name} must lie between 0 and 1, got {getattr(self, name)}",
                                f"pass e.g. --{name.replace('_', '-')} 0.5")
        if not self.power_control_rate < self.power_rate:
            raise SaexError(f"power_control_rate ({self.power_control_rate}) must be below power_rate "
                            f"({self.power_rate})", "a word feature fires before the word more often than before "
                            "other nouns: pass e.g. --power-rate 0.5 --power-control-rate 0.05")
        if not self.steer > 0:
            raise SaexError(f"steer must be positive, got {self.steer}", "pass e.g. --steer 2")
