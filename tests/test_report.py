"""One answer shape for every analysis (sae.report), read back from the shapes older reports stored."""

import json

import numpy as np
import pytest

from sae.report import Answer, Report


def test_answer_round_trips_and_reads_older_shapes():
    a = Answer("It is so.", ["one", "two"], "found", {"beats_random": True})
    assert Answer.from_dict(a.to_dict()) == a
    old_lookahead = {"lines": ["Behaviour ...", "Verdict: out of sample they remove 61%."], "gap_reliable": True}
    b = Answer.from_dict(old_lookahead)
    assert (b.verdict, b.lines, b.details) == ("out of sample they remove 61%.", ["Behaviour ..."],
                                              {"gap_reliable": True})
    old_finder = {"verdict": "none", "heading": "null: no feature fires", "lines": ["x"]}
    c = Answer.from_dict(old_finder)
    assert (c.verdict, c.label, c.lines) == ("null: no feature fires", "none", ["x"])
    assert Answer.from_dict(["a", "b"]).lines == ["a", "b"]
    assert Answer.from_dict(None).verdict == "no answer was recorded"
    assert a.text().splitlines() == ["It is so.", "", "- one", "- two"]


def test_a_report_is_its_json_document():
    r = Report("eval", {"x": 1, "answer": Answer("v", ["l"]).to_dict()}, "/tmp/eval.json")
    assert json.loads(json.dumps(r)) == dict(r) and r["x"] == 1
    assert (r.kind, str(r.path), r.answer.verdict) == ("eval", "/tmp/eval.json", "v")


def test_label_separation_is_the_mann_whitney_auc():
    from scipy.stats import mannwhitneyu

    from sae.labels.summary import separation

    rng = np.random.default_rng(0)
    real, control = rng.beta(2, 5, 300).round(2), rng.beta(1, 8, 250).round(2)  # rounding makes ties
    s = separation(real.tolist(), control.tolist())
    u = mannwhitneyu(real, control).statistic
    assert s["auc"] == pytest.approx(u / (len(real) * len(control)), rel=1e-12)
    assert s["ci"][0] < s["auc"] < s["ci"][1] and s["ci"][0] > 0.5
    same = separation(real.tolist(), real.tolist())
    assert same["auc"] == pytest.approx(0.5) and same["ci"][0] < 0.5 < same["ci"][1]


def _records(f1s):
    return [{"feature": i, "f1": f, "n_fired": 5, "label": "x" if f else None, "scorable": True,
             "detection": {"balanced_accuracy": 0.5 + f / 2}, "by_kind": {}} for i, f in enumerate(f1s)]


def test_the_labels_verdict_compares_with_the_random_control():
    from sae.labels.summary import labels_answer, variant_summary

    rng = np.random.default_rng(1)
    good, rand = _records(rng.beta(3, 4, 200).tolist()), _records(rng.beta(1, 9, 200).tolist())
    results = {"real": good, "random": rand}
    summary = {"labelled": 200, "d_sae": 200, "variants": {k: variant_summary(v) for k, v in results.items()}}
    a = Answer.from_dict(labels_answer(summary, results))
    assert a.label == "beats_control" and "random directions" in a.verdict
    results = {"real": good, "random": good}
    summary["variants"] = {k: variant_summary(v) for k, v in results.items()}
    assert Answer.from_dict(labels_answer(summary, results)).label == "not_separated"
    alone = labels_answer(summary, {"real": good})
    assert alone["label"] == "no_control"


def test_read_report_finds_each_analysis_by_kind(tmp_path):
    from sae.runs.files import EVAL_FILE, read_report, report_path

    assert read_report(tmp_path, "eval") is None
    (tmp_path / EVAL_FILE).write_text(json.dumps({"answer": Answer("fine").to_dict(), "l0": 32}))
    r = read_report(tmp_path, "eval")
    assert (r.kind, r.path, r["l0"], r.answer.verdict) == ("eval", tmp_path / EVAL_FILE, 32, "fine")
    (tmp_path / EVAL_FILE).write_text("{not json")
    assert read_report(tmp_path, "eval") is None  # damaged: the analysis runs again
    assert report_path(tmp_path, "lookahead") == tmp_path / "lookahead" / "report.json"
    with pytest.raises(ValueError, match="unknown report kind"):
        report_path(tmp_path, "nope")


def test_a_depth_report_of_another_format_is_not_read(tmp_path):
    from sae.lookahead.depth import REPORT_FILE, REPORT_FORMAT, read_depth_report

    assert read_depth_report(tmp_path) is None
    (tmp_path / REPORT_FILE).write_text(json.dumps({"format": REPORT_FORMAT - 1, "answer": Answer("old").to_dict()}))
    assert read_depth_report(tmp_path) is None  # an older sweep: run again, never read as the current one
    (tmp_path / REPORT_FILE).write_text(json.dumps({"format": REPORT_FORMAT, "answer": Answer("now").to_dict()}))
    r = read_depth_report(tmp_path)
    assert (r.kind, r.path, r.answer.verdict) == ("depth", tmp_path / REPORT_FILE, "now")
