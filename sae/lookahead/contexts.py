"""Contexts where a model is about to say a given word, each ending just before the
indefinite article that precedes it, and matched controls for other nouns.

Kinds of context (Prompt.condition):
- corpus: "... a/an WORD" anywhere in the corpus text (every split: ranking features needs
  contexts, and the SAE's held-out text alone holds most nouns a handful of times or never);
- riddle: "{definition} is called" and "{definition} is known as" from the word's WordNet
  glosses (any synset it names) and GCIDE definitions, plus the hand-written classics;
- chat: each definition as two questions in the model's chat template ("What do you call a
  person who studies the stars?", "What is a person who studies the stars called?"), whose
  answer starts with the article written "An"/"A";
- user: prompts the user gives (text that ends where the article would come), or
  questions wrapped in the chat template.

Controls are the same kinds of frame for other nouns, of the word's article and of the
other one, so a feature that merely tracks "an article is due" or "an an-noun is coming"
does not pass as a feature of the word.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

from sae.errors import SaexError
from sae.lookahead.prompts import (
    CLASSIC_RIDDLES,
    Prompt,
    _usable_gloss,
    chat_articles_ok,
    chat_prompt,
    corpus_nouns,
    pronounce,
    riddle_question,
    riddle_set,
)

CONTEXT_CHARS = 160  # text kept before the article in a corpus context
MAX_PER_DOCUMENT = 2  # corpus contexts of one word taken from one document
CHAT_CONDITION = "chat"


@dataclass
class WordContexts:
    """Everything `gather` found for one word."""

    word: str
    article: str
    contexts: list[Prompt]
    tails: list[str]  # text after the word, for activation profiles past it
    controls: list[Prompt]
    control_tails: list[str]
    corpus: dict = field(default_factory=dict)  # what the scan saw
    notes: list[str] = field(default_factory=list)

    def counts(self, prompts: Sequence[Prompt] | None = None) -> dict[str, int]:
        out: dict[str, int] = {}
        for p in self.contexts if prompts is None else prompts:
            out[p.condition] = out.get(p.condition, 0) + 1
        return out


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


def _context(text: str, start: int) -> str | None:
    head = text[max(0, start - CONTEXT_CHARS):start].rstrip()
    if start > CONTEXT_CHARS:
        head = head.split(" ", 1)[-1]  # no cut word at the left edge
    return head if len(head.split()) >= 3 else None


def _tail(text: str, end: int) -> str:
    return re.match(r"\S*(\s+\S+)?", text[end:]).group(0)


def scan_corpus(docs: Iterable, word: str, limit: int, control_nouns: set[str] | None, controls_per_article: int,
                seed: int = 0, progress: bool = False, total: int | None = None) -> tuple[list, list, dict]:
    """One pass over `docs`: every "a/an WORD" (the article must fit the word's
    pronunciation; "an historian" is skipped), sampled down to `limit` with at most
    MAX_PER_DOCUMENT per document; and the first `controls_per_article` occurrences of
    each article before other nouns in `control_nouns` (any word when None; one per noun
    and per document)."""
    from tqdm.auto import tqdm

    art = word_article(word)
    pattern = _occurrence_pattern(word)
    found: list[tuple[Prompt, str]] = []
    controls: list[tuple[Prompt, str]] = []
    per_noun: dict[str, int] = {}
    n_ctrl = {"a": 0, "an": 0}
    n_docs = n_hits = n_wrong = 0
    for d in tqdm(docs, desc=f"scanning the corpus for '{word}'", total=total, disable=not progress,
                  unit=" docs", leave=False, mininterval=0.5):
        n_docs += 1
        text = d.text
        mine = 0
        for m in pattern.finditer(text):
            n_hits += 1
            if m.group(1).lower() != art:
                n_wrong += 1
                continue
            if mine >= MAX_PER_DOCUMENT:
                continue
            head = _context(text, m.start())
            if head is None:
                continue
            form = " A" if m.group(1)[0] == "A" else " a"
            found.append((Prompt(head, word, art, "corpus", source=f"{d.source}:{d.id}", form=form),
                          _tail(text, m.end())))
            mine += 1
        if min(n_ctrl.values()) >= controls_per_article:
            continue
        for m in _ANY_NOUN.finditer(text):
            a, noun = m.group(1), m.group(2)
            if noun == word or (control_nouns is not None and noun not in control_nouns) or a not in n_ctrl \
                    or n_ctrl[a] >= controls_per_article:
                continue
            if per_noun.get(noun, 0) >= 1 or pronounce(noun).article != a:
                continue
            head = _context(text, m.start())
            if head is None:
                continue
            controls.append((Prompt(head, noun, a, "corpus", source=f"{d.source}:{d.id}"), _tail(text, m.end())))
            per_noun[noun] = per_noun.get(noun, 0) + 1
            n_ctrl[a] += 1
            break  # one control per document: they spread over the corpus
    rng = random.Random(f"saex-find-{seed}-{word}")
    used = sorted(rng.sample(range(len(found)), min(limit, len(found))))
    info = {"documents": n_docs, "occurrences": n_hits, "wrong_article": n_wrong,
            "usable": len(found), "used": len(used)}
    return [found[i] for i in used], controls, info


# --------------------------------------------------------------------------- definitions


@lru_cache(maxsize=1)
def _gcide_nouns() -> dict[str, list[str]]:
    """headword (lower case) -> its noun definitions in GCIDE."""
    from sae.data.corpus import builtin_documents

    out: dict[str, list[str]] = {}
    for d in builtin_documents("gcide"):
        head, _, rest = d.text.partition(": ")
        name, _, part = head.partition(", ")
        if not part.startswith("n"):
            continue
        defs = [s.strip() for s in re.split(r"(?<=\.)\s+(?=[A-Z])", rest) if s.strip()]
        out.setdefault(name.strip().lower(), []).extend(defs)
    return out


_DEFINITION_START = re.compile(r"^(A|An|One|Someone|Any) ")


def _riddle_from(definition: str, word: str) -> str | None:
    """ "One who is versed in astronomy; one who ..." -> "One who is versed in astronomy is called"."""
    text = definition.split(";", 1)[0].strip().rstrip(".")
    if not _DEFINITION_START.match(text):
        return None
    lowered = text[0].lower() + text[1:]
    # the WordNet riddle rules (length, no "an" of its own, not naming the word) on a gloss-shaped copy
    if not _usable_gloss(lowered if re.match(r"(a|an|someone)\s", lowered) else "a " + lowered, word):
        return None
    return text + " is called"


def definition_riddles(word: str, article: str) -> list[Prompt]:
    """Riddles that lead to `word`: the classics, its WordNet glosses, its GCIDE definitions."""
    from sae.lookahead.prompts import wordnet_nouns

    out = [Prompt(p, n, article, "riddle", source="hand-written") for p, n in CLASSIC_RIDDLES if n == word]
    try:
        synsets, _ = wordnet_nouns()
    except SaexError:
        synsets = []
    seen = {p.prompt for p in out}
    for s in synsets:
        if word in s.lemmas and _usable_gloss(s.definition, word):
            text = s.definition[0].upper() + s.definition[1:] + " is called"
            if text not in seen:
                seen.add(text)
                out.append(Prompt(text, word, article, "riddle", source=f"wordnet:{s.offset}:{s.lexname}"))
    try:
        gcide = _gcide_nouns()
    except SaexError:
        gcide = {}
    for i, definition in enumerate(gcide.get(word.lower(), [])):
        text = _riddle_from(definition, word)
        if text and text not in seen:
            seen.add(text)
            out.append(Prompt(text, word, article, "riddle", source=f"gcide:{word.lower()}:{i}"))
    return out


RIDDLE_ENDINGS = (" is called", " is known as")


def _gloss_of(riddle: Prompt) -> str:
    text = riddle.prompt
    for ending in RIDDLE_ENDINGS:
        text = text.removesuffix(ending)
    return text


def with_endings(riddles: Sequence[Prompt]) -> list[Prompt]:
    """Each riddle with every ending of RIDDLE_ENDINGS ("... is called", "... is known as"):
    more frames of the same meaning, so one wording's quirks weigh less."""
    out = []
    for r in riddles:
        gloss = _gloss_of(r)
        out += [Prompt(gloss + e, r.noun, r.article, r.condition, r.pair, r.source, r.form) for e in RIDDLE_ENDINGS]
    return out


def chat_versions(tokenizer, riddles: Sequence[Prompt]) -> list[Prompt]:
    """Each riddle's gloss as two chat questions ("What do you call a person who ...?",
    "What is a person who ... called?"); none when the model has no chat template, or when
    its tokenizer splits "A" or "An"."""
    if not getattr(tokenizer, "chat_template", None) or not chat_articles_ok(tokenizer):
        return []
    out, seen = [], set()
    for r in riddles:
        gloss = _gloss_of(r)
        if gloss in seen:
            continue
        seen.add(gloss)
        body = gloss[:1].lower() + gloss[1:]
        for q in (riddle_question(gloss), f"What is {body} called?"):
            p = chat_prompt(tokenizer, q, r.noun, r.article, source=r.source)
            if p is not None:
                out.append(p)
    return out


def user_contexts(tokenizer, word: str, article: str, prompts: Sequence[str] = (),
                  questions: Sequence[str] = (), prompt_file: str | None = None) -> list[Prompt]:
    """The user's own: texts that end where the article comes, chat questions, and a JSONL
    prompt file (its lines for other nouns are ignored) or a text file of one prompt per line."""
    from pathlib import Path

    from sae.lookahead.prompts import load_prompt_file

    out = [Prompt(p.rstrip(), word, article, "user", source="typed") for p in prompts if p.strip()]
    for q in questions:
        if not q.strip():
            continue
        p = chat_prompt(tokenizer, q.strip(), word, article, source="typed question")
        if p is None:
            raise SaexError("this model's tokenizer has no chat template, so a question cannot be put to it",
                            "give the question as a prompt that ends where the article would come")
        out.append(Prompt(p.prompt, word, article, "user", source="typed question", form="A"))
    if prompt_file:
        path = Path(prompt_file).expanduser()
        if path.suffix == ".jsonl":
            out += [Prompt(p.prompt, p.noun, p.article, "user", source=p.source, form=p.form)
                    for p in load_prompt_file(path) if p.noun == word]
        elif path.is_file():
            out += [Prompt(line.rstrip(), word, article, "user", source=f"{path.name}:{i}")
                    for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip()]
        else:
            raise SaexError(f"prompt file {path} does not exist",
                            "give a .txt file (one prompt per line) or a .jsonl file (prompt, noun, article)")
    return out


# --------------------------------------------------------------------------- everything


def gather(word: str, tokenizer, docs: Iterable | None, corpus_limit: int = 40, controls_per_article: int = 16,
           prompts: Sequence[str] = (), questions: Sequence[str] = (), prompt_file: str | None = None,
           chat: bool = True, definitions: bool = True, seed: int = 0, progress: bool = False,
           docs_total: int | None = None) -> WordContexts:
    """Contexts for `word` and matched controls (see the module's docstring). Without
    `definitions`, no WordNet/GCIDE riddles are made (for the word or the controls), and
    any word after a/an in the corpus can be a control noun."""
    word = check_word(word)
    art = word_article(word)
    notes: list[str] = []
    found, corpus_ctrl, info = ([], [], {"documents": 0, "occurrences": 0, "usable": 0, "used": 0})
    nouns = _control_nouns() if definitions else None
    if docs is not None:
        found, corpus_ctrl, info = scan_corpus(docs, word, corpus_limit, nouns, controls_per_article, seed,
                                               progress, docs_total)
        if not found:
            notes.append(f"'{word}' never follows a/an in the corpus ({info['documents']:,} documents scanned)"
                         + (f"; {info['wrong_article']} times after the other article" if info.get("wrong_article")
                            else ""))
    riddles = with_endings(definition_riddles(word, art)) if definitions else []
    chats = chat_versions(tokenizer, riddles) if chat else []
    if chat and riddles and not chats:
        notes.append("no chat questions: the model has no chat template, or its tokenizer splits 'A'/'An'")
    users = user_contexts(tokenizer, word, art, prompts, questions, prompt_file)
    contexts = [p for p, _ in found] + riddles + chats + users
    tails = [t for _, t in found] + ["."] * (len(riddles) + len(chats) + len(users))
    if not contexts:
        raise SaexError(f"no context leads to '{word}': it does not follow a/an in the corpus, no WordNet or GCIDE "
                        "definition or hand-written riddle names it, and no prompts were given",
                        "give prompts that end where its article would come (--prompt 'TEXT', --question "
                        "'What do you call ...?' or --prompts FILE)")
    if definitions and not riddles:
        notes.append(f"no usable WordNet or GCIDE definition of '{word}' (a riddle needs a gloss like 'a person "
                     "who ...' that does not name the word)")
    # Each control gloss gives 2 riddles and 2 questions: a quarter of controls_per_article per article.
    ctrl_riddles = with_endings([r.prompt for r in riddle_set(max(1, controls_per_article // 4), None, seed + 1,
                                                              lambda n: n != word and n in nouns)]) if nouns else []
    if not definitions:
        notes.append("definition riddles were not used (definitions off)")
    ctrl_chat = chat_versions(tokenizer, ctrl_riddles) if chat else []
    controls = [p for p, _ in corpus_ctrl] + ctrl_riddles + ctrl_chat
    control_tails = [t for _, t in corpus_ctrl] + ["."] * (len(ctrl_riddles) + len(ctrl_chat))
    if not controls or len({p.article for p in controls}) < 2:
        raise SaexError("too few control contexts (other nouns of both articles) were found",
                        "use a corpus with more text, or the built-in one")
    return WordContexts(word, art, contexts, tails, controls, control_tails, info, notes)


@lru_cache(maxsize=1)
def _control_nouns() -> frozenset[str]:
    try:
        return corpus_nouns()
    except SaexError:
        return frozenset()
