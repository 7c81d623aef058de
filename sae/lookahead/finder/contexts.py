"""Contexts where a model is about to say a given word, each ending just before the
indefinite article that precedes it, and the contexts of other nouns they are compared with.

Every context carries three keys the statistics rely on:
- `cluster`: the contexts that are not independent of each other. All riddles and chat
  questions made from one definition form one cluster, and so does one corpus document.
  Clusters, not contexts, are split into halves and shuffled by the permutation tests.
- `frame`: what two contexts must share for their activations to be compared: the kind
  (corpus text, riddle ending, chat question form), the article and how it is written
  (" a" mid-sentence, " A" after a full stop, "A" at the start of a chat answer).
- `origin`: where the text comes from (corpus, wordnet, gcide, classic, user).

Kinds (Prompt.condition): corpus ("... a/an WORD" anywhere in the corpus, every split, at
most two per document, windows that already hold the word dropped); riddle ("{definition}
is called" / "is known as" from WordNet glosses, GCIDE definitions and the hand-written
classics); chat (each definition as two questions in the model's chat template, whose
answer starts with "An"/"A"); user (typed prompts and questions, prompt files).

Controls are the same kinds of frame for other nouns (sae.lookahead.finder.controls), so a
feature that tracks "an article is due", "a sentence starts", "a chat answer starts" or
"a definition was read" does not pass as a feature of the word.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from sae.data.prompts import (
    CLASSIC_RIDDLES,
    Prompt,
    _usable_gloss,
    chat_articles_ok,
    chat_prompt,
    pronounce,
    riddle_question,
)
from sae.data.riddles import riddle_from
from sae.errors import SaexError

CONTEXT_CHARS = 160  # text kept before the article in a corpus context
MAX_PER_DOCUMENT = 2  # word contexts from one document (one cluster)
RIDDLE_ENDINGS = (" is called", " is known as")
CHAT_FORMS = ("what do you call", "what is it called")


@dataclass(frozen=True)
class Context:
    """One text that ends just before an article, and the keys the statistics use."""

    prompt: Prompt
    tail: str  # text after the noun, for activation profiles past it
    role: str  # word, control (another noun) or category (another noun of the word's category)
    cluster: str
    frame: str
    origin: str


@dataclass
class WordContexts:
    """Everything `gather` found for one word."""

    word: str
    article: str
    contexts: list[Context]
    controls: list[Context]  # roles control and category
    category: dict = field(default_factory=dict)  # lexname, siblings, nouns used
    corpus: dict = field(default_factory=dict)  # what the scan saw
    notes: list[str] = field(default_factory=list)

    def counts(self, contexts: Sequence[Context] | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for c in self.contexts if contexts is None else contexts:
            out[c.prompt.condition] = out.get(c.prompt.condition, 0) + 1
        return out


def frame_key(kind: str, form_of_frame: str, article: str, written: str) -> str:
    return f"{kind}:{form_of_frame} | {article} | {written.strip() or written!r}"


def word_article(word: str) -> str:
    art = pronounce(word).article
    if art is None:
        raise SaexError(f"the pronunciation of {word!r} allows both a and an, so no article marks it",
                        "pick a word with one article")
    return art


def check_word(word: str) -> str:
    word = " ".join(str(word).split())
    if not word or not re.fullmatch(r"[A-Za-z][A-Za-z'\- ]*", word):
        raise SaexError(f"{word!r} is not a word the finder can look for",
                        "give a word or phrase of letters, e.g. astronomer or ice cream")
    return word


# --------------------------------------------------------------------------- the corpus


def _occurrence_pattern(word: str) -> re.Pattern:
    return re.compile(r"(?<=\s)(a|an|A|An) " + re.escape(word).replace(r"\ ", r"\s+") + r"(?![\w'-])")


_ANY_NOUN = re.compile(r"(?<=\s)(a|an|A|An) ([a-z]{3,})\b")


def _names(text: str, word: str) -> bool:
    """Whether `text` holds `word` (or its plural) as a word; a substring test first, since
    most texts do not hold it and a pattern per noun would be compiled anew each time."""
    if word.lower() not in text.lower():
        return False
    return _name_pattern(word).search(text) is not None


@lru_cache(maxsize=1 << 16)
def _name_pattern(word: str) -> re.Pattern:
    return re.compile(r"\b" + re.escape(word).replace(r"\ ", r"\s+") + r"(s|es)?\b", re.IGNORECASE)


def _context(text: str, start: int, noun: str) -> str | None:
    """The text before an article, cut at a word boundary; None when too short or when it
    already names the noun (then the model need not plan anything)."""
    head = text[max(0, start - CONTEXT_CHARS):start].rstrip()
    if start > CONTEXT_CHARS:
        head = head.split(" ", 1)[-1]
    if len(head.split()) < 3 or _names(head, noun):
        return None
    return head


def _tail(text: str, end: int) -> str:
    return re.match(r"\S*(\s+\S+)?", text[end:]).group(0)


def _written(article_match: str) -> str:
    return " A" if article_match[0] == "A" else " a"


class _Reservoir:
    """A seeded uniform sample of at most `size` items from a stream (Algorithm R)."""

    def __init__(self, size: int, rng: random.Random):
        self.size, self.rng, self.items, self.seen = size, rng, [], 0

    def offer(self, item) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
        else:
            j = self.rng.randrange(self.seen)
            if j < self.size:
                self.items[j] = item


def scan_corpus(docs: Iterable, word: str, limit: int, control_nouns: frozenset[str] | None,
                category_nouns: frozenset[str], sizes: dict[tuple[str, str, str], int], seed: int = 0,
                progress: bool = False, total: int | None = None) -> tuple[list[Context], list[Context], dict]:
    """One pass over `docs`: the word's occurrences after its article (a seeded sample of
    `limit` documents, the first MAX_PER_DOCUMENT of each, second ones kept while there are
    fewer than `limit` contexts), and seeded samples of other nouns' occurrences (the first
    usable one of each document that never names the word), `sizes[(role, article,
    written)]` of each: role "control"
    for nouns in `control_nouns` (any when None) outside the category, "category" for
    `category_nouns`. The article must fit the noun's pronunciation ("an historian" is skipped)."""
    from tqdm.auto import tqdm

    art = word_article(word)
    pattern = _occurrence_pattern(word)
    rng = random.Random(f"saex-find-{seed}-{word}")
    found = _Reservoir(limit, rng)
    pools = {key: _Reservoir(n, rng) for key, n in sizes.items() if n > 0}
    sound: dict[str, str | None] = {}
    n_docs = n_hits = n_wrong = n_named = 0
    for d in tqdm(docs, desc=f"scanning the corpus for '{word}'", total=total, disable=not progress,
                  unit=" docs", leave=False, mininterval=0.5):
        n_docs += 1
        text = d.text
        source = f"{d.source}:{d.id}"
        mine = []
        for m in pattern.finditer(text):
            n_hits += 1
            if m.group(1).lower() != art:
                n_wrong += 1
                continue
            head = _context(text, m.start(), word)
            if head is None:
                n_named += 1
                continue
            if len(mine) < MAX_PER_DOCUMENT:
                written = _written(m.group(1))
                mine.append(Context(Prompt(head, word, art, "corpus", source=source, form=written),
                                    _tail(text, m.end()), "word", f"doc:{source}",
                                    frame_key("corpus", "text", art, written), "corpus"))
        if mine:
            found.offer(mine)
        if mine or _names(text, word):
            continue  # a document is one cluster: it gives the word's contexts or one other noun's, never both
        for m in _ANY_NOUN.finditer(text):
            a, noun = m.group(1).lower(), m.group(2)
            if noun == word or _names(noun, word):
                continue
            role = "category" if noun in category_nouns else "control"
            if role == "control" and control_nouns is not None and noun not in control_nouns:
                continue
            written = _written(m.group(1))
            key = (role, a, written)
            if key not in pools:
                continue
            if noun not in sound:
                sound[noun] = pronounce(noun).article
            if sound[noun] != a:
                continue
            head = _context(text, m.start(), noun)
            if head is None:
                continue
            pools[key].offer(Context(Prompt(head, noun, a, "corpus", source=source, form=written),
                                     _tail(text, m.end()), role, f"doc:{source}",
                                     frame_key("corpus", "text", a, written), "corpus"))
            break
    info = {"documents": n_docs, "occurrences": n_hits, "wrong_article": n_wrong, "naming_the_word_before": n_named,
            "documents_with_the_word": found.seen}
    controls = [c for pool in pools.values() for c in pool.items]
    firsts = [doc[0] for doc in found.items]
    seconds = [doc[1] for doc in found.items if len(doc) > 1][:max(0, limit - len(firsts))]
    words = firsts + seconds
    info["used"] = len(words)
    return words, controls, info


# --------------------------------------------------------------------------- definitions


@dataclass(frozen=True)
class Definition:
    """A description that leads to `noun` without naming it, and where it came from."""

    text: str  # "A physicist who studies astronomy" (no ending)
    noun: str
    article: str
    origin: str  # wordnet, gcide, classic
    source: str


def definitions_of(noun: str, article: str, synsets: Sequence = (), gcide: dict | None = None,
                   wordnet: bool = True, per_source: int | None = None) -> list[Definition]:
    """The classics that lead to `noun`, its usable WordNet glosses (any synset naming it) and
    GCIDE noun definitions; at most `per_source` from each source when given."""
    out = [Definition(p.removesuffix(" is called"), noun, article, "classic", "hand-written")
           for p, n in CLASSIC_RIDDLES if n == noun]
    seen = {d.text for d in out}
    wn = []
    for s in synsets if wordnet else ():
        if noun in s.lemmas and _usable_gloss(s.definition, noun):
            text = s.definition[0].upper() + s.definition[1:]
            if text not in seen:
                seen.add(text)
                wn.append(Definition(text, noun, article, "wordnet", f"wordnet:{s.offset}:{s.lexname}"))
    gc = []
    for i, definition in enumerate((gcide or {}).get(noun.lower(), [])):
        text = riddle_from(definition, noun)
        if text and text not in seen:
            seen.add(text)
            gc.append(Definition(text, noun, article, "gcide", f"gcide:{noun.lower()}:{i}"))
    cut = slice(None) if per_source is None else slice(per_source)
    return out + wn[cut] + gc[cut]


def definition_contexts(definitions: Sequence[Definition], role: str, tokenizer=None) -> list[Context]:
    """Each definition as a riddle with every ending of RIDDLE_ENDINGS and, when the tokenizer
    has a chat template with single-token "A"/"An", as two chat questions: one cluster."""
    chat_ok = tokenizer is not None and bool(getattr(tokenizer, "chat_template", None)) and chat_articles_ok(tokenizer)
    out = []
    for d in definitions:
        cluster = f"def:{d.source}:{d.noun}:{d.text[:40]}"
        for ending in RIDDLE_ENDINGS:
            out.append(Context(Prompt(d.text + ending, d.noun, d.article, "riddle", source=d.source), ".", role,
                               cluster, frame_key("riddle", ending.strip(), d.article, " a"), d.origin))
        if chat_ok:
            body = d.text[:1].lower() + d.text[1:]
            for form, q in zip(CHAT_FORMS, (riddle_question(d.text), f"What is {body} called?")):
                p = chat_prompt(tokenizer, q, d.noun, d.article, source=d.source)
                if p is not None:
                    out.append(Context(p, ".", role, cluster, frame_key("chat", form, d.article, "A"), d.origin))
    return out


def chat_available(tokenizer) -> bool:
    return bool(getattr(tokenizer, "chat_template", None)) and chat_articles_ok(tokenizer)


def user_contexts(tokenizer, word: str, article: str, prompts: Sequence[str] = (),
                  questions: Sequence[str] = (), prompt_file: str | None = None) -> list[Context]:
    """The user's own: texts that end where the article comes (compared with corpus text),
    chat questions (compared with nothing: no control shares their wording), and a JSONL
    prompt file (its lines for other nouns are ignored) or a text file of one prompt per line."""
    from pathlib import Path

    from sae.data.prompts import load_prompt_file

    texts = [Prompt(p.rstrip(), word, article, "user", source="typed") for p in prompts if p.strip()]
    asked = []
    for q in questions:
        if not q.strip():
            continue
        p = chat_prompt(tokenizer, q.strip(), word, article, source="typed question")
        if p is None:
            raise SaexError("this model's tokenizer has no chat template, so a question cannot be put to it",
                            "give the question as a prompt that ends where the article would come")
        asked.append(Prompt(p.prompt, word, article, "user", source="typed question", form="A"))
    if prompt_file:
        path = Path(prompt_file).expanduser()
        if path.suffix == ".jsonl":
            texts += [Prompt(p.prompt, p.noun, p.article, "user", source=p.source, form=p.form)
                      for p in load_prompt_file(path) if p.noun == word]
        elif path.is_file():
            texts += [Prompt(line.rstrip(), word, article, "user", source=f"{path.name}:{i}")
                      for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
        else:
            raise SaexError(f"prompt file {path} does not exist",
                            "give a .txt file (one prompt per line) or a .jsonl file (prompt, noun, article)")
    out = [Context(p, ".", "word", f"user:{i}", frame_key("corpus", "text", article, p.form), "corpus")
           for i, p in enumerate(texts)]
    out += [Context(p, ".", "word", f"user-question:{i}", frame_key("user", "question", article, "A"), "user")
            for i, p in enumerate(asked)]
    return out
