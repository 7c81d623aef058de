"""Corpus occurrences of "a/an + noun", for article-aligned profiles on natural text."""

from __future__ import annotations

import re
from collections.abc import Iterable

from sae.data.prompts import Prompt, pronounce

_OCCURRENCE = re.compile(r"(?<=\s)(a|an) ([a-z]{3,})\b")


def article_occurrences(docs: Iterable, nouns: set[str], n_per_article: int, max_per_noun: int = 3,
                        context_chars: int = 200, only: set[str] | None = None) -> tuple[list[Prompt], list[str]]:
    """Texts where "a"/"an" precedes one of `nouns` (and the article fits the noun's
    pronunciation): Prompt(prompt=the text before the article, noun, article) and the text
    right after the noun (for offsets past it). Up to `n_per_article` of each article, at
    most `max_per_noun` per noun, in document order; `only` restricts to those nouns."""
    prompts: list[Prompt] = []
    tails: list[str] = []
    count = {"a": 0, "an": 0}
    per_noun: dict[str, int] = {}
    for d in docs:
        if min(count.values()) >= n_per_article:
            break
        for m in _OCCURRENCE.finditer(d.text):
            art, noun = m.group(1), m.group(2)
            if noun not in nouns or (only is not None and noun not in only):
                continue
            if count[art] >= n_per_article or per_noun.get(noun, 0) >= max_per_noun:
                continue
            if pronounce(noun).article != art:
                continue  # "an historic", "a hour": old or odd spellings
            head = d.text[max(0, m.start() - context_chars):m.start()].rstrip()
            if m.start() > context_chars:
                head = head.split(" ", 1)[-1]  # no cut word at the left edge
            if len(head.split()) < 3:
                continue
            tail = re.match(r"\S*(\s+\S+)?", d.text[m.end():]).group(0)
            prompts.append(Prompt(head, noun, art, "corpus", source=f"{d.source}:{d.id}"))
            tails.append(tail)
            count[art] += 1
            per_noun[noun] = per_noun.get(noun, 0) + 1
    return prompts, tails
