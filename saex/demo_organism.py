"""`saex demo --organism`: after the demo, the same steps on a model that plans, so that every analysis
can be read side by side on a model where the mechanism exists (the explorer's Compare page).

It fine-tunes the planning organism (`saex organism`, its default settings) into OUT_DIR/organism-model,
picks the layer where a probe first reads the organism's coming article (a depth sweep of the model alone,
OUT_DIR/organism-depth), then runs the demo's steps at that layer on the demo's corpus with answered riddles
mixed in (`builtin+riddles`), at the base demo's sizes (same plan, same seeds), on the base model into
OUT_DIR/base-L<layer>-riddles and on the organism into OUT_DIR/organism-L<layer>-riddles, asks the finder the
COMPARE_WORDS and sweeps depth on both runs. None of it counts against --minutes: it prints its own estimate
first, from the base demo's measured steps and harvest speed (at the demo's layer: a deeper one costs more)."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from sae.fsutil import write_json_atomic

ORGANISM_MODEL_DIR = "organism-model"
ORGANISM_RUN_DIR = "organism"
BASE_RUN_DIR = "base"
ORGANISM_DEPTH_DIR = "organism-depth"
RECORD_FILE = "demo-organism.json"
COMPARE_WORDS = ("astronomer", "banana")
"""One an-noun (the seed's own) and one a-noun, asked on both runs."""
# Seconds of each extra step, in held-out-harvest tokens' worth of the base demo's measured speed at its hook
# (SmolLM2-135M at layer 15 on a 2-core Zen 5, bf16: the organism 390 s and a depth sweep 110 s at 4,650
# harvest tokens/s; a cold finder ask 25 s). Scaled by the measured speed, they carry to other machines as
# far as the forward's cost does.
ORGANISM_TOKENS = 1_810_000
DEPTH_TOKENS = 512_000
FIND_TOKENS = 116_000


def estimate_seconds(plan, lower_seconds_per_token: float, n_words: int = len(COMPARE_WORDS)) -> dict[str, float]:
    """Each step's estimate: the base demo's steps as measured (the organism has the same architecture and
    sizes), the rest from the measured harvest speed."""
    steps = {"organism": ORGANISM_TOKENS * lower_seconds_per_token, "layer": DEPTH_TOKENS * lower_seconds_per_token}
    steps |= {f"demo {k}": 2 * v for k, v in plan.seconds.items()}
    steps["finder"] = 2 * n_words * FIND_TOKENS * lower_seconds_per_token
    steps["depth"] = 2 * DEPTH_TOKENS * lower_seconds_per_token
    return steps


def run_organism_demo(cfg, base_run: Path, *, organism=None, words=COMPARE_WORDS, find_kw=None,
                      depth_kw=None) -> Path:
    """The organism's runs after the demo's; returns the organism's SAE run folder. `organism` (an
    OrganismConfig), `find_kw` and `depth_kw` replace the defaults of those steps (e.g. for a tiny model).

    The two runs compared are made where the SAE analyses can see the organism's mechanism, as
    bench/sae_coverage.py measured it: at the first layer where a probe reads the coming article before it
    (from a depth sweep of the organism, model only; --layer overrides it, the middle layer when no layer reads
    it), on the demo's corpus with answered riddles mixed in (`+riddles`). The base model gets a run of its own
    there (OUT_DIR/base-TAG) unless the demo's run already has that hook and corpus."""
    from sae.data.riddles import RIDDLES_SUFFIX
    from sae.errors import SaexError
    from sae.lookahead.depth import DepthConfig, run_depth
    from sae.lookahead.depth.answer import article_layers
    from sae.lookahead.finder import FindConfig, find_word
    from sae.lookahead.organism import OrganismConfig, build_organism
    from sae.runs.catalogue import read_run
    from saex.demo import PLAN_FILE, DemoPlan, run_demo

    root = Path(cfg.out_dir)
    plan = DemoPlan(**json.loads((root / PLAN_FILE).read_text()))
    t0 = time.perf_counter()
    per_token = plan.seconds.get("harvest_train", 0.0) / max(plan.tokens, 1)
    est = estimate_seconds(plan, per_token, len(words))
    demo_steps = sum(v for k, v in est.items() if k.startswith("demo"))
    print(f"[organism] the planning organism and its runs, beside the demo's: about {sum(est.values()) / 60:.0f} "
          f"min (fine-tune {est['organism'] / 60:.1f}, choosing the layer {est['layer'] / 60:.1f}, the demo's steps "
          f"twice {demo_steps / 60:.1f}, as measured on the base model at its layer, finder {est['finder'] / 60:.1f}, "
          f"depth {est['depth'] / 60:.1f})", flush=True)
    model_dir = root / ORGANISM_MODEL_DIR
    t = time.perf_counter()
    organism = build_organism(organism or OrganismConfig(out=str(model_dir), model=cfg.model, device=cfg.device))
    model_dir = Path(organism.path).parent
    print(f"[organism 1/5] {model_dir}: {organism.answer.verdict} ({time.perf_counter() - t:.0f} s; estimated "
          f"{est['organism']:.0f} s)", flush=True)
    t = time.perf_counter()
    base_info = read_run(base_run)
    base_layer = int(base_info.run["hook"]["layer"])
    if cfg.layer is not None:
        layer, why = cfg.layer, "as --layer asks"
    else:
        sweep = run_depth(DepthConfig(model=str(model_dir), out=str(root / ORGANISM_DEPTH_DIR), device=cfg.device,
                                      **(depth_kw or {})))
        readable = article_layers(sweep)
        layer, why = ((readable[0], "the first swept layer where a probe reads the coming article at -1")
                      if readable else (None, "no swept layer reads the article at -1: the middle one"))
    corpus = cfg.corpus if cfg.corpus.endswith(RIDDLES_SUFFIX) else cfg.corpus + RIDDLES_SUFFIX
    at = replace(cfg, layer=layer, corpus=corpus, organism=False, full=False, plan_only=False)
    tag = f"L{layer if layer is not None else 'mid'}-riddles"
    print(f"[organism 2/5] layer {layer if layer is not None else 'middle'} ({why}), corpus {corpus} "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    t = time.perf_counter()
    # with --layer the demo's run has that hook already; else the sweep's layer against the demo's middle one
    same_hook = cfg.layer is not None or layer is None or int(layer) == base_layer
    if not (same_hook and base_info.run.get("corpus", {}).get("spec") == corpus):
        base_run = run_demo(replace(at, out_dir=str(_with_plan(root / f"{BASE_RUN_DIR}-{tag}", root, plan))))
    org_run = run_demo(replace(at, model=str(model_dir),
                               out_dir=str(_with_plan(root / f"{ORGANISM_RUN_DIR}-{tag}", root, plan))))
    print(f"[organism 3/5] the demo's steps at that layer: base {base_run}, organism {org_run} "
          f"({time.perf_counter() - t:.0f} s)", flush=True)
    t = time.perf_counter()
    ivs = {name: _intervener(run, cfg.device) for name, run in (("base", base_run), ("organism", org_run))}
    for word in words:
        verdicts = {}
        for name, run in (("base", base_run), ("organism", org_run)):
            try:
                verdicts[name] = find_word(FindConfig(word=word, run=str(run), device=cfg.device, progress=False,
                                                      **(find_kw or {})), intervener=ivs[name]).answer.label
            except SaexError as e:  # e.g. a user's corpus without the word: the rest still runs
                verdicts[name] = f"not asked ({e.problem})"
        print(f"  finder, {word}: base {verdicts['base']}, organism {verdicts['organism']}", flush=True)
    print(f"[organism 4/5] finder on {', '.join(words)} ({time.perf_counter() - t:.0f} s; estimated "
          f"{est['finder']:.0f} s)", flush=True)
    t = time.perf_counter()
    for name, run in (("base", base_run), ("organism", org_run)):  # the finder's model again: loaded once a run
        report = run_depth(DepthConfig(run=str(run), device=cfg.device, **(depth_kw or {})), lm=ivs[name].lm)
        print(f"  depth, {name}: {report.answer.verdict}", flush=True)
    print(f"[organism 5/5] depth sweeps ({time.perf_counter() - t:.0f} s; estimated {est['depth']:.0f} s)",
          flush=True)
    _record(root, est, time.perf_counter() - t0, {"layer": layer, "why": why, "corpus": corpus,
                                                   "base_run": str(base_run), "organism_run": str(org_run)})
    print(f"organism done in {time.perf_counter() - t0:.0f} s. Compare them: saex explore {base_run} "
          f"(page Compare)", flush=True)
    return org_run


def _with_plan(folder: Path, root: Path, plan) -> Path:
    """`folder`, holding the base demo's plan (unless it has one), so that its run has the same sizes and seeds."""
    from saex.demo import PLAN_FILE

    if not (folder / PLAN_FILE).exists():
        folder.mkdir(parents=True, exist_ok=True)
        write_json_atomic(folder / PLAN_FILE, asdict(replace(
            plan, reason=f"the base demo's sizes ({root / PLAN_FILE}), so that the runs compare",
            estimate_s=dict(plan.seconds), seconds={}, replanned="no: kept at the base demo's sizes")))
    return folder


def _intervener(run: Path, device: str):
    """The run's model and SAE, loaded once for every finder ask and the depth sweep on it."""
    from sae.lookahead.interventions import Intervener, sink_threshold
    from sae.runs.load import load_model_and_sae

    lm, sae = load_model_and_sae(str(run), None, device)
    return Intervener(lm, sae, *sink_threshold(sae))


def _record(root: Path, est: dict, seconds: float, chosen: dict) -> None:
    """The organism part's estimate, time and chosen hook and corpus, beside the demo's plan."""
    write_json_atomic(root / RECORD_FILE, {"estimate_s": {k: round(v, 1) for k, v in est.items()},
                                           "seconds": round(seconds, 1), **chosen})
