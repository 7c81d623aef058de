"""The Streamlit app, driven by streamlit.testing.v1.AppTest: every page renders and its
widgets drive what is shown. (The real-browser test lives in test_browser.py.)"""

from pathlib import Path

import pytest

from tests.synthetic import planted_data, write_store

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")


@pytest.fixture(scope="module")
def run_root(tmp_path_factory):
    from training.config import TrainConfig
    from training.train import train

    root = tmp_path_factory.mktemp("checkpoints")
    x, _ = planted_data(16 * 128, d_in=16, n_features=32, k=3)
    store = write_store(root / "acts-train", x.reshape(16, 128, 16), shard_windows=8)
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
    assert metrics["hook point"] == "blocks.0.hook_resid_post"
    assert metrics["latents"] == "64 x 16" and metrics["architecture"] == "topk (k=4)"
    assert any(f"saex eval {run_root / 'sae'}" in c.value for c in at.code)  # not evaluated yet
    assert at.query_params["run"] in (str(run_root / "sae"), [str(run_root / "sae")])


def test_annotation_saved_in_the_app_lands_in_the_store_with_history(monkeypatch, run_root, tmp_path):
    from sae.annotations import AnnotationStore, SAEKey
    from sae.saes import load_sae

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
