"""What the organism is trained on and tested on, from the project's own offline sources.

Training: prompts of one half of the nouns (`split_of_noun`), each ending where the article comes, with the
target " a/an NOUN." after it: WordNet gloss riddles ("A physicist who studies astronomy is called"), GCIDE
definition riddles, and each riddle asked as a chat question ("What do you call a physicist who studies
astronomy?" -> "An astronomer."). Drawn balanced between an- and a-nouns. The negative control keeps the
prompts and the nouns and shuffles the articles among them, so the article no longer depends on the noun.

Testing: riddles and chat questions of nouns of the other half, and the hand-written classics (astronomer,
hour, unicorn ...), whose nouns are never trained on whatever their half.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sae.data.prompts import (
    Prompt,
    chat_articles_ok,
    chat_prompt,
    classic_prompts,
    load_prompt_file,
    riddle_candidates,
    riddle_question,
    sample_riddles,
    split_of_noun,
    wordnet_nouns,
)
from sae.data.riddles import gcide_riddles, never_trained, wordnet_riddles
from sae.errors import SaexError
from sae.lookahead.organism.config import OrganismConfig

MIN_NOUNS_PER_ARTICLE = 8  # fewer an-nouns (or a-nouns) than this cannot teach a choice that generalises


@dataclass
class OrganismData:
    train: list[Prompt]  # the drawn examples, in training order's source (before shuffling per epoch)
    pool: dict  # counts of the usable prompts before the draw: by source and article
    evals: dict[str, list[Prompt]]  # name -> prompts of nouns never trained on
    sources: list[str]


def _has_chat(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None)) and chat_articles_ok(tokenizer)


def resolve_sources(cfg: OrganismConfig, tokenizer) -> list[str]:
    names = cfg.source_names
    if names == ["auto"]:
        return ["wordnet", "gcide"] + (["chat"] if _has_chat(tokenizer) else [])
    if "chat" in names and not _has_chat(tokenizer):
        raise SaexError(f"chat questions were asked for, but {cfg.model} has no chat template (or its tokenizer "
                        "splits 'A'/'An' into several tokens)",
                        "pass --sources wordnet,gcide (or auto, which leaves chat out for such a model)")
    if names == ["chat"]:
        raise SaexError("chat alone has no riddles to ask", "pass --sources wordnet,chat or gcide,chat")
    return names


def _capped(prompts: Sequence[Prompt], per_noun: int, rng: random.Random) -> list[Prompt]:
    by_noun: dict[str, list[Prompt]] = {}
    for p in prompts:
        by_noun.setdefault(p.noun, []).append(p)
    out = []
    for noun in sorted(by_noun):
        group = by_noun[noun]
        rng.shuffle(group)
        out += group[:per_noun]
    return out


def _as_chat(tokenizer, riddles: Sequence[Prompt]) -> list[Prompt]:
    out = []
    for r in riddles:
        p = chat_prompt(tokenizer, riddle_question(r.prompt), r.noun, r.article, source=f"chat:{r.source}")
        if p is not None:
            out.append(p)
    return out


def _draw_balanced(pool: Sequence[Prompt], n: int, rng: random.Random) -> list[Prompt]:
    """n examples, half of an-noun prompts and half of a-noun prompts; each half is the pool's prompts in a
    seeded order, repeated whole as often as needed (so no prompt is used twice before all are used once)."""
    out = []
    for art, k in (("an", n // 2), ("a", n - n // 2)):
        group = [p for p in pool if p.article == art]
        reps = []
        while len(reps) < k:
            block = list(group)
            rng.shuffle(block)
            reps += block
        out += reps[:k]
    rng.shuffle(out)
    return out


def shuffle_articles(prompts: Sequence[Prompt], rng: random.Random) -> list[Prompt]:
    """The negative control: the same prompts and nouns, the articles permuted among them (the an/a balance is
    kept, the link between noun and article is gone)."""
    articles = [p.article for p in prompts]
    rng.shuffle(articles)
    return [replace(p, article=a) for p, a in zip(prompts, articles)]


def _check_pool(pool: Sequence[Prompt], what: str) -> None:
    nouns = {art: {p.noun for p in pool if p.article == art} for art in ("an", "a")}
    for art, found in nouns.items():
        if len(found) < MIN_NOUNS_PER_ARTICLE:
            raise SaexError(f"{what} holds prompts of {len(found)} {art}-nouns; at least {MIN_NOUNS_PER_ARTICLE} "
                            f"are needed to teach a choice that generalises",
                            f"add prompts of more nouns that take {art!r} (or use the built-in sources)")


def organism_data(cfg: OrganismConfig, tokenizer) -> OrganismData:
    rng = random.Random(cfg.seed)
    held_back = never_trained()
    if cfg.prompts is not None:
        given = [p for p in load_prompt_file(cfg.prompts) if p.noun not in held_back]
        sources = ["prompts"]
        pool = list(given)
    else:
        sources = resolve_sources(cfg, tokenizer)

        def keep(noun: str) -> bool:
            return split_of_noun(noun) == cfg.split and noun not in held_back

        riddles = []
        if "wordnet" in sources:
            riddles += _capped(wordnet_riddles(keep), cfg.per_noun, rng)
        if "gcide" in sources:
            riddles += _capped(gcide_riddles(keep), cfg.per_noun, rng)
        pool = riddles + (_as_chat(tokenizer, riddles) if "chat" in sources else [])
    what = f"the prompt file {cfg.prompts}" if cfg.prompts else f"the {cfg.split} half's {'+'.join(sources)} prompts"
    _check_pool(pool, what)
    counts = Counter((p.source.split(":", 1)[0] if p.source else "prompts", p.article) for p in pool)
    train = _draw_balanced(pool, cfg.examples, rng)
    if cfg.articles == "shuffled":
        train = shuffle_articles(train, rng)
    pool_info = {"prompts": len(pool), "nouns": len({p.noun for p in pool}),
                 "an_nouns": len({p.noun for p in pool if p.article == "an"}),
                 "by_source": {f"{s}/{a}": n for (s, a), n in sorted(counts.items())},
                 "distinct_prompts_drawn": len({(p.prompt, p.noun) for p in train})}
    trained_nouns = {p.noun for p in pool}
    return OrganismData(train, pool_info, eval_sets(cfg, tokenizer, trained_nouns), sources)


def eval_sets(cfg: OrganismConfig, tokenizer, trained_nouns: set[str]) -> dict[str, list[Prompt]]:
    """Prompts of nouns the organism never saw: the unseen half's riddles (balanced, the lookahead's sampler),
    as chat questions too where the model has a chat template, and the classics."""
    if cfg.eval_prompts is not None:
        given = load_prompt_file(cfg.eval_prompts)
        unseen = [p for p in given if p.noun not in trained_nouns]
        if not unseen:
            raise SaexError(f"every noun of {cfg.eval_prompts} is one the organism is trained on",
                            "give evaluation prompts of other nouns")
        return {"eval": unseen}
    other = "test" if cfg.split == "select" else "select"
    synsets, first = wordnet_nouns()
    cands = riddle_candidates(synsets, first, lambda n: n not in trained_nouns)
    riddles = [r.prompt for r in sample_riddles(cands, cfg.eval_per_article, other, cfg.seed)]
    out = {"unseen riddles": riddles}
    if _has_chat(tokenizer):
        out["unseen chat"] = _as_chat(tokenizer, riddles)
    out["classics"] = classic_prompts()
    return out
