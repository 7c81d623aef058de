"""Two runs of the same hook on two models (e.g. the base model and its planning organism), read side by
side: what each analysis answered on each, in the same rows. Pure reading of the stored reports; nothing
here runs a model. The explorer's Compare page and `saex demo --organism` lay these rows out."""

from __future__ import annotations

from pathlib import Path

from sae.lookahead.depth.answer import planned_lines
from sae.lookahead.finder.config import FIND_FORMAT
from sae.lookahead.finder.run import stored_reports
from sae.lookahead.organism.run import read_manifest
from sae.report import Answer
from sae.runs.catalogue import RunInfo
from sae.runs.files import DEPTH_DIR, FIND_DIR, read_report, read_report_file


def model_role(spec: str) -> str:
    """How a run's model relates to the tool's question: "planning organism", "shuffled-article organism"
    (the negative control) or "model" (anything that is not an organism made here)."""
    manifest = read_manifest(spec) if spec and Path(spec).expanduser().is_dir() else None
    if manifest is None:
        return "model"
    return "planning organism" if manifest.get("articles") == "noun" else "shuffled-article organism"


def comparable_runs(run: RunInfo, runs: list[RunInfo]) -> list[RunInfo]:
    """Runs that read the same hook (name and width) of another model: what `run` can be compared with.
    Organisms made from `run`'s model come first."""
    def d_in(r: RunInfo):
        return r.cfg.get("d_in")

    same = [r for r in runs if r.path != run.path and r.hook_name == run.hook_name and d_in(r) == d_in(run)
            and r.model != run.model]

    def made_from_this(r: RunInfo) -> bool:
        manifest = read_manifest(r.model) if Path(r.model).expanduser().is_dir() else None
        return bool(manifest) and manifest.get("settings", {}).get("model") == run.model
    return sorted(same, key=lambda r: (not made_from_this(r), str(r.path)))


def runs_at_other_hooks(run: RunInfo, runs: list[RunInfo]) -> list[RunInfo]:
    """Runs of `run`'s own model at other hooks that do have a run of another model to compare with (e.g. the
    base run that `saex demo --organism` makes at the organism's layer, seen from the demo's own run)."""
    return [r for r in runs if r.path != run.path and r.model == run.model and r.hook_name != run.hook_name
            and comparable_runs(r, runs)]


def _fmt(v, pattern: str = "{:.2f}") -> str:
    return "—" if v is None else pattern.format(v)


def _ci(ci, pattern: str = "{:.2f}") -> str:
    return "" if not ci or ci[0] is None else f" ({pattern.format(ci[0])} to {pattern.format(ci[1])})"


def _lookahead_cells(r: dict | None) -> dict[str, str]:
    if r is None:
        return {}
    causal, test = r["causal"], r["behaviour"].get(r["causal"].get("set", "test"), {})
    abl, rnd = causal["ablation"], causal["random"]
    gap = test.get("gap", {})
    err = (causal.get("error_term") or {}).get("edited_positions") or {}
    cells = {
        "verdict": Answer.from_dict(r["answer"]).verdict,
        "behaviour gap, logit(an) − logit(a), an- minus a-nouns": _fmt(gap.get("value")) + _ci(gap.get("ci")),
        "right article preferred": _fmt(test.get("right_article_preferred"), "{:.0%}"),
        "gap removed by the chosen features": _fmt(abl["fraction_removed"], "{:.0%}")
                                              + _ci(abl.get("fraction_ci"), "{:.0%}"),
        "density-matched random sets remove": _fmt(rnd.get("fraction_removed_mean"), "{:.1%}")
                                              + f" (z = {_fmt(rnd.get('z'), '{:.1f}')}, "
                                                f"p = {_fmt(rnd.get('p_permutation'), '{:.3f}')})",
        "ΔP(noun | article)": _fmt(abl.get("delta_p_noun"), "{:+.4f}"),
    }
    if err.get("fraction_removed") is not None:
        cells["the SAE's error term set to its mean removes"] = (_fmt(err["fraction_removed"], "{:.0%}")
                                                                  + _ci(err.get("fraction_ci"), "{:.0%}"))
    return cells


def _pair(ca: dict[str, str], cb: dict[str, str]) -> list[dict]:
    """{"measure", "a", "b"} per measure of either side, in order ("—" where a side lacks it)."""
    return [{"measure": k, "a": ca.get(k, "—"), "b": cb.get(k, "—")} for k in dict.fromkeys([*ca, *cb])]


def lookahead_rows(a: dict | None, b: dict | None) -> list[dict]:
    """One row per measure of the two lookahead reports."""
    return _pair(_lookahead_cells(a), _lookahead_cells(b))


def dose_rows(reports: dict[str, dict | None]) -> list[dict]:
    """The lookahead's dose-response of each report, long form: model, dose, features (chosen or random,
    the mean over the random sets), gap."""
    rows = []
    for name, r in reports.items():
        dr = (r or {}).get("dose_response")
        if not dr:
            continue
        rows += [{"model": name, "dose": d, "features": "chosen", "gap": g}
                 for d, g in zip(dr["doses"], dr["selected"]["gap"])]
        sets = [s["gap"] for s in dr.get("random") or []]
        if sets:
            rows += [{"model": name, "dose": d, "features": "random (mean of sets)",
                      "gap": sum(s[j] for s in sets) / len(sets)} for j, d in enumerate(dr["doses"])]
    return rows


def finder_words(*runs: str | Path) -> list[str]:
    """Words with a stored finder answer in any of the runs, alphabetically."""
    words = set()
    for run in runs:
        if not (Path(run) / FIND_DIR).is_dir():
            continue
        for path in stored_reports(run):
            rep = read_report_file(path, "find", FIND_FORMAT)
            if rep is not None and isinstance(rep.get("word"), str):
                words.add(rep["word"])
    return sorted(words, key=str.lower)


def _finder_cells(r: dict | None) -> dict[str, str]:
    from sae.lookahead.finder.answer import power_line

    if r is None:
        return {}
    ctx, check = r["contexts"], r["design"]["check"]
    cands = {c["feature"]: c for c in r["candidates"]}
    confirmed = [f for f in check["tested"] if cands[f]["confirmed"]]
    beh = r.get("behaviour") or {}
    first = next(iter(beh.values()), None)
    cells = {
        "verdict": Answer.from_dict(r["answer"]).verdict,
        "contexts (independent sources; held out)": f"{ctx['n']} ({ctx['clusters']}; {ctx['check_clusters']})",
        "features confirmed on held-out sources": ", ".join(f"#{f}" for f in confirmed) or "none",
        "smallest held-out p": _fmt(min((cands[f]["confirmation"]["p"] for f in check["tested"]
                                         if cands[f]["confirmation"]), default=None), "{:.3g}"),
        "power": power_line(r) or "—",
    }
    if first is not None:
        cells[f"P({r['article']}) on the word's contexts ({next(iter(beh))})"] = _fmt(first["p_article"]["mean"])
        cells["P(word | article)"] = _fmt(first["p_word_given_article"]["mean"], "{:.3f}")
    return cells


def finder_rows(a: dict | None, b: dict | None) -> list[dict]:
    """One row per measure of two finder answers for the same word."""
    return _pair(_finder_cells(a), _finder_cells(b))


def depth_report(run: str | Path):
    """RUN/depth's report (`saex depth --run RUN`), None when there is none."""
    from sae.lookahead.depth.run import read_depth_report

    return read_depth_report(Path(run) / DEPTH_DIR)


def depth_rows(a: dict | None, b: dict | None) -> list[dict]:
    """The two depth answers side by side: the verdict, the planned-or-baked-in sentence, then per swept layer
    the logit-lens gap and the article probe's held-out accuracy at -1."""
    def cells(r):
        if r is None:
            return {}
        out = {"verdict": Answer.from_dict(r["answer"]).verdict}
        words = [line for line in planned_lines(r) if line.startswith("In words")]
        if words:
            out["planned or baked in"] = words[0].removeprefix("In words: ")
        for L in r["layers"]:
            lens = r["lens"].get(str(L), {})
            out[f"layer {L}: logit-lens gap at −1"] = _fmt(lens.get("value")) + _ci(lens.get("ci"))
            probe = r["article_probe"].get(str(L), {}).get("-1")
            if probe:
                out[f"layer {L}: article probe accuracy at −1 (shuffled control)"] = (
                    f"{probe['accuracy']:.2f} ({probe['control_mean']:.2f})")
        return out
    return _pair(cells(a), cells(b))


def lookahead_report(run: str | Path):
    """RUN/lookahead's report, None when there is none."""
    return read_report(run, "lookahead")
