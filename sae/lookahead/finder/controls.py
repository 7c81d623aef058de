"""What the word's contexts are compared with, and `gather`, which builds both sides.

- General controls: other nouns in the same kinds of frame, sampled with the seed: corpus
  occurrences of each article, written both ways (" a" and " A", so a sentence-start
  feature finds its match), riddles and chat questions from other nouns' WordNet glosses
  and GCIDE definitions, and the other hand-written classics, each only where the word
  itself has contexts of that origin. The activation tests compare the word with controls
  of its own article only, frame by frame; the other article's controls are shown apart.
- Category controls: nouns of the word's WordNet category that take the same article,
  siblings under the same hypernym first (astronomer: other physicists, then other
  noun.person nouns), in the same frames. A feature that fires for them as much as for the
  word means "a noun of this category is coming", a finding of its own.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from functools import lru_cache

from sae.data.prompts import COUNT_NOUN_LEXNAMES, _usable_gloss, pronounce
from sae.data.riddles import gcide_nouns
from sae.errors import SaexError
from sae.lookahead.finder.contexts import (
    CLASSIC_RIDDLES,
    Definition,
    WordContexts,
    chat_available,
    check_word,
    definition_contexts,
    definitions_of,
    scan_corpus,
    user_contexts,
    word_article,
)


def _wordnet():
    from sae.data.prompts import wordnet_nouns

    try:
        return wordnet_nouns()
    except SaexError:
        return [], {}


def _tagged() -> dict[str, int]:
    from sae.data.prompts import wordnet_tagged_counts

    try:
        return wordnet_tagged_counts()
    except SaexError:
        return {}


@lru_cache(maxsize=4)
def _riddle_nouns() -> dict[str, object]:
    """Head word -> its first-sense synset, for single lower-case count nouns with a usable gloss."""
    synsets, first = _wordnet()
    out = {}
    for s in synsets:
        noun = s.lemmas[0]
        if first.get(noun) == s.offset and re.fullmatch(r"[a-z]{3,}", noun) and _usable_gloss(s.definition, noun):
            out[noun] = s
    return out


def word_category(word: str, seed: int = 0) -> dict:
    """The word's WordNet category: the lexicographer file of its most frequent sense
    (noun.person ...), the nouns under the same hypernym (siblings) and every noun of that
    category, each list holding only single-word nouns of the word's article, seeded order."""
    synsets, first = _wordnet()
    art = word_article(word)
    mine = [s for s in synsets if word.lower() in (lemma.lower() for lemma in s.lemmas)]
    if not mine:
        return {"lexname": None, "hypernyms": [], "siblings": [], "nouns": []}
    top = next((s for s in mine if s.offset == first.get(word.lower())), mine[0])
    hyper = set(top.hypernyms)
    names = {s.offset: s.lemmas[0] for s in synsets if s.offset in hyper}
    rng = random.Random(f"saex-find-category-{seed}-{word}")
    tagged = _tagged()
    siblings, same = [], []
    for noun, s in sorted(_riddle_nouns().items()):
        if noun == word.lower() or s.lexname != top.lexname or pronounce(noun).article != art:
            continue
        (siblings if hyper & set(s.hypernyms) else same).append(noun)
    rng.shuffle(siblings)
    rng.shuffle(same)
    # common nouns first (seen in SemCor), so the category reads as the word's peers, not rarities
    siblings.sort(key=lambda n: tagged.get(n, 0) == 0)
    same.sort(key=lambda n: tagged.get(n, 0) == 0)
    corpus = {s.lemmas[0] for s in synsets if s.lexname == top.lexname and first.get(s.lemmas[0]) == s.offset
              and re.fullmatch(r"[a-z]{3,}", s.lemmas[0]) and s.lemmas[0] != word.lower()
              and pronounce(s.lemmas[0]).article == art}
    return {"lexname": top.lexname, "hypernyms": sorted(names.values()), "siblings": siblings,
            "nouns": siblings + same, "corpus_nouns": frozenset(corpus)}


@lru_cache(maxsize=1)
def _count_nouns() -> frozenset[str]:
    synsets, first = _wordnet()
    return frozenset(s.lemmas[0] for s in synsets if s.lexname in COUNT_NOUN_LEXNAMES
                     and first.get(s.lemmas[0]) == s.offset and s.lemmas[0].isalpha())


def _control_definitions(nouns: Sequence[str], origins: set[str], word: str, synsets, gcide) -> list[Definition]:
    """For each noun: its definitions from the origins the word has (one per source)."""
    out = []
    for noun in nouns:
        art = pronounce(noun).article
        if art is None:
            continue
        defs = [d for d in definitions_of(noun, art, synsets, gcide, per_source=1) if d.origin in origins]
        out += [d for d in defs if not re.search(rf"\b{re.escape(word)}", d.text, re.IGNORECASE)]
    return out


def gather(word: str, tokenizer, docs: Iterable | None, corpus_limit: int = 40, controls_per_article: int = 16,
           category_nouns: int = 6, prompts: Sequence[str] = (), questions: Sequence[str] = (),
           prompt_file: str | None = None, chat: bool = True, definitions: bool = True, seed: int = 0,
           progress: bool = False, docs_total: int | None = None) -> WordContexts:
    """The word's contexts and both kinds of control (see the module's docstring). Without
    `definitions` no WordNet/GCIDE riddles are made and no category is looked up."""
    word = check_word(word)
    art = word_article(word)
    other = "a" if art == "an" else "an"
    notes: list[str] = []
    synsets, _ = _wordnet() if definitions else ([], {})
    gcide = gcide_nouns() if definitions else {}
    category = word_category(word, seed) if definitions else {"lexname": None, "siblings": [], "nouns": []}
    cat_corpus = category.get("corpus_nouns", frozenset())
    n = controls_per_article
    sizes = {("control", art, " a"): n, ("control", art, " A"): n // 2,
             ("control", other, " a"): n // 2, ("control", other, " A"): n // 4}
    if cat_corpus:
        sizes |= {("category", art, " a"): n // 2, ("category", art, " A"): n // 4}
    found, corpus_ctrl, info = [], [], {"documents": 0, "occurrences": 0, "usable": 0, "used": 0}
    if docs is not None:
        found, corpus_ctrl, info = scan_corpus(docs, word, corpus_limit, _count_nouns() if definitions else None,
                                               cat_corpus, sizes, seed, progress, docs_total)
        if not found:
            notes.append(f"'{word}' never follows a/an in the corpus ({info['documents']:,} documents scanned)"
                         + (f"; {info['wrong_article']} times after the other article" if info.get("wrong_article")
                            else ""))
    tok = tokenizer if chat else None
    word_defs = definitions_of(word, art, synsets, gcide) if definitions else []
    riddles = definition_contexts(word_defs, "word", tok)
    if chat and word_defs and not chat_available(tokenizer):
        notes.append("no chat questions: the model has no chat template, or its tokenizer splits 'A'/'An'")
    users = user_contexts(tokenizer, word, art, prompts, questions, prompt_file)
    if any(c.origin == "user" for c in users):
        notes.append("typed questions share their wording with no control, so they enter no activation test; they "
                     "count in the behaviour and, when held out, in the causal test")
    contexts = found + riddles + users
    if not contexts:
        raise SaexError(f"no context leads to '{word}': it does not follow a/an in the corpus, no WordNet or GCIDE "
                        "definition or hand-written riddle names it, and no prompts were given",
                        "give prompts that end where its article would come (--prompt 'TEXT', --question "
                        "'What do you call ...?' or --prompts FILE)")
    if definitions and not word_defs:
        notes.append(f"no usable WordNet or GCIDE definition of '{word}' (a riddle needs a gloss like 'a person "
                     "who ...' that does not name the word)")
    if not definitions:
        notes.append("definition riddles were not used (definitions off), so no category controls either")

    origins = {d.origin for d in word_defs}
    controls = list(corpus_ctrl)
    if origins:
        taken = {word.lower(), *category["nouns"]}
        rng = random.Random(f"saex-find-controls-{seed}-{word}")
        pool = [w for w in sorted(_riddle_nouns()) if w not in taken and w not in cat_corpus]
        rng.shuffle(pool)
        tagged = _tagged()
        pool.sort(key=lambda w: tagged.get(w, 0) == 0)
        per = max(1, n // 4)
        picked = [w for w in pool if pronounce(w).article == art][:per] + \
                 [w for w in pool if pronounce(w).article == other][:max(1, per // 2)]
        ctrl_defs = _control_definitions(picked, origins - {"classic"}, word, synsets, gcide)
        if "classic" in origins:
            ctrl_defs += [Definition(p.removesuffix(" is called"), w, pronounce(w).article, "classic", "hand-written")
                          for p, w in CLASSIC_RIDDLES if w != word and w not in taken]
        controls += definition_contexts(ctrl_defs, "control", tok)
        cat_defs = _control_definitions(category["nouns"][:category_nouns], origins - {"classic"}, word, synsets,
                                        gcide)
        controls += definition_contexts(cat_defs, "category", tok)
    if not any(c.role == "control" and c.prompt.article == art for c in controls):
        raise SaexError(f"no control context of another '{art}' noun was found",
                        "use a corpus with more text, or the built-in one")
    cat_info = {k: v for k, v in category.items() if k != "corpus_nouns"}
    cat_info["used"] = sorted({c.prompt.noun for c in controls if c.role == "category"})
    return WordContexts(word, art, contexts, controls, cat_info, info, notes)
