"""Automatic, testable feature labels (`saex label RUN` -> RUN/labels.jsonl, RUN/labels_summary.json).

Every candidate label is an executable predicate over token positions (`Predicate`):

    fires_before d {X}   the token d = 0..3 positions after p is one of X (d = 0: "fires on X")
    fires_after {X}      the token right before p is one of X
    boosts_output {X}    the next token is one of X, where X are tokens the decoder direction boosts
                         (the output effect of sae.index.output_effects), so the claim is tested on text
    position {q}         p sits at window position q (1 = right after BOS)

What is held out. The held-out store (never seen in SAE training) is cut in two by a fixed
rule: window w is in the *proposal* half when (w // split_block) is even, in the *scoring*
half otherwise. The statistics a label is proposed from (which tokens sit d positions after a
firing, at which window positions it fires) and the choice of each feature's best label (the
highest F1 on the proposal half) use only the proposal half; every reported figure is counted
on the scoring half only. The feature index is not used (it is built on the whole store). The
halves alternate in blocks of windows, and windows of one document are adjacent, so a long
document can reach both halves: positions are held out, documents not always.

Scores, as delphi's detection scorer counts them: the predicate is the prediction, the
feature firing (activation > 0) the truth, over every ordinary position (flag 0) of the
scoring half. precision = P(fires | predicate), recall = P(predicate | fires), F1, and balanced
accuracy = (TPR + TNR) / 2. A predicate that looks past the window's end is false there.
(`sae.labels.claims.score_claim` reads a claim the other way round: its precision is the
fraction of firings followed by X.)

Control: the same procedure on a random-direction copy of the SAE (each encoder column and
decoder row replaced by a random Gaussian direction of the same norm, biases kept; for a
TopK SAE the number of active latents per token, k, is the same). Its best-label F1
distribution is the baseline that the real SAE's is compared with in labels_summary.json.

Speed: the store is encoded once per SAE with the exact sparse encoder; all counting is
numpy bincounts/uniques over (half, offset, token, feature) keys, and all predicates of all
features are scored at once by lookups in those counts (`Counts.score`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from sae.data.store import ActivationStore
from sae.errors import SaexError
from sae.fsutil import sha256_file, write_json_atomic
from sae.runs.files import LABELS_FILE, LABELS_SUMMARY_FILE
from sae.runs.load import LoadedSAE

LABELS_FORMAT = 1
OFFSETS = (-1, 0, 1, 2, 3)  # token offsets counted around each firing (-1: the previous token)
PROPOSE, SCORE = 0, 1  # the two halves


@dataclass
class LabelConfig:
    """Label every feature of an SAE run automatically with a testable predicate, scored on held-out text."""

    run: str = ""
    """Run folder of the SAE; the labels go to RUN/labels.jsonl and RUN/labels_summary.json."""
    store: str | None = None
    """Held-out activation store; default: the run's training store with -train in its name replaced by -heldout."""
    model: str | None = None
    """Model for token strings and output effects; default: the model the store was harvested from."""
    candidates: int = 20
    """Tokens (by count, per offset) considered for a label's token set."""
    max_tokens: int = 8
    """Most tokens in one label."""
    max_positions: int = 3
    """Most window positions in one position label."""
    boosted: int = 10
    """Most-boosted output tokens considered for a boosts_output label."""
    min_count: int = 2
    """A token (or position) needs this many firings beside it in the proposal half to enter a label."""
    split_block: int = 8
    """Windows per block of the proposal/scoring split (blocks alternate: even blocks propose, odd ones score)."""
    control: bool = True
    """Also label a random-direction copy of the SAE (the baseline in labels_summary.json)."""
    seed: int = 0
    """Seed of the control's random directions."""
    chunk_tokens: int = 32768
    """Tokens encoded at once; bounds memory."""
    force: bool = False
    """Relabel even if complete labels with the same settings exist."""
    progress: bool = True
    """Show progress."""

    CONTENT_FIELDS = ("candidates", "max_tokens", "max_positions", "boosted", "min_count", "split_block", "control",
                      "seed")

    def __post_init__(self):
        if not self.run:
            raise SaexError("no run folder given", "pass the folder of a trained SAE: saex label RUN")
        for name in ("candidates", "max_tokens", "max_positions", "boosted", "min_count", "split_block",
                     "chunk_tokens"):
            if int(getattr(self, name)) < 1:
                raise SaexError(f"{name} must be at least 1, got {getattr(self, name)}",
                                f"pass a positive --{name.replace('_', '-')}")

    def content(self) -> dict:
        return {k: getattr(self, k) for k in self.CONTENT_FIELDS}


# --------------------------------------------------------------------------- predicates


@dataclass(frozen=True)
class Predicate:
    """A testable statement about where a feature fires (see the module docstring).

    kind: fires_before (offset 0..3), fires_after (the previous token), boosts_output (the
    next token), position (window positions); `values` are token ids, or positions."""

    kind: str
    values: tuple[int, ...]
    offset: int = 0

    KINDS = ("fires_before", "fires_after", "boosts_output", "position")

    def __post_init__(self):
        object.__setattr__(self, "values", tuple(dict.fromkeys(int(v) for v in self.values)))  # each counts once
        if self.kind not in self.KINDS:
            raise SaexError(f"unknown predicate kind {self.kind!r}", f"use one of {', '.join(self.KINDS)}")
        if not self.values:
            raise SaexError("a predicate needs at least one token or position", "give values")
        if self.kind == "fires_before" and not 0 <= self.offset <= max(OFFSETS):
            raise SaexError(f"fires_before offset must be 0..{max(OFFSETS)}, got {self.offset}", "give 0..3")

    @property
    def token_offset(self) -> int | None:
        """Where the tokens sit relative to the firing (None for a position predicate)."""
        return {"fires_before": self.offset, "fires_after": -1, "boosts_output": 1}.get(self.kind)

    def to_json(self) -> dict:
        if self.kind == "position":
            return {"kind": "position", "positions": list(self.values)}
        if self.kind == "fires_before":
            return {"kind": "fires_before", "offset": self.offset, "tokens": list(self.values)}
        return {"kind": self.kind, "tokens": list(self.values)}

    @classmethod
    def from_json(cls, d: dict) -> Predicate:
        if d.get("kind") == "position":
            return cls("position", tuple(int(v) for v in d["positions"]))
        return cls(d["kind"], tuple(int(v) for v in d["tokens"]), int(d.get("offset", 0)))

    def claim(self) -> dict | None:
        """The annotation claim this predicate is (sae.labels.records.validate_claim), if any."""
        d = self.token_offset
        return {"kind": "fires_before", "offset": d, "tokens": list(self.values)} if d is not None and d >= 0 else None

    def text(self, vocab: list[str]) -> str:
        if self.kind == "position":
            qs = ", ".join(str(q) for q in self.values)
            return f"fires at window position {qs}" + (" (right after BOS)" if self.values == (1,) else "")
        toks = ", ".join(repr(vocab[t]) if 0 <= t < len(vocab) else f"#{t}" for t in self.values)
        if self.kind == "fires_after":
            return f"fires right after {{{toks}}}"
        if self.kind == "boosts_output":
            return f"boosts output {{{toks}}} (fires where the next token is one)"
        if self.offset == 0:
            return f"fires on {{{toks}}}"
        return f"fires {self.offset} token{'s' if self.offset > 1 else ''} before {{{toks}}}"


@dataclass
class Candidates:
    """Values (tokens or positions) beside a feature's firings in the proposal half, by count:
    `counts[i]` firings with values[i] there, out of `base[i]` positions with it there."""

    values: np.ndarray
    counts: np.ndarray
    base: np.ndarray


@dataclass
class FeatureRecord:
    """What an explainer sees of one feature (proposal half only)."""

    feature: int
    fired: int  # firings in the proposal half
    positions: int  # ordinary positions in the proposal half
    tokens: dict[int, Candidates] = field(default_factory=dict)  # offset -> tokens there
    window_positions: Candidates | None = None
    boosted: Candidates | None = None  # most-boosted tokens (decoder effect), counts at offset +1
    vocab: list[str] = field(default_factory=list, repr=False)


class Explainer(Protocol):
    """Proposes candidate labels for a feature. An LLM explainer can implement this too (it
    would read `record` and return predicates); the default needs no network."""

    def propose(self, record: FeatureRecord) -> list[Predicate]: ...


def best_prefix(c: np.ndarray, b: np.ndarray, fired: int, limit: int, keep_order: bool = False) -> int:
    """How many of the values to take (in order of precision c/b, or as given) to maximise
    F1 = 2 sum(c) / (fired + sum(b)); at most `limit`, at least 1."""
    if not keep_order:
        order = np.lexsort((-c, -c / np.maximum(b, 1)))
        c, b = c[order], b[order]
    cc, bb = np.cumsum(c[:limit]), np.cumsum(b[:limit])
    return int(np.argmax(2 * cc / np.maximum(fired + bb, 1))) + 1


class StatisticalExplainer:
    """The default explainer: for each offset, the tokens beside the feature's firings in the
    proposal half, taken in order of precision while the proposal-half F1 grows (the prefix
    of that order which maximises F1, at most `max_tokens`); the same for window positions
    and, in the order of their output effect, for the most-boosted tokens."""

    def __init__(self, max_tokens: int = 8, max_positions: int = 3):
        self.max_tokens, self.max_positions = max_tokens, max_positions

    def _pick(self, cand: Candidates | None, fired: int, limit: int, keep_order: bool = False) -> tuple[int, ...]:
        if cand is None or len(cand.values) == 0 or cand.counts.sum() == 0:
            return ()
        c, b, v = cand.counts.astype(float), cand.base.astype(float), cand.values
        if keep_order:
            ok = c > 0
            c, b, v = c[ok], b[ok], v[ok]
        else:
            order = np.lexsort((-c, -c / np.maximum(b, 1)))
            c, b, v = c[order], b[order], v[order]
        n = best_prefix(c, b, fired, limit, keep_order=True)
        return tuple(int(x) for x in v[:n])

    def propose(self, record: FeatureRecord) -> list[Predicate]:
        out = []
        for d, cand in sorted(record.tokens.items()):
            vals = self._pick(cand, record.fired, self.max_tokens)
            if vals:
                out.append(Predicate("fires_after", vals) if d < 0 else Predicate("fires_before", vals, d))
        if vals := self._pick(record.boosted, record.fired, self.max_tokens, keep_order=True):
            out.append(Predicate("boosts_output", vals))
        if vals := self._pick(record.window_positions, record.fired, self.max_positions):
            out.append(Predicate("position", vals))
        return out


# --------------------------------------------------------------------------- counting


class Counts:
    """Per half (propose, score): firings per feature, positions, and for each offset the
    (token, feature) pair counts and token base counts, plus window-position counts."""

    def __init__(self, d_sae: int, vocab: int, T: int):
        self.F, self.V, self.T, self.L = d_sae, vocab, T, len(OFFSETS)
        self.n = np.zeros(2, np.int64)
        self.fired = np.zeros((2, d_sae), np.int64)
        self.base = np.zeros((2, self.L, vocab), np.int64)
        self.pos_base = np.zeros((2, T), np.int64)
        self.pos_fired = np.zeros((2, T * d_sae), np.int64)
        self._parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.keys = np.zeros(0, np.int64)
        self.counts = np.zeros(0, np.int64)

    def key(self, h, j, t, f):
        return ((np.asarray(h, np.int64) * self.L + j) * self.V + t) * self.F + f

    def add(self, tokens: np.ndarray, ordinary: np.ndarray, half: np.ndarray, rows: np.ndarray,
            cols: np.ndarray) -> None:
        """tokens, ordinary "w T" of a chunk of windows, half "w" (0/1); codes (rows into the
        flattened ordinary positions, cols = features)."""
        T = self.T
        flat_tok = tokens.reshape(-1).astype(np.int64)
        pos = np.flatnonzero(ordinary.reshape(-1))  # universe positions
        q_u, h_u = pos % T, half[pos // T].astype(np.int64)
        for h in (0, 1):
            self.n[h] += int((h_u == h).sum())
            self.pos_base[h] += np.bincount(q_u[h_u == h], minlength=T)
        for j, d in enumerate(OFFSETS):
            ok = (q_u + d >= 0) & (q_u + d < T)
            idx = (h_u[ok] * self.L + j) * self.V + flat_tok[pos[ok] + d]
            self.base += np.bincount(idx, minlength=2 * self.L * self.V).reshape(2, self.L, self.V)
        p = pos[rows]
        q, h, f = p % T, half[p // T].astype(np.int64), cols.astype(np.int64)
        self.fired += np.bincount(h * self.F + f, minlength=2 * self.F).reshape(2, self.F)
        self.pos_fired += np.bincount(h * (T * self.F) + q * self.F + f, minlength=2 * T * self.F).reshape(2, -1)
        keys = []
        for j, d in enumerate(OFFSETS):
            ok = (q + d >= 0) & (q + d < T)
            keys.append(self.key(h[ok], j, flat_tok[p[ok] + d], f[ok]))
        k, c = np.unique(np.concatenate(keys), return_counts=True)
        self._parts.append((k, c))

    def finish(self) -> None:
        if self._parts:
            k = np.concatenate([self.keys] + [p[0] for p in self._parts])
            c = np.concatenate([self.counts] + [p[1] for p in self._parts])
            self.keys, inv = np.unique(k, return_inverse=True)
            self.counts = np.bincount(inv, weights=c).astype(np.int64)
            self._parts = []

    def pair_count(self, h, j, t, f) -> np.ndarray:
        """How often feature f fired with token t at offset OFFSETS[j], in half h (arrays broadcast)."""
        key = self.key(h, j, t, f)
        if not len(self.keys):
            return np.zeros(np.shape(key), np.int64)
        i = np.minimum(np.searchsorted(self.keys, key), len(self.keys) - 1)
        return np.where(self.keys[i] == key, self.counts[i], 0)

    def score(self, h: int, features: np.ndarray, preds: list[Predicate]) -> dict[str, np.ndarray]:
        """Confusion counts and scores of predicate i (for feature features[i]) on half h, all at once."""
        P = len(preds)
        lens = np.array([len(p.values) for p in preds], np.int64)
        pi = np.repeat(np.arange(P), lens)
        vals = np.concatenate([np.asarray(p.values, np.int64) for p in preds]) if P else np.zeros(0, np.int64)
        is_pos = np.array([p.kind == "position" for p in preds], bool)
        j = np.array([OFFSETS.index(p.token_offset) if p.token_offset is not None else 0 for p in preds], np.int64)
        f = np.asarray(features, np.int64)
        e_pos, e_f, e_j = is_pos[pi], f[pi], j[pi]
        hits_e = np.zeros(len(pi), np.int64)
        pred_e = np.zeros(len(pi), np.int64)
        t = ~e_pos & (vals >= 0) & (vals < self.V)  # a token outside the vocabulary never occurs
        hits_e[t] = self.pair_count(h, e_j[t], vals[t], e_f[t])
        pred_e[t] = self.base[h, e_j[t], vals[t]]
        qv = vals[e_pos]
        okq = (qv >= 0) & (qv < self.T)
        hp = np.zeros(len(qv), np.int64)
        bp = np.zeros(len(qv), np.int64)
        hp[okq] = self.pos_fired[h, qv[okq] * self.F + e_f[e_pos][okq]]
        bp[okq] = self.pos_base[h, qv[okq]]
        hits_e[e_pos], pred_e[e_pos] = hp, bp
        tp = np.bincount(pi, weights=hits_e, minlength=P).astype(np.int64)
        n_pred = np.bincount(pi, weights=pred_e, minlength=P).astype(np.int64)
        return metrics(tp, n_pred, self.fired[h, f], int(self.n[h]))


def metrics(tp, n_pred, n_fired, n) -> dict[str, np.ndarray]:
    """precision, recall, F1 and balanced accuracy from counts (NaN where undefined)."""
    tp, n_pred, n_fired = (np.asarray(a, np.float64) for a in (tp, n_pred, n_fired))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(n_pred > 0, tp / n_pred, np.nan)
        recall = np.where(n_fired > 0, tp / n_fired, np.nan)
        f1 = np.where(n_fired + n_pred > 0, 2 * tp / (n_fired + n_pred), np.nan)
        tn = n - n_fired - n_pred + tp
        tnr = np.where(n - n_fired > 0, tn / (n - n_fired), np.nan)
        ba = (recall + tnr) / 2
    return {"tp": tp.astype(np.int64), "n_pred": n_pred.astype(np.int64), "n_fired": n_fired.astype(np.int64),
            "precision": precision, "recall": recall, "f1": f1, "balanced_accuracy": ba}


def window_half(window: np.ndarray, split_block: int) -> np.ndarray:
    """0 (proposal half) or 1 (scoring half) for global window indices."""
    return (np.asarray(window) // split_block) % 2


def count(sae: LoadedSAE, store: ActivationStore, vocab_size: int, cfg: LabelConfig) -> Counts:
    """One pass over the store: encode every ordinary position once and count."""
    from sae.index.encoder import sparse_encoder

    enc = sparse_encoder(sae)
    T = store.context_size
    counts = Counts(sae.d_sae, vocab_size, T)
    per = max(1, cfg.chunk_tokens // T)
    w_global = 0
    for k in range(store.n_shards):
        acts, toks, flags = store.acts(k), store.tokens(k).numpy(), store.flags(k).numpy()
        for w0 in range(0, len(acts), per):
            w1 = min(len(acts), w0 + per)
            ordinary = flags[w0:w1] == 0
            idx = np.flatnonzero(ordinary.reshape(-1))
            x = acts[w0:w1].reshape(-1, store.d_model)[torch.from_numpy(idx)]
            codes = enc(x)
            half = window_half(np.arange(w_global + w0, w_global + w1), cfg.split_block)
            counts.add(toks[w0:w1], ordinary, half, codes.rows, codes.cols)
        w_global += len(acts)
        if cfg.progress:
            print(f"\r  encoded shard {k + 1}/{store.n_shards}", end="", file=sys.stderr, flush=True)
    if cfg.progress:
        print(file=sys.stderr)
    counts.finish()
    return counts


# --------------------------------------------------------------------------- records


def feature_records(counts: Counts, boosted: np.ndarray | None, cfg: LabelConfig,
                    vocab: list[str]) -> list[FeatureRecord]:
    """Each feature's record from the proposal half (vectorised; one slice per feature)."""
    F, V, L = counts.F, counts.V, counts.L
    h0 = counts.keys < L * V * F  # half 0 keys come first
    keys, c = counts.keys[h0], counts.counts[h0]
    ok = c >= cfg.min_count
    keys, c = keys[ok], c[ok]
    jt, f = np.divmod(keys, F)
    j, t = np.divmod(jt, V)
    order = np.lexsort((t, -c, j, f))
    f, j, t, c = f[order], j[order], t[order], c[order]
    g = f * L + j
    starts = np.flatnonzero(np.r_[True, g[1:] != g[:-1]]) if len(g) else np.zeros(0, np.int64)
    rank = np.arange(len(g)) - np.repeat(starts, np.diff(np.r_[starts, len(g)]))
    keep = rank < cfg.candidates
    f, j, t, c = f[keep], j[keep], t[keep], c[keep]
    b = counts.base[PROPOSE, j, t]
    gptr = np.searchsorted(f * L + j, np.arange(F * L + 1))
    # window positions
    pf = counts.pos_fired[PROPOSE].reshape(counts.T, F)  # "q F"
    records = []
    fired = counts.fired[PROPOSE]
    n0 = int(counts.n[PROPOSE])
    if boosted is not None:
        nb = boosted.shape[1]
        bc = counts.pair_count(PROPOSE, OFFSETS.index(1), boosted.reshape(-1),
                               np.repeat(np.arange(F), nb)).reshape(F, nb)
        bb = counts.base[PROPOSE, OFFSETS.index(1)][boosted]
    for i in range(F):
        rec = FeatureRecord(i, int(fired[i]), n0, vocab=vocab)
        if fired[i] == 0:
            records.append(rec)
            continue
        for jj in range(L):  # entries are sorted by (feature, offset): one slice each
            lo, hi = gptr[i * L + jj], gptr[i * L + jj + 1]
            if hi > lo:
                rec.tokens[OFFSETS[jj]] = Candidates(t[lo:hi], c[lo:hi], b[lo:hi])
        col = pf[:, i]
        qs = np.flatnonzero(col >= cfg.min_count)
        if len(qs):
            rec.window_positions = Candidates(qs, col[qs], counts.pos_base[PROPOSE, qs])
        if boosted is not None:
            rec.boosted = Candidates(boosted[i], bc[i], bb[i])
        records.append(rec)
    return records


# --------------------------------------------------------------------------- labelling


def control_sae(sae: LoadedSAE, seed: int = 0) -> LoadedSAE:
    """A random-direction copy: every encoder column and decoder row a Gaussian direction of the
    same norm; biases (and thresholds) kept. A TopK copy keeps k active latents per token."""
    ctrl = copy.copy(sae)
    ctrl.sae = copy.deepcopy(sae.sae)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        W = ctrl.sae.W_enc
        r = torch.randn(W.shape, generator=g)
        W.copy_(r / r.norm(dim=0, keepdim=True) * W.norm(dim=0, keepdim=True))
        D = ctrl.sae.W_dec
        r = torch.randn(D.shape, generator=g)
        D.copy_(r / r.norm(dim=1, keepdim=True) * D.norm(dim=1, keepdim=True))
    return ctrl


def _boosted(sae: LoadedSAE, lm, n: int) -> np.ndarray | None:
    if lm is None:
        return None
    from sae.index.output_effects import unembedding_directions

    h, U = unembedding_directions(lm, sae.sae.W_dec.detach().float().cpu())
    n = min(n, U.shape[0])
    vals, ids = [], []
    with torch.no_grad():  # as sae.index.output_effects, without its per-token tables
        for s in range(0, U.shape[0], 8192):
            v, i = (h @ U[s:s + 8192].T).topk(min(n, len(U[s:s + 8192])), dim=1)
            vals.append(v)
            ids.append(i + s)
        v, j = torch.cat(vals, 1).topk(n, dim=1)
    return torch.cat(ids, 1).gather(1, j).numpy().astype(np.int64)


def label_sae(sae: LoadedSAE, store: ActivationStore, cfg: LabelConfig, vocab: list[str], lm=None,
              explainer: Explainer | None = None, timings: dict | None = None) -> list[dict]:
    """One record per feature: the best label (by proposal-half F1) scored on the scoring half.
    `timings`, when given, receives the seconds of each stage (encode_count, propose, score)."""
    V = len(vocab)
    t0 = time.perf_counter()
    counts = count(sae, store, V, cfg)
    t1 = time.perf_counter()
    records = feature_records(counts, _boosted(sae, lm, cfg.boosted), cfg, vocab)
    explainer = explainer or StatisticalExplainer(cfg.max_tokens, cfg.max_positions)
    preds, owner = [], []
    for rec in records:
        for p in explainer.propose(rec):
            preds.append(p)
            owner.append(rec.feature)
    owner = np.asarray(owner, np.int64)
    t2 = time.perf_counter()
    prop = counts.score(PROPOSE, owner, preds)
    held = counts.score(SCORE, owner, preds)
    if timings is not None:
        timings.update(encode_count=t1 - t0, propose=t2 - t1, score=time.perf_counter() - t2,
                       predicates=len(preds))
    out = []
    by_f = np.searchsorted(owner, np.arange(sae.d_sae + 1)) if len(owner) else np.zeros(sae.d_sae + 1, np.int64)
    n_fired = counts.fired[SCORE]
    for i in range(sae.d_sae):
        lo, hi = by_f[i], by_f[i + 1]
        rec = {"feature": i, "label": None, "predicate": None, "f1": None, "precision": None, "recall": None,
               "balanced_accuracy": None, "n_fired": int(n_fired[i]), "source": "auto"}
        if hi > lo:
            pf1 = np.nan_to_num(prop["f1"][lo:hi], nan=-1.0)
            best = lo + int(np.argmax(pf1))
            rec.update(label=preds[best].text(vocab), predicate=preds[best].to_json(), **_scores(held, best),
                       proposal_f1=_num(prop["f1"][best]),
                       candidates=[{"label": preds[k].text(vocab), "predicate": preds[k].to_json(),
                                    **_scores(held, k), "proposal_f1": _num(prop["f1"][k])} for k in range(lo, hi)])
        out.append(rec)
    return out


def _num(x) -> float | None:
    return None if not np.isfinite(x) else round(float(x), 6)


def _scores(s: dict, k: int) -> dict:
    return {name: _num(s[name][k]) for name in ("f1", "precision", "recall", "balanced_accuracy")}


def distribution(f1s: list[float], bins: int = 20) -> dict:
    a = np.asarray(f1s, np.float64)
    hist, edges = np.histogram(a, bins=bins, range=(0.0, 1.0))
    q = np.quantile(a, [0.25, 0.5, 0.75]).tolist() if len(a) else [None] * 3
    return {"n": int(len(a)), "median": q[1], "q25": q[0], "q75": q[2],
            "mean": float(a.mean()) if len(a) else None, "hist_edges": edges.tolist(), "hist_counts": hist.tolist()}


def best_f1s(records: list[dict]) -> list[float]:
    """Best-label F1 of every labelled feature (a label that never hits counts 0)."""
    return [r["f1"] if r["f1"] is not None else 0.0 for r in records if r["label"] is not None]


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
    """Label every feature of cfg.run (and, with cfg.control, of its random-direction copy);
    write RUN/labels.jsonl and RUN/labels_summary.json (last: it marks the labels complete).
    A complete pair with the same key is reused unless cfg.force. Returns the summary's path."""
    from sae.data.models import load_model
    from sae.fsutil import atomic_path
    from sae.index.tables import vocab_strings
    from sae.runs.load import load_sae, resolve_run
    from sae.runs.stores import check_store, default_heldout_store

    t0 = time.perf_counter()
    run = resolve_run(cfg.run)
    sae = sae or load_sae(run, device="cpu")
    store = ActivationStore(cfg.store or default_heldout_store(sae))
    for w in check_store(sae, store):
        print(f"warning: {w}", file=sys.stderr)
    lm = lm or load_model(cfg.model or store.manifest["model"]["spec"], device="cpu")
    key = _key(cfg, sae, store, lm)
    spath = Path(run) / LABELS_SUMMARY_FILE
    old = read_summary(run)
    if old and old.get("key") == key and (Path(run) / LABELS_FILE).exists() and not cfg.force:
        print(f"labels {Path(run) / LABELS_FILE} are already complete", file=sys.stderr)
        return spath
    spath.unlink(missing_ok=True)
    V = int(lm.model.get_output_embeddings().weight.shape[0])
    vocab = vocab_strings(lm, V)
    real = label_sae(sae, store, cfg, vocab, lm, explainer)
    t1 = time.perf_counter()
    ctrl = label_sae(control_sae(sae, cfg.seed), store, cfg, vocab, lm, explainer) if cfg.control else None
    t2 = time.perf_counter()
    try:
        with atomic_path(Path(run) / LABELS_FILE) as tmp:
            Path(tmp).write_text("".join(json.dumps(r) + "\n" for r in real))
        real_f1 = best_f1s(real)
        summary = {
            "format": LABELS_FORMAT, "key": key, "d_sae": sae.d_sae,
            "labelled": len(real_f1), "unlabelled": sae.d_sae - len(real_f1),
            "real": distribution(real_f1),
            "control": distribution(best_f1s(ctrl)) if ctrl is not None else None,
            "kinds": {k: sum(1 for r in real if r["predicate"] and r["predicate"]["kind"] == k)
                      for k in Predicate.KINDS},
            "store": {"path": str(store.path), "n_windows": store.n_windows, "context_size": store.context_size},
            "split": {"rule": f"window w scores when (w // {cfg.split_block}) % 2 == 1, else it proposes",
                      "what_is_held_out": "proposal statistics and the choice of the best label use the proposal "
                                          "half only; every reported score is counted on the scoring half only"},
            "scores": "delphi detection: predicate = prediction, firing (activation > 0) = truth, over ordinary "
                      "positions of the scoring half",
            "control_method": "random Gaussian encoder columns and decoder rows of the same norms, biases kept",
            "explainer": type(explainer or StatisticalExplainer()).__name__,
            "settings": cfg.content(), "seconds": {"real": t1 - t0, "control": t2 - t1},
        }
        write_json_atomic(spath, summary)
    except OSError as e:
        raise SaexError(f"could not write the labels of {run}: {e.strerror or e}",
                        "free disk space or fix permissions, then rerun") from None
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

    def fmt(k):
        v = record.get(k)
        return "n/a" if v is None else f"{v:.2f}"

    desc = (f"Automatic label, scored on held-out text: F1 {fmt('f1')}, precision {fmt('precision')}, "
            f"recall {fmt('recall')}, balanced accuracy {fmt('balanced_accuracy')}; predicate "
            f"{json.dumps(record['predicate'])}.")
    store.set(key, int(record["feature"]), label=record["label"], author=f"auto (accepted by {name})",
              description=desc, tags=["auto"], claim=pred.claim(), expected_version=expected_version)
    return store.get(key, int(record["feature"]))
