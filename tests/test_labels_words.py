"""Word facts behind the labels (sae/labels/words.py, positions.py): word classes, words
reassembled from tokens, WordNet categories of a word and of the next noun, n-grams."""

from __future__ import annotations

import numpy as np
import pytest

from sae.labels.positions import PositionTable
from sae.labels.words import WORD_CLASSES, segment, token_class, wordnet_lex

VOCAB = ["<s>", " The", " cat", "s", " sat", ".", " an", " astr", "onomer", "\n\n", " 12", " Paris", ",", " ran"]


def test_token_classes_by_hand():
    cls = {s: WORD_CLASSES[token_class(s)] for s in VOCAB}
    assert cls[" The"] == cls[" an"] == "function word"
    assert cls[" cat"] == "lowercase word" and cls[" Paris"] == "capitalised word"
    assert cls["."] == cls[","] == "punctuation" and cls[" 12"] == "number" and cls["\n\n"] == "line break"


def test_words_are_reassembled_from_tokens():
    tokens = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 12]])
    word_of, words, cont = segment(tokens, VOCAB)
    assert words == ["the", "cats", "sat", "an", "astronomer"]
    assert list(word_of[0]) == [-1, 0, 1, 1, 2, -1, 3, 4, 4, -1]
    assert list(np.flatnonzero(cont[0])) == [3, 8]


@pytest.mark.parametrize("word,lexname", [("cats", "noun.animal"), ("astronomer", "noun.person"),
                                          ("ran", "verb.motion"), ("geese", "noun.animal"),
                                          ("cathedral", "noun.artifact"), ("quickly", "adv.all")])
def test_wordnet_categories_of_inflected_words(word, lexname):
    lex = wordnet_lex()
    assert lex.names[lex.lexname_id(word)] == lexname


def test_function_words_and_unknown_words_have_no_category():
    lex = wordnet_lex()
    assert lex.lexname_id("the") == -1 and lex.lexname_id("an") == -1 and lex.lexname_id("qzxv") == -1


def test_position_table_families_by_hand():
    # <s> The cats sat . an astronomer ran
    tokens = np.array([[0, 1, 2, 3, 4, 5, 6, 7, 8, 13]])
    t = PositionTable(tokens, VOCAB)
    names = wordnet_lex().names

    def fam(name):
        f = t.families[name]
        return [f.names[v] if v >= 0 and f.names else v for v in f.values]

    assert fam("lexname")[2:4] == ["noun.animal", "noun.animal"]  # both tokens of "cats"
    assert fam("lexname")[7] == fam("lexname")[8] == "noun.person"
    # the next noun within 3 words: from "The" it is "cats"; from "sat" (past ". an") "astronomer";
    # from "cats" itself (its own word excluded) "astronomer" is 3 words on: sat, an, astronomer
    nn = fam("next_noun")
    assert nn[1] == "noun.animal" and nn[4] == "noun.person" and nn[2] == "noun.person"
    assert nn[9] == -1  # nothing follows "ran"
    assert fam("class@0")[3] == "word continuation" and fam("class@1")[4] == "punctuation"
    assert t.families["token@-1"].values[2] == 1 and t.families["token@2"].values[0] == 2
    assert t.families["token@-2"].values[1] == -1  # before the window
    g2 = t.families["ngram2"]
    assert [int(x) for x in g2.keys[g2.values[3]]] == [2, 3] and t.value_text("ngram2", g2.values[3]) == "' cats'"
    assert t.encode_values("ngram2", [[2, 3], [9, 9]]).tolist() == [g2.values[3], -1]
    assert t.encode_values("lexname", ["noun.person", "noun.nothing"]).tolist() == [names.index("noun.person"), -1]
