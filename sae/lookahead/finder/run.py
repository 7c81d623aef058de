"""Runs the word finder's stages in order and keeps the answer.

1. Contexts where the model is about to say the word, ending before its article, and
   controls: other nouns in the same frames, and nouns of the word's WordNet category
   (sae.lookahead.finder.contexts, .controls).
2. One forward pass to the SAE's hook over all of them; activations at -1 (the article's choice).
3. Clusters split into a ranking half and a held-out half; discovery, confirmation and
   specificity tests (sae.lookahead.finder.activation).
4. Causal tests of the confirmed features on the held-out half (sae.lookahead.finder.causal).
5. Descriptive evidence for the table: firing rates, the decoder's direct effect on the
   word's first token, gradient x activation attribution, article-aligned profiles.
6. The answer in words (sae.lookahead.finder.answer).

The report is cached as RUN/find/<word>-<settings hash>.json and reused when asked again with
the same settings, so a repeated question costs a file read.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

from sae.fsutil import ensure_writable_dir, write_json_atomic
from sae.lookahead.finder.config import FIND_FORMAT, FindConfig
from sae.options import key_settings
from sae.report import Clock, Report
from sae.runs.files import CFG_FILE, FIND_DIR, SPARSITY_FILE, WEIGHTS_FILE, read_labels, read_report_file
from sae.statistics import Z95

OFFSETS = tuple(range(-8, 3))


def slug(word: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", word.lower()).strip("-") or "word"


def answer_path(cfg: FindConfig, run: Path) -> Path:
    """RUN/find/<word>-<settings hash>.json: one file per question and settings."""
    return Path(cfg.out) if cfg.out else run / FIND_DIR / f"{slug(cfg.word)}-{_cache_key(cfg, run)[:8]}.json"


def _cache_key(cfg: FindConfig, run: Path) -> str:
    """What the answer depends on: the question's settings and the SAE's files."""
    settings = key_settings(cfg)
    files = {}
    for name in (WEIGHTS_FILE, CFG_FILE, SPARSITY_FILE):
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
    path = answer_path(cfg, run)
    rep = read_report_file(path, "find", FIND_FORMAT)
    return rep if rep is not None and rep.get("key") == _cache_key(cfg, run) else None


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
        rep = read_report_file(path, "find", FIND_FORMAT)
        if rep is not None and rep.get("word", "").lower() == " ".join(word.split()).lower():
            rep["cached"] = True
            return rep
    return None


# --------------------------------------------------------------------------- the question


def find_word(cfg: FindConfig, on_step: Callable[[str, float], None] | None = None, intervener=None) -> Report:
    """Answer "which features mean about to say WORD", reusing a stored answer when it fits.
    `on_step(what, fraction done)` is called before each step (the app's progress bar);
    `intervener`: an Intervener of this run's SAE and model already loaded (the app's), reused."""
    from sae.runs.load import resolve_run

    t0 = time.perf_counter()
    run = resolve_run(cfg.run)
    path = answer_path(cfg, run)
    key = _cache_key(cfg, run)
    if not cfg.force:
        rep = cached_report(cfg)
        if rep is not None:
            rep["cached"] = True
            rep["seconds_to_read"] = round(time.perf_counter() - t0, 3)
            return Report("find", rep, path)
    ensure_writable_dir(path.parent, "word-finder report")
    rep = _compute(cfg, run, on_step or (lambda what, done: None), intervener)
    rep["key"] = key
    rep["seconds"]["total"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(path, rep)
    rep["cached"] = False
    return Report("find", rep, path)




def _corpus_spec(cfg: FindConfig, sae) -> str | None:
    if cfg.corpus == "none":
        return None
    if cfg.corpus:
        return cfg.corpus
    from sae.data.corpus import DEFAULT_CORPUS

    return ((sae.run or {}).get("corpus") or {}).get("spec") or DEFAULT_CORPUS


def _rows(contexts, keep) -> list[int]:
    return [i for i, c in enumerate(contexts) if keep(c)]


def _compute(cfg: FindConfig, run: Path, on_step: Callable[[str, float], None], iv=None) -> dict:
    from sae.lookahead.interventions import Intervener, sink_threshold
    from sae.runs.load import load_model_and_sae

    clock = Clock()
    on_step("loading the model and the SAE", 0.0)
    if iv is None or cfg.model not in (None, iv.lm.spec):
        lm, sae = load_model_and_sae(str(run), cfg.model, cfg.device)
        iv = Intervener(lm, sae, *sink_threshold(sae), batch_size=cfg.batch_size, progress=cfg.progress)
    clock.tick("load model and SAE")
    wc, everything, prep = read_contexts(cfg, iv, on_step, clock)
    return analyse(cfg, iv, wc, everything, prep, on_step, clock, run)


def read_contexts(cfg: FindConfig, iv, on_step: Callable[[str, float], None] = lambda what, done: None,
                  clock: Clock | None = None) -> tuple:
    """The word's contexts and the controls, read to the SAE's hook in one pass: (WordContexts,
    contexts in order, Prepared)."""
    from sae.data.corpus import open_corpus
    from sae.lookahead.finder.controls import gather
    from sae.lookahead.interventions import encode_prompts

    clock = clock or Clock()
    tok = iv.lm.tokenizer
    spec = _corpus_spec(cfg, iv.sae)
    on_step("gathering contexts (corpus, definitions, chat questions), controls and the word's category", 0.1)
    docs = open_corpus(spec).documents(generated=False) if spec else None  # natural text only
    wc = gather(cfg.word, tok, docs, cfg.corpus_contexts, cfg.controls_per_article, cfg.category_nouns,
                prompts=cfg.prompt or (), questions=cfg.question or (), prompt_file=cfg.prompts, chat=cfg.chat,
                definitions=cfg.definitions, seed=cfg.seed, progress=cfg.progress)
    wc.corpus["spec"] = spec
    clock.tick("gather contexts")
    on_step(f"reading {len(wc.contexts) + len(wc.controls)} contexts to the SAE's hook", 0.25)
    both = wc.contexts + wc.controls
    encoded = encode_prompts(tok, [c.prompt for c in both], completion=True, suffix=[c.tail for c in both])
    order = sorted(range(len(both)), key=lambda i: len(encoded[i].ids))  # similar lengths batch with little padding
    everything = [both[i] for i in order]
    prep = iv.prepare([encoded[i] for i in order], desc="contexts")
    clock.tick("read contexts")
    return wc, everything, prep


def analyse(cfg: FindConfig, iv, wc, everything, prep, on_step: Callable[[str, float], None] = lambda w, d: None,
            clock: Clock | None = None, run: Path | None = None) -> dict:
    """Every test and the answer, from contexts already read (`read_contexts`); the SAE is
    iv.sae and its activations those in `prep`."""
    from sae.data.prompts import Prompt
    from sae.lookahead.activity import aligned_activations, log_densities
    from sae.lookahead.finder.activation import activation_tests, shuffle_roles, split_clusters
    from sae.lookahead.finder.answer import find_answer
    from sae.lookahead.finder.causal import NEUTRAL_FRAMES, alternative_ids, causal_tests
    from sae.lookahead.finder.power import activation_power
    from sae.lookahead.interventions import encode_prompts, subset

    clock = clock or Clock()
    lm, sae = iv.lm, iv.sae
    tok = lm.tokenizer
    pieces = tok(" " + cfg.word, add_special_tokens=False)["input_ids"]
    if cfg.shuffle_labels:
        everything = shuffle_roles(everything, cfg.seed)
    word_rows = _rows(everything, lambda c: c.role == "word")
    clean_w = iv.run(subset(prep, word_rows))
    values = aligned_activations(prep, [-1])[:, 0].nan_to_num(0.0)  # "context d_sae" at the article's choice
    clock.tick("clean outputs")

    on_step("activation tests: discovery, held-out confirmation, specificity", 0.4)
    half = split_clusters(everything, cfg.seed)
    act = activation_tests(values, everything, wc.article, half, cfg.confirm, cfg.alpha, cfg.seed)
    table = _table(cfg, iv, lm, sae, everything, values, half, act, wc.article, pieces[0], prep)
    clock.tick("activation tests")
    power = activation_power(values, everything, wc.article, half, act, cfg.confirm, cfg.alpha, cfg.seed,
                             cfg.power_control_rate, cfg.power_rate, cfg.power_sims)
    clock.tick("power")

    on_step("causal tests on held-out contexts against matched random features", 0.55)
    order = sorted(act["confirmed"], key=lambda f: (_spec_rank(act, f), -act["confirmation"][f]["auc"],
                                                    act["confirmation"][f]["p"]))
    candidates = order[:cfg.causal_features]
    held_rows = [i for i in word_rows if half[everything[i].cluster] == "check"]
    alt_nouns = wc.category.get("used") or sorted({c.prompt.noun for c in everything
                                                   if c.role == "control" and c.prompt.article == wc.article})
    alt_ids = alternative_ids(tok, cfg.word, alt_nouns)
    causal = {"features": {}, "tests": [], "held_out_contexts": len(held_rows)}
    if candidates and held_rows:
        frames = [Prompt(f, cfg.word, wc.article, "neutral", source="neutral frame") for f in NEUTRAL_FRAMES]
        prep_n = iv.prepare(encode_prompts(tok, frames), desc="neutral frames")
        log_d, density_source = log_densities(sae, prep)
        causal = causal_tests(iv, subset(prep, held_rows), prep_n, candidates, pieces[0], alt_ids, log_d, None,
                              cfg.steer, cfg.alpha, cfg.bootstrap, cfg.seed, cfg.batch_size)
        causal["density_source"] = density_source
    causal["alternatives"] = {"nouns": alt_nouns, "tokens": len(alt_ids),
                              "kind": "category" if wc.category.get("used") else "controls"}
    causal["not_tested"] = order[cfg.causal_features:]
    clock.tick("causal tests")

    on_step("article-aligned profiles", 0.95)
    profiles = _profiles(prep, everything, wc.article, [r["feature"] for r in table], tok)
    clock.tick("profiles")

    report = {
        "format": FIND_FORMAT, "word": cfg.word, "article": wc.article,
        "tokens": {"ids": pieces, "pieces": [tok.decode([t]) for t in pieces], "first": tok.decode([pieces[0]])},
        "model": lm.spec, "sae": sae.describe(), "hook": lm.hook_point(sae.hook_name or sae.module_path).to_dict(),
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("force", "progress")},
        "corpus": dict(wc.corpus),
        "category": wc.category,
        "contexts": _context_summary(wc, everything, half, prep),
        "behaviour": _behaviour(clean_w, [everything[i] for i in word_rows], wc.article, cfg),
        "n_latents": sae.d_sae,
        "design": {"discovery": act["discovery"], "check": act["check"], "alpha": cfg.alpha,
                   "specificity": {k: v for k, v in act["specificity"].items() if k != "features"}},
        "strongest": act["strongest"],
        "power": power,
        "candidates": table,
        "causal": causal,
        "neutral_frames": list(NEUTRAL_FRAMES),
        "profiles": profiles,
        "labels": _labels(run, [r["feature"] for r in table]) if run else {},
    }
    report["answer"] = find_answer(report)
    report["seconds"] = clock.steps
    return report


def _spec_rank(act: dict, f: int) -> int:
    kind = act["specificity"]["features"].get(f, {}).get("kind", "not checked")
    return {"word": 0, "not checked": 1, "unresolved": 2, "category": 3}[kind]


def _table(cfg, iv, lm, sae, contexts, values, half, act, article, first_id, prep) -> list[dict]:
    """One row per feature worth showing: the ranking half's best and every latent tested on
    the held-out half, with descriptive evidence side by side."""
    from sae.index.output_effects import token_directions
    from sae.lookahead.interventions import decoder_directions, subset

    feats = list(dict.fromkeys(act["check"]["tested"] + act["order"][:cfg.top]))
    if not feats:
        feats = [act["strongest"]["feature"]]
    groups = {"word": lambda c: c.role == "word",
              "controls": lambda c: c.role == "control" and c.prompt.article == article,
              "category": lambda c: c.role == "category",
              "other article": lambda c: c.role == "control" and c.prompt.article != article}
    cols = torch.tensor(feats)
    rates, means = {}, {}
    for name, keep in groups.items():
        rows = _rows(contexts, keep)
        v = values[rows][:, cols] if rows else torch.zeros(0, len(feats))
        rates[name] = (v > 0).double().mean(0) if rows else torch.full((len(feats),), float("nan"))
        means[name] = v.double().mean(0) if rows else torch.full((len(feats),), float("nan"))

    directions = decoder_directions(sae).float()
    dla = (directions @ token_directions(lm, [first_id])[0].to(directions.device)).cpu()
    pct = torch.empty_like(dla)
    pct[dla.argsort()] = torch.arange(len(dla), dtype=dla.dtype) / max(len(dla) - 1, 1)

    rank_word = _rows(contexts, lambda c: c.role == "word" and half[c.cluster] == "rank")
    attr = iv.attribute_noun(subset(prep, rank_word)).double() if rank_word else torch.zeros(1, sae.d_sae)
    attr_mean = attr.mean(0)
    attr_se = attr.std(0) / len(attr) ** 0.5 if len(attr) > 1 else torch.zeros_like(attr_mean)

    def nan(x):
        x = float(x)
        return None if x != x else x

    rows = []
    for j, f in enumerate(feats):
        conf = act["confirmation"].get(f)
        spec = act["specificity"]["features"].get(f)
        rows.append({"feature": f,
                     "discovery": {"z": float(act["z"][f]), "p": float(act["p_rank"][f])},
                     "fires": {k: nan(v[j]) for k, v in rates.items()},
                     "mean": {k: nan(v[j]) for k, v in means.items()},
                     "confirmation": conf, "specificity": spec,
                     "confirmed": bool(conf and conf["passed"]),
                     "decoder": {"effect": float(dla[f]), "percentile": float(pct[f])},
                     "attribution": {"mean": float(attr_mean[f]),
                                     "ci": [float(attr_mean[f] - Z95 * attr_se[f]),
                                            float(attr_mean[f] + Z95 * attr_se[f])]}})
    return rows


def _context_summary(wc, contexts, half, prep) -> dict:
    word = [c for c in contexts if c.role == "word"]
    counts: dict[str, int] = {}
    for c in word:
        counts[c.prompt.condition] = counts.get(c.prompt.condition, 0) + 1
    ctrl: dict[str, int] = {}
    for c in contexts:
        if c.role != "word":
            k = f"{c.role} {c.prompt.condition} ({c.prompt.article})"
            ctrl[k] = ctrl.get(k, 0) + 1
    clusters = {c.cluster for c in word}
    return {"counts": counts, "n": len(word), "clusters": len(clusters),
            "rank": sum(half[c.cluster] == "rank" for c in word),
            "check": sum(half[c.cluster] == "check" for c in word),
            "rank_clusters": len({c.cluster for c in word if half[c.cluster] == "rank"}),
            "check_clusters": len({c.cluster for c in word if half[c.cluster] == "check"}),
            "controls": ctrl, "notes": list(wc.notes), "examples": _examples(word),
            "sink_positions": prep.n_sinks,
            "items": [{"prompt": c.prompt.prompt, "noun": c.prompt.noun, "condition": c.prompt.condition,
                       "article": c.prompt.article, "form": c.prompt.form, "source": c.prompt.source,
                       "role": c.role, "cluster": c.cluster, "frame": c.frame, "origin": c.origin,
                       "half": half[c.cluster]} for c in contexts]}


def _examples(word_contexts) -> dict:
    out: dict[str, list[str]] = {}
    for c in word_contexts:
        p = c.prompt
        text = p.prompt if p.form != "A" else p.prompt.rsplit("<|im_start|>user", 1)[-1]
        out.setdefault(p.condition, [])
        if len(out[p.condition]) < 3:
            out[p.condition].append(text.strip()[-120:])
    return out


def _behaviour(clean, word_contexts, article: str, cfg: FindConfig) -> dict:
    """Per kind of context: how much the model expects the article and the word."""
    from sae.statistics import bootstrap_mean

    right = torch.where(clean.is_an, clean.logp_an, clean.logp_a)
    conds = [c.prompt.condition for c in word_contexts]
    out = {}
    for cond in dict.fromkeys(conds):
        idx = torch.tensor([i for i, c in enumerate(conds) if c == cond])
        ld = clean.ld[idx] if article == "an" else -clean.ld[idx]
        out[cond] = {"n": len(idx), "p_article": bootstrap_mean(right[idx].exp(), cfg.bootstrap, cfg.seed),
                     "p_word_given_article": bootstrap_mean(clean.logp_noun[idx].exp(), cfg.bootstrap, cfg.seed),
                     "right_article_preferred": float((ld > 0).double().mean())}
    return out


def _profiles(prep, contexts, article: str, feats: list[int], tok) -> dict:
    from sae.lookahead.activity import aligned_activations, profile_report

    acts = aligned_activations(prep, OFFSETS, feats)
    role = [c.role for c in contexts]
    same = torch.tensor([c.prompt.article == article for c in contexts])
    is_word = torch.tensor([r == "word" for r in role])
    is_ctrl = torch.tensor([r == "control" for r in role])
    groups = {"word": is_word, "controls": is_ctrl & same, "category": torch.tensor([r == "category" for r in role]),
              "other article": is_ctrl & ~same}
    groups = {k: v for k, v in groups.items() if bool(v.any())}
    rep = profile_report(acts, groups, feats, list(OFFSETS), ("word", "controls") if "controls" in groups else None)
    word_rows = [i for i, r in enumerate(role) if r == "word"]
    rep["top_contexts"] = {str(f): _top_contexts(prep, word_rows, f, tok) for f in feats[:5]}
    return rep


def _top_contexts(prepared, rows: list[int], f: int, tok, n: int = 3, before: int = 16) -> list[dict]:
    """The word contexts where `f` is highest at -1, with the tokens around the article and
    the feature's activation on each."""
    wanted = set(rows)
    out, i = [], 0
    for b in prepared.batches:
        for r, e in enumerate(b.items):
            if i in wanted:
                art = e.article_pos
                lo, hi = max(0, art - before), min(len(e.ids), art + 3)
                acts = b.acts[r, lo:hi, f].float().cpu()
                at = float(b.acts[r, art - 1, f]) if art >= 1 else 0.0
                out.append({"at_minus1": at, "tokens": [tok.decode([t]) for t in e.ids[lo:hi]],
                            "acts": [round(float(a), 4) for a in acts], "article_index": art - lo,
                            "condition": e.prompt.condition})
            i += 1
    out.sort(key=lambda r: -r["at_minus1"])
    return out[:n]


def _labels(run: Path, features: list[int]) -> dict:
    labels = read_labels(run)
    return {str(f): {"label": r.get("short") or r["label"], "predicate": r["label"], "f1": r.get("f1")}
            for f in features if (r := labels.get(f)) and r.get("label")}
