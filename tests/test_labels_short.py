"""Short labels (sae.labels.predicates.short_text): one line derived from the scored predicate, with
hand-written expectations on a small vocabulary, and, for every label of a labelled SAE, within the
fixed width and consistent with its predicate (every word it names is one of the predicate's, the
"+N more" counts the rest)."""

import re

from sae.labels.predicates import SHORT_WIDTH, Predicate, key_words, short_text

VOCAB = [" of", "Of", " the", ".", "\n", " cat", " Cat", " dog", ":", ",", " resembling", " like"]


def test_words_merge_case_and_spacing_variants_commonest_first():
    assert short_text(Predicate("token", (5, 6, 7)), VOCAB) == "on 'cat', 'dog'"
    assert short_text(Predicate("token", (3, 4), offset=-1), VOCAB) == "right after '.', '⏎'"
    assert short_text(Predicate("token", (0,), offset=2), VOCAB) == "2 tokens before 'of'"
    assert short_text(Predicate("token", (3,)), [*VOCAB[:3], "'"]) == 'on "\'"'


def test_an_ngram_reads_as_its_last_token_and_two_word_lists_merge():
    grams = Predicate("ngram", ((8, 0), (9, 1), (3, 10), (8, 11)))
    assert short_text(grams, VOCAB) == "phrases ending in 'of', 'resembling', 'like'"
    both = Predicate("or", parts=(Predicate("token", (5, 6, 7)), Predicate("ngram", ((3, 0), (9, 5)))))
    assert short_text(both, VOCAB) == "on 'cat', 'dog', 'of'"  # cat counted once


def test_the_rest_is_counted_and_the_width_kept():
    many = Predicate("token", tuple(range(12)))
    assert short_text(many, VOCAB) == "on 'of', 'cat', 'the' +7 more"  # 10 distinct words: of and cat twice
    assert short_text(many, VOCAB, width=20) == "on 'of' +9 more"
    other = Predicate("and", parts=(Predicate("token", (0,)), Predicate("next_noun", ("noun.animal", "noun.food"))))
    assert short_text(other, VOCAB) == "on 'of', and before a noun of noun.animal, noun.food"
    assert short_text(other, VOCAB, width=24) == "on 'of', and …"


def _consistent(p: Predicate, short: str, vocab) -> None:
    assert len(short) <= SHORT_WIDTH, short
    if short.endswith("…"):
        return
    parts = p.parts if p.kind in ("and", "or") else (p,)
    allowed = {w for q in parts for w in key_words(q, vocab)}
    named = [a or b for a, b in re.findall(r"'([^']*)'|\"([^\"]*)\"", short)]
    assert set(named) <= allowed, (short, allowed)
    more = sum(int(n) for n in re.findall(r"\+(\d+) more", short))
    listed = len(named) + sum(len(x.split(", ")) for x in re.findall(r"(?:noun|words) of ([\w., ]+?)(?: \+|$)", short))
    assert listed + more <= len(allowed) + sum(len(q.values) for q in parts if q.kind not in ("token", "ngram"))


def test_every_label_of_a_labelled_sae_fits_and_follows_its_predicate(tmp_path, tiny_lm):
    from sae.labels.auto import label_features
    from sae.runs.files import read_labels
    from tests.test_labels_auto import _cfg, _planted_store

    X = tiny_lm.tokenizer.encode(" astronomer")[-1]
    run, store = _planted_store(tmp_path, X, 1)
    label_features(_cfg(run, store), lm=tiny_lm)
    vocab = [tiny_lm.tokenizer.decode([i]) for i in range(len(tiny_lm.tokenizer))]
    records = [r for r in read_labels(run).values() if r["predicate"]]
    assert records
    for r in records:
        p = Predicate.from_json(r["predicate"])
        assert r["short"] == short_text(p, vocab)  # derived from the predicate, not written apart
        assert r["label"] == p.text(vocab)
        _consistent(p, r["short"], vocab)
        for d in r["by_kind"].values():
            assert d["short"] == short_text(Predicate.from_json(d["predicate"]), vocab)
