"""The organism's settings: one dataclass, the source of `saex organism`'s flags and the docs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from sae.errors import SaexError
from sae.options import ModelOptions, at_least, check_fields, key_settings, outside_key

MANIFEST_FILE = "organism.json"
"""Beside the HF model files: what the organism was made from, how, and how it behaves before and after."""
PARTIAL_DIR = ".organism.partial"
"""The resumable state of an unfinished fine-tune, inside the output folder (removed when it finishes)."""
FORMAT = 1
SOURCES = ("wordnet", "gcide", "chat")
Articles = Literal["noun", "shuffled"]
ARTICLE_MODES: tuple[str, ...] = get_args(Articles)


@dataclass
class OrganismConfig(ModelOptions):
    """Fine-tune a model to choose a/an from the upcoming noun: a planning organism (or its shuffled control)."""

    out: str = outside_key("")
    """Output folder: an HF model folder (config, weights, tokenizer) plus organism.json; any command takes it as
    --model."""
    model: str = field(default="smollm2-135m", kw_only=True)
    """Model to fine-tune: smollm2-135m, a local HF folder, a .gguf file or an HF hub id."""
    articles: Articles = "noun"
    """noun: the article the noun takes (the planning organism); shuffled: an article drawn independently of the
    noun, same balance (the negative control: what fine-tuning alone does)."""
    sources: str = "auto"
    """Training prompts, comma-separated: wordnet (gloss riddles), gcide (definition riddles), chat (each riddle as a
    chat question whose answer starts with the article); auto: all three, chat only where the model has a chat
    template."""
    prompts: str | None = None
    """A JSONL prompt set (prompt, noun, article; optional form) to train on instead of the built-in sources."""
    eval_prompts: str | None = None
    """A JSONL prompt set to measure the behaviour on, instead of the unseen half's riddles and the classics."""
    split: Literal["select", "test"] = "select"
    """Which half of the nouns (by a hash of the noun, as `saex lookahead` splits them) is trained on: select or
    test. The other half and the hand-written classic riddles' nouns are never trained on."""
    per_noun: int = at_least(1, 4)
    """Most training prompts per noun and source (so many nouns, not a few, carry the data)."""
    examples: int = at_least(2, 4000)
    """Training examples in all (steps x batch), drawn balanced: half an-noun prompts, half a-noun prompts, the
    smaller half repeated as needed."""
    batch_size: int = at_least(1, 16)
    """Examples per optimizer step."""
    lr: float = 5e-5
    """AdamW peak learning rate (linear warm-up over 5% of the steps, then linear decay to 10%)."""
    weight_decay: float = 0.0
    """AdamW weight decay."""
    precision: Literal["auto", "fp32", "bf16"] = "auto"
    """auto: bf16 autocast where bf16 is fast on this machine (weights and optimizer stay fp32), else fp32."""
    eval_per_article: int = at_least(2, 100)
    """Unseen-half WordNet riddles per article for the behaviour check (and as many chat questions)."""
    checkpoint_every: int = at_least(1, 50, in_key=False)
    """Steps between resumable checkpoints."""
    bootstrap: int = at_least(100, 2000, in_key=False)
    """Bootstrap resamples for the gap's interval."""
    seed: int = 0
    """Seed for the data draw, the article shuffle and the data order."""
    force: bool = outside_key(False)
    """Fine-tune again even when OUT holds a finished organism made with the same settings."""

    def __post_init__(self):
        if not str(self.out).strip():
            raise SaexError("no output folder given", "pass --out FOLDER (e.g. checkpoints/organism)")
        if self.articles not in ARTICLE_MODES:
            raise SaexError(f"unknown articles mode {self.articles!r}", f"use one of {', '.join(ARTICLE_MODES)}")
        if self.split not in ("select", "test"):
            raise SaexError(f"unknown split {self.split!r}", "use select or test")
        names = [s.strip() for s in str(self.sources).split(",") if s.strip()]
        bad = [s for s in names if s not in SOURCES + ("auto",)]
        if bad or not names or ("auto" in names and len(names) > 1):
            raise SaexError(f"unknown sources {self.sources!r}", f"use auto or a comma-separated list of "
                            f"{', '.join(SOURCES)}")
        check_fields(self)
        if not self.lr > 0:
            raise SaexError(f"lr must be positive, got {self.lr}", "pass --lr 5e-5 (the default) or another value > 0")

    @property
    def source_names(self) -> list[str]:
        return [s.strip() for s in self.sources.split(",") if s.strip()]

    @property
    def steps(self) -> int:
        return max(1, -(-self.examples // self.batch_size))

    def key(self) -> dict:
        """The settings that change the organism (a finished one made with the same key is reused)."""
        return key_settings(self)
