"""`saex demo --organism`: after the demo, the same steps on a model that plans, so that every analysis
can be read side by side on a model where the mechanism exists (the explorer's Compare page).

It fine-tunes the planning organism (`saex organism`, its default settings) into OUT_DIR/organism-model,
runs the demo's steps on it at the base demo's sizes into OUT_DIR/organism (same plan, same seeds), then
asks the finder the COMPARE_WORDS and sweeps depth on both runs. None of it counts against --minutes: it
prints its own estimate first, from the base demo's measured harvest speed."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, replace
from pathlib import Path

from sae.fsutil import write_json_atomic

ORGANISM_MODEL_DIR = "organism-model"
ORGANISM_RUN_DIR = "organism"
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
    steps = {"organism": ORGANISM_TOKENS * lower_seconds_per_token}
    steps |= {f"demo {k}": v for k, v in plan.seconds.items()}
    steps["finder"] = 2 * n_words * FIND_TOKENS * lower_seconds_per_token
    steps["depth"] = 2 * DEPTH_TOKENS * lower_seconds_per_token
    return steps


def run_organism_demo(cfg, base_run: Path, *, organism=None, words=COMPARE_WORDS, find_kw=None,
                      depth_kw=None) -> Path:
    """The organism's runs after the demo's; returns the organism's SAE run folder. `organism` (an
    OrganismConfig), `find_kw` and `depth_kw` replace the defaults of those steps (e.g. for a tiny model)."""
    from sae.errors import SaexError
    from sae.lookahead.depth import DepthConfig, run_depth
    from sae.lookahead.finder import FindConfig, find_word
    from sae.lookahead.organism import OrganismConfig, build_organism
    from saex.demo import PLAN_FILE, DemoPlan, run_demo

    root = Path(cfg.out_dir)
    plan = DemoPlan(**json.loads((root / PLAN_FILE).read_text()))
    t0 = time.perf_counter()
    per_token = plan.seconds.get("harvest_train", 0.0) / max(plan.tokens, 1)
    est = estimate_seconds(plan, per_token, len(words))
    demo_steps = sum(v for k, v in est.items() if k.startswith("demo"))
    print(f"[organism] the planning organism and its runs, beside the demo's: about {sum(est.values()) / 60:.0f} "
          f"min (fine-tune {est['organism'] / 60:.1f}, the demo's steps {demo_steps / 60:.1f} as measured on the base "
          f"model, finder {est['finder'] / 60:.1f}, depth {est['depth'] / 60:.1f})", flush=True)
    model_dir = root / ORGANISM_MODEL_DIR
    t = time.perf_counter()
    organism = build_organism(organism or OrganismConfig(out=str(model_dir), model=cfg.model, device=cfg.device))
    model_dir = Path(organism.path).parent
    print(f"[organism 1/4] {model_dir}: {organism.answer.verdict} ({time.perf_counter() - t:.0f} s; estimated "
          f"{est['organism']:.0f} s)", flush=True)
    org_root = root / ORGANISM_RUN_DIR
    if not (org_root / PLAN_FILE).exists():  # the base demo's plan, so the two runs have the same sizes and seeds
        org_root.mkdir(parents=True, exist_ok=True)
        write_json_atomic(org_root / PLAN_FILE, asdict(replace(
            plan, reason=f"the base demo's sizes ({root / PLAN_FILE}), so that the two runs compare",
            estimate_s=dict(plan.seconds), seconds={}, replanned="no: kept at the base demo's sizes")))
    t = time.perf_counter()
    org_run = run_demo(replace(cfg, model=str(model_dir), out_dir=str(org_root), organism=False, full=False,
                               plan_only=False))
    print(f"[organism 2/4] the demo's steps on the organism ({time.perf_counter() - t:.0f} s)", flush=True)
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
    print(f"[organism 3/4] finder on {', '.join(words)} ({time.perf_counter() - t:.0f} s; estimated "
          f"{est['finder']:.0f} s)", flush=True)
    t = time.perf_counter()
    for name, run in (("base", base_run), ("organism", org_run)):  # the finder's model again: loaded once a run
        report = run_depth(DepthConfig(run=str(run), device=cfg.device, **(depth_kw or {})), lm=ivs[name].lm)
        print(f"  depth, {name}: {report.answer.verdict}", flush=True)
    print(f"[organism 4/4] depth sweeps ({time.perf_counter() - t:.0f} s; estimated {est['depth']:.0f} s)",
          flush=True)
    _record(root, est, time.perf_counter() - t0)
    print(f"organism done in {time.perf_counter() - t0:.0f} s. Compare them: saex explore {base_run} "
          f"(page Compare)", flush=True)
    return org_run


def _intervener(run: Path, device: str):
    """The run's model and SAE, loaded once for every finder ask and the depth sweep on it."""
    from sae.lookahead.interventions import Intervener, sink_threshold
    from sae.runs.load import load_model_and_sae

    lm, sae = load_model_and_sae(str(run), None, device)
    return Intervener(lm, sae, *sink_threshold(sae))


def _record(root: Path, est: dict, seconds: float) -> None:
    """The organism part's estimate and time, beside the demo's plan."""
    write_json_atomic(root / RECORD_FILE, {"estimate_s": {k: round(v, 1) for k, v in est.items()},
                                           "seconds": round(seconds, 1)})
