"""Labels as executable predicates over token positions: a label says where a feature fires,
in terms (`sae.labels.positions`) that can be checked on any text without a model.

    token d {X}       the token d positions away is one of X (d = 0 "fires on X", -1 "right after X")
    ngram {G}         the tokens ending here spell one of the n-grams G ("of the", "out of the")
    class d {C}       the word class of the token d = 0 (here) or 1 (next) is one of C (function
                      word, punctuation, number, capitalised word, ...)
    lexname {L}       the word here belongs to a WordNet category in L (noun.animal, verb.motion, ...)
    next_noun {L}     the next noun (within 3 words) belongs to a category in L: the lookahead kind
    position {q}      the window position is one of q (1 = right after BOS)
    boosts_output {X} the next token is one of X, tokens the decoder direction boosts (vocabulary
                      projection), so an output-side claim is tested on text
    and (A, B)        both hold at the same position
    or (A, B)         either holds (two families: what a token set alone misses, an n-gram may catch)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from sae.errors import SaexError
from sae.labels.positions import TOKEN_OFFSETS, token_family

Kind = Literal["token", "ngram", "class", "lexname", "next_noun", "position", "boosts_output", "and", "or"]
KINDS: tuple[str, ...] = get_args(Kind)
COMPOUND = ("and", "or")
"""Kinds that describe what the feature reads; next_noun and boosts_output look ahead."""


@dataclass(frozen=True)
class Predicate:
    """A testable statement about where a feature fires (see the module docstring). `values`
    are natural values: token ids, n-grams as token-id tuples, class or category names, positions."""

    kind: Kind
    values: tuple = ()
    offset: int = 0
    parts: tuple[Predicate, ...] = ()

    def __post_init__(self):
        vals = tuple(tuple(int(t) for t in v) if isinstance(v, (list, tuple)) else v for v in self.values)
        object.__setattr__(self, "values", tuple(dict.fromkeys(vals)))  # each counts once
        if self.kind not in KINDS:
            raise SaexError(f"unknown predicate kind {self.kind!r}", f"use one of {', '.join(KINDS)}")
        if self.kind in COMPOUND:
            if len(self.parts) != 2 or any(p.kind in COMPOUND for p in self.parts):
                raise SaexError(f"an '{self.kind}' predicate joins exactly two simple predicates", "give two parts")
            return
        if not self.values:
            raise SaexError("a predicate needs at least one value", "give tokens, names or positions")
        if self.kind == "token" and self.offset not in TOKEN_OFFSETS:
            raise SaexError(f"token offset must be one of {TOKEN_OFFSETS}, got {self.offset}",
                            "use an offset in that range")
        if self.kind == "class" and self.offset not in (0, 1):
            raise SaexError(f"class offset must be 0 or 1, got {self.offset}", "use 0 (this token) or 1 (next)")

    @property
    def family(self) -> str:
        """The `PositionTable` family the predicate reads."""
        if self.kind == "token":
            return token_family(self.offset)
        if self.kind == "boosts_output":
            return token_family(1)
        if self.kind == "ngram":
            return f"ngram{len(self.values[0])}"
        if self.kind == "class":
            return f"class@{self.offset}"
        if self.kind in COMPOUND:
            raise ValueError(f"an '{self.kind}' predicate reads two families")
        return self.kind

    def to_json(self) -> dict:
        if self.kind in COMPOUND:
            return {"kind": self.kind, "parts": [p.to_json() for p in self.parts]}
        d = {"kind": self.kind, "values": [list(v) if isinstance(v, tuple) else v for v in self.values]}
        if self.kind in ("token", "class"):
            d["offset"] = self.offset
        return d

    @classmethod
    def from_json(cls, d: dict) -> Predicate:
        kind = d.get("kind")
        if kind in COMPOUND:
            return cls(kind, parts=tuple(cls.from_json(p) for p in d["parts"]))
        if kind == "fires_before":  # labels format 1
            return cls("token", tuple(d["tokens"]), int(d.get("offset", 0)))
        if kind == "fires_after":
            return cls("token", tuple(d["tokens"]), -1)
        if "values" not in d:  # format 1: tokens / positions
            return cls(kind, tuple(d.get("tokens") or d.get("positions") or ()))
        return cls(kind, tuple(d["values"]), int(d.get("offset", 0)))

    def claim(self) -> dict | None:
        """The annotation claim this predicate is (sae.labels.records.validate_claim), if any:
        "fires d >= 0 tokens before one of these tokens"."""
        if self.kind == "token" and self.offset >= 0:
            return {"kind": "fires_before", "offset": self.offset, "tokens": list(self.values)}
        if self.kind == "boosts_output":
            return {"kind": "fires_before", "offset": 1, "tokens": list(self.values)}
        return None

    def text(self, vocab: list[str]) -> str:
        def toks(vs):
            return ", ".join(repr(vocab[t]) if 0 <= t < len(vocab) else f"#{t}" for t in vs)

        k, d = self.kind, self.offset
        if k in COMPOUND:
            return f"{self.parts[0].text(vocab)}, {k} {self.parts[1].text(vocab)}"
        if k == "position":
            qs = ", ".join(str(q) for q in self.values)
            return f"fires at window position {qs}" + (" (right after BOS)" if self.values == (1,) else "")
        if k == "token":
            if d == 0:
                return f"fires on {{{toks(self.values)}}}"
            if d < 0:
                where = "right after" if d == -1 else f"{-d} tokens after"
            else:
                where = "right before" if d == 1 else f"{d} tokens before"
            return f"fires {where} {{{toks(self.values)}}}"
        if k == "boosts_output":
            return f"boosts output {{{toks(self.values)}}} (fires where the next token is one)"
        if k == "ngram":
            grams = ", ".join(repr("".join(vocab[t] if 0 <= t < len(vocab) else f"#{t}" for t in g))
                              for g in self.values)
            return f"fires at the end of {{{grams}}}"
        names = ", ".join(str(v) for v in self.values)
        if k == "class":
            return f"fires on a {names} token" if d == 0 else f"fires right before a {names} token"
        if k == "lexname":
            return f"fires on a word of WordNet's {names}"
        return f"fires before a noun of WordNet's {names} (within 3 words)"


SHORT_WIDTH = 64
"""The most characters of a short label: what a table cell, a search hit or a select box shows."""

_WHERE = {0: "on", -1: "right after", 1: "right before"}


def _word(piece: str) -> str:
    """A token as a person would say it: surrounding whitespace dropped, letters lower-cased, a bare
    newline or space shown as a symbol."""
    s = piece.strip()
    if not s:
        return "⏎" if "\n" in piece else "␣"
    return s.lower() if s.isalpha() else s


def key_words(p: Predicate, vocab: list[str]) -> list[str]:
    """The words a simple predicate is about, commonest first: each token's word, or each n-gram's last
    token's (what the feature fires on); case and spacing variants count as one word."""
    def piece(t):
        return vocab[t] if 0 <= t < len(vocab) else f"#{t}"

    if p.kind in ("token", "boosts_output"):
        words = [_word(piece(t)) for t in p.values]
    elif p.kind == "ngram":
        words = [_word(piece(g[-1])) for g in p.values]
    else:
        words = [str(v) for v in p.values]
    counts: dict[str, int] = {}
    for w in words:
        counts[w] = counts.get(w, 0) + 1
    return sorted(counts, key=lambda w: -counts[w])  # stable: ties keep the predicate's (score) order


def _family(p: Predicate) -> str:
    k, d = p.kind, p.offset
    if k == "token":
        return _WHERE.get(d, f"{-d} tokens after" if d < 0 else f"{d} tokens before")
    return {"ngram": "phrases ending in", "boosts_output": "boosts", "class": "a token of class" if d == 0 else
            "before a token of class", "lexname": "words of", "next_noun": "before a noun of",
            "position": "window position"}[k]


def _here(p: Predicate) -> bool:
    """Whether the predicate is about the token the feature fires on (a token at offset 0 or an n-gram
    ending there): two such parts of an "or" read as one list of words."""
    return (p.kind == "token" and p.offset == 0) or p.kind == "ngram"


def _listed(family: str, words: list[str], shown: int, quote: bool) -> str:
    head = ", ".join((f'"{w}"' if "'" in w else f"'{w}'") if quote else w for w in words[:shown])
    more = len(words) - min(shown, len(words))
    return f"{family} {head}" + (f" +{more} more" if more else "")


def _short_simple(p: Predicate, vocab: list[str], shown: int) -> str:
    return _listed(_family(p), key_words(p, vocab), shown, p.kind in ("token", "ngram", "boosts_output"))


def short_text(p: Predicate, vocab: list[str], width: int = SHORT_WIDTH) -> str:
    """One line a person can read aloud, derived from the predicate: the family in words, its commonest
    words (case and spacing variants merged; an n-gram by its last token), "+N more" for the rest, at
    most `width` characters. The full, testable predicate is `p.text(vocab)`."""
    for shown in (3, 2, 1):
        if p.kind == "or" and all(_here(q) for q in p.parts):
            words = list(dict.fromkeys(w for q in p.parts for w in key_words(q, vocab)))
            family = "on" if any(q.kind == "token" for q in p.parts) else "phrases ending in"
            text = _listed(family, words, shown, True)
        elif p.kind in COMPOUND:
            a, b = (_short_simple(q, vocab, shown) for q in p.parts)
            text = f"{a}, {p.kind} {b}"
        else:
            text = _short_simple(p, vocab, shown)
        if len(text) <= width:
            return text
    if p.kind in COMPOUND:  # the first part whole rather than both cut
        text = f"{_short_simple(p.parts[0], vocab, 1)}, {p.kind} …"
        if len(text) <= width:
            return text
    return text[:width - 1].rstrip(", ") + "…"
