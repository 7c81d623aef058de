"""Labelling one feature of one SAE: its evidence from the proposal half, the explainer's
candidates plus refinements and conjunctions, the choice on the proposal half, and every
score on the scoring half."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sae.data.store import ActivationStore
from sae.labels.config import LabelConfig
from sae.labels.detection import draw, feature_rng, firings_in, fuzz_sample
from sae.labels.heldout import PROPOSE, SCORE, Firings, Split, split_positions
from sae.labels.positions import PositionTable
from sae.labels.predicates import COMPOUND, Predicate, short_text
from sae.labels.propose import (
    Candidates,
    Explainer,
    FeatureEvidence,
    best_prefix,
    family_candidates,
    make_predicate,
)
from sae.labels.scoring import PredicateScorer
from sae.runs.load import LoadedSAE

REFINE_FAMILIES = ("next_noun", "lexname", "class@0", "class@1")
"""Broad families that narrow a feature's most frequent token into an 'and' label."""


@dataclass
class Context:
    """What every SAE labelled on one store shares: the position table, the split, the scorer."""

    table: PositionTable
    split: Split
    scorer: PredicateScorer
    vocab: list[str]
    usable_examples: np.ndarray


def build_context(store: ActivationStore, vocab: list[str], cfg: LabelConfig, separator: int | None) -> Context:
    tokens = np.concatenate([store.tokens(k).numpy() for k in range(store.n_shards)])
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
        ev = FeatureEvidence(f, len(fp), ctx.scorer.n[PROPOSE], table=ctx.table,
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
        rec = {"feature": f, "label": None, "short": None, "predicate": None, "kind": None, "f1": None,
               "precision": None, "recall": None, "balanced_accuracy": None, "detection": None, "fuzzing": None,
               "n_fired": int(len(hp)),
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
            held = {"label": p.text(ctx.vocab), "short": short_text(p, ctx.vocab), "predicate": p.to_json(),
                    **_rounded(s.token(p, hp, SCORE)),
                    "detection": _rounded(s.detection(p, test, SCORE)) if test is not None else None,
                    "fuzzing": _rounded(s.fuzzing(p, fuzz)) if fuzz is not None else None,
                    "proposal": {"detection": _num(pdet), "f1": _num(pf1)}}
            by_kind[p.kind] = held
        best = scored[0][0]
        top = by_kind[best.kind]
        rec.update(label=top["label"], short=top["short"], predicate=top["predicate"], kind=best.kind,
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


def _separator(lm) -> int | None:
    """The last token of the blank line that joins documents in the store's windows."""
    tok = getattr(lm, "tokenizer", None)
    if tok is None:
        return None
    ids = tok("\n\n", add_special_tokens=False)["input_ids"]
    return int(ids[-1]) if ids else None
