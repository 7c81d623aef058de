"""The Streamlit app, driven by streamlit.testing.v1.AppTest: every page renders and its
widgets drive what is shown. (The real-browser test lives in test_explorer_browser.py.)"""

from pathlib import Path

import pytest

from tests.helpers import SELECT_PROMPTS, TEST_PROMPTS, assert_equal_nonempty, write_planted_store, write_prompts

pytestmark = pytest.mark.integration  # every test drives the app through Streamlit's AppTest

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    from training.config import TrainConfig
    from training.train import train

    root = tmp_path_factory.mktemp("checkpoints")
    store, _, _ = write_planted_store(root / "acts-train", n_windows=16)
    train(TrainConfig(store=str(store), out=str(root / "sae"), d_sae=64, k=4, batch_size=256, epochs=2, lr=1e-2,
                      lr_end=1e-3, warmup_steps=2, device="cpu", progress=False, checkpoint_every=0))
    return root


def _app(monkeypatch, root, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SAEX_CHECKPOINTS", str(root))
    monkeypatch.setenv("SAEX_ANNOTATIONS", str(tmp_path / "ann.sqlite"))
    return AppTest.from_file(APP, default_timeout=60)


def test_overview_without_runs_shows_the_command_that_makes_one(monkeypatch, tmp_path):
    at = _app(monkeypatch, tmp_path / "empty", tmp_path)
    at.run()
    assert not at.exception
    assert any("make demo" in c.value for c in at.code)


def test_overview_shows_the_run(monkeypatch, run_root, tmp_path):
    at = _app(monkeypatch, run_root, tmp_path)
    at.run()
    assert not at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert any(m.value == "**`blocks.0.hook_resid_post`**" for m in at.markdown)  # in full, not cut by a card
    assert metrics["latents"] == "64 x 16" and metrics["architecture"] == "topk (k=4)"
    assert any(f"saex eval {run_root / 'sae'}" in c.value for c in at.code)  # not evaluated yet
    assert at.query_params["run"] in (str(run_root / "sae"), [str(run_root / "sae")])


def test_annotation_saved_in_the_app_lands_in_the_store_with_history(monkeypatch, run_root, tmp_path):
    from sae.labels.records import SAEKey
    from sae.labels.store import AnnotationStore
    from sae.runs.load import load_sae

    at = _app(monkeypatch, run_root, tmp_path)
    at.switch_page("views/annotations.py").run()
    assert not at.exception
    at.number_input[0].set_value(7).run()
    at.text_input(key="annpage-label-7").input("<script>alert(1)</script> before vowels")
    at.text_input(key="annpage-author-7").input("tester")
    at.button[0].click().run()  # the form's save button
    assert not at.exception
    assert any("saved feature 7, version 1" in s.value for s in at.success)
    key = SAEKey.from_sae(load_sae(run_root / "sae"))
    got = AnnotationStore(tmp_path / "ann.sqlite").get(key, 7)
    assert got.label == "<script>alert(1)</script> before vowels" and got.author == "tester"
    at.run()
    shown = " ".join(m.value for m in at.markdown)
    assert "&lt;script&gt;" in shown and "<script>" not in shown  # escaped where rendered as HTML
    assert at.dataframe[0].value["feature"].tolist() == [7]


def test_feature_page_navigates_and_shows_the_index(monkeypatch, indexed_run, tmp_path):
    from sae.index.reader import FeatureIndex

    root, run = indexed_run
    index = FeatureIndex(run)
    at = _app(monkeypatch, root, tmp_path)
    at.query_params["run"] = str(run)
    at.query_params["feature"] = "5"
    at.switch_page("views/feature.py").run()
    assert not at.exception
    f = index.feature(5)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["fires on"] == f"{f.fires:,} tokens"
    shown = " ".join(m.value for m in at.markdown)
    if f.top_examples:  # the top example's tokens are on the page, escaped
        import html as _html

        assert _html.escape(f.top_examples[0].text[f.top_examples[0].center].replace("\n", "⏎"), quote=True).replace(
            " ", "&nbsp;") in shown
    next_button = next(b for b in at.button if b.label == "next ▶")
    next_button.click().run()
    assert not at.exception
    assert at.query_params["feature"] in ("6", ["6"])
    assert any(s.value.startswith("#6") for s in at.subheader)


def test_feature_page_without_index_names_the_command(monkeypatch, run_root, tmp_path):
    at = _app(monkeypatch, run_root, tmp_path)
    at.switch_page("views/feature.py").run()
    assert not at.exception
    assert any(c.value == f"saex index {run_root / 'sae'}" for c in at.code)


def test_search_page_modes_drive_the_results(monkeypatch, indexed_run, tmp_path):
    from sae.index import search
    from sae.index.reader import FeatureIndex

    root, run = indexed_run
    index = FeatureIndex(run)
    at = _app(monkeypatch, root, tmp_path)
    at.query_params["run"] = str(run)
    at.switch_page("views/search.py").run()
    at.radio(key="mode").set_value("current token (fires on it)").run()
    at.text_input(key="token").input(" the").run()
    assert not at.exception
    expected = [h.feature for h in search.by_current_token(index, " the", rank="f1", top=25)]
    assert_equal_nonempty(at.dataframe[0].value["feature"].tolist(), expected)
    at.radio(key="mode").set_value("decoder neighbours of a feature").run()
    at.number_input(key="nbr").set_value(3).run()
    assert_equal_nonempty(at.dataframe[0].value["feature"].tolist(),
                          [h.feature for h in search.neighbours(index, 3, top=25)])


def test_prompt_lab_shows_the_models_next_token_and_edits(monkeypatch, indexed_run, tmp_path):
    root, run = indexed_run
    at = _app(monkeypatch, root, tmp_path)
    at.query_params["run"] = str(run)
    at.switch_page("views/prompt_lab.py").run()
    assert not at.exception
    at.text_area(key="prompt").input("The astronomer saw").run()
    assert not at.exception
    clean = {m.label: m for m in at.metric}["logit(an) − logit(a)"]
    at.selectbox(key="op").set_value("steer").run()
    at.number_input(key="value").set_value(50.0).run()
    steered = {m.label: m for m in at.metric}["logit(an) − logit(a)"]
    assert not at.exception and steered.value != clean.value and steered.delta not in ("+0.000", "-0.000")


def test_feature_page_scores_a_labels_claim(monkeypatch, indexed_run, tmp_path):
    from sae.labels.claims import score_feature_claim
    from sae.labels.records import SAEKey
    from sae.labels.store import AnnotationStore
    from sae.runs.load import load_sae

    root, run = indexed_run
    sae = load_sae(run)
    claim = {"kind": "fires_before", "offset": 1, "tokens": [5, 6, 7]}
    AnnotationStore(tmp_path / "ann.sqlite").set(SAEKey.from_sae(sae), 2, label="claimed", author="t", claim=claim)
    at = _app(monkeypatch, root, tmp_path)
    at.query_params["run"] = str(run)
    at.query_params["feature"] = "2"
    at.switch_page("views/feature.py").run()
    at.button(key="score-claim").click().run()
    assert not at.exception
    expect = score_feature_claim(sae, 2, claim, store=root / "acts-heldout")
    shown = {m.label: m.value for m in at.metric}
    assert shown["hits"] == f"{expect.hits:,}"
    assert shown["precision"] == ("—" if expect.precision is None else f"{expect.precision:.1%}")


def test_lookahead_page_shows_the_report_and_reruns_prompts(monkeypatch, indexed_run, tiny_model_dir, text_corpus,
                                                            tmp_path):
    import json

    from saex.cli import main

    root, run = indexed_run
    at = _app(monkeypatch, root, tmp_path)
    at.query_params["run"] = str(run)
    at.switch_page("views/lookahead.py").run()
    assert any(c.value == f"saex lookahead {run}" for c in at.code)  # no report yet: the command
    sel, test = write_prompts(tmp_path / "s.jsonl", SELECT_PROMPTS), write_prompts(tmp_path / "t.jsonl", TEST_PROMPTS)
    assert main(["lookahead", str(run), "--select-prompts", str(sel), "--test-prompts", str(test), "--corpus",
                 str(text_corpus), "--corpus-occurrences", "4", "--n-features", "3", "--n-candidates", "8",
                 "--random-sets", "20", "--bootstrap", "200", "--profile-before", "4", "--progress", "no",
                 "--device", "cpu"]) == 0
    report = json.loads((run / "lookahead" / "report.json").read_text())
    at.run()
    assert not at.exception
    shown = {m.label: m.value for m in at.metric}
    assert shown["z vs random"] == f"{report['causal']['random']['z']:.1f}"
    assert [m.value for m in at.markdown if m.value.startswith("- ")][0] == f"- {report['answer']['lines'][0]}"
    profiles = report["profiles"]["sources"]
    charts = [c.proto.spec for c in at.get("vega_lite_chart") if '"offset"' in c.proto.spec]
    assert len(charts) == len(next(iter(profiles.values()))["features"]) > 0  # one readable chart per feature
    nouns = sorted({t[1] for t in TEST_PROMPTS})
    assert not any("logit(an)" in m.label for m in at.metric)  # the model runs only when asked
    at.toggle(key="live").set_value(True).run()
    noun_box = next(s for s in at.selectbox if s.label == "noun")
    noun_box.set_value(nouns[1]).run()
    assert not at.exception
    assert any(f"({'an' if nouns[1] in ('hour', 'apple', 'island') else 'a'} {nouns[1]})" in m.value
               for m in at.markdown)


def test_automatic_label_is_shown_accepted_searched_and_summarised(monkeypatch, indexed_run, tiny_lm, tmp_path):
    import shutil

    from sae.labels.auto import LabelConfig, label_features
    from sae.labels.records import SAEKey
    from sae.labels.store import AnnotationStore
    from sae.runs.files import read_labels
    from sae.runs.load import load_sae

    root, run = indexed_run
    mine = tmp_path / "run"
    shutil.copytree(run, mine)  # the shared run stays unlabelled
    label_features(LabelConfig(run=str(mine), store=str(root / "acts-heldout"), progress=False), lm=tiny_lm)
    labels = read_labels(mine)
    f = next(i for i, r in labels.items() if r["label"] and r["f1"])
    at = _app(monkeypatch, root, tmp_path)
    at.query_params["run"] = str(mine)
    at.query_params["feature"] = str(f)
    at.switch_page("views/feature.py").run()
    assert not at.exception
    assert any(labels[f]["label"] in t.value for t in at.text)
    assert {m.label: m.value for m in at.metric}["F1"] == f"{labels[f]['f1']:.1%}"
    at.text_input(key="auto-who").input("ada").run()
    at.button(key="accept-auto").click().run()
    assert not at.exception
    key = SAEKey.from_sae(load_sae(mine))
    store = AnnotationStore(tmp_path / "ann.sqlite")
    ann = store.get(key, f)
    assert ann.label == labels[f]["short"] and ann.author == "auto (accepted by ada)"  # the store keeps both:
    assert ann.description.endswith(f"In full: {labels[f]['label']}")  # the short label, the full predicate
    assert any(labels[f]["short"] in m.value for m in at.markdown)
    store.delete(key, f, author="t")  # the search below must find the automatic label itself
    at.switch_page("views/search.py").run()
    at.radio(key="mode").set_value("label text").run()
    at.text_input(key="label").input(labels[f]["label"]).run()
    assert not at.exception and f in list(at.dataframe[0].value["feature"])
    shown = at.dataframe[0].value.set_index("feature").loc[f, "label"]
    assert shown == f"{labels[f]['short']} (automatic)"  # searched on the full predicate, shown short
    at.switch_page("views/overview.py").run()
    assert not at.exception
    assert any("Median detection balanced accuracy" in c.value and "random-direction" in c.value for c in at.caption)
    charts = [c.proto.spec for c in at.get("vega_lite_chart")]
    compared = [c for c in charts if '"facet"' in c and '"median"' in c]  # one row per SAE, medians marked
    assert len(compared) == 2 and all('"stack"' not in c for c in compared)


def _markdown(at) -> str:
    return " ".join(m.value for m in at.markdown)


def test_feature_page_shows_the_article_aligned_profile(monkeypatch, indexed_run, tmp_path):
    import shutil

    from sae.index.reader import FeatureIndex

    root, run = indexed_run
    index = FeatureIndex(run)
    f = int(index.array("fires").argmax())
    prof = index.feature(f).aligned
    assert prof is not None and sum(prof.articles["a"].n) > 0
    at = _app(monkeypatch, root, tmp_path)
    at.query_params["run"] = str(run)
    at.query_params["feature"] = str(f)
    at.switch_page("views/feature.py").run()
    assert not at.exception
    assert "When it turns on relative to the article" in _markdown(at)
    table = next(d.value for d in at.dataframe if "offset" in d.value.columns)
    assert table["offset"].tolist() == prof.offsets == list(range(-8, 3))
    assert table["n a"].tolist() == prof.articles["a"].n and table["fired an"].tolist() == prof.articles["an"].fired
    metrics = {m.label: m.value for m in at.metric}
    want = prof.onset_an_over_a
    assert metrics["onset: mean on 'an' above 'a'"] == ("never" if want is None else f"{want:+d}")
    # an index built before the profiles existed still opens, and the page says how to rebuild it
    old = tmp_path / "old-run"
    shutil.copytree(run, old)
    (old / "index" / "aligned.safetensors").unlink()
    import json

    m = json.loads((old / "index" / "manifest.json").read_text())
    del m["aligned"]
    (old / "index" / "manifest.json").write_text(json.dumps(m))
    at.query_params["run"] = str(old)
    at.run()
    assert not at.exception
    assert any(f"saex index {old} --force yes" in i.value for i in at.info)


def test_search_page_splits_a_word_and_explains_an_empty_result(monkeypatch, indexed_run, tmp_path, tiny_lm):
    from sae.index import search
    from sae.index.reader import FeatureIndex

    root, run = indexed_run
    index = FeatureIndex(run)
    word = next(w for w in (" astronomers", " stargazers", " telescopes", " xylophone")
                if len(tiny_lm.tokenizer.encode(w, add_special_tokens=False)) > 1)
    at = _app(monkeypatch, root, tmp_path)
    at.query_params["run"] = str(run)
    at.switch_page("views/search.py").run()
    at.text_input(key="token").input(word).run()
    assert not at.exception
    piece = search.first_piece(index, word, tokenizer=tiny_lm.tokenizer)
    assert any(i.value == piece.note for i in at.info), [i.value for i in at.info]
    hits = search.by_upcoming_token(index, piece.query, offset=1, top=25)
    if hits:
        assert at.dataframe[0].value["feature"].tolist() == [h.feature for h in hits]
    else:
        assert any(i.value == search.no_hits_sentence(index, piece.query, 1, 3) for i in at.info)
    at.number_input(key="offset").set_value(3).run()
    rare = next(t for t in range(index.vocab_size) if index.array("token_count")[3][t] == 0 and index.vocab[t].strip()
                and len(index.token_ids(index.vocab[t])) == 1)
    at.text_input(key="token").input(str(rare)).run()
    assert not at.exception
    assert any("never occurs at distance 3 after an indexed token" in i.value for i in at.info)
