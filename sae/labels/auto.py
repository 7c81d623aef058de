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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from sae.data.store import ActivationStore
from sae.errors import SaexError
from sae.fsutil import sha256_file, write_json_atomic
from sae.labels.controls import control_sae, decoder_shuffled_sae
from sae.labels.detection import draw, feature_rng, firings_in, fuzz_sample
from sae.labels.heldout import PROPOSE, SCORE, Firings, Split, encode_firings, split_positions
from sae.labels.positions import PositionTable
from sae.labels.predicates import COMPOUND, Predicate
from sae.labels.propose import (
    Candidates,
    Explainer,
    FeatureEvidence,
    StatisticalExplainer,
    best_prefix,
    family_candidates,
    make_predicate,
)
from sae.labels.scoring import PredicateScorer
from sae.labels.summary import distribution, labels_line, variant_summary  # noqa: F401  (labels_line: CLI, demo)
from sae.runs.files import LABELS_FILE, LABELS_SUMMARY_FILE
from sae.runs.load import LoadedSAE

LABELS_FORMAT = 2
PARTIAL_DIR = "labels.partial"
REFINE_FAMILIES = ("next_noun", "lexname", "class@0", "class@1")
"""Broad families that narrow a feature's most frequent token into an 'and' label."""
VARIANTS = ("real", "random", "shuffled")


@dataclass
class LabelConfig:
    """Label every feature of an SAE run automatically with a testable predicate, scored on held-out text."""

    run: str = ""
    """Run folder of the SAE; the labels go to RUN/labels.jsonl and RUN/labels_summary.json."""
    store: str | None = None
    """Held-out activation store; default: the run's training store with -train in its name replaced by -heldout."""
    model: str | None = None
    """Model for token strings and output effects; default: the model the store was harvested from."""
    candidates: int = 40
    """Values (tokens, n-grams, categories, ...) of each family considered for one label."""
    max_values: int = 16
    """Most values in one label."""
    max_positions: int = 3
    """Most window positions in one position label."""
    boosted: int = 10
    """Most-boosted output tokens considered for a boosts_output label."""
    min_count: int = 2
    """A value needs this many firings beside it in the proposal half to enter a label."""
    split_block: int = 8
    """Windows per block of the proposal/scoring split (even blocks propose, odd ones score)."""
    example_len: int = 32
    """Tokens per example window of detection scoring (delphi's default)."""
    per_decile: int = 5
    """Activating windows drawn per activation decile for detection scoring (delphi: 50 in all)."""
    non_activating: int = 50
    """Random windows where the feature is quiet, for detection scoring."""
    train_per_decile: int = 30
    """Activating windows per decile of the proposal half that labels are grown and chosen on."""
    train_non_activating: int = 300
    """Quiet windows of the proposal half that labels are grown and chosen on."""
    min_precision: float = 0.7
    """A value enters a label only if the feature fires at least this share of the times it occurs (proposal half)."""
    select: Literal["detection", "f1"] = "detection"
    """How the label is chosen among the candidates, on the proposal half: detection balanced accuracy or token F1."""
    conjunctions: bool = True
    """Also try the two best candidates of different families joined by 'and'."""
    wordnet: bool = True
    """Word categories from WordNet (the current word's, the next noun's); off: tokens, n-grams, classes only."""
    control: bool = True
    """Also label the random-direction and decoder-shuffled controls (the baselines in labels_summary.json)."""
    seed: int = 0
    """Seed of the controls and of every draw of example windows."""
    explainer: str | None = None
    """An LLM explainer and detection scorer: openai:URL/MODEL of an OpenAI-compatible server (vLLM, ollama)."""
    llm_features: int = 50
    """Features (a seeded sample) the LLM explainer explains and scores, for the SAE and for the random control."""
    chunk_tokens: int = 32768
    """Tokens encoded at once; bounds memory."""
    force: bool = False
    """Relabel even if complete labels with the same settings exist."""
    progress: bool = True
    """Show progress."""

    CONTENT_FIELDS = ("candidates", "max_values", "max_positions", "boosted", "min_count", "split_block",
                      "example_len", "per_decile", "non_activating", "train_per_decile", "train_non_activating",
                      "min_precision", "select", "conjunctions", "wordnet", "control", "seed", "explainer",
                      "llm_features")

    def __post_init__(self):
        if not self.run:
            raise SaexError("no run folder given", "pass the folder of a trained SAE: saex label RUN")
        for name in ("candidates", "max_values", "max_positions", "boosted", "min_count", "split_block",
                     "example_len", "per_decile", "non_activating", "train_per_decile", "train_non_activating",
                     "chunk_tokens"):
            if int(getattr(self, name)) < 1:
                raise SaexError(f"{name} must be at least 1, got {getattr(self, name)}",
                                f"pass a positive --{name.replace('_', '-')}")
        if self.select not in ("detection", "f1"):
            raise SaexError(f"unknown selection {self.select!r}", "use --select detection or --select f1")

    def content(self) -> dict:
        return {k: getattr(self, k) for k in self.CONTENT_FIELDS}


# --------------------------------------------------------------------------- one SAE


@dataclass
class Context:
    """What every SAE labelled on one store shares: the position table, the split, the scorer."""

    table: PositionTable
    split: Split
    scorer: PredicateScorer
    vocab: list[str]
    usable_examples: np.ndarray


def build_context(store: ActivationStore, vocab: list[str], cfg: LabelConfig, separator: int | None) -> Context:
    tokens = np.load(store.path / "tokens.npy")
    flags = np.concatenate([store.flags(k).numpy() for k in range(store.n_shards)])
    # a store of short windows gets example windows as long as its own
    split = split_positions(tokens, flags, cfg.split_block, min(cfg.example_len, store.context_size), separator)
    table = PositionTable(tokens, vocab, wordnet=cfg.wordnet)
    ex = split.example[split.half >= 0]
    return Context(table, split, PredicateScorer(table, split), vocab, np.unique(ex[ex >= 0]))


def boosted_tokens(sae: LoadedSAE, lm, n: int) -> np.ndarray | None:
    """Each latent's n most-boosted tokens by its decoder direction through the final norm and
    unembedding (sae.index.output_effects), in order of effect."""
    if lm is None:
        return None
    from sae.index.output_effects import unembedding_directions

    h, U = unembedding_directions(lm, sae.sae.W_dec.detach().float().cpu())
    n = min(n, U.shape[0])
    vals, ids = [], []
    with torch.no_grad():
        for s in range(0, U.shape[0], 8192):
            v, i = (h @ U[s:s + 8192].T).topk(min(n, len(U[s:s + 8192])), dim=1)
            vals.append(v)
            ids.append(i + s)
        v, j = torch.cat(vals, 1).topk(n, dim=1)
    return torch.cat(ids, 1).gather(1, j).numpy().astype(np.int64)


def _num(x) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 6)


def _rounded(d: dict) -> dict:
    return {k: (_num(v) if isinstance(v, float) else v) for k, v in d.items()}


class FeatureLabeller:
    """Labels features of one SAE one at a time (a feature's record depends only on it)."""

    def __init__(self, ctx: Context, firings: Firings, boosted: np.ndarray | None, cfg: LabelConfig,
                 explainer: Explainer):
        self.ctx, self.firings, self.boosted, self.cfg, self.explainer = ctx, firings, boosted, cfg, explainer

    def evidence(self, f: int) -> FeatureEvidence:
        ctx, cfg = self.ctx, self.cfg
        fp, fa = firings_in(self.firings, ctx.split, f, PROPOSE)
        ev = FeatureEvidence(f, len(fp), ctx.scorer.n[PROPOSE], table=ctx.table, split=ctx.split,
                             firing_positions=fp)
        if not len(fp):
            return ev
        for name, fam in ctx.table.families.items():
            cand = family_candidates(fam.values, ctx.scorer.base(name)[PROPOSE], fp, cfg.min_count, cfg.candidates,
                                     cfg.min_precision)
            if cand is not None:
                ev.families[name] = cand
        if self.boosted is not None:
            toks = self.boosted[f]
            nxt = ctx.table.families["token@1"].values[fp]
            c = np.array([(nxt == t).sum() for t in toks], np.int64)
            keep = (c > 0) & (c >= cfg.min_precision * ctx.scorer.base("token@1")[PROPOSE][toks])
            if keep.any():
                ev.boosted = Candidates(toks[keep], c[keep], ctx.scorer.base("token@1")[PROPOSE][toks[keep]])
        ev.train = draw(ctx.split, fp, fa, PROPOSE, feature_rng(cfg.seed, f, PROPOSE), cfg.train_per_decile,
                        cfg.train_non_activating, 2, ctx.usable_examples)
        return ev

    def proposal_score(self, p: Predicate, ev: FeatureEvidence) -> tuple[float, float]:
        """(detection on the training windows, token F1) on the proposal half."""
        s = self.ctx.scorer
        det = s.weighted_ba(p, ev.train, PROPOSE) if ev.train is not None else float("nan")
        f1 = s.token(p, ev.firing_positions, PROPOSE)["f1"]
        return det, f1

    def key(self, score: tuple[float, float]) -> tuple[float, float]:
        det, f1 = (np.nan_to_num(x, nan=-1.0) for x in score)
        return (det, f1) if self.cfg.select == "detection" else (f1, det)

    def label(self, f: int) -> dict:
        ctx, cfg, s = self.ctx, self.cfg, self.ctx.scorer
        hp, ha = firings_in(self.firings, ctx.split, f, SCORE)
        test = draw(ctx.split, hp, ha, SCORE, feature_rng(cfg.seed, f, SCORE), cfg.per_decile,
                    cfg.non_activating, 10, ctx.usable_examples)
        rec = {"feature": f, "label": None, "predicate": None, "kind": None, "f1": None, "precision": None,
               "recall": None, "balanced_accuracy": None, "detection": None, "fuzzing": None, "n_fired": int(len(hp)),
               "scorable": test is not None, "source": "auto"}
        ev = self.evidence(f)
        if ev.fired == 0:
            return rec
        preds = list(dict.fromkeys(self.explainer.propose(ev)))
        if not preds:
            return rec
        if cfg.conjunctions:
            preds += [p for p in self._refinements(ev) if p not in preds]
        scored = [(p, self.proposal_score(p, ev)) for p in preds]
        if cfg.conjunctions:
            scored += self._conjunction(scored, ev)
        scored.sort(key=lambda ps: self.key(ps[1]), reverse=True)
        fuzz = fuzz_sample(test, hp, feature_rng(cfg.seed, f, SCORE, 1)) if test is not None else None
        by_kind: dict[str, dict] = {}
        for p, (pdet, pf1) in scored:
            if p.kind in by_kind:
                continue
            held = {"label": p.text(ctx.vocab), "predicate": p.to_json(), **_rounded(s.token(p, hp, SCORE)),
                    "detection": _rounded(s.detection(p, test, SCORE)) if test is not None else None,
                    "fuzzing": _rounded(s.fuzzing(p, fuzz)) if fuzz is not None else None,
                    "proposal": {"detection": _num(pdet), "f1": _num(pf1)}}
            by_kind[p.kind] = held
        best = scored[0][0]
        top = by_kind[best.kind]
        rec.update(label=top["label"], predicate=top["predicate"], kind=best.kind,
                   **{k: top[k] for k in ("f1", "precision", "recall", "balanced_accuracy", "detection",
                                          "fuzzing", "proposal")},
                   by_kind=by_kind)
        return rec

    def _refinements(self, ev: FeatureEvidence) -> list[Predicate]:
        """The token the feature fires on (or right after) most often, narrowed by a broad family:
        "fires on ' an', and before a noun of noun.person". The token alone may fire rarely;
        within the narrowing the values need the usual precision."""
        ctx, cfg = self.ctx, self.cfg
        fp, usable = ev.firing_positions, ctx.scorer.usable[PROPOSE]
        out = []
        for d in (0, -1):
            tv = ctx.table.families[f"token@{d}"].values
            t, c = np.unique(tv[fp][tv[fp] >= 0], return_counts=True)
            if not len(t) or c.max() < cfg.min_count:
                continue
            tok = int(t[np.argmax(c)])
            a_pos = usable[tv[usable] == tok]
            a_fired = fp[tv[fp] == tok]
            for fam in REFINE_FAMILIES:
                if fam not in ctx.table.families:
                    continue
                f = ctx.table.families[fam]
                va, vf = f.values[a_pos], f.values[a_fired]
                b = np.bincount(va[va >= 0], minlength=f.n_values)
                k = np.bincount(vf[vf >= 0], minlength=f.n_values)
                ok = np.flatnonzero((k >= cfg.min_count) & (k >= cfg.min_precision * b) & (k > 0))
                if not len(ok):
                    continue
                order = ok[np.lexsort((-k[ok], -k[ok] / np.maximum(b[ok], 1)))]
                n = best_prefix(k[order], b[order], ev.fired, cfg.max_values)
                out.append(Predicate("and", parts=(Predicate("token", (tok,), d),
                                                   make_predicate(ctx.table, fam, order[:n]))))
        return out

    def _conjunction(self, scored: list, ev: FeatureEvidence) -> list:
        """The two best candidates of different families joined by 'and' (more specific) and by
        'or' (more complete), each kept when it beats the best single candidate."""
        ranked = sorted(scored, key=lambda ps: self.key(ps[1]), reverse=True)
        simple = [p for p, _ in ranked if p.kind not in COMPOUND and p.kind != "position"]
        if len(simple) < 2:
            return []
        a = simple[0]
        b = next((p for p in simple[1:] if p.family != a.family), None)
        if b is None:
            return []
        out = []
        for kind in COMPOUND:
            p = Predicate(kind, parts=(a, b))
            sc = self.proposal_score(p, ev)
            if self.key(sc) > self.key(ranked[0][1]):
                out.append((p, sc))
        return out


# --------------------------------------------------------------------------- runs


def _partial(run: Path, key: str) -> Path:
    """RUN/labels.partial for this key (emptied when it holds another key's work)."""
    d = run / PARTIAL_DIR
    kf = d / "key.json"
    if d.exists():
        try:
            same = json.loads(kf.read_text()).get("key") == key
        except (OSError, json.JSONDecodeError):
            same = False
        if not same:
            shutil.rmtree(d)
    d.mkdir(parents=True, exist_ok=True)
    if not kf.exists():
        write_json_atomic(kf, {"key": key})
    return d


def _read_partial(path: Path) -> dict[int, dict]:
    out: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                r = json.loads(line)
            except json.JSONDecodeError:
                break  # a line cut by a kill: everything after it is redone
            out[int(r["feature"])] = r
    return out


PARTIAL_CHUNK = 256
"""Features labelled between two appends to the partial file."""


def label_variant(labeller: FeatureLabeller, d_sae: int, partial: Path | None, name: str,
                  progress: bool) -> list[dict]:
    """Every feature's record, continuing from `partial` (appended every `chunk` features)."""
    done = _read_partial(partial) if partial is not None else {}
    todo = [f for f in range(d_sae) if f not in done]
    buf: list[dict] = []
    from tqdm.auto import tqdm

    for f in tqdm(todo, desc=f"label {name}", unit="feature", disable=not progress, mininterval=1.0):
        r = labeller.label(f)
        done[f] = r
        buf.append(r)
        if partial is not None and len(buf) >= PARTIAL_CHUNK:
            with open(partial, "a") as fh:
                fh.write("".join(json.dumps(x) + "\n" for x in buf))
            buf = []
    if partial is not None and buf:
        with open(partial, "a") as fh:
            fh.write("".join(json.dumps(x) + "\n" for x in buf))
    return [done[f] for f in range(d_sae)]


_JOBS: dict[str, tuple] = {}  # what forked workers label, set before the pool starts (nothing is pickled)


def _label_job(name: str) -> list[dict]:
    labeller, d_sae, partial, progress = _JOBS[name]
    return label_variant(labeller, d_sae, partial, name, progress)


def run_variants(labellers: dict[str, FeatureLabeller], d_sae: int, partial: Path | None,
                 progress: bool) -> dict[str, list[dict]]:
    """Label every variant; the variants run in forked processes, one per core (at most 2
    cores are assumed busy otherwise), where fork exists."""
    import multiprocessing as mp
    import os

    jobs = {name: (lab, d_sae, partial / f"{name}.jsonl" if partial else None, progress)
            for name, lab in labellers.items()}
    workers = min(len(jobs), os.cpu_count() or 1)
    if workers < 2 or "fork" not in mp.get_all_start_methods():
        return {name: _label_job_direct(job, name) for name, job in jobs.items()}
    from concurrent.futures import ProcessPoolExecutor

    _JOBS.clear()
    _JOBS.update(jobs)
    try:
        with ProcessPoolExecutor(workers, mp_context=mp.get_context("fork")) as pool:
            futures = {name: pool.submit(_label_job, name) for name in jobs}
            return {name: fut.result() for name, fut in futures.items()}
    finally:
        _JOBS.clear()


def _label_job_direct(job: tuple, name: str) -> list[dict]:
    labeller, d_sae, partial, progress = job
    return label_variant(labeller, d_sae, partial, name, progress)


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


def _separator(lm) -> int | None:
    """The last token of the blank line that joins documents in the store's windows."""
    tok = getattr(lm, "tokenizer", None)
    if tok is None:
        return None
    ids = tok("\n\n", add_special_tokens=False)["input_ids"]
    return int(ids[-1]) if ids else None


# --------------------------------------------------------------------------- files


def read_labels(run: str | Path) -> dict[int, dict]:
    """RUN/labels.jsonl by feature ({} when there is none)."""
    path = Path(run) / LABELS_FILE
    if not path.exists() or not (Path(run) / LABELS_SUMMARY_FILE).exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if line.strip():
            r = json.loads(line)
            out[int(r["feature"])] = r
    return out


def read_summary(run: str | Path) -> dict | None:
    path = Path(run) / LABELS_SUMMARY_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _key(cfg: LabelConfig, sae: LoadedSAE, store: ActivationStore, lm) -> str:
    doc = {"format": LABELS_FORMAT, "sae": sae.content_hash, "store": sha256_file(store.path / "manifest.json"),
           "model": getattr(lm, "weights_sha256", None), "settings": cfg.content()}
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()


def label_features(cfg: LabelConfig, sae: LoadedSAE | None = None, lm=None,
                   explainer: Explainer | None = None) -> Path:
    """Label every feature of cfg.run (and, with cfg.control, of the two controls); write
    RUN/labels.jsonl and RUN/labels_summary.json (last: it marks the labels complete).
    A complete pair with the same key is reused unless cfg.force; a killed run resumes
    from RUN/labels.partial. Returns the summary's path."""
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
        return spath
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
        write_json_atomic(spath, summary)
    except OSError as e:
        raise SaexError(f"could not write the labels of {run}: {e.strerror or e}",
                        "free disk space or fix permissions, then rerun") from None
    shutil.rmtree(run / PARTIAL_DIR, ignore_errors=True)
    return spath


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
            f"{json.dumps(record['predicate'])}.")
    store.set(key, int(record["feature"]), label=record["label"], author=f"auto (accepted by {name})",
              description=desc, tags=["auto"], claim=pred.claim(), expected_version=expected_version)
    return store.get(key, int(record["feature"]))
