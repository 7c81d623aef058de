"""What every token position of a held-out store looks like, in the terms labels speak:
one integer array per *family* (the token d positions away, the n-gram ending here, the
word class, the WordNet category of this word or of the next noun, the window position).

A label is a set of values of one family ("the previous token is one of {of, in}"), so
within a family the values are mutually exclusive at a position: a label's counts are sums
of per-value counts, and the best set can be found by ordering values (`propose`).
Value -1 means "undefined here" (outside the window, no word, no noun ahead) and never
matches.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from sae.labels.words import WORD_CLASSES, segment, token_class, wordnet_lex

TOKEN_OFFSETS = (-2, -1, 0, 1, 2)
"""Offsets of the token families: -1 the previous token, 0 the token itself, 1 the next."""
NEXT_NOUN_WORDS = 3
"""The next noun is looked for among the next this many words."""


@dataclass
class Family:
    """One family of position values. `names[v]` is value v in words (token families keep
    token ids as values and leave `names` empty: the vocabulary names them)."""

    name: str
    values: np.ndarray  # int64 over flattened positions, -1 = undefined
    n_values: int
    names: list[str] = field(default_factory=list)
    keys: np.ndarray | None = None  # n-gram families: the token tuple of each value, "n_values n"
    index: dict | None = field(default=None, repr=False)  # n-gram families: token tuple -> value


class PositionTable:
    """Families over the positions of token windows "W T" (flattened row-major)."""

    def __init__(self, tokens: np.ndarray, vocab: list[str], wordnet: bool = True):
        tokens = np.asarray(tokens, np.int64)
        self.W, self.T = tokens.shape
        self.tokens = tokens
        self.vocab = vocab
        V = len(vocab)
        self.families: dict[str, Family] = {}
        q = np.broadcast_to(np.arange(self.T), tokens.shape)
        for d in TOKEN_OFFSETS:
            vals = np.full(tokens.shape, -1, np.int64)
            if d >= 0:
                vals[:, :self.T - d] = tokens[:, d:]
            else:
                vals[:, -d:] = tokens[:, :self.T + d]
            self.families[token_family(d)] = Family(token_family(d), vals.reshape(-1), V)
        for n in (2, 3):
            self.families[f"ngram{n}"] = self._ngrams(n)
        cls = np.array([token_class(s) for s in vocab], np.int64)
        word_of, words, cont = segment(tokens, vocab)
        klass = cls[np.clip(tokens, 0, V - 1)]
        klass[cont] = WORD_CLASSES.index("word continuation")
        self.families["class@0"] = Family("class@0", klass.reshape(-1), len(WORD_CLASSES), list(WORD_CLASSES))
        nxt = np.full(tokens.shape, -1, np.int64)
        nxt[:, :-1] = klass[:, 1:]
        self.families["class@1"] = Family("class@1", nxt.reshape(-1), len(WORD_CLASSES), list(WORD_CLASSES))
        self.families["position"] = Family("position", q.reshape(-1).astype(np.int64), self.T)
        if wordnet:
            lex = wordnet_lex()
            wl = np.array([lex.lexname_id(w) for w in words] + [-1], np.int64)  # index -1 -> the padding -1
            cur = wl[word_of]
            self.families["lexname"] = Family("lexname", cur.reshape(-1), len(lex.names), list(lex.names))
            noun = np.array([lex.is_noun(w) for w in words] + [False])
            self.families["next_noun"] = Family("next_noun", _next_noun(word_of, noun, wl).reshape(-1),
                                                len(lex.names), list(lex.names))

    def _ngrams(self, n: int) -> Family:
        """The n tokens ending at each position (none where the window has fewer before it)."""
        W, T = self.W, self.T
        cols = [self.tokens[:, i:T - n + 1 + i] for i in range(n)]
        tup = np.stack([c.reshape(-1) for c in cols], 1)  # ((W (T-n+1)), n)
        keys, inv = np.unique(tup, axis=0, return_inverse=True)
        vals = np.full((W, T), -1, np.int64)
        vals[:, n - 1:] = inv.reshape(W, T - n + 1)
        return Family(f"ngram{n}", vals.reshape(-1), len(keys), keys=keys)

    def value_text(self, family: str, v: int) -> str:
        f = self.families[family]
        if f.name.startswith("token@") or f.name == "boosted":
            return repr(self.vocab[v]) if 0 <= v < len(self.vocab) else f"#{v}"
        if f.keys is not None:
            return repr("".join(self.vocab[t] for t in f.keys[v]))
        if f.name == "position":
            return str(v)
        return f.names[v]

    def encode_values(self, family: str, natural: list) -> np.ndarray:
        """Family value ids of labels' natural values (token ids, class or lexname names,
        n-grams as token lists, positions); values this table never saw map to -1."""
        f = self.families[family]
        if f.keys is not None:
            if f.index is None:
                f.index = {tuple(k): i for i, k in enumerate(f.keys.tolist())}
            return np.array([f.index.get(tuple(int(t) for t in v), -1) for v in natural], np.int64)
        if f.names:
            return np.array([f.names.index(v) if v in f.names else -1 for v in natural], np.int64)
        return np.array([int(v) if 0 <= int(v) < f.n_values else -1 for v in natural], np.int64)

    def natural_values(self, family: str, ids) -> list:
        f = self.families[family]
        if f.keys is not None:
            return [[int(t) for t in f.keys[i]] for i in ids]
        if f.names:
            return [f.names[i] for i in ids]
        return [int(i) for i in ids]


def token_family(d: int) -> str:
    return f"token@{d}"


def _next_noun(word_of: np.ndarray, noun: np.ndarray, wl: np.ndarray) -> np.ndarray:
    """Per position: the category of the first noun among the next NEXT_NOUN_WORDS words that
    start after the current position's word (the current word itself excluded), within the window."""
    W, T = word_of.shape
    out = np.full((W, T), -1, np.int64)
    for w in range(W):
        row = word_of[w]
        starts = [q for q in range(T) if row[q] >= 0 and (q == 0 or row[q - 1] != row[q])]
        if not starts:
            continue
        start_word = [int(row[q]) for q in starts]
        # for each position, the index (into starts) of the first word starting after it
        nxt = np.searchsorted(np.asarray(starts), np.arange(T), side="right")
        for q in range(T):
            j = nxt[q]
            for k in range(j, min(j + NEXT_NOUN_WORDS, len(starts))):
                if noun[start_word[k]]:
                    out[w, q] = wl[start_word[k]]
                    break
    return out
