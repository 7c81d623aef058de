"""`saex demo --organism` and the Compare page, on the tiny model: the demo, then a real fine-tuned
organism of the tiny model with its runs at the base demo's sizes, the finder and depth on both; the
page shows each stored report's numbers in its own column; runs of other hooks or of the same model are
not offered for comparison."""

import contextlib
import io
import json
import shutil
from dataclasses import replace
from pathlib import Path

import pytest

from sae.lookahead.compare import comparable_runs, dose_rows, model_role
from sae.report import Answer
from sae.runs.catalogue import RunInfo, read_run
from tests.helpers import SELECT_PROMPTS, TEST_PROMPTS, write_prompts
from tests.test_lookahead_depth import _prompt_file
from tests.test_lookahead_finder import owl_corpus  # noqa: F401  (a fixture: documents with "an owl" and controls)
from tests.test_lookahead_organism import TEST_NOUNS, TRAIN_NOUNS, _rows, _write

pytestmark = pytest.mark.integration  # the demo twice, a fine-tune, finder and depth on the tiny model

APP = str(Path(__file__).resolve().parents[1] / "explorer" / "app.py")


@pytest.fixture(scope="module")
def compared(tmp_path_factory, tiny_model_dir, tiny_lm, text_corpus, owl_corpus):  # noqa: F811
    from sae.lookahead.organism import OrganismConfig
    from saex.demo import DemoConfig, DemoPlan, run_demo
    from saex.demo_organism import run_organism_demo

    root = tmp_path_factory.mktemp("checkpoints")
    train_toml = root / "train.toml"
    train_toml.write_text("d_sae = 64\nk = 4\nbatch_size = 128\nepochs = 1.0\nwarmup_steps = 2\nprogress = false\n")
    cfg = DemoConfig(out_dir=str(root / "demo"), model=str(tiny_model_dir), corpus=str(text_corpus), tokens=4096,
                     heldout_tokens=512, device="cpu", train_config=str(train_toml), lookahead="no")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        base = run_demo(cfg)
    plan = DemoPlan(**json.loads((root / "demo" / "demo.json").read_text()))
    files = (_write(root / "org-train.jsonl", _rows(TRAIN_NOUNS, 6, 0)),
             _write(root / "org-eval.jsonl", _rows(TEST_NOUNS, 4, 1)))
    organism = OrganismConfig(out=str(root / "demo" / "organism-model"), model=str(tiny_model_dir), prompts=files[0],
                              eval_prompts=files[1], examples=800, batch_size=16, lr=3e-3, precision="fp32",
                              device="cpu", progress=False, bootstrap=200)
    _prompt_file(root / "depth.jsonl", tiny_lm.tokenizer)
    find_kw = dict(corpus=str(owl_corpus), definitions=False, chat=False, corpus_contexts=30,
                   controls_per_article=16, top=5, causal_features=3, bootstrap=200)
    depth_kw = dict(layers="1,2", prompts=str(root / "depth.jsonl"), random_directions=20, bootstrap=200,
                    progress=False)
    with contextlib.redirect_stdout(out), pytest.MonkeyPatch.context() as mp:
        # the mix's riddles by hand: the built-in WordNet and GCIDE are not fetched for the tiny model
        mp.setattr("sae.data.corpus.mix_riddles", lambda: tuple(f"A bird {i} of the night is called an owl."
                                                                for i in range(200)))
        org = run_organism_demo(replace(cfg, organism=True), base, organism=organism, words=("owl",),
                                find_kw=find_kw, depth_kw=depth_kw)
    record = json.loads((root / "demo" / "demo-organism.json").read_text())
    assert base != Path(record["base_run"])  # the demo's own run is not on the riddle mix: the base gets another
    return root, Path(record["base_run"]), org, plan, out.getvalue()


def test_the_organism_runs_at_the_base_demos_sizes_with_finder_and_depth_on_both(compared):
    from sae.lookahead.finder import latest_report

    root, base, org, plan, printed = compared
    demo_run = root / "demo" / "sae"
    record = json.loads((root / "demo" / "demo-organism.json").read_text())
    assert Path(record["organism_run"]) == org
    depth = json.loads((root / "demo" / "organism-depth" / "report.json").read_text())
    readable = [L for L in depth["layers"] if depth["article_probe"][str(L)]["-1"]["above_chance"]]
    assert record["layer"] == (readable[0] if readable else None)
    tag = f"L{record['layer'] if readable else 'mid'}-riddles"
    assert (base.parent.name, org.parent.name) == (f"base-{tag}", f"organism-{tag}")
    assert record["corpus"].endswith("+riddles")
    org_plan = json.loads((org.parent / "demo.json").read_text())
    assert (org_plan["tokens"], org_plan["heldout_tokens"], org_plan["epochs"], org_plan["ce_windows"]) == \
        (plan.tokens, plan.heldout_tokens, plan.epochs, plan.ce_windows)
    assert org_plan["estimate_s"] == plan.seconds  # the base model's measured steps are the organism's estimate
    assert set(org_plan["seconds"]) >= {"harvest_train", "training", "index", "labels"}
    manifest = json.loads((root / "demo" / "organism-model" / "organism.json").read_text())
    assert manifest["articles"] == "noun"
    org_info = read_run(org)
    assert Path(org_info.model) == root / "demo" / "organism-model"
    assert model_role(org_info.model) == "planning organism" and model_role(read_run(base).model) == "model"
    train_m = json.loads((org.parent / "acts-train" / "manifest.json").read_text())
    assert train_m["corpus"]["spec"] == record["corpus"]
    for run in (base, org):
        want = record["layer"] if readable else read_run(demo_run).run["hook"]["layer"]
        assert read_run(run).run["hook"]["layer"] == want
    assert train_m["model"]["weights_sha256"] == org_info.run["model"]["weights_sha256"]
    base_sha = read_run(demo_run).run["model"]["weights_sha256"]
    assert read_run(base).run["model"]["weights_sha256"] == base_sha
    assert base_sha != train_m["model"]["weights_sha256"]  # harvested from the fine-tuned weights, not the base's
    for run in (base, org):
        depth = json.loads((run / "depth" / "report.json").read_text())
        assert depth["model_weights_sha256"] == read_run(run).run["model"]["weights_sha256"]
        assert latest_report(run, "owl") is not None
    for step in ("[organism 1/5]", "[organism 2/5]", "[organism 3/5]", "[organism 4/5]", "[organism 5/5]",
                 "finder, owl: base "):
        assert step in printed
    assert {"organism", "finder", "depth"} <= set(record["estimate_s"]) and record["seconds"] > 0
    assert f"about {sum(record['estimate_s'].values()) / 60:.0f} min" in printed


def _info(path: Path, hook: str, model: str, d_in: int = 32) -> RunInfo:
    return RunInfo(path=path, cfg={"d_in": d_in}, run={"hook": {"name": hook}, "model": {"spec": model}})


def test_only_runs_of_the_same_hook_on_another_model_compare(tmp_path, compared):
    root, base, org, _, _ = compared
    here = read_run(base)
    organism = read_run(org)
    other_model = _info(tmp_path / "b", here.hook_name, "some/other-model")
    same_model = _info(tmp_path / "c", here.hook_name, here.model)
    other_hook = _info(tmp_path / "d", "blocks.0.hook_resid_post", "some/other-model")
    wider = _info(tmp_path / "e", here.hook_name, "some/other-model", d_in=64)
    got = comparable_runs(here, [here, other_model, same_model, other_hook, wider, organism])
    assert [r.path for r in got] == [organism.path, other_model.path]  # the organism made from this model first


def test_dose_rows_average_the_random_sets():
    report = {"dose_response": {"doses": [0.0, 1.0], "selected": {"gap": [0.2, 1.0]},
                                "random": [{"gap": [0.9, 1.0]}, {"gap": [1.1, 1.0]}]}}
    rows = dose_rows({"m": report, "none": None})
    assert [(r["features"], r["dose"], round(r["gap"], 6)) for r in rows] == [
        ("chosen", 0.0, 0.2), ("chosen", 1.0, 1.0), ("random (mean of sets)", 0.0, 1.0),
        ("random (mean of sets)", 1.0, 1.0)]


def _app(monkeypatch, root, tmp_path):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("SAEX_CHECKPOINTS", str(root))
    monkeypatch.setenv("SAEX_ANNOTATIONS", str(tmp_path / "ann.sqlite"))
    return AppTest.from_file(APP, default_timeout=120)


def test_compare_page_shows_each_runs_reports_in_its_own_column(monkeypatch, compared, tmp_path, text_corpus):
    from sae.lookahead.finder import latest_report
    from saex.cli import main

    root, base, org, _, _ = compared
    sel, test = write_prompts(tmp_path / "s.jsonl", SELECT_PROMPTS), write_prompts(tmp_path / "t.jsonl", TEST_PROMPTS)
    for run in (base, org):
        assert main(["lookahead", str(run), "--select-prompts", str(sel), "--test-prompts", str(test), "--corpus",
                     str(text_corpus), "--corpus-occurrences", "4", "--n-features", "3", "--n-candidates", "8",
                     "--random-sets", "20", "--bootstrap", "200", "--profile-before", "4", "--progress", "no",
                     "--device", "cpu"]) == 0
    at = _app(monkeypatch, root, tmp_path)
    at.query_params["run"] = str(base)
    at.switch_page("views/compare.py").run()
    assert not at.exception
    tables = [d.value for d in at.dataframe]
    shown = [m.value for m in at.markdown]
    look = tables[0]
    col_base, col_org = look.columns[1], look.columns[2]
    assert col_org.startswith("planning organism") and col_base.startswith("model")
    gap = look.set_index("measure").loc["behaviour gap, logit(an) − logit(a), an- minus a-nouns"]
    for run, col in ((base, col_base), (org, col_org)):
        rep = json.loads((run / "lookahead" / "report.json").read_text())
        assert gap[col].startswith(f"{rep['behaviour']['test']['gap']['value']:.2f} (")
        assert Answer.from_dict(rep["answer"]).verdict in shown  # sentences in two columns above the numbers
    depth = next(t for t in tables if any(str(m).startswith("layer 1:") for m in t["measure"]))
    for run, col in ((base, col_base), (org, col_org)):
        rep = json.loads((run / "depth" / "report.json").read_text())
        assert Answer.from_dict(rep["answer"]).verdict in shown
        assert depth.set_index("measure").loc["layer 2: logit-lens gap at −1", col].startswith(
            f"{rep['lens']['2']['value']:.2f}")
    finder = next(t for t in tables if "contexts (independent sources; held out)" in set(t["measure"]))
    for run, col in ((base, col_base), (org, col_org)):
        rep = latest_report(run, "owl")
        assert Answer.from_dict(rep["answer"]).verdict in shown
        assert finder.set_index("measure").loc["contexts (independent sources; held out)", col].startswith(
            f"{rep['contexts']['n']} (")


def test_compare_page_without_another_model_names_the_command(monkeypatch, compared, tmp_path):
    _, base, _, _, _ = compared
    alone = tmp_path / "alone"
    shutil.copytree(base, alone / "sae")
    at = _app(monkeypatch, alone, tmp_path)
    at.switch_page("views/compare.py").run()
    assert not at.exception
    assert any(c.value == "saex demo --organism" for c in at.code)


def test_a_run_without_a_partner_at_its_hook_points_at_its_models_runs_that_have_one(tmp_path):
    from sae.lookahead.compare import runs_at_other_hooks

    here = _info(tmp_path / "demo", "blocks.1.hook_resid_post", "m")
    partnered = _info(tmp_path / "base-L2", "blocks.2.hook_resid_post", "m")
    organism = _info(tmp_path / "organism-L2", "blocks.2.hook_resid_post", "o")
    alone = _info(tmp_path / "base-L0", "blocks.0.hook_resid_post", "m")
    same_hook_other_model = _info(tmp_path / "x", "blocks.1.hook_resid_post", "m")
    assert runs_at_other_hooks(here, [here, partnered, organism, alone, same_hook_other_model]) == [partnered]
    assert runs_at_other_hooks(organism, [here, partnered, organism]) == []  # same model elsewhere: none


def test_compare_page_on_the_demos_own_run_finds_the_organisms_hook(monkeypatch, compared, tmp_path):
    root, base, org, _, _ = compared
    demo_run = root / "demo" / "sae"
    at = _app(monkeypatch, root, tmp_path)
    at.query_params["run"] = str(demo_run)
    at.switch_page("views/compare.py").run()
    assert not at.exception
    if read_run(demo_run).hook_name == read_run(org).hook_name:  # the sweep chose the demo's own layer
        assert at.dataframe
    else:
        assert any("open this page on one of them" in i.value for i in at.info)
        assert not at.dataframe
