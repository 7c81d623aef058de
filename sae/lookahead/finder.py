"""`saex find WORD RUN`: which SAE features mean "about to say WORD", with the evidence
side by side and a causal check on contexts not used for ranking.

1. Contexts where the model is about to say the word, ending before its article, and
   matched controls for other nouns of both articles (sae.lookahead.contexts).
2. Word contexts split in two halves (alternately within each kind): features are
   ranked on one half; the causal check runs on the other.
3. Per feature, on the ranking half:
   - activation at the article's choice (offset -1) on word contexts against the
     controls: a Mann-Whitney z (tie-corrected; activations are mostly exact zeros) and
     the AUC rank features and gate them (Bonferroni over all latents); the difference of
     means with a Welch 95% interval and Cohen's d give the effect's size; the same test
     against the controls of the same article and of the other one separately;
   - the decoder's direct effect on the word's first token (through the final norm and
     unembedding, relative to the mean over the vocabulary), with its percentile;
   - gradient x activation attribution to logit(first token) at the article.
4. The causal check, on the held-out half: ablating the feature at every prompt position
   up to the article should lower log P(word | context + article) and log P(article);
   steering it up (adding `steer` x its typical activation) in neutral frames ("I saw",
   "There was" ...) should raise them. Density-matched random features, edited the same
   way, are the null: z against them and a permutation p.
5. Article-aligned profiles (offsets -8..+2) of the candidates on word contexts and
   controls, with onsets, and the contexts where each fires most.
6. The answer in words; a null ("no feature fires before ' astronomer' more than on the
   controls ...") is stated as one.

The report is cached as RUN/find/<word>-<settings hash>.json and reused when asked again with the same
settings, so a repeated question costs a file read.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist

import torch

from sae.errors import SaexError
from sae.fsutil import ensure_writable_dir, write_json_atomic

FIND_DIR = "find"
FIND_FORMAT = 1
OFFSETS = tuple(range(-8, 3))
NEUTRAL_FRAMES = ("I saw", "There was", "She told me about", "It was", "He is", "We met", "This is", "Look at")
ALPHA = 0.05


@dataclass
class FindConfig:
    """Find the SAE features that mean "about to say WORD"."""

    word: str = ""
    """The word or phrase (several tokens are fine: the first one is what the model must predict)."""
    run: str = ""
    """Run folder of the SAE, a sae-lens release/sae_id, or a sparsify hookpoint folder."""
    model: str | None = None
    """Model; default: the one the SAE was trained on."""
    corpus: str | None = None
    """Corpus to take "a/an WORD" contexts from, every split; default: the SAE's training corpus; none to skip."""
    prompts: str | None = None
    """Your own contexts: a .txt file (one prompt per line, ending where the article comes) or a
    .jsonl prompt set (prompt, noun, article; lines for other nouns are ignored)."""
    prompt: list[str] | None = None
    """A context typed out (repeatable): text that ends where the article comes."""
    question: list[str] | None = None
    """A chat question (repeatable), put to the model in its chat template; the answer's first word is the article."""
    chat: bool = True
    """Also ask every riddle as a chat question (models with a chat template)."""
    definitions: bool = True
    """Make riddles from the word's WordNet and GCIDE definitions (and control riddles of other nouns)."""
    corpus_contexts: int = 40
    """Most corpus contexts of the word to use (a seeded sample, at most 2 per document)."""
    controls_per_article: int = 16
    """Corpus contexts of other nouns per article, and as many riddles (plus their chat forms)."""
    top: int = 10
    """Features in the table, by activation z; the 3 best by attribution and by decoder effect join them."""
    random_features: int = 64
    """Density-matched random features for the causal null (at least 19, so p can reach 0.05; the smallest p is
    1/(n+1), against a level of 0.05 over the number of features tested)."""
    steer: float = 2.0
    """Steering dose in neutral frames, in multiples of each feature's typical activation."""
    bootstrap: int = 1000
    """Bootstrap resamples for intervals of causal effects."""
    batch_size: int = 16
    """Contexts per forward pass."""
    seed: int = 0
    """Seed for sampling contexts, the split and the random features."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N."""
    out: str | None = None
    """Report file; default: RUN/find/<word>-<hash of the settings>.json."""
    force: bool = False
    """Recompute even when a report for the same question exists."""
    progress: bool = True
    """Show progress bars."""

    def __post_init__(self):
        if not self.run:
            raise SaexError("no run folder given", "pass the folder of a trained SAE: saex find WORD RUN")
        from sae.lookahead.contexts import check_word

        self.word = check_word(self.word)
        if self.corpus is not None and self.corpus.strip().lower() in ("", "none"):
            self.corpus = "none"
        for name, low in (("corpus_contexts", 0), ("controls_per_article", 2), ("top", 1), ("random_features", 19),
                          ("bootstrap", 100), ("batch_size", 1)):
            if int(getattr(self, name)) < low:
                raise SaexError(f"{name} must be at least {low}, got {getattr(self, name)}",
                                f"pass --{name.replace('_', '-')} {low} or more")
        if not self.steer > 0:
            raise SaexError(f"steer must be positive, got {self.steer}", "pass e.g. --steer 2")


def slug(word: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", word.lower()).strip("-") or "word"


def report_path(cfg: FindConfig, run: Path) -> Path:
    """RUN/find/<word>-<settings hash>.json: one file per question and settings."""
    return Path(cfg.out) if cfg.out else run / FIND_DIR / f"{slug(cfg.word)}-{_cache_key(cfg, run)[:8]}.json"


def _cache_key(cfg: FindConfig, run: Path) -> str:
    """What the answer depends on: the question's settings and the SAE's files."""
    settings = {k: v for k, v in asdict(cfg).items() if k not in ("out", "force", "progress", "device", "run",
                                                                   "batch_size")}
    files = {}
    for name in ("sae_weights.safetensors", "cfg.json", "sparsity.safetensors"):
        p = run / name
        if p.exists():
            st = p.stat()
            files[name] = [st.st_size, st.st_mtime_ns]
    if cfg.prompts and Path(cfg.prompts).expanduser().is_file():
        st = Path(cfg.prompts).expanduser().stat()
        files["prompts"] = [st.st_size, st.st_mtime_ns]
    doc = json.dumps({"format": FIND_FORMAT, "settings": settings, "files": files}, sort_keys=True, default=str)
    return hashlib.sha256(doc.encode()).hexdigest()[:20]


def cached_report(cfg: FindConfig) -> dict | None:
    """The stored report for this question, when there is one for the same settings and SAE
    (the file name carries a hash of them; the key inside is checked too)."""
    from sae.runs.load import resolve_run

    run = resolve_run(cfg.run)
    path = report_path(cfg, run)
    try:
        rep = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return rep if rep.get("key") == _cache_key(cfg, run) else None


def stored_reports(run: str | Path, word: str | None = None) -> list[Path]:
    """Report files under RUN/find (of `word` only, when given), newest first."""
    from sae.runs.load import resolve_run

    folder = resolve_run(run) / FIND_DIR
    pattern = f"{slug(word)}-*.json" if word else "*.json"
    files = [p for p in folder.glob(pattern) if not p.name.startswith(".")] if folder.is_dir() else []
    return sorted(files, key=lambda p: p.stat().st_mtime, reverse=True)


def latest_report(run: str | Path, word: str) -> dict | None:
    """The newest stored answer for `word`, whatever its settings (None when there is none)."""
    for path in stored_reports(run, word):
        try:
            rep = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if rep.get("format") == FIND_FORMAT and rep.get("word", "").lower() == " ".join(word.split()).lower():
            rep["cached"] = True
            return rep
    return None


# --------------------------------------------------------------------------- statistics


def contrast(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per column, x against y (rows are contexts; NaN = missing): the difference of means,
    its Welch standard error, z, a 95% normal interval, and Cohen's d (pooled SD)."""
    x, y = x.double(), y.double()

    def moments(a):
        n = (~torch.isnan(a)).sum(0).double()
        mean = torch.nansum(a, 0) / n.clamp_min(1)
        var = torch.nansum((a - mean) ** 2, 0) / (n - 1).clamp_min(1)
        return n, mean, var

    nx, mx, vx = moments(x)
    ny, my, vy = moments(y)
    diff = mx - my
    se = (vx / nx.clamp_min(1) + vy / ny.clamp_min(1)).sqrt()
    z = torch.where(se > 0, diff / se, torch.zeros_like(diff))
    pooled = (((nx - 1) * vx + (ny - 1) * vy) / (nx + ny - 2).clamp_min(1)).sqrt()
    d = torch.where(pooled > 0, diff / pooled, torch.zeros_like(diff))
    q = NormalDist().inv_cdf(0.975)
    return {"mean_x": mx, "mean_y": my, "diff": diff, "se": se, "z": z, "lo": diff - q * se, "hi": diff + q * se,
            "d": d, "n_x": nx, "n_y": ny}


def rank_test(x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per column, the Mann-Whitney test of x against y (rows are contexts; rows with NaN
    are dropped): the normal-approximation z with the tie correction (activations are mostly
    exact zeros, so ties are the rule) and the AUC, U / (n_x n_y): the probability that a
    word context's activation exceeds a control's (ties count half). A feature that fires
    on half the word contexts and on no control has a large z even when its activations
    vary, where a t-like statistic on the means would not."""
    x = x[~torch.isnan(x).any(1)].double()
    y = y[~torch.isnan(y).any(1)].double()
    n1, n2 = len(x), len(y)
    n = n1 + n2
    if n1 == 0 or n2 == 0:
        zero = torch.zeros(x.shape[1], dtype=torch.float64)
        return {"z": zero, "auc": zero + 0.5}
    both = torch.cat([x, y]).T.contiguous()  # "f n"
    ordered = both.sort(-1).values
    left = torch.searchsorted(ordered, both, right=False)
    right = torch.searchsorted(ordered, both, right=True)
    ranks = (left + 1 + right).double() / 2  # average rank of each value's tie group
    u = ranks[:, :n1].sum(1) - n1 * (n1 + 1) / 2
    ties = ((right - left).double() ** 2 - 1).sum(1)  # sum over tie groups of t^3 - t
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    z = torch.where(var > 0, (u - n1 * n2 / 2) / var.clamp_min(1e-300).sqrt(), torch.zeros_like(u))
    return {"z": z, "auc": u / (n1 * n2)}


def bootstrap_mean(x: torch.Tensor, n_boot: int, seed: int) -> dict:
    """Mean of `x` with a 95% percentile bootstrap interval."""
    x = x.double()
    if len(x) == 0:
        return {"mean": None, "ci": [None, None], "n": 0}
    g = torch.Generator().manual_seed(seed)
    boot = x[torch.randint(len(x), (n_boot, len(x)), generator=g)].mean(1)
    return {"mean": float(x.mean()), "ci": [float(boot.quantile(0.025)), float(boot.quantile(0.975))], "n": len(x)}


def split_halves(conditions: list[str], seed: int) -> tuple[list[int], list[int]]:
    """Indices for ranking and for the causal check: alternately within each kind of
    context, in a seeded order, so both halves hold every kind. A kind with one context
    goes to ranking."""
    import random

    rng = random.Random(f"saex-find-split-{seed}")
    rank, check = [], []
    for cond in dict.fromkeys(conditions):
        idx = [i for i, c in enumerate(conditions) if c == cond]
        rng.shuffle(idx)
        rank += idx[0::2]
        check += idx[1::2]
    return sorted(rank), sorted(check)


# --------------------------------------------------------------------------- the question


def find_word(cfg: FindConfig, on_step: Callable[[str, float], None] | None = None, intervener=None) -> dict:
    """Answer "which features mean about to say WORD", reusing a stored answer when it fits.
    `on_step(what, fraction done)` is called before each step (the app's progress bar);
    `intervener`: an Intervener of this run's SAE and model already loaded (the app's), reused."""
    from sae.runs.load import resolve_run

    t0 = time.perf_counter()
    run = resolve_run(cfg.run)
    path = report_path(cfg, run)
    key = _cache_key(cfg, run)
    if not cfg.force:
        rep = cached_report(cfg)
        if rep is not None:
            rep["cached"] = True
            rep["seconds_to_read"] = round(time.perf_counter() - t0, 3)
            return rep
    ensure_writable_dir(path.parent, "word-finder report")
    rep = _compute(cfg, run, on_step or (lambda what, done: None), intervener)
    rep["key"] = key
    rep["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(path, rep)
    rep["cached"] = False
    return rep


class _Clock:
    def __init__(self):
        self.last = time.perf_counter()
        self.steps: dict[str, float] = {}

    def tick(self, name: str) -> None:
        now = time.perf_counter()
        self.steps[name] = round(now - self.last, 2)
        self.last = now


def _corpus_spec(cfg: FindConfig, sae) -> str | None:
    if cfg.corpus == "none":
        return None
    if cfg.corpus:
        return cfg.corpus
    from sae.data.corpus import DEFAULT_CORPUS

    return ((sae.run or {}).get("corpus") or {}).get("spec") or DEFAULT_CORPUS


def _compute(cfg: FindConfig, run: Path, on_step: Callable[[str, float], None], iv=None) -> dict:
    from sae.data.corpus import open_corpus
    from sae.lookahead.contexts import gather
    from sae.lookahead.experiment import load_model_and_sae
    from sae.lookahead.interventions import Intervener, encode_prompts, sink_threshold

    clock = _Clock()
    on_step("loading the model and the SAE", 0.0)
    if iv is None or cfg.model not in (None, iv.lm.spec):
        lm, sae = load_model_and_sae(str(run), cfg.model, cfg.device)
        iv = Intervener(lm, sae, *sink_threshold(sae), batch_size=cfg.batch_size, progress=cfg.progress)
    lm, sae = iv.lm, iv.sae
    tok = lm.tokenizer
    pieces = tok(" " + cfg.word, add_special_tokens=False)["input_ids"]
    clock.tick("load model and SAE")

    spec = _corpus_spec(cfg, sae)
    on_step("gathering contexts (corpus, definitions, chat questions) and controls", 0.15)
    docs = open_corpus(spec).documents() if spec else None
    wc = gather(cfg.word, tok, docs, cfg.corpus_contexts, cfg.controls_per_article, prompts=cfg.prompt or (),
                questions=cfg.question or (), prompt_file=cfg.prompts, chat=cfg.chat, definitions=cfg.definitions,
                seed=cfg.seed, progress=cfg.progress)
    clock.tick("gather contexts")

    on_step(f"reading {len(wc.contexts)} contexts and {len(wc.controls)} controls", 0.3)
    prep_w = iv.prepare(encode_prompts(tok, wc.contexts, completion=True, suffix=wc.tails), desc="word contexts")
    prep_c = iv.prepare(encode_prompts(tok, wc.controls, completion=True, suffix=wc.control_tails), desc="controls")
    clean_w = iv.run(prep_w)
    clock.tick("read contexts")

    conditions = [p.condition for p in wc.contexts]
    rank, check = split_halves(conditions, cfg.seed)
    notes = list(wc.notes)
    if len(check) < 2:
        notes.append(f"only {len(wc.contexts)} context(s): the causal check reuses the ranking contexts, so it is "
                     "not independent of the ranking")
        check = list(range(len(wc.contexts)))
    on_step("ranking the features", 0.45)
    ranking = _rank(cfg, iv, lm, sae, wc, prep_w, prep_c, rank, pieces[0])
    clock.tick("rank features")

    on_step("causal checks: ablation on held-out contexts, steering, random features", 0.55)
    causal = _causal(cfg, iv, sae, wc, prep_w, prep_c, check, ranking["table"])
    clock.tick("causal check")

    on_step("article-aligned profiles", 0.95)
    profiles = _profiles(prep_w, prep_c, wc, ranking["table"], tok)
    clock.tick("profiles")

    report = {
        "format": FIND_FORMAT, "word": cfg.word, "article": wc.article,
        "tokens": {"ids": pieces, "pieces": [tok.decode([t]) for t in pieces], "first": tok.decode([pieces[0]])},
        "model": lm.spec, "sae": sae.describe(), "hook": lm.hook_point(sae.hook_name or sae.module_path).to_dict(),
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("force", "progress")},
        "corpus": {"spec": spec, **wc.corpus},
        "contexts": {"counts": wc.counts(), "n": len(wc.contexts), "rank": len(rank), "check": len(check),
                     "controls": _control_counts(wc), "notes": notes, "examples": _examples(wc),
                     "sink_positions": prep_w.n_sinks + prep_c.n_sinks,
                     "items": [{"prompt": p.prompt, "condition": p.condition, "article": p.article, "form": p.form,
                                "source": p.source, "half": "check" if i in set(check) else "rank"}
                               for i, p in enumerate(wc.contexts)],
                     "control_items": [{"prompt": p.prompt, "noun": p.noun, "condition": p.condition,
                                        "article": p.article, "form": p.form} for p in wc.controls]},
        "behaviour": _behaviour(clean_w, wc, cfg),
        "bonferroni_z": ranking["bound"], "n_latents": sae.d_sae,
        "candidates": [_merge(r, causal["features"].get(r["feature"])) for r in ranking["table"]],
        "strongest": ranking["strongest"],
        "random": causal["random"], "neutral_frames": list(NEUTRAL_FRAMES),
        "profiles": profiles,
        "labels": _labels(run, [r["feature"] for r in ranking["table"]]),
    }
    report["answer"] = find_answer(report)
    report["seconds"] = clock.steps
    return report


def _control_counts(wc) -> dict:
    out: dict[str, int] = {}
    for p in wc.controls:
        k = f"{p.condition} ({p.article})"
        out[k] = out.get(k, 0) + 1
    return out


def _examples(wc) -> dict:
    out: dict[str, list[str]] = {}
    for p in wc.contexts:
        text = p.prompt if p.condition != "chat" else p.prompt.rsplit("<|im_start|>user", 1)[-1]
        out.setdefault(p.condition, [])
        if len(out[p.condition]) < 3:
            out[p.condition].append(text.strip()[-120:])
    return out


def _behaviour(clean, wc, cfg: FindConfig) -> dict:
    """Per kind of context: how much the model expects the article and the word."""
    right = torch.where(clean.is_an, clean.logp_an, clean.logp_a)
    conds = [p.condition for p in wc.contexts]
    out = {}
    for cond in dict.fromkeys(conds):
        idx = torch.tensor([i for i, c in enumerate(conds) if c == cond])
        ld = clean.ld[idx] if wc.article == "an" else -clean.ld[idx]
        out[cond] = {"n": len(idx), "p_article": bootstrap_mean(right[idx].exp(), cfg.bootstrap, cfg.seed),
                     "p_word_given_article": bootstrap_mean(clean.logp_noun[idx].exp(), cfg.bootstrap, cfg.seed),
                     "right_article_preferred": float((ld > 0).double().mean())}
    return out


def _at_minus1(prepared) -> torch.Tensor:
    from sae.lookahead.statistics import aligned_activations

    return aligned_activations(prepared, [-1])[:, 0]


def _rank(cfg, iv, lm, sae, wc, prep_w, prep_c, rank: list[int], first_id: int) -> dict:
    from sae.lookahead.interventions import decoder_directions, subset
    from sae.lookahead.statistics import unembedding

    a_w, a_c = _at_minus1(prep_w)[rank], _at_minus1(prep_c)
    same = torch.tensor([p.article == wc.article for p in wc.controls])
    vs_all = contrast(a_w, a_c)
    test, test_same, test_other = rank_test(a_w, a_c), rank_test(a_w, a_c[same]), rank_test(a_w, a_c[~same])
    fires_w = (a_w.nan_to_num(0) > 0).double().mean(0)
    fires_c = (a_c.nan_to_num(0) > 0).double().mean(0)

    directions = decoder_directions(sae).float()
    vocab = lm.model.get_output_embeddings().weight.shape[0]
    u = unembedding(lm, [first_id])[0]
    u_mean = unembedding(lm, range(vocab)).mean(0)
    dla = (directions @ (u - u_mean).to(directions.device)).cpu()
    dla_pct = _percentile(dla)

    attr = iv.attribute_noun(subset(prep_w, rank))  # "rank d_sae"
    attr_mean = attr.double().mean(0)
    attr_se = attr.double().std(0) / max(len(rank), 1) ** 0.5 if len(rank) > 1 else torch.zeros_like(attr_mean)

    bound = NormalDist().inv_cdf(1 - ALPHA / (2 * sae.d_sae))
    z = test["z"]
    order = [int(f) for f in z.argsort(descending=True)[:cfg.top]]
    for extra in (attr_mean.argsort(descending=True)[:3], dla.argsort(descending=True)[:3]):
        order += [int(f) for f in extra if int(f) not in order]

    def row(f: int) -> dict:
        return {"feature": f,
                "activation": {"mean_word": float(vs_all["mean_x"][f]), "mean_controls": float(vs_all["mean_y"][f]),
                               "diff": float(vs_all["diff"][f]), "ci": [float(vs_all["lo"][f]), float(vs_all["hi"][f])],
                               "z": float(z[f]), "auc": float(test["auc"][f]), "welch_z": float(vs_all["z"][f]),
                               "d": float(vs_all["d"][f]),
                               "fires_word": float(fires_w[f]), "fires_controls": float(fires_c[f]),
                               "z_vs_same_article": float(test_same["z"][f]),
                               "z_vs_other_article": float(test_other["z"][f]),
                               "n_word": int(vs_all["n_x"][f]), "n_controls": int(vs_all["n_y"][f])},
                "decoder": {"effect": float(dla[f]), "percentile": float(dla_pct[f])},
                "attribution": {"mean": float(attr_mean[f]), "ci": [float(attr_mean[f] - 1.96 * attr_se[f]),
                                                                   float(attr_mean[f] + 1.96 * attr_se[f])]},
                "fires_before": bool(z[f] > bound)}

    best = int(z.argmax())
    return {"table": [row(f) for f in order], "bound": bound,
            "strongest": {"feature": best, "z": float(z[best]), "auc": float(test["auc"][best]),
                          "diff": float(vs_all["diff"][best]),
                          "n_beyond_bound": int((z > bound).sum())}}


def _percentile(x: torch.Tensor) -> torch.Tensor:
    ranks = torch.empty_like(x)
    ranks[x.argsort()] = torch.arange(len(x), dtype=x.dtype)
    return ranks / max(len(x) - 1, 1)


def _typical(prep_w, prep_c, features: list[int]) -> torch.Tensor:
    """Mean activation of each feature where it fires at ordinary positions of these
    contexts; the mean over all firing features where one never fires."""
    from sae.lookahead.interventions import typical_activation

    tw, tc = typical_activation(prep_w, features), typical_activation(prep_c, features)
    return torch.maximum(tw, tc)


def _random_features(cfg, sae, prep_c, candidates: list[int]) -> tuple[list[int], str, float]:
    """Random features whose log10 firing density lies within 0.1 of some candidate's."""
    from sae.lookahead.experiment import log_densities

    log_d, source = log_densities(sae, prep_c)
    log_d = log_d.double()
    live = log_d > -9.5
    taken = torch.zeros(len(log_d), dtype=torch.bool)
    taken[candidates] = True
    dist = torch.stack([(log_d - log_d[c]).abs() for c in candidates]).min(0).values
    dist[taken | ~live] = float("inf")
    pool = (dist <= 0.1).nonzero().squeeze(-1)
    if len(pool) < cfg.random_features:
        pool = dist.argsort()[:cfg.random_features * 2]
        pool = pool[torch.isfinite(dist[pool])]
    g = torch.Generator().manual_seed(cfg.seed)
    pick = pool[torch.randperm(len(pool), generator=g)[:cfg.random_features]]
    return [int(f) for f in pick], source, float(dist[pick].max()) if len(pick) else float("nan")


def _causal(cfg, iv, sae, wc, prep_w, prep_c, check: list[int], table: list[dict]) -> dict:
    """Ablation on the held-out word contexts and steering in neutral frames, for the table's
    features and density-matched random ones."""
    from sae.lookahead.interventions import decoder_directions, encode_prompts, subset
    from sae.lookahead.prompts import Prompt

    candidates = [r["feature"] for r in table]
    randoms, density_source, worst = _random_features(cfg, sae, prep_c, candidates)
    features = candidates + randoms
    typical = dict(zip(features, _typical(prep_w, prep_c, features).tolist()))

    held = subset(prep_w, check)
    frames = [Prompt(f, wc.word, wc.article, "neutral", source="neutral frame") for f in NEUTRAL_FRAMES]
    prep_n = iv.prepare(encode_prompts(iv.lm.tokenizer, frames), desc="neutral frames")

    directions = decoder_directions(sae).float()
    abl = _edit_many(iv, held, features, directions, ablate=True, chunk=cfg.batch_size * 4)
    st = _edit_many(iv, prep_n, features, directions,
                    values={f: cfg.steer * typical[f] for f in features}, chunk=cfg.batch_size * 4)
    results = {}
    for f in features:
        (d_noun, d_art, n_fired), (s_noun, s_art, _) = abl[f], st[f]
        results[f] = {"ablation": {"delta_logp_word": bootstrap_mean(d_noun, cfg.bootstrap, cfg.seed),
                                   "delta_logp_article": bootstrap_mean(d_art, cfg.bootstrap, cfg.seed),
                                   "contexts_fired": n_fired},
                      "steering": {"delta_logp_word": bootstrap_mean(s_noun, cfg.bootstrap, cfg.seed),
                                   "delta_logp_article": bootstrap_mean(s_art, cfg.bootstrap, cfg.seed),
                                   "added": cfg.steer * typical[f]}}
    null_abl = torch.tensor([results[f]["ablation"]["delta_logp_word"]["mean"] for f in randoms], dtype=torch.float64)
    null_st = torch.tensor([results[f]["steering"]["delta_logp_word"]["mean"] for f in randoms], dtype=torch.float64)

    def against(value: float, nulls: torch.Tensor, lower: bool) -> dict:
        sd = float(nulls.std()) if len(nulls) > 1 else float("nan")
        mean = float(nulls.mean()) if len(nulls) else float("nan")
        beyond = (nulls <= value) if lower else (nulls >= value)
        return {"z": (value - mean) / sd if sd and sd > 0 else None,
                "p": float((1 + beyond.sum()) / (1 + len(nulls)))}

    # Bonferroni: over the features that fire before the word (the claim "qualifies" is about
    # them), and over the whole table for a feature that moves the word without firing for it.
    firing = [r["feature"] for r in table if r["fires_before"]]
    alpha = {f: ALPHA / max(1, len(firing)) if f in firing else ALPHA / len(candidates) for f in candidates}
    out = {}
    for f in candidates:
        r = results[f]
        abl, st = r["ablation"]["delta_logp_word"], r["steering"]["delta_logp_word"]
        r["ablation"] |= against(abl["mean"], null_abl, lower=True)
        r["steering"] |= against(st["mean"], null_st, lower=False)
        r["alpha"] = alpha[f]
        abl_ok = abl["ci"][1] is not None and abl["ci"][1] < 0 and r["ablation"]["p"] <= alpha[f]
        st_ok = st["ci"][0] is not None and st["ci"][0] > 0 and r["steering"]["p"] <= alpha[f]
        r["ablation_lowers"], r["steering_raises"] = bool(abl_ok), bool(st_ok)
        out[f] = r
    random = {"features": randoms, "density_source": density_source, "max_abs_log10_density_difference": worst,
              "ablation_delta_logp_word": {"mean": float(null_abl.mean()), "sd": float(null_abl.std()),
                                           "values": null_abl.tolist()},
              "steering_delta_logp_word": {"mean": float(null_st.mean()), "sd": float(null_st.std()),
                                           "values": null_st.tolist()},
              "check_contexts": len(check),
              "smallest_p": 1 / (1 + len(randoms)),
              "alpha": {"features_firing_before": ALPHA / max(1, len(firing)), "others": ALPHA / len(candidates)}}
    return {"features": out, "random": random}


@torch.no_grad()
def _edit_many(iv, prepared, features: list[int], directions: torch.Tensor, ablate: bool = False,
               values: dict[int, float] | None = None, chunk: int = 64) -> dict[int, tuple]:
    """Per feature, the change in log P(word's first token | context + article) and in log
    P(right article) when the feature alone is ablated (h - a_f d_f) or steered (h + v_f d_f)
    at every ordinary position up to the article, with the SAE's error term kept (the edit
    of a linear decoder is exactly that). Single-feature edits of many features run as one
    batch of (context, feature) rows; an ablation leaves a context where the feature never
    fires untouched, so only the rows where it fires are run. Returns f -> (d_word "n",
    d_article "n", rows where it fired)."""
    from sae.lookahead.interventions import position_mask

    n = prepared.n
    out = {f: (torch.zeros(n), torch.zeros(n), 0) for f in features}
    fired = dict.fromkeys(features, 0)
    start = 0
    for b in prepared.batches:
        mask = position_mask(b, "all")  # ordinary positions, offset <= 0
        art = b.article_pos
        a_ids, an_ids = b.article_ids(b.ids.device)
        is_an = torch.tensor([e.prompt.article == "an" for e in b.items], device=b.ids.device)
        right_ids = torch.where(is_an, an_ids, a_ids)
        noun = torch.tensor([e.noun_id for e in b.items], device=b.ids.device)
        pos = torch.stack([art - 1, art], 1)

        def read(ids, h, rows):
            logp = iv.upper.logits_at(ids, h, pos[rows]).log_softmax(-1)
            return (logp[:, 1].gather(-1, noun[rows, None]).squeeze(-1),
                    logp[:, 0].gather(-1, right_ids[rows, None]).squeeze(-1))

        every = torch.arange(len(b.items), device=b.ids.device)
        clean_word, clean_art = read(b.ids, b.h, every)
        pairs = []  # (row in batch, feature)
        for f in features:
            if ablate:
                hit = ((b.acts[..., f] != 0) & mask).any(1).nonzero().squeeze(-1).tolist()
            else:
                hit = every.tolist()
            pairs += [(r, f) for r in hit]
        for k in range(0, len(pairs), chunk):
            part = pairs[k:k + chunk]
            rows = torch.tensor([r for r, _ in part], device=b.ids.device)
            feats = torch.tensor([f for _, f in part], device=b.ids.device)
            if ablate:
                coef = -b.acts[rows, :, feats].float()  # "rows p": minus each feature's activation
            else:
                coef = torch.tensor([values[f] for _, f in part], device=b.ids.device)
                coef = coef[:, None].expand(-1, b.ids.shape[1])
            coef = coef * mask[rows].float()
            h = b.h[rows] + coef[..., None] * directions[feats][:, None, :].to(b.h.dtype)
            word, artp = read(b.ids[rows], h, rows)
            for j, (r, f) in enumerate(part):
                d_word, d_art, _ = out[f]
                d_word[start + r] = float(word[j] - clean_word[r])
                d_art[start + r] = float(artp[j] - clean_art[r])
                fired[f] += 1
        start += len(b.items)
    return {f: (out[f][0], out[f][1], fired[f]) for f in features}


def _merge(row: dict, causal: dict | None) -> dict:
    out = dict(row)
    out["causal"] = causal
    out["qualifies"] = bool(row["fires_before"] and causal and (causal["ablation_lowers"] or causal["steering_raises"]))
    return out


def _profiles(prep_w, prep_c, wc, table: list[dict], tok) -> dict:
    from sae.lookahead.statistics import aligned_activations, profile_report

    feats = [r["feature"] for r in table]
    acts = torch.cat([aligned_activations(prep_w, OFFSETS, feats), aligned_activations(prep_c, OFFSETS, feats)])
    n_w = prep_w.n
    is_word = torch.arange(len(acts)) < n_w
    same = torch.tensor([True] * n_w + [p.article == wc.article for p in wc.controls])
    rep = profile_report(acts, {"word": is_word, "controls": ~is_word, "same article": ~is_word & same,
                                "other article": ~is_word & ~same}, feats, list(OFFSETS), ("word", "controls"))
    rep["top_contexts"] = {str(f): _top_contexts(prep_w, f, tok) for f in feats[:5]}
    return rep


def _top_contexts(prepared, f: int, tok, n: int = 3, before: int = 16) -> list[dict]:
    """The word contexts where `f` is highest at -1, with the tokens around the article and
    the feature's activation on each."""
    rows = []
    for b in prepared.batches:
        for r, e in enumerate(b.items):
            art = e.article_pos
            lo, hi = max(0, art - before), min(len(e.ids), art + 3)
            acts = b.acts[r, lo:hi, f].float().cpu()
            at = float(b.acts[r, art - 1, f]) if art >= 1 else 0.0
            rows.append({"at_minus1": at, "tokens": [tok.decode([t]) for t in e.ids[lo:hi]],
                         "acts": [round(float(a), 4) for a in acts], "article_index": art - lo,
                         "condition": e.prompt.condition})
    rows.sort(key=lambda r: -r["at_minus1"])
    return rows[:n]


def _labels(run: Path, features: list[int]) -> dict:
    from sae.runs.files import LABELS_FILE

    out = {}
    path = run / LABELS_FILE
    if not path.exists():
        return out
    wanted = set(features)
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("feature") in wanted and rec.get("label"):
            out[str(rec["feature"])] = {"label": rec["label"], "f1": rec.get("f1")}
    return out


# --------------------------------------------------------------------------- the answer in words


def _fmt_ci(ci) -> str:
    return "n/a" if ci[0] is None else f"{ci[0]:+.3f} to {ci[1]:+.3f}"


def _causal_phrases(c: dict, w: str) -> list[str]:
    ca, out = c["causal"], []
    if ca["ablation_lowers"]:
        d = ca["ablation"]["delta_logp_word"]
        out.append(f"ablating it on held-out contexts changes log P({w}) by {d['mean']:+.3f} "
                   f"(95% CI {_fmt_ci(d['ci'])}; against random features p = {ca['ablation']['p']:.3f}, "
                   f"Bonferroni level {ca['alpha']:.3f})")
    if ca["steering_raises"]:
        d = ca["steering"]["delta_logp_word"]
        out.append(f"steering it up in neutral frames changes log P({w}) by {d['mean']:+.3f} "
                   f"(95% CI {_fmt_ci(d['ci'])}; against random features p = {ca['steering']['p']:.3f}, "
                   f"Bonferroni level {ca['alpha']:.3f})")
    return out


def find_answer(rep: dict) -> dict:
    """Plain sentences: what was asked, on what evidence, and what was (not) found."""
    word, art = rep["word"], rep["article"]
    first = rep["tokens"]["first"]
    lines = []
    counts = ", ".join(f"{n} {k}" for k, n in rep["contexts"]["counts"].items())
    lines.append(f"{rep['contexts']['n']} contexts where the model is about to say '{art} {word}' ({counts}); "
                 f"{rep['contexts']['rank']} rank the features, {rep['contexts']['check']} are kept for the causal "
                 f"check; controls: {sum(rep['contexts']['controls'].values())} contexts of other nouns.")
    if len(rep["tokens"]["ids"]) > 1:
        pieces = ", ".join(repr(p) for p in rep["tokens"]["pieces"])
        lines.append(f"' {word}' is {len(rep['tokens']['ids'])} tokens ({pieces}); P(word) and the decoder effect are "
                     f"for the first, {first!r}.")
    lines += rep["contexts"]["notes"]
    beh = rep["behaviour"]
    if beh:
        parts = []
        for cond, b in beh.items():
            pa, pw = b["p_article"]["mean"], b["p_word_given_article"]["mean"]
            parts.append(f"{cond}: P({art}) {pa:.2f}, P({first.strip()} | {art}) {pw:.3f}")
        lines.append("The model on these contexts: " + "; ".join(parts) + ".")
    qualified = [c for c in rep["candidates"] if c["qualifies"]]
    firing = [c for c in rep["candidates"] if c["fires_before"]]
    bound = rep["bonferroni_z"]
    target = f"'{art} {word}'"
    w = first.strip()
    if qualified:
        verdict = "found"
        for c in qualified[:3]:
            a = c["activation"]
            lines.append(f"#{c['feature']} fires before {target} more than on the controls (rank z = {a['z']:.1f}, "
                         f"AUC {a['auc']:.2f}; fires on {a['fires_word']:.0%} vs {a['fires_controls']:.0%}; mean "
                         f"{a['mean_word']:.3g} vs {a['mean_controls']:.3g}, d = {a['d']:.2f}); "
                         + "; ".join(_causal_phrases(c, w)) + ".")
    elif firing:
        verdict = "fires, no causal effect"
        c = firing[0]
        d = c["causal"]["ablation"]["delta_logp_word"]
        lines.append(f"{len(firing)} feature(s) fire before {target} more than on the controls beyond the Bonferroni "
                     f"bound (rank z > {bound:.1f}), the strongest #{c['feature']} (z = {c['activation']['z']:.1f}); "
                     f"but none lowers P({w}) when ablated or raises it when steered beyond random features "
                     f"(#{c['feature']}: ablation {d['mean']:+.3f}, 95% CI {_fmt_ci(d['ci'])}, "
                     f"p = {c['causal']['ablation']['p']:.3f}). Firing here is evidence of reading, not of use.")
    else:
        verdict = "none"
        s = rep["strongest"]
        lines.append(f"No feature fires before {target} more than on matched controls beyond chance over all "
                     f"{rep['n_latents']:,} latents (rank test, Bonferroni z > {bound:.1f}); the strongest is "
                     f"#{s['feature']}, z = {s['z']:.1f} (AUC {s['auc']:.2f}).")
    causal_only = [c for c in rep["candidates"] if not c["fires_before"] and c["causal"]
                   and (c["causal"]["ablation_lowers"] or c["causal"]["steering_raises"])]
    if causal_only:
        c = causal_only[0]
        lines.append(f"#{c['feature']} does not fire specifically before the word (z = {c['activation']['z']:.1f}), "
                     f"but " + "; ".join(_causal_phrases(c, w)) + ": it can move the prediction without announcing "
                     "it.")
    return {"verdict": verdict, "lines": lines}


def format_find(rep: dict, top: int = 10) -> str:
    """The answer, then the table of candidates, as plain text."""
    out = [f"'{rep['article']} {rep['word']}' in {rep['sae'].get('path', '')}"
           + ("  (stored answer)" if rep.get("cached") else ""), ""]
    out += [f"- {line}" for line in rep["answer"]["lines"]]
    out.append("")
    out.append(f"{'feature':>8} {'z':>6} {'AUC':>5} {'fires w/c':>11} {'decoder':>8} {'attrib':>8} "
               f"{'ablate dlogP':>13} {'p':>6} {'steer dlogP':>12} {'p':>6}  verdict")
    for c in rep["candidates"][:top]:
        a, ca = c["activation"], c["causal"] or {}
        nan = float("nan")
        abl, ste = ca.get("ablation", {}), ca.get("steering", {})
        abl_d = abl.get("delta_logp_word", {}).get("mean")
        ste_d = ste.get("delta_logp_word", {}).get("mean")
        verdict = "qualifies" if c["qualifies"] else "fires" if c["fires_before"] else ""
        fires = f"{a['fires_word']:>5.0%}/{a['fires_controls']:<5.0%}"
        out.append(f"{c['feature']:>8} {a['z']:>6.1f} {a['auc']:>5.2f} {fires} {c['decoder']['effect']:>8.3f} "
                   f"{c['attribution']['mean']:>8.3f} {nan if abl_d is None else abl_d:>13.4f} "
                   f"{abl.get('p', nan):>6.3f} {nan if ste_d is None else ste_d:>12.4f} "
                   f"{ste.get('p', nan):>6.3f}  {verdict}")
    return "\n".join(out)
