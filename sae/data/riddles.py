"""Definition riddles from the project's own sources, and corpora with answered riddles mixed in.

A riddle is a description that leads to a noun without naming it, ending where the article comes: "A physicist
who studies astronomy is called". WordNet glosses and GCIDE noun definitions both give them. The organism is
fine-tuned on them (`sae.lookahead.organism`), the finder asks them (`sae.lookahead.finder`), and a corpus spec
ending in ``+riddles`` interleaves them, answered ("... is called an astronomer."), with an ordinary corpus.

Why a mix: an SAE trained on the built-in corpus alone has almost no latent for the article a planning model
chooses from the coming noun (its latents carry little of the article probe's direction); the same SAE trained
with the answered riddles of the fine-tune's half of the nouns interleaved at about a sixth of the text
recovers it (docs/benchmarks.md, "Where the SAE loses the organism's article signal"). The riddles are those of
the `select` half, the half the organism trains on by default, so the nouns held out from the fine-tune stay
unseen by the SAE's data too; the hand-written classics (astronomer, hour ...) are never included.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterator
from functools import lru_cache

from sae.data.prompts import (
    CLASSIC_RIDDLES,
    Prompt,
    _usable_gloss,
    corpus_nouns,
    pronounce,
    riddle_candidates,
    split_of_noun,
    wordnet_nouns,
)
from sae.data.sources import Document, builtin_documents
from sae.errors import SaexError

RIDDLES_SUFFIX = "+riddles"
"""A corpus spec ending in this has answered riddles interleaved: ``builtin+riddles``."""
RIDDLE_SOURCE = "riddles"
"""The source name of the interleaved riddle documents (generated, not natural text)."""
MIX_EVERY_CHARS = 6000
MIX_PER_DOCUMENT = 20
"""One document of 20 answered riddles after every 6,000 characters of the corpus: about a sixth of the text is
riddles until they run out (6,843 riddles, the first ~2M characters, ~500k tokens of the built-in corpus), the
density at which bench/sae_coverage.py measured the SAE recovering the organism's article signal."""
MIX_SPLIT = "select"
MIX_SEED = 0

_DEFINITION_START = re.compile(r"^(A|An|One|Someone|Any) ")


def never_trained() -> set[str]:
    """The hand-written classics' nouns: never in a fine-tune's or a mix's riddles, whatever their half."""
    return {noun for _, noun in CLASSIC_RIDDLES}


@lru_cache(maxsize=1)
def _gcide_nouns() -> dict[str, list[str]]:
    """headword (lower case) -> its noun definitions in GCIDE."""
    out: dict[str, list[str]] = {}
    for d in builtin_documents("gcide"):
        head, _, rest = d.text.partition(": ")
        name, _, part = head.partition(", ")
        if not part.startswith("n"):
            continue
        defs = [s.strip() for s in re.split(r"(?<=\.)\s+(?=[A-Z])", rest) if s.strip()]
        out.setdefault(name.strip().lower(), []).extend(defs)
    return out


def gcide_nouns() -> dict[str, list[str]]:
    """GCIDE's noun definitions by headword; empty when the dictionary cannot be fetched."""
    try:
        return _gcide_nouns()
    except SaexError:
        return {}


def riddle_from(definition: str, word: str) -> str | None:
    """ "One who is versed in astronomy; one who ..." -> "One who is versed in astronomy"."""
    text = definition.split(";", 1)[0].strip().rstrip(".")
    if not _DEFINITION_START.match(text):
        return None
    lowered = text[0].lower() + text[1:]
    # the WordNet riddle rules (length, no "an" of its own, not naming the word) on a gloss-shaped copy
    if not _usable_gloss(lowered if re.match(r"(a|an|someone)\s", lowered) else "a " + lowered, word):
        return None
    return text


def wordnet_riddles(keep: Callable[[str], bool]) -> list[Prompt]:
    """WordNet gloss riddles of the nouns `keep` accepts."""
    synsets, first = wordnet_nouns()
    return [r.prompt for r in riddle_candidates(synsets, first, keep)]


def gcide_riddles(keep: Callable[[str], bool]) -> list[Prompt]:
    """GCIDE definition riddles of the countable WordNet head words `keep` accepts."""
    count_nouns = corpus_nouns()  # countable WordNet head words: no "an advice"
    out = []
    for noun, definitions in sorted(gcide_nouns().items()):
        if noun not in count_nouns or not noun.isalpha() or not keep(noun):
            continue
        art = pronounce(noun).article
        if art is None:
            continue
        for i, d in enumerate(definitions):
            text = riddle_from(d, noun)
            if text:
                out.append(Prompt(text + " is called", noun, art, "riddle", source=f"gcide:{noun}:{i}"))
    return out


def answered(p: Prompt) -> str:
    """The riddle with its answer, as running text: "A physicist who studies astronomy is called an astronomer."."""
    return f"{p.prompt} {p.article} {p.noun}."


@lru_cache(maxsize=2)
def mix_riddles(split: str = MIX_SPLIT, seed: int = MIX_SEED) -> tuple[str, ...]:
    """The answered WordNet and GCIDE riddles of one half of the nouns (classics left out), in a seeded order."""
    held = never_trained()

    def keep(noun: str) -> bool:
        return split_of_noun(noun) == split and noun not in held

    texts = [answered(p) for p in wordnet_riddles(keep) + gcide_riddles(keep)]
    random.Random(seed).shuffle(texts)
    return tuple(texts)


def interleave(docs: Iterator[Document], riddles: tuple[str, ...], every_chars: int = MIX_EVERY_CHARS,
               per_document: int = MIX_PER_DOCUMENT) -> Iterator[Document]:
    """`docs` in their order, with a generated document of `per_document` riddles after every `every_chars`
    characters, until the riddles run out. Riddle documents are numbered in order, so each lands in the train
    or the held-out split by its number, as any document does."""
    since, used = 0, 0
    for d in docs:
        yield d
        since += len(d.text)
        if since >= every_chars and used < len(riddles):
            chunk = riddles[used:used + per_document]
            yield Document(RIDDLE_SOURCE, str(used // per_document), " ".join(chunk), generated=True)
            used, since = used + len(chunk), 0
