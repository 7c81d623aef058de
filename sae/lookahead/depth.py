"""Lookahead across depth: at which layer, if any, is the upcoming article (a/an) or the
noun itself readable from the residual stream before the article, in directions an SAE
may or may not isolate, and does removing that direction change the choice?

Per swept layer L (the residual stream after block L, `blocks.L.hook_resid_post`):

- logit lens: logit(" an") - logit(" a") read through the final norm and unembedding at
  the last prompt position (offset -1, whose output chooses the article), mean per group
  (an-noun vs a-noun riddles) and the gap with a bootstrap interval;
- article probe: L2 logistic regression (plain torch, standardised features, the L2
  strength chosen by cross-validation on the training side only) on the residual at
  offsets -K..-1, trained on riddles of one half of the nouns (`split_of_noun`) and tested
  on riddles of the OTHER half (no noun on both sides), against a shuffled-label control
  (the same pipeline with the training labels permuted);
- noun-identity probe (offset -1): which of the candidate nouns the prompt leads to. Every
  noun appears in several frames (WordNet gloss riddle, the riddle after a dictionary line
  naming the noun, the explicit "article for 'noun'" prompt, a question and a dialogue
  frame); each frame in turn is held out, the probe trained on the others and tested on it,
  so the nouns are seen in training but never in the tested frame (identity over held-out
  nouns cannot be learnt);
- causal test: at offset -1 of the held-out riddles the component along the article
  probe's direction is set to its training mean (mean-centred projection), the rest of
  the model runs on, and the change in the an-vs-a gap of logit(an) - logit(a) at the
  output is compared with the same projection along random unit directions (z score,
  permutation p);
- where an SAE of that layer is given: its top features by separation (an- vs a-noun
  riddles at -1, training half) ablated at -1 with the SAE's error term kept, against
  random sets of as many features that fire on those prompts.

One forward pass with hooks on the swept blocks gives every layer's residual; the causal
edits rerun only the last prompt token from a cached prefix (the edit cannot change
earlier positions), batched over directions. fp32 throughout.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from sae.data.models import DEFAULT_MODEL, LoadedModel, parse_hook_point, parse_layers
from sae.errors import SaexError
from sae.fsutil import ensure_writable_dir, write_json_atomic
from sae.lookahead.interventions import article_ids, encode_prompts
from sae.lookahead.prompts import (
    Prompt,
    explicit_prompt,
    in_context_prompt,
    load_prompt_file,
    riddle_set,
    split_of_noun,
)
from sae.lookahead.statistics import bootstrap_gap, gap_change
from sae.runs.files import DEPTH_DIR
from sae.statistics import empirical_p

REPORT_FORMAT = 1
REPORT_FILE = "report.json"
PLOT_FILE = "depth.png"
LAMBDAS = (1e-3, 1e-2, 1e-1)  # L2 strengths tried (on standardised features), chosen on the training side
ALPHA = 0.01  # "above chance": one-sided binomial p below this and above every shuffled control
# Frames of the identity probe: the noun only implied by its gloss, or named outright.
IMPLIED = ("riddle", "question", "dialogue")
NAMED = ("explicit", "named_question", "named_dialogue")
FRAMES = IMPLIED + ("in_context",) + NAMED


@dataclass
class DepthConfig:
    """Where across depth the upcoming article and the noun are decodable, and causal."""

    run: str | None = None
    """SAE run folder(s), comma-separated, each used at its own layer (optional: the sweep needs only the model)."""
    model: str | None = None
    """Model; default: the SAE's, else smollm2-135m."""
    layers: str = "5,10,15,20,25"
    """Layers to sweep (comma-separated) or all."""
    out: str | None = None
    """Output folder; default: RUN/depth with a run, else checkpoints/depth-MODEL."""
    prompts: str | None = None
    """JSONL prompt set (prompt, noun, article, optional condition) instead of WordNet riddles; nouns are split
    in halves by name, conditions are the frames of the identity probe."""
    riddles_per_article: int = 48
    """WordNet riddles per article in each half of the nouns (probe training and test)."""
    identity_nouns: int = 24
    """Candidate nouns of the identity probe (half an-nouns), each in every frame."""
    max_noun_tokens: int = 2
    """WordNet riddles only for nouns of at most this many tokens."""
    offsets: int = 4
    """Article probes at offsets -K..-1 from the article."""
    random_directions: int = 32
    """Random unit directions (and random SAE feature sets) for the causal control."""
    sae_features: int = 10
    """SAE features ablated at a layer with an SAE."""
    shuffles: int = 3
    """Shuffled-label controls per article probe (identity probe: one per held-out frame)."""
    bootstrap: int = 1000
    """Bootstrap resamples for intervals."""
    batch_size: int = 32
    """Prompts per forward pass."""
    seed: int = 0
    """Seed for riddle sampling, shuffles, random directions and bootstrap."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    force: bool = False
    """Recompute even when a complete report with the same settings exists."""
    progress: bool = True
    """Show progress."""

    def __post_init__(self):
        if self.run is not None and not str(self.run).strip():
            self.run = None
        for name, low in (("riddles_per_article", 2), ("identity_nouns", 2), ("max_noun_tokens", 1), ("offsets", 1),
                          ("random_directions", 20), ("sae_features", 1), ("shuffles", 1), ("bootstrap", 100),
                          ("batch_size", 1)):
            if int(getattr(self, name)) < low:
                raise SaexError(f"{name} must be at least {low}, got {getattr(self, name)}",
                                f"pass --{name.replace('_', '-')} {low} or more")

    def key(self) -> dict:
        """What a reusable report must have been made with."""
        return {k: v for k, v in asdict(self).items() if k not in ("progress", "device", "out", "force")}


# --------------------------------------------------------------------------- prompts


@dataclass
class DepthPrompts:
    train: list[Prompt]  # article probe training: riddles of one half of the nouns
    test: list[Prompt]  # article probe test and causal edits: riddles of the other half
    identity: list[Prompt]  # every candidate noun in every frame (Prompt.condition = frame)
    sources: dict[str, str]


def frame_prompts(riddle: Prompt, gloss: str) -> list[Prompt]:
    """One noun in every frame of the identity probe (`FRAMES`)."""
    g = gloss[0].lower() + gloss[1:]
    q = Prompt(f"Q: What do you call {g}?\nA: It is called", riddle.noun, riddle.article, "question",
               riddle.pair, riddle.source)
    d = Prompt(f"User: What is the word for {g}?\nAssistant: It is called", riddle.noun, riddle.article,
               "dialogue", riddle.pair, riddle.source)
    n = riddle.noun
    nq = Prompt(f"Q: What do you call the {n}?\nA: It is called", n, riddle.article, "named_question",
                riddle.pair, riddle.source)
    nd = Prompt(f"User: What is the word for the {n}?\nAssistant: It is called", n, riddle.article,
                "named_dialogue", riddle.pair, riddle.source)
    return [riddle, q, d, in_context_prompt(riddle, g), explicit_prompt(n, riddle.article), nq, nd]


def depth_prompts(cfg: DepthConfig, tokenizer) -> DepthPrompts:
    if cfg.prompts is not None:
        given = load_prompt_file(cfg.prompts)
        train = [p for p in given if split_of_noun(p.noun) == "select"]
        test = [p for p in given if split_of_noun(p.noun) == "test"]
        seen = {}
        for p in given:
            seen.setdefault(p.noun, p)
        identity = list(given) + [explicit_prompt(n, p.article) for n, p in seen.items()
                                  if not any(q.noun == n and q.condition == "explicit" for q in given)]
        src = {"article": f"{cfg.prompts}, nouns split in halves by name",
               "identity": f"{cfg.prompts} (frames: its conditions) + the explicit prompt"}
    else:
        def short(noun: str) -> bool:
            return len(tokenizer(" " + noun, add_special_tokens=False)["input_ids"]) <= cfg.max_noun_tokens

        tr = riddle_set(cfg.riddles_per_article, "select", cfg.seed, short)
        te = riddle_set(cfg.riddles_per_article, "test", cfg.seed, short)
        train, test = [r.prompt for r in tr], [r.prompt for r in te]
        half = cfg.identity_nouns // 2
        pool = te + tr
        chosen = ([r for r in pool if r.prompt.article == "an"][:half]
                  + [r for r in pool if r.prompt.article == "a"][:cfg.identity_nouns - half])
        identity = [p for r in chosen for p in frame_prompts(r.prompt, r.gloss)]
        src = {"article": "WordNet riddles; training: the 'select' half of the nouns, test: the 'test' half",
               "identity": f"{len(chosen)} nouns of those riddles, each in the frames {', '.join(FRAMES)}"}
    for name, ps in (("training", train), ("test", test)):
        if {p.article for p in ps} != {"a", "an"}:
            raise SaexError(f"the {name} half of the nouns has no prompts of both articles ({len(ps)} prompts)",
                            "give more prompts (--riddles-per-article, or more nouns in --prompts)")
    return DepthPrompts(train, test, identity, src)


# --------------------------------------------------------------------------- the model, read at every layer


def _base_and_norm(lm: LoadedModel):
    norm, head = lm.final_norm_and_unembedding()
    return lm.final_norm()[0], norm, head


class LayerReader:
    """Residuals of the swept layers at the last K prompt positions (one forward pass per
    batch, hooks on the blocks), the logit lens, and last-token reruns from a cached prefix
    with the residual after block L at the last position replaced."""

    def __init__(self, lm: LoadedModel, layers: Sequence[int], batch_size: int = 32, progress: bool = False):
        self.lm, self.layers = lm, list(layers)
        self.base, self.norm, self.head = _base_and_norm(lm)
        self.a_id, self.an_id = article_ids(lm.tokenizer)
        w = self.head.weight[[self.an_id, self.a_id]].detach().float()
        self.w_diff = w[0] - w[1]
        bias = getattr(self.head, "bias", None)
        self.b_diff = float(bias[self.an_id] - bias[self.a_id]) if bias is not None else 0.0
        self.batch_size, self.progress = batch_size, progress
        params = inspect.signature(self.base.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"

    def lens(self, h: torch.Tensor) -> torch.Tensor:
        """ "... d" -> "...": logit(an) - logit(a) if the model stopped here (final norm, unembedding)."""
        with torch.no_grad():
            x = self.norm(h.to(self.lm.device, torch.float32)).float()
        return (x @ self.w_diff.to(x.device)).cpu() + self.b_diff

    def _head_ld(self, last_hidden: torch.Tensor) -> torch.Tensor:
        return (last_hidden.float() @ self.w_diff.to(last_hidden.device)).cpu() + self.b_diff

    def groups(self, ids: list[list[int]]) -> list[list[int]]:
        """Prompt indices batched by length (no padding, so nothing to mask)."""
        by_len = defaultdict(list)
        for i, x in enumerate(ids):
            by_len[len(x)].append(i)
        return [idx[j:j + self.batch_size] for n in sorted(by_len) for idx in [by_len[n]]
                for j in range(0, len(idx), self.batch_size)]

    @torch.no_grad()
    def read(self, ids: list[list[int]], n_offsets: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> feats "prompt layer offset d" (offsets -K..-1; zeros where the prompt is shorter),
        valid "prompt offset" (a prompt token, not BOS), ld "prompt" at the output."""
        from tqdm.auto import tqdm

        n, d, k = len(ids), self.lm.d_model, n_offsets
        feats = torch.zeros(n, len(self.layers), k, d)
        valid = torch.zeros(n, k, dtype=torch.bool)
        ld = torch.zeros(n)
        box: dict[int, torch.Tensor] = {}

        def tap(layer):
            def grab(_m, _i, out):
                box[layer] = (out[0] if isinstance(out, tuple) else out).detach()
            return grab

        handles = [self.lm.layers[L].register_forward_hook(tap(L)) for L in self.layers]
        try:
            for idx in tqdm(self.groups(ids), desc="forward", disable=not self.progress, leave=False):
                x = torch.tensor([ids[i] for i in idx], device=self.lm.device)
                t = x.shape[1]
                out = self.base(input_ids=x, use_cache=False)
                ld[idx] = self._head_ld(out.last_hidden_state[:, -1])
                take = min(k, t)
                for j, L in enumerate(self.layers):
                    feats[idx, j, k - take:] = box[L][:, t - take:].float().cpu()
                first_prompt_token = 1 if self.lm.bos_id is not None and ids[idx[0]][0] == self.lm.bos_id else 0
                valid[idx, k - min(k, t - first_prompt_token):] = True
                box.clear()
        finally:
            for h in handles:
                h.remove()
        return feats, valid, ld

    @torch.no_grad()
    def rerun_last(self, ids: list[list[int]], layer: int, replacement: torch.Tensor,
                   max_rows: int = 256) -> torch.Tensor:
        """ld "prompt variant" at the output when the residual after block `layer` at the
        last prompt position is replacement "prompt variant d" (earlier positions are as
        clean: a causal model's past cannot see the edit, so their keys and values are cached)."""
        from tqdm.auto import tqdm

        n, v, _ = replacement.shape
        out = torch.zeros(n, v)
        block = self.lm.layers[layer]
        rows: dict[str, torch.Tensor] = {}

        def swap(_m, _i, o):
            h = o[0] if isinstance(o, tuple) else o
            h = h.clone()
            h[:, -1] = rows["h"].to(h.dtype)
            return (h, *o[1:]) if isinstance(o, tuple) else h

        handle = block.register_forward_hook(swap)
        try:
            for idx in tqdm(self.groups(ids), desc=f"edits at layer {layer}", disable=not self.progress, leave=False):
                x = torch.tensor([ids[i] for i in idx], device=self.lm.device)
                t = x.shape[1]
                handle.remove()  # the clean prefix
                pre = self.base(input_ids=x[:, :-1], use_cache=True)
                handle = block.register_forward_hook(swap)
                cache = getattr(pre, "cache", None)
                if cache is None:
                    cache = getattr(pre, "past_key_values", None)
                step = max(1, max_rows // len(idx))
                for v0 in range(0, v, step):
                    vs = min(step, v - v0)
                    c = copy.deepcopy(cache)
                    c.batch_repeat_interleave(vs)
                    rows["h"] = replacement[idx, v0:v0 + vs].reshape(len(idx) * vs, -1).to(self.lm.device)
                    last = x[:, -1:].repeat_interleave(vs, 0)
                    pos = torch.full((len(idx) * vs, 1), t - 1, device=self.lm.device)
                    o = self.base(input_ids=last, position_ids=pos, use_cache=True, **{self._cache_kw: c})
                    out[idx, v0:v0 + vs] = self._head_ld(o.last_hidden_state[:, -1]).view(len(idx), vs)
        finally:
            handle.remove()
        return out


# --------------------------------------------------------------------------- probes


@dataclass
class Probe:
    mean: torch.Tensor
    std: torch.Tensor
    w: torch.Tensor  # "d classes" (binary: "d 1")
    b: torch.Tensor
    l2: float

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        z = ((x - self.mean) / self.std) @ self.w + self.b
        return (z[:, 0] > 0).long() if z.shape[1] == 1 else z.argmax(1)

    def direction(self) -> torch.Tensor:
        """Unit vector in residual space along which the (binary) probe reads."""
        u = self.w[:, 0] / self.std
        return u / u.norm().clamp_min(1e-12)


def _fit_many(z: torch.Tensor, mask: torch.Tensor, y: torch.Tensor, l2: torch.Tensor, n_classes: int,
              iters: int = 150) -> tuple[torch.Tensor, torch.Tensor]:
    """P independent L2 logistic regressions at once: z "P n d" standardised features, mask
    "P n" the training rows of each, y "P n" labels, l2 "P". Their objectives are independent
    and strictly convex, so minimising the sum gives each one's own optimum.
    -> w "P d c", b "P c" (c = 1 for two classes)."""
    p, n, d = z.shape
    c = 1 if n_classes == 2 else n_classes
    w = torch.zeros(p, d, c, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(p, c, dtype=torch.float64, requires_grad=True)
    z64, m, lam = z.double(), mask.double(), l2.double()
    count = m.sum(1).clamp_min(1)
    opt = torch.optim.LBFGS([w, b], lr=1, max_iter=iters, history_size=10, line_search_fn="strong_wolfe",
                            tolerance_grad=1e-7, tolerance_change=1e-10)

    def closure():
        opt.zero_grad()
        logits = torch.bmm(z64, w) + b[:, None]
        if c == 1:
            per = F.binary_cross_entropy_with_logits(logits[..., 0], y.double(), reduction="none")
        else:
            per = F.cross_entropy(logits.reshape(p * n, c), y.reshape(-1), reduction="none").view(p, n)
        loss = ((per * m).sum(1) / count + lam * (w ** 2).sum((1, 2))).sum()
        loss.backward()
        return loss

    with torch.enable_grad():
        opt.step(closure)
    return w.detach().float(), b.detach().float()


def _folds(groups: Sequence[str], folds: int) -> torch.Tensor:
    """Fold of each row: whole groups (nouns, frames) to one fold, by a hash of their name."""
    names = sorted(set(groups), key=hash_str)
    fold_of = {g: i % folds for i, g in enumerate(names)}
    return torch.tensor([fold_of[g] for g in groups])


def fit_probes(x: torch.Tensor, labels: Sequence[torch.Tensor], groups: Sequence[str], n_classes: int,
               folds: int = 3) -> list[Probe]:
    """One probe per label vector (the real labels, shuffled controls ...) on the same rows:
    features standardised on these rows, the L2 strength (LAMBDAS) chosen by cross-validation
    over `groups` (whole groups in one fold) on these rows only, then refitted on all."""
    mean, std = x.mean(0), x.std(0).clamp_min(1e-6)
    z = (x - mean) / std
    # An L2-penalised weight vector lies in the span of its training rows (representer
    # theorem), so fitting in the coordinates of the rows' span is exact and smaller (n < d).
    _, sv, vh = torch.linalg.svd(z.double(), full_matrices=False)
    basis = vh[sv > sv[0] * 1e-6].T.float()  # "d r"
    zr = z @ basis
    n_folds = min(folds, len(set(groups)))
    f = _folds(groups, n_folds)
    masks = [f != k for k in range(n_folds)] + [torch.ones(len(x), dtype=torch.bool)]
    spec = [(s, lam, k) for s in range(len(labels)) for lam in LAMBDAS for k in range(len(masks))]
    wr, b = _fit_many(zr.expand(len(spec), -1, -1), torch.stack([masks[k] for _, _, k in spec]),
                      torch.stack([labels[s] for s, _, _ in spec]), torch.tensor([lam for _, lam, _ in spec]),
                      n_classes)
    w = basis @ wr  # "P d c"
    logits = torch.bmm(zr.expand(len(spec), -1, -1), wr) + b[:, None]
    pred = (logits[..., 0] > 0).long() if logits.shape[-1] == 1 else logits.argmax(-1)
    out = []
    for s, y in enumerate(labels):
        best, best_acc, full = LAMBDAS[-1], -1.0, {}
        for lam in LAMBDAS:
            hits, total = 0, 0
            for i, (s2, lam2, k) in enumerate(spec):
                if s2 != s or lam2 != lam:
                    continue
                if k == len(masks) - 1:
                    full[lam] = i
                    continue
                held = ~masks[k]
                hits += int((pred[i][held] == y[held]).sum())
                total += int(held.sum())
            acc = hits / total if total else 0.0
            if n_folds >= 2 and acc > best_acc + 1e-9:
                best, best_acc = lam, acc
        i = full[best]
        out.append(Probe(mean, std, w[i], b[i], best))
    return out


def hash_str(s: str) -> int:
    import hashlib

    return int.from_bytes(hashlib.sha256(s.encode()).digest()[:8], "big")


def binomial_p(correct: int, n: int, chance: float) -> float:
    """One-sided P(at least `correct` of `n` right by chance)."""
    return float(sum(math.comb(n, k) * chance ** k * (1 - chance) ** (n - k) for k in range(correct, n + 1)))


def _accuracy_ci(hits: torch.Tensor, n_boot: int, seed: int) -> list[float]:
    from sae.statistics import bootstrap_mean

    return bootstrap_mean(hits.float(), n_boot, seed)["ci"]


def _shuffled(y: torch.Tensor, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return y[torch.randperm(len(y), generator=g)]


def article_probe(x_tr, y_tr, nouns_tr, x_te, y_te, cfg: DepthConfig, seed: int) -> tuple[dict, Probe]:
    """Trained on the training nouns' prompts, tested on the test nouns'; the control: the
    same pipeline with the training labels permuted (`cfg.shuffles` times)."""
    labels = [y_tr] + [_shuffled(y_tr, seed + 1 + s) for s in range(cfg.shuffles)]
    probes = fit_probes(x_tr, labels, nouns_tr, 2)
    probe = probes[0]
    hits = probe.predict(x_te) == y_te
    controls = [float((c.predict(x_te) == y_te).float().mean()) for c in probes[1:]]
    acc = float(hits.float().mean())
    p = binomial_p(int(hits.sum()), len(hits), 0.5)
    return {"accuracy": acc, "ci": _accuracy_ci(hits, cfg.bootstrap, seed), "n_test": len(hits),
            "n_train": len(y_tr), "p_binomial": p, "l2": probe.l2, "control": controls,
            "control_mean": sum(controls) / len(controls),
            "above_chance": bool(p < ALPHA and acc > max(controls))}, probe


def identity_probe(x: torch.Tensor, nouns: list[str], frames: list[str], cfg: DepthConfig, seed: int) -> dict:
    """Leave one frame out: train on the other frames of every noun (L2 chosen by leaving
    one of those out in turn), test on the held-out frame; the control permutes the
    training labels."""
    names = sorted(set(nouns))
    y = torch.tensor([names.index(n) for n in nouns])
    chance = 1 / len(names)
    per_frame = {}
    for f in sorted(set(frames), key=lambda f: (FRAMES.index(f) if f in FRAMES else 99, f)):
        tr = torch.tensor([fr != f for fr in frames])
        te = ~tr
        gr = [fr for fr, keep in zip(frames, tr.tolist()) if keep]
        probe, ctrl = fit_probes(x[tr], [y[tr], _shuffled(y[tr], seed + 7)], gr, len(names), folds=len(set(gr)))
        hits = probe.predict(x[te]) == y[te]
        c_acc = float((ctrl.predict(x[te]) == y[te]).float().mean())
        acc = float(hits.float().mean())
        p = binomial_p(int(hits.sum()), len(hits), chance)
        per_frame[f] = {"accuracy": acc, "n_test": len(hits), "p_binomial": p, "control": c_acc, "l2": probe.l2,
                        "above_chance": bool(p < ALPHA and acc > c_acc)}
    accs = [v["accuracy"] for v in per_frame.values()]
    out = {"chance": chance, "n_nouns": len(names), "frames": per_frame,
           "accuracy_mean": sum(accs) / len(accs),
           "control_mean": sum(v["control"] for v in per_frame.values()) / len(per_frame)}
    named = [f for f in NAMED if f in frames]
    implied = [f for f in IMPLIED if f in frames]
    if named and implied:
        # Trained only where the noun is named (no gloss in the prompt), tested where it is only
        # implied: the implied frames share their gloss, so leave-one-frame-out could read the gloss.
        tr = torch.tensor([fr in named for fr in frames])
        gr = [fr for fr in frames if fr in named]
        probe, ctrl = fit_probes(x[tr], [y[tr], _shuffled(y[tr], seed + 11)], gr, len(names), folds=len(named))
        transfer = {}
        for f in implied:
            te = torch.tensor([fr == f for fr in frames])
            hits = probe.predict(x[te]) == y[te]
            acc, c_acc = float(hits.float().mean()), float((ctrl.predict(x[te]) == y[te]).float().mean())
            p = binomial_p(int(hits.sum()), len(hits), chance)
            transfer[f] = {"accuracy": acc, "n_test": len(hits), "p_binomial": p, "control": c_acc,
                           "above_chance": bool(p < ALPHA and acc > c_acc)}
        out["named_to_implied"] = {"train_frames": named, "l2": probe.l2, "frames": transfer}
    return out


# --------------------------------------------------------------------------- causal tests


def _gap(ld: torch.Tensor, is_an: torch.Tensor) -> torch.Tensor:
    return ld[is_an].mean(0) - ld[~is_an].mean(0)


def compare_to_random(clean: torch.Tensor, edited: torch.Tensor, random: torch.Tensor, is_an: torch.Tensor,
                      cfg: DepthConfig, seed: int) -> dict:
    """clean, edited "prompt"; random "prompt set": the gap removed by the edit, with paired
    bootstrap intervals, against the random edits' (z score, permutation p)."""
    g_clean = float(_gap(clean, is_an))
    change = gap_change(clean, edited, is_an, cfg.bootstrap, seed)
    removed_random = (g_clean - _gap(random, is_an)).double()
    removed = change["removed"]
    sd = float(removed_random.std()) if len(removed_random) > 1 else 0.0
    mean = float(removed_random.mean())
    return change | {
        "random": {"n": int(random.shape[1]), "removed_mean": mean, "removed_sd": sd,
                   "fraction_removed_mean": mean / g_clean if g_clean > 0 else None,
                   "removed_q95": float(removed_random.quantile(0.95)),
                   "z": (removed - mean) / sd if sd > 0 else None,
                   "p_permutation": empirical_p(removed, removed_random, lower=False)}}


def _random_units(n: int, d: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(n, d, generator=g)
    return u / u.norm(dim=1, keepdim=True)


def _project_out(h: torch.Tensor, mean: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """h "n d", units "v d" -> "n v d": the component along each unit set to its value at `mean`."""
    coef = (h - mean) @ units.T  # "n v"
    return h[:, None, :] - coef[:, :, None] * units[None]


def sae_edits(sae, h_tr: torch.Tensor, is_an_tr: torch.Tensor, h_te: torch.Tensor, cfg: DepthConfig,
              seed: int) -> tuple[torch.Tensor, dict]:
    """The top features by separation at -1 on the training riddles, and random sets of as
    many features that fire there: residuals "n (1 + sets) d" with each set ablated
    (error term kept), and what was chosen."""
    a_tr = sae.encode(h_tr).cpu()
    mu_an, mu_a = a_tr[is_an_tr].mean(0), a_tr[~is_an_tr].mean(0)
    sd = ((a_tr[is_an_tr].var(0) + a_tr[~is_an_tr].var(0)) / 2).sqrt()
    sep = (mu_an - mu_a) / (sd + 1e-6)
    fired = (a_tr > 0).any(0)
    sep = torch.where(fired, sep, torch.zeros_like(sep))
    chosen = sep.abs().argsort(descending=True)[:cfg.sae_features]
    chosen = chosen[fired[chosen]]
    pool = fired.nonzero().squeeze(1)
    pool = pool[~torch.isin(pool, chosen)]
    g = torch.Generator().manual_seed(seed)
    n_f = len(chosen)
    sets = [chosen] + ([pool[torch.randperm(len(pool), generator=g)[:n_f]] for _ in range(cfg.random_directions)]
                       if len(pool) >= n_f and n_f else [])
    a_te = sae.encode(h_te).cpu()
    base = sae.decode(a_te).cpu()
    out = [h_te]
    for s in sets:
        edited = a_te.clone()
        edited[:, s] = 0
        out.append(h_te + (sae.decode(edited).cpu() - base))
    info = {"features": [{"feature": int(f), "separation": float(sep[f]), "mean_an": float(mu_an[f]),
                          "mean_a": float(mu_a[f])} for f in chosen],
            "n_firing": int(fired.sum()), "n_random_sets": len(sets) - 1}
    return torch.stack(out, 1), info


# --------------------------------------------------------------------------- the sweep


def _load(cfg: DepthConfig, lm: LoadedModel | None):
    from sae.data.models import load_model, resolve_device
    from sae.runs.load import load_sae, resolve_run

    dev = resolve_device(cfg.device)
    saes = [load_sae(resolve_run(r.strip()), device=dev) for r in (cfg.run or "").split(",") if r.strip()]
    spec = cfg.model or next((s.model_spec for s in saes if s.model_spec), None) or DEFAULT_MODEL
    lm = lm or load_model(spec, device=dev)
    by_layer = {}
    for s in saes:
        if s.hook_name is None and s.module_path is None:
            raise SaexError(f"the SAE in {s.path} records no hook point", "give an SAE trained by saex train")
        if s.model_weights_sha256 and lm.weights_sha256 != s.model_weights_sha256:
            raise SaexError(f"the SAE in {s.path} was trained on other model weights than {lm.spec}",
                            "pass --model with the SAE's model, or leave --model out")
        if s.d_in != lm.d_model:
            raise SaexError(f"the SAE in {s.path} reads {s.d_in}-dimensional vectors, {lm.spec} has {lm.d_model}",
                            "use the model the SAE was trained on")
        layer = parse_hook_point(s.hook_name or s.module_path, lm.n_layers, lm.layers_path).layer
        if layer in by_layer:
            raise SaexError(f"two SAEs at layer {layer}: {by_layer[layer].path} and {s.path}", "give one per layer")
        by_layer[layer] = s
    return lm, by_layer


def sweep_layers(spec: str, lm: LoadedModel) -> list[int]:
    hooks = parse_layers(spec, lm.n_layers, lm.layers_path)
    return [h.layer for h in hooks] if hooks else [lm.hook_point(str(spec).strip().strip(",")).layer]


def default_out(cfg: DepthConfig) -> Path:
    if cfg.out:
        return Path(cfg.out).expanduser()
    if cfg.run:
        from sae.runs.load import resolve_run

        return resolve_run(cfg.run.split(",")[0].strip()) / DEPTH_DIR
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", Path(cfg.model or DEFAULT_MODEL).name).strip("-") or "model"
    return Path("checkpoints") / f"depth-{name}"


def read_report(folder: str | Path) -> dict | None:
    import json

    path = Path(folder) / REPORT_FILE
    try:
        r = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return r if r.get("format") == REPORT_FORMAT else None


def run_depth(cfg: DepthConfig, lm: LoadedModel | None = None) -> dict:
    """The sweep; writes OUT/report.json and OUT/depth.png and returns the report. A complete
    report made with the same settings is returned as it is."""
    t0 = time.perf_counter()
    out_dir = default_out(cfg)
    old = read_report(out_dir)
    if old is not None and old.get("config_key") == cfg.key() and not cfg.force:
        if cfg.progress:
            print(f"reusing the complete report {out_dir / REPORT_FILE} (same settings)", file=sys.stderr)
        return old
    steps: dict[str, float] = {}
    last = [t0]

    def tick(name: str) -> None:
        now = time.perf_counter()
        steps[name] = round(now - last[0], 1)
        last[0] = now

    lm, saes = _load(cfg, lm)
    layers = sorted(set(sweep_layers(cfg.layers, lm)) | set(saes))
    ensure_writable_dir(out_dir, "depth report")
    tok = lm.tokenizer
    tick("load")
    prompts = depth_prompts(cfg, tok)
    reader = LayerReader(lm, layers, cfg.batch_size, cfg.progress)
    tick("prompts")

    def ids_of(ps):
        return [e.ids[:e.article_pos] for e in encode_prompts(tok, ps)]

    sets = {"train": prompts.train, "test": prompts.test, "identity": prompts.identity}
    ids = {k: ids_of(v) for k, v in sets.items()}
    k_off = cfg.offsets
    read = {k: reader.read(v, k_off) for k, v in ids.items()}
    tick("forward")
    is_an = {k: torch.tensor([p.article == "an" for p in v]) for k, v in sets.items()}
    y = {k: v.long() for k, v in is_an.items()}
    nouns = {k: [p.noun for p in v] for k, v in sets.items()}
    overlap = set(nouns["train"]) & set(nouns["test"])
    if overlap:  # split_of_noun guarantees this; a broken prompt file must not slip through
        raise SaexError(f"nouns on both sides of the probe split: {sorted(overlap)[:5]}", "check the prompt set")

    report: dict = {"format": REPORT_FORMAT, "model": lm.spec, "model_weights_sha256": lm.weights_sha256,
                    "n_layers": lm.n_layers, "layers": layers, "config": asdict(cfg), "config_key": cfg.key(),
                    "hooks": {str(L): lm.hook_point(L).name for L in layers},
                    "prompt_sets": {"sources": prompts.sources,
                                    **{k: {"n": len(v), "n_an": int(is_an[k].sum()), "n_a": int((~is_an[k]).sum())}
                                       for k, v in sets.items()},
                                    "train_nouns": sorted(set(nouns["train"])),
                                    "test_nouns": sorted(set(nouns["test"])),
                                    "identity_nouns": sorted(set(nouns["identity"]))},
                    "offsets": list(range(-k_off, 0)),
                    "saes": {str(L): s.describe() for L, s in saes.items()}}
    # behaviour at the output, and the logit lens
    both_ld = torch.cat([read["train"][2], read["test"][2]])
    both_an = torch.cat([is_an["train"], is_an["test"]])
    report["output"] = bootstrap_gap(both_ld, both_an, cfg.bootstrap, cfg.seed)
    feats_all = torch.cat([read["train"][0], read["test"][0]])
    report["lens"] = {}
    for j, L in enumerate(layers):
        ld = reader.lens(feats_all[:, j, -1])
        report["lens"][str(L)] = bootstrap_gap(ld, both_an, cfg.bootstrap, cfg.seed)
    tick("lens")

    # probes
    report["article_probe"], report["identity_probe"] = {}, {}
    directions, means = {}, {}
    f_tr, v_tr, _ = read["train"]
    f_te, v_te, _ = read["test"]
    for j, L in enumerate(layers):
        per = {}
        for o in range(k_off):
            tr, te = v_tr[:, o], v_te[:, o]
            if tr.sum() < 4 or te.sum() < 2 or len(set(y["train"][tr].tolist())) < 2:
                continue
            res, probe = article_probe(f_tr[tr, j, o], y["train"][tr], [n for n, k in zip(nouns["train"], tr) if k],
                                       f_te[te, j, o], y["test"][te], cfg, cfg.seed + 100 * L + o)
            per[str(o - k_off)] = res
            if o == k_off - 1:
                directions[L], means[L] = probe.direction(), f_tr[tr, j, o].mean(0)
        report["article_probe"][str(L)] = per
        fi, vi, _ = read["identity"]
        frames = [p.condition for p in sets["identity"]]
        if len(set(frames)) >= 2 and len(set(nouns["identity"])) >= 2:
            report["identity_probe"][str(L)] = identity_probe(fi[:, j, -1], nouns["identity"], frames, cfg,
                                                              cfg.seed + L)
    tick("probes")

    # causal: project the probe direction out at -1 of the held-out riddles; SAE ablations
    report["causal"], report["sae"] = {}, {}
    d = lm.d_model
    for j, L in enumerate(layers):
        if L not in directions:
            continue
        h = f_te[:, j, -1]
        units = torch.cat([torch.zeros(1, d), directions[L][None], _random_units(cfg.random_directions, d,
                                                                                   cfg.seed + L)])
        repl = _project_out(h, means[L], units)
        repl[:, 0] = h  # the clean row, through the same path
        n_dir = repl.shape[1]
        sae_info = None
        if L in saes:
            sae_repl, sae_info = sae_edits(saes[L], f_tr[:, j, -1], is_an["train"], h, cfg, cfg.seed + L)
            repl = torch.cat([repl, sae_repl[:, 1:]], 1)
        ld = reader.rerun_last(ids["test"], L, repl)
        clean = ld[:, 0]
        if not torch.allclose(clean, read["test"][2], atol=1e-3 * max(1.0, float(clean.abs().max()))):
            raise SaexError(f"rerunning the last token of {lm.spec} from a cached prefix does not reproduce its "
                            "output", "use a Llama-like causal LM")
        report["causal"][str(L)] = compare_to_random(clean, ld[:, 1], ld[:, 2:n_dir], is_an["test"], cfg,
                                                     cfg.seed + L)
        if sae_info is not None and sae_info["features"]:
            rest = ld[:, n_dir:]
            report["sae"][str(L)] = sae_info | compare_to_random(clean, rest[:, 0], rest[:, 1:], is_an["test"],
                                                                 cfg, cfg.seed + L)
    tick("causal")
    report["answer"] = answer_lines(report)
    report["plot"] = plot_depth(report, out_dir)
    tick("plot")
    report["seconds"] = {"total": round(time.perf_counter() - t0, 1), **steps}
    write_json_atomic(out_dir / REPORT_FILE, report)
    return report


# --------------------------------------------------------------------------- the answer


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.0f}%"


def answer_lines(r: dict) -> list[str]:
    """The sweep's answer in words, from the report alone; nulls stated as nulls."""
    layers = r["layers"]
    lines = []
    out = r["output"]
    if out.get("value") is not None:
        lines.append(f"At the output, logit(' an') - logit(' a') is {out['value']:.2f} higher after an-noun riddles "
                     f"than after a-noun riddles (95% CI {out['ci'][0]:.2f} to {out['ci'][1]:.2f}; "
                     f"{out['n_an']} + {out['n_a']} riddles).")
    lens_on = [L for L in layers if (r["lens"][str(L)].get("ci") or [None])[0] is not None
               and r["lens"][str(L)]["ci"][0] > 0]
    if lens_on:
        g = r["lens"][str(lens_on[0])]
        lines.append(f"Logit lens: read through the final norm and unembedding at -1, the residual already favours "
                     f"' an' for an-nouns at layer {lens_on[0]} (gap {g['value']:.2f}, CI {g['ci'][0]:.2f} to "
                     f"{g['ci'][1]:.2f}); swept layers with a gap above zero: {', '.join(map(str, lens_on))}.")
    else:
        lines.append("Logit lens: at no swept layer does the residual at -1, read through the final norm and "
                     "unembedding, favour ' an' for an-nouns (every gap's 95% CI reaches zero or below).")
    probe = r["article_probe"]
    at1 = [L for L in layers if probe.get(str(L), {}).get("-1", {}).get("above_chance")]
    if at1:
        p = probe[str(at1[0])]["-1"]
        lines.append(f"The article is decodable above chance from layer {at1[0]} at offset -1 (held-out nouns: "
                     f"accuracy {p['accuracy']:.2f}, 95% CI {p['ci'][0]:.2f} to {p['ci'][1]:.2f}, n = {p['n_test']}; "
                     f"shuffled-label control {p['control_mean']:.2f}); decodable at -1 at layers "
                     f"{', '.join(map(str, at1))}.")
    else:
        best = max(layers, key=lambda L: probe.get(str(L), {}).get("-1", {}).get("accuracy", 0))
        p = probe.get(str(best), {}).get("-1")
        if p:
            lines.append(f"The article is not decodable above chance at offset -1 at any swept layer (held-out nouns; "
                         f"best: layer {best}, accuracy {p['accuracy']:.2f}, binomial p = {p['p_binomial']:.2g}, "
                         f"shuffled-label control {p['control_mean']:.2f}).")
    earlier = sorted({(int(o), L) for L in layers for o, v in probe.get(str(L), {}).items()
                      if int(o) < -1 and v.get("above_chance")})
    if earlier:
        o, L = earlier[0]
        v = probe[str(L)][str(o)]
        lines.append(f"Earliest offset with the article decodable: {o} (layer {L}, accuracy {v['accuracy']:.2f}, "
                     f"control {v['control_mean']:.2f}).")
    elif probe:
        lines.append(f"Before -1 (offsets {r['offsets'][0]}..-2) the article is not decodable above chance at any "
                     "swept layer.")
    ident = r.get("identity_probe") or {}
    if ident:
        first = next(iter(ident.values()))
        if "named_to_implied" in first:
            tr = first["named_to_implied"]
            frame = "riddle" if "riddle" in tr["frames"] else next(iter(tr["frames"]))
            on = [L for L in layers if ident.get(str(L), {}).get("named_to_implied", {}).get("frames", {})
                  .get(frame, {}).get("above_chance")]
            how = (f"trained on prompts that name the noun ({', '.join(tr['train_frames'])}) and tested on the "
                   f"{frame} frame, where it is only implied")
            best = on[0] if on else max(ident, key=lambda L: ident[L]["named_to_implied"]["frames"][frame]["accuracy"])
            fr = ident[str(best)]["named_to_implied"]["frames"][frame]
            lines.append(f"The noun's identity among {first['n_nouns']} candidates at -1, {how}: "
                         + (f"decodable above chance from layer {best}" if on else
                            f"not decodable above chance at any swept layer (best: layer {best})")
                         + f" (accuracy {fr['accuracy']:.2f}, chance {first['chance']:.2f}, shuffled control "
                         f"{fr['control']:.2f}).")
        frame = "riddle" if "riddle" in first["frames"] else next(
            (f for f in first["frames"] if f not in ("explicit", "in_context")), next(iter(first["frames"])))
        on = [L for L in layers if ident.get(str(L), {}).get("frames", {}).get(frame, {}).get("above_chance")]
        best = on[0] if on else max(ident, key=lambda L: ident[L]["frames"][frame]["accuracy"])
        fr = ident[str(best)]["frames"][frame]
        shared = (" (the other gloss frames hold the same gloss, so this may read the gloss rather than the noun)"
                  if "named_to_implied" in first else "")
        lines.append(f"With the {frame} frame held out and every other frame trained on{shared}, the noun's "
                     "identity is " + (f"decodable above chance from layer {best}" if on else
                                       f"not decodable above chance at any swept layer (best: layer {best})")
                     + f" (accuracy {fr['accuracy']:.2f}, chance {ident[str(best)]['chance']:.2f}, control "
                     f"{fr['control']:.2f}).")
    causal = r.get("causal") or {}
    sig = [L for L in layers if str(L) in causal and causal[str(L)]["random"]["p_permutation"] < 0.05
           and (causal[str(L)]["removed"] or 0) > 0]
    if causal:
        best = max(causal, key=lambda L: causal[L]["removed"] if causal[L]["removed"] is not None else -1e9)
        c = causal[best]
        rnd = c["random"]
        verdict = (f"more than random directions at layers {', '.join(map(str, sig))} (permutation p < 0.05)" if sig
                   else "no more than random directions at any swept layer (permutation p >= 0.05)")
        lines.append(f"Projecting the article-probe direction out at -1 changes the an-vs-a gap {verdict}; the "
                     f"largest removal is at layer {best}: {_pct(c['fraction_removed'])} of the gap (removed "
                     f"{c['removed']:.2f} logits, 95% CI {c['removed_ci'][0]:.2f} to {c['removed_ci'][1]:.2f}; "
                     f"{rnd['n']} random directions remove {rnd['removed_mean']:.2f} on average, "
                     f"z = {rnd['z']:.1f}, p = {rnd['p_permutation']:.3f})." if rnd["z"] is not None else
                     f"Projecting the article-probe direction out at -1 changes the gap {verdict}.")
    for L, s in (r.get("sae") or {}).items():
        rnd = s["random"]
        z = "n/a" if rnd["z"] is None else f"{rnd['z']:.1f}"
        lines.append(f"SAE at layer {L}: ablating its {len(s['features'])} most separating features at -1 removes "
                     f"{_pct(s['fraction_removed'])} of the gap ({s['removed']:.2f} logits); {rnd['n']} random sets "
                     f"of firing features remove {rnd['removed_mean']:.2f} (z = {z}, p = {rnd['p_permutation']:.3f}).")
    return lines


def format_summary(r: dict, out_dir: Path) -> str:
    return "\n".join([f"depth sweep of {r['model']} at layers {', '.join(map(str, r['layers']))}:"]
                     + [f"- {line}" for line in r["answer"]] + [f"report: {Path(out_dir) / REPORT_FILE}"])


def layer_table(r: dict) -> list[dict]:
    """One row per swept layer: lens gap, probe accuracies and controls, causal effects."""
    rows = []
    for L in r["layers"]:
        k = str(L)
        lens = r["lens"].get(k, {})
        row = {"layer": L, "lens gap": lens.get("value"),
               "lens CI": lens.get("ci")}
        for o, v in sorted(r["article_probe"].get(k, {}).items(), key=lambda kv: -int(kv[0])):
            row[f"article acc @{o}"] = v["accuracy"]
        p1 = r["article_probe"].get(k, {}).get("-1")
        row["control @-1"] = p1["control_mean"] if p1 else None
        ident = (r.get("identity_probe") or {}).get(k)
        if ident:
            row["identity acc (frames held out)"] = ident["accuracy_mean"]
            tr = ident.get("named_to_implied", {}).get("frames", {})
            if tr:
                frame = "riddle" if "riddle" in tr else next(iter(tr))
                row[f"identity acc (named -> {frame})"] = tr[frame]["accuracy"]
            row["identity chance"] = ident["chance"]
        c = (r.get("causal") or {}).get(k)
        if c:
            row["gap removed (probe dir)"] = c["fraction_removed"]
            row["random dirs remove"] = c["random"]["fraction_removed_mean"]
            row["z"] = c["random"]["z"]
            row["p"] = c["random"]["p_permutation"]
        s = (r.get("sae") or {}).get(k)
        if s:
            row["gap removed (SAE features)"] = s["fraction_removed"]
            row["SAE z"] = s["random"]["z"]
        rows.append(row)
    return rows


def plot_depth(r: dict, out_dir: Path) -> str:
    """Three panels against depth: the lens gap, decoding accuracy, the gap removed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sae.fsutil import atomic_path

    layers = r["layers"]
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8))
    ax = axes[0]
    vals = [r["lens"][str(L)] for L in layers]
    ok = [(L, v) for L, v in zip(layers, vals) if v.get("value") is not None]
    if ok:
        ax.errorbar([L for L, _ in ok], [v["value"] for _, v in ok],
                    yerr=[[v["value"] - v["ci"][0] for _, v in ok], [v["ci"][1] - v["value"] for _, v in ok]],
                    fmt="o-", capsize=3, label="logit lens at -1")
    if r["output"].get("value") is not None:
        ax.axhline(r["output"]["value"], color="C3", ls="--", lw=1, label="at the output")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("gap: LD(an-nouns) - LD(a-nouns)")
    ax.set_title("logit(an) - logit(a), an- minus a-noun riddles", fontsize=9)
    ax.legend(fontsize=7)
    ax = axes[1]
    for o in r["offsets"][::-1]:
        pts = [(L, r["article_probe"].get(str(L), {}).get(str(o))) for L in layers]
        pts = [(L, v) for L, v in pts if v]
        if pts:
            ax.plot([L for L, _ in pts], [v["accuracy"] for _, v in pts], "o-" if o == -1 else ".-",
                    alpha=1 if o == -1 else 0.45, label=f"article @{o}")
    pts = [(L, r["article_probe"].get(str(L), {}).get("-1")) for L in layers]
    pts = [(L, v) for L, v in pts if v]
    if pts:
        ax.plot([L for L, _ in pts], [v["control_mean"] for _, v in pts], "k:", label="shuffled control @-1")
    ident = r.get("identity_probe") or {}
    if ident:
        xs = [L for L in layers if str(L) in ident]
        ax.plot(xs, [ident[str(L)]["accuracy_mean"] for L in xs], "s-", color="C4",
                label="noun identity (frame held out)")
        ax.axhline(ident[str(xs[0])]["chance"], color="C4", ls=":", lw=0.8)
    ax.axhline(0.5, color="grey", lw=0.8)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("layer")
    ax.set_ylabel("held-out accuracy")
    ax.set_title("linear probes (article: held-out nouns)", fontsize=9)
    ax.legend(fontsize=6)
    ax = axes[2]
    causal = r.get("causal") or {}
    xs = [L for L in layers if str(L) in causal and causal[str(L)]["gap_clean"] not in (None, 0)]
    if xs:
        g = [causal[str(L)]["gap_clean"] for L in xs]
        ax.plot(xs, [causal[str(L)]["removed"] / gc for L, gc in zip(xs, g)], "o-", label="probe direction")
        mean = [causal[str(L)]["random"]["removed_mean"] / gc for L, gc in zip(xs, g)]
        q95 = [causal[str(L)]["random"]["removed_q95"] / gc for L, gc in zip(xs, g)]
        ax.plot(xs, mean, "k:", label="random directions (mean)")
        ax.fill_between(xs, mean, q95, color="grey", alpha=0.25, label="random: up to 95th pct")
    for L, s in (r.get("sae") or {}).items():
        if s["gap_clean"]:
            ax.plot([int(L)], [s["removed"] / s["gap_clean"]], "D", color="C2", label=f"SAE features (layer {L})")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xlabel("layer")
    ax.set_ylabel("fraction of the gap removed")
    ax.set_title("projected out at -1 (held-out nouns)", fontsize=9)
    ax.legend(fontsize=7)
    fig.suptitle(f"{r['model']}: the a/an choice across depth", fontsize=10)
    with atomic_path(out_dir / PLOT_FILE) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return PLOT_FILE
