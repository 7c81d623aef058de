"""Not collected by pytest (no test_ prefix): bench/same_reports.py copies it into two
versions of the code and runs it there, to compare the reports and stores they write.
Writes, under $SNAP: reports/{lookahead,depth,find-owl}.json and stores/{single,multi}/."""

import os
import shutil
from pathlib import Path

from saex.cli import main
from tests.conftest import make_sentences
from tests.helpers import write_prompts
from tests.test_lookahead import SELECT_PROMPTS, TEST_PROMPTS, run_dir  # noqa: F401  (a fixture)
from tests.test_lookahead_depth import _prompt_file
from tests.test_lookahead_finder import owl_corpus, planner_lm, planted  # noqa: F401  (fixtures)

SNAP = Path(os.environ.get("SNAP", "snapshot"))


def test_snapshot(run_dir, tiny_model_dir, text_corpus, tiny_lm, planted, owl_corpus, tmp_path):  # noqa: F811
    from sae.data.harvest import HarvestConfig, harvest

    reports = SNAP / "reports"
    reports.mkdir(parents=True, exist_ok=True)
    sel, test = write_prompts(tmp_path / "s.jsonl", SELECT_PROMPTS), write_prompts(tmp_path / "t.jsonl", TEST_PROMPTS)
    assert main(["lookahead", str(run_dir), "--model", str(tiny_model_dir), "--select-prompts", str(sel),
                 "--test-prompts", str(test), "--corpus", str(text_corpus), "--corpus-occurrences", "4",
                 "--n-features", "3", "--n-candidates", "8", "--random-sets", "20", "--bootstrap", "200",
                 "--profile-before", "4", "--out", str(tmp_path / "la"), "--progress", "no", "--device", "cpu"]) == 0
    shutil.copy(tmp_path / "la" / "report.json", reports / "lookahead.json")
    _prompt_file(tmp_path / "p.jsonl", tiny_lm.tokenizer)
    assert main(["depth", "--run", str(run_dir), "--model", str(tiny_model_dir), "--layers", "0,2",
                 "--prompts", str(tmp_path / "p.jsonl"), "--out", str(tmp_path / "d"), "--random-directions", "20",
                 "--sae-features", "3", "--progress", "no", "--device", "cpu"]) == 0
    shutil.copy(tmp_path / "d" / "report.json", reports / "depth.json")
    assert main(["find", "owl", str(planted), "--corpus", str(owl_corpus), "--definitions", "no", "--chat", "no",
                 "--corpus-contexts", "30", "--controls-per-article", "16", "--top", "5", "--causal-features", "3",
                 "--bootstrap", "200", "--progress", "no", "--device", "cpu", "--force"]) == 0
    found = [p for p in (Path(planted) / "find").glob("owl-*.json")]
    assert len(found) == 1
    (reports / "find-owl.json").write_text(found[0].read_text())
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(make_sentences(400)))
    for name, layer in (("single", "1"), ("multi", "0,2")):
        harvest(HarvestConfig(out=str(SNAP / "stores" / name), model=str(tiny_model_dir), corpus=str(corpus),
                              split="train", tokens=4096, context_size=32, shard_windows=16, storage_dtype="fp32",
                              precision="fp32", device="cpu", progress=False, layer=layer), lm=tiny_lm)
