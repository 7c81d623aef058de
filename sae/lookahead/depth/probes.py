"""Article and noun-identity probes: L2 logistic regression with held-out nouns or frames."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from sae.lookahead.depth.config import ALPHA, FRAMES, IMPLIED, LAMBDAS, NAMED, DepthConfig

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

    def subspace(self) -> torch.Tensor:
        """ "d r": an orthonormal basis of the residual-space directions along which a
        multi-class probe tells its classes apart (its class weights, centred over classes;
        r <= classes - 1)."""
        w = self.w / self.std[:, None]
        w = (w - w.mean(1, keepdim=True)).double()
        u, sv, _ = torch.linalg.svd(w, full_matrices=False)
        return u[:, sv > sv[0] * 1e-6].float()


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


def identity_probe(x: torch.Tensor, nouns: list[str], frames: list[str], cfg: DepthConfig,
                   seed: int) -> tuple[dict, Probe | None]:
    """Leave one frame out: train on the other frames of every noun (L2 chosen by leaving
    one of those out in turn), test on the held-out frame; the control permutes the
    training labels. Also the named-to-implied probe (None without both kinds of frame)."""
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
    transfer = named_to_implied(x, nouns, frames, seed + 11)
    if transfer is None:
        return out, None
    out["named_to_implied"] = transfer[0]
    return out, transfer[1]


def named_to_implied(x: torch.Tensor, nouns: list[str], frames: list[str], seed: int) -> tuple[dict, Probe] | None:
    """Trained only where the noun is named (no gloss in the prompt), tested where it is only
    implied: the implied frames share their gloss, so leave-one-frame-out could read the gloss.
    None when the prompts lack either kind of frame. Rows of `x` that are all zero (a prompt
    too short for this offset) are left out."""
    names = sorted(set(nouns))
    y = torch.tensor([names.index(n) for n in nouns])
    chance = 1 / len(names)
    ok = x.abs().sum(1) > 0
    named = [f for f in NAMED if f in frames]
    implied = [f for f in IMPLIED if f in frames]
    if not named or not implied:
        return None
    tr = torch.tensor([fr in named for fr in frames]) & ok
    gr = [fr for fr, keep in zip(frames, tr.tolist()) if keep]
    if len(set(y[tr].tolist())) < 2:
        return None
    probe, ctrl = fit_probes(x[tr], [y[tr], _shuffled(y[tr], seed)], gr, len(names), folds=len(set(gr)))
    transfer = {}
    for f in implied:
        te = torch.tensor([fr == f for fr in frames]) & ok
        if not bool(te.any()):
            continue
        hits = probe.predict(x[te]) == y[te]
        acc, c_acc = float(hits.float().mean()), float((ctrl.predict(x[te]) == y[te]).float().mean())
        p = binomial_p(int(hits.sum()), len(hits), chance)
        transfer[f] = {"accuracy": acc, "n_test": len(hits), "p_binomial": p, "control": c_acc,
                       "above_chance": bool(p < ALPHA and acc > c_acc)}
    return {"train_frames": named, "l2": probe.l2, "frames": transfer}, probe
