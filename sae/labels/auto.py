"""Automatic, testable feature labels (`saex label RUN` -> RUN/labels.jsonl, RUN/labels_summary.json).

For every feature, an explainer proposes candidate labels, each an executable predicate
(`sae.labels.predicates`) over the proposal half of the held-out store (`sae.labels.heldout`:
split by document); the best candidate by its proposal-half score (`select`: delphi
detection balanced accuracy on training windows, or token-level F1) becomes the label, and
the best of every kind is kept too. All reported figures are counted on the scoring half
only (`sae.labels.detection`): delphi's detection scores on 50 activating windows drawn
across activation deciles and 50 random quiet ones, and token-level precision, recall, F1.

The same pipeline labels two control SAEs (`sae.labels.controls`): a random-direction copy
(the baseline of every kind) and a decoder-shuffled copy (the baseline of output-side
labels). labels_summary.json records all three distributions.

An LLM explainer behind an OpenAI-compatible endpoint (`--explainer openai:URL/MODEL`,
`sae.labels.llm`) explains a seeded sample of features from their proposal-half windows and
scores its explanation by delphi's detection prompt on the same held-out windows.

Resumable: finished features are appended to RUN/labels.partial/VARIANT.jsonl in chunks; a
killed run continues from there (same settings), and draws depend only on (seed, feature),
so the result equals an uninterrupted run's.
"""
from __future__ import annotations

import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

from sae.data.store import MANIFEST_FILE, ActivationStore
from sae.errors import SaexError
from sae.fsutil import sha256_file, write_json_atomic
from sae.labels.config import LabelConfig  # noqa: F401  (the public names stay importable from here)
from sae.labels.controls import control_sae, decoder_shuffled_sae
from sae.labels.heldout import Firings, encode_firings
from sae.labels.labeller import FeatureLabeller, _separator, boosted_tokens, build_context  # noqa: F401
from sae.labels.predicates import Predicate
from sae.labels.propose import Explainer, StatisticalExplainer
from sae.labels.resume import PARTIAL_DIR, _partial, label_variant, run_variants  # noqa: F401
from sae.labels.summary import labels_answer, variant_summary
from sae.report import Report
from sae.runs.files import LABELS_FILE, LABELS_SUMMARY_FILE
from sae.runs.load import LoadedSAE

LABELS_FORMAT = 3


def label_sae(sae: LoadedSAE, store: ActivationStore, cfg: LabelConfig, vocab: list[str], lm=None,
              explainer: Explainer | None = None, timings: dict | None = None) -> list[dict]:
    """Every feature's record for one SAE, in this process (no controls, no files).
    `timings`, when given, receives the seconds of each stage."""
    t0 = time.perf_counter()
    ctx = build_context(store, vocab, cfg, _separator(lm))
    t1 = time.perf_counter()
    firings = encode_firings(sae, store, ctx.split, cfg.chunk_tokens, progress=False)
    t2 = time.perf_counter()
    labeller = FeatureLabeller(ctx, firings, boosted_tokens(sae, lm, cfg.boosted), cfg,
                               explainer or StatisticalExplainer(cfg.max_values, cfg.max_positions))
    out = label_variant(labeller, sae.d_sae, None, "real", cfg.progress)
    if timings is not None:
        timings.update(context=t1 - t0, encode=t2 - t1, label=time.perf_counter() - t2)
    return out


# --------------------------------------------------------------------------- files


def read_summary(run: str | Path) -> Report | None:
    """RUN/labels_summary.json as a `Report`, None when there is none."""
    from sae.runs.files import read_report

    return read_report(run, "labels")


def _key(cfg: LabelConfig, sae: LoadedSAE, store: ActivationStore, lm) -> str:
    doc = {"format": LABELS_FORMAT, "sae": sae.content_hash, "store": sha256_file(store.path / MANIFEST_FILE),
           "model": getattr(lm, "weights_sha256", None), "settings": cfg.content()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def label_features(cfg: LabelConfig, sae: LoadedSAE | None = None, lm=None,
                   explainer: Explainer | None = None) -> Report:
    """Label every feature of cfg.run (and, with cfg.control, of the two controls); write
    RUN/labels.jsonl and RUN/labels_summary.json (last: it marks the labels complete).
    A complete pair with the same key is reused unless cfg.force; a killed run resumes
    from RUN/labels.partial. Returns the summary (a `Report`; its path is labels_summary.json's)."""
    from sae.data.models import load_model
    from sae.fsutil import atomic_path
    from sae.index.tables import vocab_strings
    from sae.runs.load import load_sae, resolve_run
    from sae.runs.stores import check_store, default_heldout_store

    t0 = time.perf_counter()
    run = Path(resolve_run(cfg.run))
    sae = sae or load_sae(run, device="cpu")
    store = ActivationStore(cfg.store or default_heldout_store(sae))
    for w in check_store(sae, store):
        print(f"warning: {w}", file=sys.stderr)
    llm = None
    if cfg.explainer:
        from sae.labels.llm import OpenAIExplainer

        llm = OpenAIExplainer.from_spec(cfg.explainer)
    lm = lm or load_model(cfg.model or store.manifest["model"]["spec"], device="cpu")
    key = _key(cfg, sae, store, lm)
    spath = run / LABELS_SUMMARY_FILE
    old = read_summary(run)
    if old and old.get("key") == key and (run / LABELS_FILE).exists() and not cfg.force:
        print(f"labels {run / LABELS_FILE} are already complete", file=sys.stderr)
        return Report("labels", old, spath)
    if cfg.force:
        shutil.rmtree(run / PARTIAL_DIR, ignore_errors=True)
    partial = _partial(run, key)
    V = int(lm.model.get_output_embeddings().weight.shape[0])
    vocab = vocab_strings(lm, V)
    ctx = build_context(store, vocab, cfg, _separator(lm))
    seconds: dict[str, float] = {"context": time.perf_counter() - t0}
    firings: dict[str, Firings] = {}
    saes = {"real": sae}
    if cfg.control:
        saes["random"] = control_sae(sae, cfg.seed)
        saes["shuffled"] = decoder_shuffled_sae(sae, cfg.seed)
    labellers = {}
    for name, s in saes.items():
        t = time.perf_counter()
        # the decoder-shuffled copy has the trained encoder: its firings are the real SAE's
        if name == "shuffled":
            firings[name] = firings["real"]
        else:
            firings[name] = encode_firings(s, store, ctx.split, cfg.chunk_tokens, progress=False)
        labellers[name] = FeatureLabeller(ctx, firings[name], boosted_tokens(s, lm, cfg.boosted), cfg,
                                          explainer or StatisticalExplainer(cfg.max_values, cfg.max_positions))
        seconds[f"encode_{name}"] = time.perf_counter() - t
    t = time.perf_counter()
    results = run_variants(labellers, sae.d_sae, partial, cfg.progress)
    seconds["label"] = time.perf_counter() - t
    llm_summary = None
    if llm is not None:
        from sae.labels.llm_labels import llm_label

        t = time.perf_counter()
        llm_summary = llm_label(llm, ctx, firings, results, cfg, partial)
        seconds["llm"] = time.perf_counter() - t
    real = results["real"]
    try:
        with atomic_path(run / LABELS_FILE) as tmp:
            Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in real))
        summary = {
            "format": LABELS_FORMAT, "key": key, "d_sae": sae.d_sae,
            "labelled": variant_summary(real)["labelled"],
            "unlabelled": sae.d_sae - variant_summary(real)["labelled"],
            "variants": {name: variant_summary(recs) for name, recs in results.items()},
            "llm": llm_summary,
            "store": {"path": str(store.path), "n_windows": store.n_windows, "context_size": store.context_size},
            "split": {"rule": f"window w scores when (w // {cfg.split_block}) % 2 == 1, else it proposes; in the "
                              "first window after each block boundary the positions up to the first blank-line "
                              "separator (a document's tail) belong to neither half",
                      "what_is_held_out": "proposal statistics, training windows and the choice of each label use "
                                          "the proposal half only; every reported score is counted on the scoring "
                                          "half only"},
            "scores": {"detection": f"delphi detection: {cfg.per_decile} activating windows of {ctx.split.example_len} "
                                    f"tokens per activation decile and {cfg.non_activating} random quiet ones; the "
                                    "label predicts 'active' where its predicate holds at some position",
                       "token": "predicate = prediction, firing (activation > 0) = truth, over usable positions"},
            "controls": {"random": "random Gaussian encoder columns and decoder rows of the same norms, biases kept",
                         "shuffled": "trained encoder, decoder rows permuted among the latents: input-side labels "
                                     "score as the SAE's by construction; the control for boosts_output"},
            "explainer": type(explainer or StatisticalExplainer()).__name__,
            "settings": cfg.content(), "seconds": seconds | {"total": time.perf_counter() - t0},
        }
        summary["answer"] = labels_answer(summary, results)
        write_json_atomic(spath, summary)
    except OSError as e:
        raise SaexError(f"could not write the labels of {run}: {e.strerror or e}",
                        "free disk space or fix permissions, then rerun") from None
    shutil.rmtree(run / PARTIAL_DIR, ignore_errors=True)
    return Report("labels", summary, spath)


def short_label(record: dict) -> str:
    """A labels.jsonl record's one-line label (`short`; records written before it existed: the full one)."""
    return record.get("short") or record.get("label") or ""


def accept_label(store, key, record: dict, name: str, expected_version: int | None = None):
    """Write an automatic label (a labels.jsonl record) as a normal annotation of `store`
    (an AnnotationStore), authored "auto (accepted by NAME)", its predicate as the claim
    when it is one (fires_before / boosts_output), its held-out scores in the description;
    the store's history keeps who accepted what. Returns the live annotation."""
    from sae.labels.records import check_text

    name = check_text(name, "the name of who accepts the label").strip()
    if not record.get("label") or not record.get("predicate"):
        raise SaexError(f"feature {record.get('feature')} has no automatic label to accept",
                        "write a label by hand instead")
    pred = Predicate.from_json(record["predicate"])

    def fmt(v):
        return "n/a" if v is None else f"{v:.2f}"

    det = record.get("detection") or {}
    desc = (f"Automatic label, scored on held-out text: detection balanced accuracy "
            f"{fmt(det.get('balanced_accuracy'))}; token-level F1 {fmt(record.get('f1'))}, precision "
            f"{fmt(record.get('precision'))}, recall {fmt(record.get('recall'))}; predicate "
            f"{json.dumps(record['predicate'])}. In full: {record['label']}")
    store.set(key, int(record["feature"]), label=short_label(record), author=f"auto (accepted by {name})",
              description=desc, tags=["auto"], claim=pred.claim(), expected_version=expected_version)
    return store.get(key, int(record["feature"]))
