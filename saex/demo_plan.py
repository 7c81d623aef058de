"""How large `saex demo` can be on this machine: time the model here, then fit the steps in the budget.

The model's own forward is timed first (a few windows: the blocks up to the hook in the precision the
harvest will use, and the blocks after it with the unembedding, in fp32 as the lookahead runs them and
in the evaluation's precision). Each step's estimate is its work at that speed, times a factor measured
on the reference machine (a 2-core Zen 4, on both its bf16 path and its fp32 path) for what the timing
does not see: tokenising, writing shards, statistics, attribution, Python. The plan, with its estimate
per step, is printed before any step runs and kept in demo.json; the demo prints each step's real time.

Sizing order, smallest first: the SAE's store never goes below MIN_TOKENS (under it the SAE misses the
quality floor); then the lookahead is added (full, else quick, else left for later); the rest of the
budget buys training tokens up to the full store, then the full held-out store and CE windows.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

FULL_TOKENS = 2_000_000
FULL_HELDOUT = 131_072
FULL_CE_WINDOWS = 256
SMALL_HELDOUT = 65_536
SMALL_CE_WINDOWS = 64
# The SAE's quality follows the vectors it is trained on far more than the distinct tokens it saw, and
# harvesting a token costs ~9x what an epoch of training on it does; so a small store trained for many
# epochs is the cheap way to quality (measured on the demo SAE, held-out EV / CE-loss score: 262k tokens x
# 8 epochs 0.814 / 0.979; 393k x 3 0.793 / 0.971; 393k x 6 0.821 / 0.981; 2M x 1 0.820 / 0.980;
# docs/benchmarks.md, "demo sizes").
MIN_TOKENS = 262_144
FLOOR_VECTORS = 1_179_648  # 393k x 3: EV 0.793, CE-loss score 0.971, just over the demo's quality floor
TARGET_VECTORS = 2_359_296  # 393k x 6: as good as the full 2M x 1 run
MAX_EPOCHS = 8.0  # the most epochs measured
# Plan to this share of the budget: single steps were seen to vary by +-25% between runs.
SAFETY = 0.85
CONTEXT = 128  # the harvest's window, as HarvestConfig's default

# Lookahead sizes: the quick one keeps the prompts (its power) and cuts controls to their floors.
LOOKAHEAD_SIZES: dict[str, dict] = {
    "full": {},
    "quick": {"n_candidates": 20, "random_sets": 20, "dose_random_sets": 1},
}

# Factors measured on the reference machine (see the module docstring); each is real seconds over
# the timed forward's seconds for the same work.
HARVEST_OVERHEAD = 1.15
EVAL_OVERHEAD = 1.7
# Lookahead: one causal run (~96 riddles through the upper blocks, the head at a few positions) costs
# as much as this many tokens of the timed upper forward (head at every position) (measured: 1,115),
# plus the fixed part (prompt sets, the corpus profiles, plots).
LOOKAHEAD_TOKENS_PER_RUN = 1_200
LOOKAHEAD_FIXED_RUNS = 35
# Training: vectors per second per probe GFLOP/s in the loop's precision (fp32: ~9k vectors/s at
# ~113 GFLOP/s; bf16 encoder: ~16k at ~395).
TRAIN_VECTORS_PER_GFLOP = {"fp32": 70.0, "bf16": 35.0}
# Labels (three variants): a part per latent and a part per held-out token and latent, at 157 fp32 GFLOP/s
# (measured: 90 s for 4,608 latents on 65k tokens, 112 s on 131k). The index: per token and latent.
LABEL_SECONDS_PER_LATENT = 68 / 4608
LABEL_SECONDS = 22 / (65_536 * 4608)
INDEX_SECONDS = 12 / (131_072 * 4608)
REFERENCE_FP32_GFLOPS = 157.0


@dataclass(frozen=True)
class Speeds:
    """The forward speeds measured here, in tokens per second."""

    precision: str  # the harvest's ("bf16" where fast and accurate, else "fp32")
    reason: str
    lower: float  # blocks up to the hook, harvest precision
    upper_fp32: float  # blocks after the hook + unembedding at every position, fp32
    upper_eval: float  # the same in the evaluation's precision (the harvest's)
    fp32_gflops: float
    train_gflops: float  # probe GFLOP/s in the training loop's precision

    def describe(self) -> str:
        return (f"the model runs {self.lower:,.0f} tokens/s up to the hook in {self.precision} and "
                f"{self.upper_fp32:,.0f} tokens/s through the rest in fp32")


def _best_seconds(fn, repeats: int = 3) -> float:
    fn()  # warm-up: kernel choice, page faults
    best = math.inf
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return max(best, 1e-6)


def measure_speeds(lm, layer: str | int | None) -> Speeds:
    """Time the model's forward on random windows (about 5-8 s on 2 cores for SmolLM2-135M)."""
    from sae.data.forward import ResidualReader, UpperForward
    from sae.precision import measure_cpu, speed

    hook = lm.hook_point(layer)
    vocab = lm.model.get_input_embeddings().weight.shape[0]
    # 8 windows: a batch as wide as real work keeps the timing from reading a slow, narrow matmul
    ids = torch.randint(3, max(vocab, 4), (8, CONTEXT), generator=torch.Generator().manual_seed(0))
    reader = ResidualReader(lm, hook, precision="auto", calibration_ids=ids)
    lower = ids.numel() / _best_seconds(lambda: reader(ids))
    fp32_reader = reader if reader.precision == "fp32" else ResidualReader(lm, hook, precision="fp32")
    h = fp32_reader(ids[:4]).to(lm.device)
    upper = UpperForward(lm, hook.layer, ids[:2].to(lm.device), h[:2])

    def upper_rate(dtype) -> float:
        def run():
            with torch.inference_mode(), torch.autocast(lm.device.type, dtype=dtype, enabled=dtype != torch.float32):
                upper.logits_at(ids[:4].to(lm.device), h)
        return h.shape[0] * h.shape[1] / _best_seconds(run)

    upper_fp32 = upper_rate(torch.float32)
    upper_eval = upper_fp32 if reader.precision == "fp32" else upper_rate(torch.bfloat16)
    decision = speed(lm.device)
    gflops = (decision.fp32_gflops, decision.bf16_gflops)
    if gflops[0] is None:  # forced by SAEX_FAST_BF16, or a GPU: time the matmuls anyway
        probe = measure_cpu() if lm.device.type == "cpu" else None
        gflops = (probe.fp32_gflops, probe.bf16_gflops) if probe else (1e4, 1e4)
    fp32_gflops, bf16_gflops = gflops
    train_gflops = bf16_gflops if decision.fast_bf16 else fp32_gflops
    return Speeds(reader.precision, reader.precision_reason, lower, upper_fp32, upper_eval, fp32_gflops,
                  train_gflops)


@dataclass
class Sizes:
    tokens: int
    heldout_tokens: int
    epochs: float | None
    ce_windows: int
    lookahead: str  # full, quick or none


@dataclass
class Estimate:
    """Seconds per step, estimated from the measured speeds."""

    steps: dict[str, float] = field(default_factory=dict)

    @property
    def total(self) -> float:
        return sum(self.steps.values())


def lookahead_runs(size: str) -> int:
    """Causal runs of the lookahead at a size (candidate ablations, random sets, doses, controls ...)."""
    from sae.lookahead.article import DEFAULT_DOSES, LookaheadConfig

    cfg = LookaheadConfig(run="x", **LOOKAHEAD_SIZES[size])
    doses = len(DEFAULT_DOSES)
    return (cfg.n_candidates + cfg.random_sets + 4 + cfg.n_features + 12 + (doses - 2)
            + cfg.dose_random_sets * (doses - 1))


def estimate(sizes: Sizes, sp: Speeds, d_sae: int, train_epochs: float) -> Estimate:
    epochs = sizes.epochs or train_epochs
    cpu_scale = REFERENCE_FP32_GFLOPS / sp.fp32_gflops
    steps = {
        "harvest_train": sizes.tokens / sp.lower * HARVEST_OVERHEAD,
        "harvest_heldout": sizes.heldout_tokens / sp.lower * HARVEST_OVERHEAD,
        "training": sizes.tokens * epochs / (sp.train_gflops * TRAIN_VECTORS_PER_GFLOP[
            "bf16" if sp.precision == "bf16" else "fp32"]),
        "evaluation": sizes.ce_windows * CONTEXT * (1 / sp.lower + 3 / sp.upper_eval) * EVAL_OVERHEAD,
        "index": sizes.heldout_tokens * d_sae * INDEX_SECONDS * cpu_scale,
        "labels": (d_sae * LABEL_SECONDS_PER_LATENT + sizes.heldout_tokens * d_sae * LABEL_SECONDS) * cpu_scale,
        "lookahead": 0.0 if sizes.lookahead == "none" else
        (lookahead_runs(sizes.lookahead) + LOOKAHEAD_FIXED_RUNS) * LOOKAHEAD_TOKENS_PER_RUN / sp.upper_fp32,
    }
    return Estimate({k: round(v, 1) for k, v in steps.items()})


def _epochs(tokens: int) -> float | None:
    """Epochs over a store of `tokens`: TARGET_VECTORS' worth, at most MAX_EPOCHS; the full store, the
    training config's."""
    if tokens >= FULL_TOKENS:
        return None
    return round(min(MAX_EPOCHS, max(1.0, TARGET_VECTORS / tokens)), 2)


def _ladder() -> list[tuple[int, float | None]]:
    """(tokens, epochs) from the quality floor up to the full store, in order of cost: first more epochs over
    the smallest store, up to its target, then more tokens with TARGET_VECTORS trained."""
    out = [(MIN_TOKENS, e / 4) for e in range(math.ceil(4 * FLOOR_VECTORS / MIN_TOKENS), int(4 * MAX_EPOCHS) + 1)]
    out += [(n, _epochs(n)) for n in range(MIN_TOKENS + 16_384, FULL_TOKENS, 16_384)]
    return out + [(FULL_TOKENS, None)]


def fit_sizes(budget_s: float, sp: Speeds, d_sae: int, train_epochs: float, asked: dict) -> tuple[Sizes, str]:
    """The largest demo that fits `budget_s` seconds; `asked` holds the user's own choices (kept as given).
    Order: the SAE's quality floor, then the lookahead (full, else quick), then training up to
    TARGET_VECTORS, then more tokens up to the full store, then the full held-out store and CE windows.
    Returns the sizes and what was left out or shrunk, in words."""
    def sizes(tokens: int, epochs: float | None, lookahead: str, full_rest: bool = False) -> Sizes:
        return Sizes(asked.get("tokens", tokens),
                     asked.get("heldout_tokens", FULL_HELDOUT if full_rest else SMALL_HELDOUT),
                     asked.get("epochs", epochs),
                     asked.get("ce_windows", FULL_CE_WINDOWS if full_rest else SMALL_CE_WINDOWS),
                     asked.get("lookahead", lookahead))

    def fits(s: Sizes) -> bool:
        return estimate(s, sp, d_sae, train_epochs).total <= budget_s

    full = sizes(FULL_TOKENS, None, "full", full_rest=True)
    if fits(full):
        return full, ""
    ladder = _ladder()
    if "tokens" in asked:  # the user's store: only the epochs and the lookahead are planned
        ladder = [(asked["tokens"], _epochs(asked["tokens"]))]
    notes = []
    lookahead = next((size for size in ("full", "quick") if fits(sizes(*ladder[0], size))), "none")
    if "lookahead" not in asked:
        if lookahead == "none":
            notes.append("the lookahead does not fit and is left for later")
        elif lookahead == "quick":
            notes.append("the lookahead runs its quick size (20 candidates, 20 random sets)")
    fitting = [step for step in ladder if fits(sizes(*step, lookahead))]
    if fitting:
        return sizes(*fitting[-1], lookahead), "; ".join(notes)
    # not even the floor fits: keep it (a smaller SAE would not be worth exploring) and say what it costs
    floor = sizes(*ladder[0], lookahead)
    notes.append(f"even the smallest SAE of the demo's quality takes longer than the budget here (about "
                 f"{estimate(floor, sp, d_sae, train_epochs).total / 60 / SAFETY:.0f} min in all); pass --tokens and "
                 "--epochs for a smaller one")
    return floor, "; ".join(notes)


@dataclass
class Replan:
    epochs: float | None
    lookahead: str  # full, quick or none
    note: str  # what changed and why, in words; "" when nothing did


def replan_after_harvest(est: dict[str, float], harvest_s: float, left_s: float, epochs: float,
                         lookahead: str, lookahead_s: dict[str, float], floor_epochs: float,
                         asked: dict) -> Replan:
    """After the training harvest, which took `harvest_s` against its estimate est["harvest_train"]: the
    rest of the plan at that pace. Every later step's estimate is scaled by the same ratio (what made the
    harvest slow, another job on the cores or a slower clock, slows them too); where they no longer fit
    `left_s`, what the plan bought last goes first: epochs above the quality floor (`floor_epochs`), then the
    lookahead (full, then quick). Faster than estimated: nothing changes (the stores are already sized).
    `lookahead_s`: the lookahead's estimate per size; `asked`: the user's own choices, never changed."""
    ratio = harvest_s / max(est.get("harvest_train", 0.0), 1e-9)
    if ratio <= 1.1:
        return Replan(epochs, lookahead, "")
    later = ("harvest_heldout", "training", "evaluation", "index", "labels")
    fixed = sum(est.get(k, 0.0) for k in later if k != "training") * ratio
    train_per_epoch = est.get("training", 0.0) * ratio / max(epochs, 1e-9)

    def total(e: float, size: str) -> float:
        return fixed + train_per_epoch * e + lookahead_s.get(size, 0.0) * ratio

    new_epochs, size = epochs, lookahead
    if total(new_epochs, size) > left_s and "epochs" not in asked:
        spare = left_s - total(0.0, size)
        new_epochs = max(floor_epochs, min(epochs, round(spare / max(train_per_epoch, 1e-9), 2)))
    order = ("full", "quick", "none")
    while "lookahead" not in asked and size != "none" and total(new_epochs, size) > left_s:
        size = order[order.index(size) + 1]
    changes = []
    if new_epochs != epochs:
        changes.append(f"{epochs:g} -> {new_epochs:g} training epochs")
    if size != lookahead:
        changes.append(f"the {lookahead} lookahead -> " + ("none (left for later)" if size == "none" else
                                                           f"the {size} one"))
    note = (f"the training harvest ran {ratio:.2f}x its estimate, so the rest was re-planned to fit the "
            f"{left_s / 60:.1f} min left: " + ", ".join(changes)) if changes else ""
    return Replan(new_epochs, size, note)
